"""`s2i-bench report`: the paper's figures and tables for a set of runs, beside the paper's numbers.

The report only reads what the other commands wrote (docs/architecture.md):

    RUN/options.json, RUN/log.csv, RUN/metric-*.jsonl, sample sheets, RUN/grids/   train-baseline, score
    *.jsonl (metric records)                                                      score
    STORE/store.json, manifest.csv, frames.npy   (--data, Table 1 and Fig. 16)     prepare
    BUNDLE.json, the bundle card                  (--classifiers)                  train-classifiers

and writes OUT/index.md, OUT/index.html, OUT/tables/*.{csv,md,tex}, OUT/series/*.csv,
OUT/figures/*.{png,pdf,svg} (with --figures) and OUT/report.json (what was read and written).
It never trains or scores. Its parts, one job each:

    inputs     run folders and records files -> runs (one series each)
    analysis   the series metrics of each run (scoring.metrics) and the protocol they use
    paper      the paper's numbers, the classifiers' card
    plan       which figures, from which runs, with which captions
    render     one report into a folder: the table and figure jobs, the series, index and manifest
    figures, tables, index    drawing, tabulating, the index and manifest

Tables contain no time stamps and no absolute paths, so the same inputs give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from s2i_bench.errors import UserError
from s2i_bench.locks import exclusive_lock
from s2i_bench.publish import check_publishable, publish_folder, staged_folder
from s2i_bench.report.paper import PAPER_NUMBERS
from s2i_bench.report.render import render_report

FORMATS = ("png", "pdf", "svg")
REPORT_KIND = "s2i-bench-report"  # the kind of folder `report` owns (fileio.publish_folder)

__all__ = ["FORMATS", "PAPER_NUMBERS", "REPORT_KIND", "build_report"]


def _check_formats(formats) -> list[str]:
    formats = [f.lower().lstrip(".") for f in (formats or ["png"])]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"--format: unknown {', '.join(bad)} (valid: {', '.join(FORMATS)})")
    return list(dict.fromkeys(formats)) or ["png"]


def build_report(inputs, out, figures: bool = False, store=None, bundle=None, formats=("png",),
                 overwrite: bool = False, audits=()) -> Path:
    """Render the report of INPUTS (run folders, metric-*.jsonl files) into OUT; returns index.md.

    OUT is the report's own: new, empty, or an earlier report (its file manifest says which
    files it wrote, with their hashes). The report is rendered into a staging folder inside OUT,
    then moved in file by file; a file of the user's in the way, or one of the report's that the
    user has changed since, is refused (unless `overwrite`); earlier report files that this one
    does not write are removed only when unchanged."""
    formats = _check_formats(formats)
    final = Path(out)
    check_publishable(final, REPORT_KIND, overwrite=overwrite, what="`s2i-bench report`")
    final.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(final / ".lock", f"report folder {final}"), staged_folder(final) as stage:
        render_report(inputs, stage, figures=figures, store=store, bundle=bundle, formats=formats, audits=audits)
        publish_folder(stage, final, REPORT_KIND, overwrite=overwrite, what="`s2i-bench report`")
    return final / "index.md"
