"""Do the intervals hold? Coverage of the raw, bootstrap-corrected and Lang-Reiczigel intervals
against the synthetic world judge's truth, over every (class, checkpoint, seed) cell of the demo.

For every test record of every demo run (2 seeds x 3 embedding sizes x 40 epochs x 5 classes =
1200 cells) the truth is the judge's share of the same images. Per cell and method: does the 95%
interval contain it? Also how often the corrected point estimate clips at 0 or 1. Cells share
their classifier (one bundle), so the coverage is conditional on this draw of the classifiers;
`check_correction` varies them. The default interval of `docs/metrics.md` is picked from this
table.

    .venv/bin/python -m benchmarks.check_intervals [--work demo-work]

Writes results/benchmarks/check_intervals-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.results import machine, write
from s2i_bench.provenance import code_version

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

METHODS = ("raw (Wilson, no correction)", "corrected: bootstrap", "corrected: Lang-Reiczigel")


def covered(ci, truth) -> bool | None:
    if ci is None or truth is None:
        return None
    return bool(ci[0] - 1e-12 <= truth <= ci[1] + 1e-12)


def cells(work: Path):
    from s2i_bench.data.store import open_store
    from s2i_bench.defaults import Work
    from s2i_bench.demo.pipeline import demo_run_dirs
    from s2i_bench.scoring import records
    from s2i_bench.stats import wilson_interval

    store = open_store(work / "store")
    p = store.protocol
    out = []
    for run in demo_run_dirs(Work(work), p):
        path = run / "metric-informativity.jsonl"
        if not path.is_file():
            continue
        for r in records.read(path):
            if r.split != p.scoring.split:
                continue
            for key, c in ((k, r.cls(k)) for k in r.class_keys):
                truth = c.get("true_share")
                if truth is None or c.get("raw_share") is None:
                    continue
                n = int(c["n_images"])
                raw_ci = wilson_interval(int(round(c["raw_share"] * n)), n)
                # records before the protocol's corrected_interval key held the bootstrap as corrected_ci
                boot = c.get("corrected_ci_bootstrap") if "corrected_ci_bootstrap" in c else c.get("corrected_ci")
                out.append({"run": f"{run.parent.name}/{run.name}", "epoch": r.epoch, "class": key, "truth": truth,
                            "raw": c["raw_share"], "corrected": c.get("corrected_share"),
                            "covered": {METHODS[0]: covered(raw_ci, truth),
                                        METHODS[1]: covered(boot, truth),
                                        METHODS[2]: covered(c.get("corrected_ci_lr"), truth)},
                            "width": {METHODS[0]: raw_ci[1] - raw_ci[0] if raw_ci else None,
                                      METHODS[1]: (boot[1] - boot[0]) if boot else None,
                                      METHODS[2]: (c["corrected_ci_lr"][1] - c["corrected_ci_lr"][0])
                                      if c.get("corrected_ci_lr") else None}})
    return out, p


def summarise(rows: list[dict], subset: str) -> dict:
    from s2i_bench.stats import wilson_interval

    out = {}
    for m in METHODS:
        hits = [r["covered"][m] for r in rows if r["covered"][m] is not None]
        widths = [r["width"][m] for r in rows if r["width"][m] is not None]
        k, n = int(sum(hits)), len(hits)
        out[m] = {"cells": n, "coverage": k / n if n else None, "coverage_ci": wilson_interval(k, n) if n else None,
                  "mean_width": float(np.mean(widths)) if widths else None}
    corrected = [r["corrected"] for r in rows if r["corrected"] is not None]
    out["clipped_at_0"] = float(np.mean([c <= 0.0 for c in corrected])) if corrected else None
    out["clipped_at_1"] = float(np.mean([c >= 1.0 for c in corrected])) if corrected else None
    out["subset"] = subset
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "demo-work")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    started = dt.datetime.now()
    rows, p = cells(args.work)
    if len(rows) < 500:
        sys.exit(f"error: {len(rows)} cells with the judge's truth in {args.work}; the check needs 500 or more "
                 "(run `make demo` first)")
    interior = [r for r in rows if 0.0 < r["truth"] < 1.0]
    result = {"check": "intervals", "date": started.isoformat(timespec="seconds"),
              "machine": machine(),
              "code_version": code_version(), "protocol": p.ref(), "nominal": p.metrics.confidence,
              "all_cells": summarise(rows, "every cell"),
              "interior_cells": summarise(interior, "cells whose truth is strictly between 0 and 1")}
    md = [f"# Interval coverage against the judge's truth, {result['date']}", "",
          f"Protocol {p.name} {p.version}; {len(rows)} (class, checkpoint, seed) cells of the demo's test records "
          f"({len(interior)} with a truth strictly between 0 and 1); nominal {100 * p.metrics.confidence:.0f}%. "
          "One classifier bundle for all cells: the coverage is conditional on it.", "",
          "| cells | method | covered | coverage [95% CI] | mean width |", "| --- | --- | --- | --- | --- |"]
    for part in ("all_cells", "interior_cells"):
        s = result[part]
        for m in METHODS:
            v = s[m]
            cov = "–" if v["coverage"] is None else (f"{100 * v['coverage']:.1f}% [{100 * v['coverage_ci'][0]:.1f}, "
                                                     f"{100 * v['coverage_ci'][1]:.1f}]")
            width = "–" if v["mean_width"] is None else f"{100 * v['mean_width']:.1f} pp"
            md.append(f"| {s['subset']} | {m} | {v['cells']} | {cov} | {width} |")
    a = result["all_cells"]
    md += ["", f"Corrected point estimate clipped at 0 in {100 * a['clipped_at_0']:.1f}% of the cells and at 1 in "
               f"{100 * a['clipped_at_1']:.1f}%.", ""]
    write("check_intervals", started, result, md, args.out)


if __name__ == "__main__":
    main()
