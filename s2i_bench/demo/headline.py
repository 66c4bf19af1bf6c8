"""The study's headline numbers (first vs last epoch of each run, the reference translators, the
embedding sizes compared), its provenance `demo.json`, and the comparison with the committed
reference (results/demo/demo.json)."""

from __future__ import annotations

import json
from pathlib import Path

from s2i_bench.demo.steps import code_hash
from s2i_bench.fileio import atomic_write_text, dig, to_jsonable
from s2i_bench.provenance import code_version, numeric_environment
from s2i_bench.publish import own_file
from s2i_bench.report import REPORT_KIND
from s2i_bench.runs import RECORDS, RunFolder, is_run_folder
from s2i_bench.scoring import records
from s2i_bench.scoring.series import last_per_epoch
from s2i_bench.stats import wilson_interval
from s2i_bench.text import percent

HEADLINE_FIELDS = ("true_share", "raw_share", "corrected_share", "class_match_rate")


def read_references(path: Path) -> list[dict]:
    """The reference translators' judge's truth (with its Wilson interval) and estimates."""
    if not path.is_file():
        return []
    rows = []
    for r in records.read(path):
        n, true = r.total_images, r.mean_all_classes("true_share")
        rows.append({"reference": r.translator_name, "n_images": n, "true_share": true,
                     "true_ci": list(wilson_interval(int(round(true * n)), n)) if true is not None and n else None,
                     "raw_share": r.mean("raw_share"), "corrected_share": r.mean("corrected_share"),
                     "class_match_rate": r.mean("class_match_rate")})
    return rows


def read_headline(run_dirs: list[Path], split: str = "test") -> list[dict]:
    """First vs last epoch of each run: the judge's true share (mean over classes) with a 95%
    Wilson interval over the scored images, and the classifiers' raw and corrected estimates."""
    rows = []
    for run in run_dirs:
        path = run / RECORDS
        if not path.is_file():
            continue
        scored = [r for r in records.read(path) if r.split == split]  # not the selection (val) records
        recs = [r for _, r in sorted(last_per_epoch(scored).items())]
        if not recs:
            continue
        row = {"run": f"{run.parent.name}/{run.name}" if run.name.startswith("seed-") else run.name,
               "embedding_dim": recs[-1].embedding_dim,
               "train_seed": RunFolder(run).read_options().get("seed") if is_run_folder(run) else None}
        for tag, r in (("first", recs[0]), ("last", recs[-1])):
            # the judge sees every class, with or without a classifier
            n, true = r.total_images, r.mean_all_classes("true_share")
            row[tag] = {
                "epoch": r.epoch, "n_images": n, "true_share": true,
                "true_ci": (list(wilson_interval(int(round(true * n)), n)) if true is not None and n else None),
                "raw_share": r.mean("raw_share"), "corrected_share": r.mean("corrected_share"),
                "corrected_ci": r.mean_ci("corrected_share"), "class_match_rate": r.mean("class_match_rate"),
            }
        rows.append(row)
    return rows


def read_audited(audit_dir: Path) -> list[dict]:
    """The audit's audited records (the judge's labels plus the classifiers): per system, the
    audited mean share with its 95% interval and half-width, the labels used, the raw share and the
    judge's truth on the same images."""
    path = audit_dir / "records.jsonl"
    if not path.is_file():
        return []
    plan = json.loads((audit_dir / "audit.json").read_text())
    rows = []
    for r, entry in zip(records.read(path), plan["systems"]):
        source = Path(entry["record"]["file"]).parent  # the run folder: runs/f32/seed-0, as the headline names it
        run = f"{source.parent.name}/{source.name}" if source.name.startswith("seed-") else source.name
        rows.append({"system": r.translator_name if r.epoch is None else f"{run} epoch {r.epoch}",
                     "audited_share": r.mean(records.AUDITED), "audited_ci": r.audited_ci(),
                     "half_width": r.audited_half_width(), "n_audited": r.audit["mean"].get("n_audited"),
                     "raw_share": r.mean("raw_share"), "true_share": r.mean("true_share")})
    return rows


