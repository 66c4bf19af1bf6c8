"""Scoring: translators -> metric records, in three parts.

- `collect`: translate every sound of a split and keep the per-image decisions (once);
- `metrics`: the arithmetic, pure functions (the paper's series metrics, the prevalence
  correction and its bootstrap, the class-match rate);
- `records`: the record schema, the one writer and the one checked reader, series selection;
- `score`: collect -> compute -> record for one translator, and for every checkpoint of a run;
- `sheets`: sample sheets of fixed test sounds (Figs. 15/16);
- `command`: the `score` and `metrics` commands and their text output.
"""
