"""Is `compare` right about "significant"? False positives (A/A) and power (A/B).

A/A: one translator (the demo's f64, seed 0, last epoch) scored under 21 scoring seeds (other
dropout draws of the same sounds): 210 comparisons of the translator with itself. The share of
tests called significant must stay at or below 5% (per test, unadjusted), and a pair with any
class significant after Holm's adjustment at or below 5% too.

A/B: translators of known informativity, the real-frame degradation of `check_correction` (each
test sound's own frame, lightly degraded with probability t, else heavily), at t and t + d for
d = 5, 10, 20 points, scored under R scoring seeds with the demo's classifiers: the share of
comparisons whose mean raw difference is significant (power), at the demo's test-set size; then
simulated at the paper's (1365 test sounds per class, Table 1) with the demo classifiers'
sensitivity and specificity.

    .venv/bin/python -m benchmarks.check_compare [--work demo-work] [--seeds 21] [--repeats 30]

Writes results/benchmarks/check_compare-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.results import machine, write
from s2i_bench.provenance import code_version

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

PAPER_TEST_PER_CLASS = 1365
DIFFERENCES = (0.05, 0.10, 0.20)
BASE_SHARE = 0.3


def _system(name: str, record):
    from s2i_bench.scoring.systems import Member, System

    return System(name, [Member(name, None, {}, [record])])


def _decisions(record, keys):
    from s2i_bench.scoring.systems import Decisions

    d = record.decisions()
    return Decisions(d["informative"][None], None if d["truth"] is None else d["truth"][None], d["order"],
                     record.class_slices(keys))


def a_a(work: Path, n_seeds: int, bundle, store, p) -> dict:
    from s2i_bench.runs import RunFolder
    from s2i_bench.scoring.paired import compare_checkpoint
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.stats import holm
    from s2i_bench.translators import load_translator

    run = work / "runs" / f"f{p.training.embedding_dims[len(p.training.embedding_dims) // 2]}" / "seed-0"
    translator = load_translator(RunFolder(run).checkpoints()[-1])
    keys = list(p.class_keys)
    recs = [score_translator(translator, store, bundle, protocol=p, split=p.scoring.split, seed=s,
                             batch_size=p.scoring.batch_size) for s in range(n_seeds)]
    tests = {"raw": [], "true": []}
    family_any = {"raw": 0, "true": 0}
    pairs = 0
    for i, j in itertools.combinations(range(n_seeds), 2):
        rows = compare_checkpoint(_system(f"s{i}", recs[i]), _system(f"s{j}", recs[j]), _decisions(recs[i], keys),
                                  _decisions(recs[j], keys), keys, bundle, n_boot=1000, seed=i * 100 + j,
                                  confidence=0.95)
        pairs += 1
        for measure in tests:
            ps = [r["p_value"] for r in rows if r["measure"] == measure]
            tests[measure] += ps
            family_any[measure] += int(bool(ps) and (holm(ps) < 0.05).any())
    out = {"translator": str(run), "scoring_seeds": n_seeds, "comparisons": pairs}
    for measure, ps in tests.items():
        ps = np.asarray(ps)
        out[measure] = {"tests": int(ps.size), "significant_per_test": float(np.mean(ps < 0.05)) if ps.size else None,
                        "pairs_with_any_significant_after_holm": family_any[measure] / pairs}
    return out


def a_b(bundle, store, p, repeats: int) -> dict:
    from benchmarks.check_correction import DegradingTranslator
    from s2i_bench.scoring.paired import compare_checkpoint
    from s2i_bench.scoring.score import score_translator

    keys = list(p.class_keys)
    out = {"base_share": BASE_SHARE, "repeats": repeats, "test_sounds_per_class": None, "by_difference": {}}
    levels = [BASE_SHARE] + [BASE_SHARE + d for d in DIFFERENCES]
    recs = {}
    for t in levels:
        translator = DegradingTranslator(store, {k: t for k in keys})
        recs[t] = [score_translator(translator, store, bundle, protocol=p, split=p.scoring.split, seed=1000 + r,
                                    batch_size=p.scoring.batch_size) for r in range(repeats)]
    first = recs[BASE_SHARE][0]
    out["test_sounds_per_class"] = first.n_sounds(keys[0])
    out["true_share_at_level"] = {f"{t:.2f}": float(np.mean([r.mean("true_share") for r in recs[t]]))
                                  for t in levels}
    for d in DIFFERENCES:
        hits_raw, hits_true, diffs = 0, 0, []
        for r in range(repeats):
            a, b = recs[BASE_SHARE + d][r], recs[BASE_SHARE][(r + 1) % repeats]  # other scoring draws
            rows = compare_checkpoint(_system("B", a), _system("A", b), _decisions(a, keys), _decisions(b, keys), keys,
                                      bundle, n_boot=1000, seed=r, confidence=0.95)
            mean = {x["measure"]: x for x in rows if x["class"] == "mean"}
            hits_raw += mean["raw"]["p_value"] < 0.05
            hits_true += mean["true"]["p_value"] < 0.05
            diffs.append(mean["true"]["difference"])
        out["by_difference"][f"{d:.2f}"] = {"power_raw_mean": hits_raw / repeats,
                                            "power_true_mean": hits_true / repeats,
                                            "true_difference_measured": float(np.mean(diffs))}
    return out


def simulate(bundle, p, per_class: int, true_a: float, deltas, repeats: int, seed: int = 0) -> dict:
    """Power of the mean raw comparison for independent images of true informativity true_a and
    true_a + delta, called by classifiers with the bundle's Se and Sp, per_class sounds a class."""
    from s2i_bench.scoring.paired import compare_checkpoint
    from s2i_bench.scoring.systems import Decisions, Member, System

    keys = list(p.class_keys)
    rng = np.random.default_rng(seed)
    se = {k: bundle.sensitivity(k) for k in keys}
    sp = {k: bundle.specificity(k) for k in keys}
    slices = {k: slice(i * per_class, (i + 1) * per_class) for i, k in enumerate(keys)}
    a_sys, b_sys = System("B", [Member("B", None, {})]), System("A", [Member("A", None, {})])

    def calls(share):
        truth = rng.random(per_class * len(keys)) < share
        out = np.empty_like(truth)
        for k, sl in slices.items():
            u = rng.random(per_class)
            out[sl] = np.where(truth[sl], u < se[k], u >= sp[k])
        return out

    result = {}
    for d in deltas:
        hits = 0
        for r in range(repeats):
            xa, xb = calls(true_a + d), calls(true_a)
            rows = compare_checkpoint(a_sys, b_sys, Decisions(xa[None, None], None, "sim", slices),
                                      Decisions(xb[None, None], None, "sim", slices), keys, None, n_boot=500,
                                      seed=r, confidence=0.95)
            hits += [x for x in rows if x["class"] == "mean" and x["measure"] == "raw"][0]["p_value"] < 0.05
        result[f"{d:.2f}"] = hits / repeats
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "demo-work")
    ap.add_argument("--seeds", type=int, default=21, help="scoring seeds of the A/A part (pairs: seeds choose 2)")
    ap.add_argument("--repeats", type=int, default=30, help="scorings per level in the A/B part")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    import torch

    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle

    torch.set_num_threads(1)
    started, t0 = dt.datetime.now(), time.perf_counter()
    store = open_store(args.work / "store")
    p = store.protocol
    bundle = load_bundle(args.work / "classifiers" / "bundle.pt")
    print("A/A ...", file=sys.stderr)
    aa = a_a(args.work, args.seeds, bundle, store, p)
    print("A/B ...", file=sys.stderr)
    ab = a_b(bundle, store, p, args.repeats)
    true_a = ab["true_share_at_level"][f"{BASE_SHARE:.2f}"]
    print("simulating ...", file=sys.stderr)
    sim_demo = simulate(bundle, p, ab["test_sounds_per_class"], true_a, DIFFERENCES, 200)
    sim_paper = simulate(bundle, p, PAPER_TEST_PER_CLASS, true_a, DIFFERENCES, 200)
    result = {"check": "compare", "date": started.isoformat(timespec="seconds"),
              "machine": machine(),
              "code_version": code_version(), "protocol": p.ref(), "a_a": aa, "a_b": ab,
              "simulated_power_raw_mean": {"demo_size": {"per_class": ab["test_sounds_per_class"], **sim_demo},
                                           "paper_size": {"per_class": PAPER_TEST_PER_CLASS, **sim_paper},
                                           "true_share_a": true_a, "repeats": 200},
              "seconds": round(time.perf_counter() - t0, 1)}
    md = [f"# `compare`: false positives and power, {result['date']}", "",
          f"Protocol {p.name} {p.version}; the demo's classifiers; {result['seconds']} s.", "",
          f"## A/A: {aa['translator']} against itself under {aa['scoring_seeds']} scoring seeds "
          f"({aa['comparisons']} comparisons)", "",
          "| measure | tests | significant per test (p < 0.05) | pairs with a class significant after Holm |",
          "| --- | --- | --- | --- |"]
    for m in ("raw", "true"):
        v = aa[m]
        md.append(f"| {m} | {v['tests']} | {100 * v['significant_per_test']:.1f}% | "
                  f"{100 * v['pairs_with_any_significant_after_holm']:.1f}% |")
    md += ["", f"## A/B: degraded real frames at t = {BASE_SHARE} and t + d, {args.repeats} scorings each, "
               f"{ab['test_sounds_per_class']} test sounds per class", "",
           "| d | judge's measured difference | power, mean raw | power, mean truth | simulated, demo size | "
           f"simulated, paper size ({PAPER_TEST_PER_CLASS}/class) |", "| --- | --- | --- | --- | --- | --- |"]
    for d in DIFFERENCES:
        k = f"{d:.2f}"
        v = ab["by_difference"][k]
        md.append(f"| {100 * d:.0f} pp | {100 * v['true_difference_measured']:+.1f} pp | "
                  f"{100 * v['power_raw_mean']:.0f}% | {100 * v['power_true_mean']:.0f}% | "
                  f"{100 * sim_demo[k]:.0f}% | {100 * sim_paper[k]:.0f}% |")
    md += ["", "Simulated: independent images of true informativity "
               f"{100 * true_a:.1f}% and that + d, called by classifiers with the demo bundle's Se and Sp; "
               "200 studies per cell.", ""]
    write("check_compare", started, result, md, args.out)


if __name__ == "__main__":
    main()
