"""Audits: a few labels per system, combined with the classifiers by prediction-powered inference
(`scoring.ppi`), for an informativity estimate whose interval holds the truth.

    s2i-bench label-audit draw SYSTEMS... --out AUDIT --per-class 10    seeded sample, made again, blinded
    s2i-bench label-server AUDIT/blind --annotator NAME           people label the blind set
    s2i-bench label-audit label AUDIT --judge [--judge-noise 0.1]       or the synthetic world's judge
    s2i-bench label-audit estimate AUDIT                                 audited records -> AUDIT/records.jsonl
    s2i-bench label-audit plan SOURCES... --half-width 0.05              labels needed per class

`folder` owns the audit folder, `draw` the sample and the blind set, `labelling` the judge as an
annotator, `estimate` the audited records (their `audit` block belongs to `scoring.records`),
`planner` the label budget.
"""