def read_size_comparison(report_dir: Path) -> list[dict]:
    """The report's comparison of embedding sizes (report_dir/comparison.json): for each pair, the
    difference in the mean's judge's truth and raw share at the last epoch, interval, adjusted p."""
    path = report_dir / "comparison.json"
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    keep = ("a", "b", "measure", "difference", "ci", "p_value", "p_adjusted", "significant", "mde", "test")
    return [{k: r.get(k) for k in keep} for r in result.get("pairs", [])
            if r.get("class") == "mean" and r.get("measure") in ("true", "raw")]


def _pct(x) -> str:
    return percent(x, missing="-")


def format_headline(rows: list[dict], references: list[dict] = (), comparison: list[dict] = (),
                    audited: list[dict] = ()) -> list[str]:
    lines = ["judge's true informativity (mean of the 5 classes, test sounds), first vs last epoch:"]
    for r in rows:
        a, b = r["first"], r["last"]
        lines.append(
            f"  {r['run']:>6}: epoch {a['epoch']:>3} {_pct(a['true_share'])} "
            f"[{_pct(a['true_ci'][0])}, {_pct(a['true_ci'][1])}]  ->  epoch {b['epoch']:>3} "
            f"{_pct(b['true_share'])} [{_pct(b['true_ci'][0])}, {_pct(b['true_ci'][1])}]; "
            f"classifiers: raw {_pct(b['raw_share'])}, corrected {_pct(b['corrected_share'])}, "
            f"class match {_pct(b['class_match_rate'])}")
    if comparison:
        lines.append("embedding sizes compared at the last epoch (mean of the classes; both seeds of each size; "
                     "Holm-adjusted p; * = significant at 5%):")
    for c in comparison:
        ci = c.get("ci") or [None, None]
        lines.append(f"  {c['a']:>5} - {c['b']:<5} {c['measure']:>5}: {100 * c['difference']:+.1f} pp "
                     f"[{'-' if ci[0] is None else f'{100 * ci[0]:+.1f}'}, "
                     f"{'-' if ci[1] is None else f'{100 * ci[1]:+.1f}'}]"
                     f", p = {c['p_adjusted']:.3f}{' *' if c['significant'] else ''}")
    if references:
        lines.append("reference translators (the scale), judge's truth and the classifiers' estimates:")
    for r in references:
        ci = r["true_ci"] or [None, None]
        lines.append(f"  {r['reference']:>15}: {_pct(r['true_share'])} [{_pct(ci[0])}, {_pct(ci[1])}]; classifiers: "
                     f"raw {_pct(r['raw_share'])}, corrected {_pct(r['corrected_share'])}, "
                     f"class match {_pct(r['class_match_rate'])}")
    if audited:
        lines.append(f"audited informativity ({audited[0]['n_audited']} judge labels per system plus the classifiers; "
                     f"mean of the classes [95% interval]) beside the judge's truth on the same images:")
    for a in audited:
        ci = a["audited_ci"] or [None, None]
        held = ci[0] is not None and a["true_share"] is not None and ci[0] <= a["true_share"] <= ci[1]
        lines.append(f"  {a['system'][:22]:>22}: audited {_pct(a['audited_share'])} [{_pct(ci[0])}, {_pct(ci[1])}]"
                     f"  truth {_pct(a['true_share'])}{'' if held else ' (outside)'}; raw {_pct(a['raw_share'])}")
    return lines


def study_provenance(p, headline: list[dict], store_hash: str, threads: int, references: list[dict] = (),
                     comparison: list[dict] = (), audited: list[dict] = ()) -> dict:
    """demo.json: what the study is and what its numbers depend on. No time, no load, nothing
    that differs between two runs of the same code on the same machine."""
    return {
        "command": "s2i-bench demo",
        "protocol": p.ref(),
        "seeds": {"synth": p.synth.seed, "split": p.split.seed, "training": p.training.seed,
                  "pool": 0, "classifiers": 0, "scoring": p.scoring.seed},
        "code_version": code_version(),
        "code_hash": code_hash(),
        "store_hash": store_hash,
        # Training and scoring are bit-exact for a fixed CPU and thread count; on a CPU with other
        # vector instructions, or with other library versions, the last bits and then the
        # trained weights differ (see the README).
        "depends_on": numeric_environment(threads),
        "headline": headline,
        "references": list(references),
        "size_comparison": list(comparison),
        "audited": list(audited),
    }


def write_provenance(report_dir: Path, provenance: dict) -> None:
    """demo.json beside the report, rewritten only when its content changed."""
    path = report_dir / "demo.json"
    text = json.dumps(to_jsonable(provenance), indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    own_file(report_dir, path, REPORT_KIND)  # the report owns the rest of the folder by its manifest


def _differences(mine: dict, theirs: dict) -> list[str]:
    """One line per headline number that differs, keyed by (what, epoch)."""
    diffs = []
    for key in sorted(set(mine) | set(theirs), key=lambda k: (k[0], -1 if k[1] is None else k[1])):
        a, b = mine.get(key), theirs.get(key)
        what = key[0] if key[1] is None else f"{key[0]} (epoch {key[1]})"
        if a is None or b is None:
            diffs.append(f"  {what}: only in {'this run' if b is None else 'the reference'}")
            continue
        for field in HEADLINE_FIELDS:
            if a.get(field) != b.get(field):
                diffs.append(f"  {what}: {field} {_pct(a.get(field))} here, {_pct(b.get(field))} in the reference")
    return diffs


def compare_with_reference(provenance: dict, reference: Path) -> list[str]:
    """Lines saying whether this study's headline equals the committed one, and if not, which
    numbers differ and what the two runs' numeric environments differ in (the likely cause)."""
    ref_file = reference / "demo.json"
    if not ref_file.is_file():
        return [f"(no committed reference at {ref_file} to compare with)"]
    try:
        ref = json.loads(ref_file.read_text())
    except (OSError, ValueError) as e:
        return [f"warning: {ref_file}: cannot read ({e})"]
    mine = {(f"{r['run']} {tag}", r[tag].get("epoch")): r[tag] for r in provenance["headline"]
            for tag in ("first", "last")}
    theirs = {(f"{r['run']} {tag}", r[tag].get("epoch")): r[tag] for r in ref.get("headline", [])
              for tag in ("first", "last") if tag in r}
    mine |= {(f"reference {r.get('reference')}", None): r for r in provenance.get("references", [])}
    theirs |= {(f"reference {r.get('reference')}", None): r for r in ref.get("references", [])}
    diffs = _differences(mine, theirs)
    if not diffs:
        return [f"headline identical to the committed reference {ref_file}"]
    lines = [f"headline differs from the committed reference {ref_file} in {len(diffs)} number(s):"] + diffs[:20]
    if len(diffs) > 20:
        lines.append(f"  ... and {len(diffs) - 20} more")
    causes = []
    here = provenance.get("depends_on", {})
    # a reference written before demo.json recorded `depends_on` has the CPU under `machine`
    there = ref.get("depends_on") or {"cpu_model": dig(ref, "machine", "cpu_model"),
                                      "libraries": ref.get("libraries")}
    for field in ("cpu_model", "cpu_simd_flags", "torch_cpu_capability", "torch_threads_per_process", "libraries"):
        if field in there and there[field] is not None and here.get(field) != there[field]:
            causes.append(f"  {field}: {here.get(field)!r} here, {there[field]!r} there")
        elif there.get(field) is None:
            causes.append(f"  {field}: {here.get(field)!r} here, not recorded there")
    for field in ("protocol", "code_hash", "store_hash"):
        if provenance.get(field) != ref.get(field):
            causes.append(f"  {field}: {provenance.get(field)!r} here, {ref.get(field)!r} there")
    if causes:
        lines.append("the two runs differ in what the numbers depend on (training is bit-exact only for the same "
                     "CPU instruction set, thread count and library versions):")
        lines += causes
    else:
        lines.append("same CPU, threads, libraries, code and store: this should not happen; please report it")
    lines.append("(the committed reference changes only with `s2i-bench demo --update-reference`)")
    return lines
