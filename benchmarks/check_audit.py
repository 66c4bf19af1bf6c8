"""Is the audited interval valid? Coverage, width and bias of the audited share (prediction-powered
inference, `s2i_bench.scoring.ppi`) on the synthetic world, the judge's per-image truth standing in
for people's labels; the A/A false-positive rate and the power of the paired audited difference.

The demo's checkpoints (early, middle and late epochs of every run) and the four reference
translators are scored again with K images per sound into this check's own folder (never the runs'
records). For each record, class, number of labels n and audit draw (a "cell"), n of the class's
K * N images are drawn as an audit draws them (without replacement, by the plan's order, so
records of one plan share positions), labelled with the judge's truth, and the audited interval is
checked against the truth on that record's own images (the mean of `truth` over the K * N).
Compared: the classifier's decision or probability as f, with and without the small-sample guard,
the labels alone (lam = 0) and the Rogan-Gladen interval the record carries.

    .venv/bin/python -m benchmarks.check_audit [--work demo-work] [--samples 10] [--seed 0] [--quick]

Writes results/benchmarks/check_audit-<date>.json and .md. The same seed and records give the
same JSON bytes apart from its `timing` block.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.results import machine, write
from s2i_bench.fileio import file_sha256, progress
from s2i_bench.provenance import code_version
from s2i_bench.scoring import ppi
from s2i_bench.seeding import item_seed
from s2i_bench.stats import wilson_interval

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

NS = (10, 25, 50, 100)  # labels per class
NOISE = 0.1  # the noisy judge: each label flipped with this probability
TARGET = (0.93, 0.97)  # acceptance: overall coverage of the nominal 95% interval
FLOOR = 0.90  # acceptance: no cell type under this for n >= 25
MAX_FPR = 0.05
EARLY, MIDDLE_FROM = 0, 30  # epochs: the first; "late" from 30 on, "middle" below
POWER_BINS = {"d ~ 10 points": (0.05, 0.15), "d ~ 20 points": (0.15, 0.25)}
METHODS = ("ppi/probability", "ppi/probability/no-guard", "ppi/decision", "ppi/decision/no-guard",
           "labels-only", "labels-only/no-guard", "rogan-gladen (record)")
DEFAULT = "ppi/probability"  # what `label-audit estimate` uses on these records (score "auto")


# -- the core: pure arithmetic on arrays (tests/scoring/test_check_audit.py) -----------------------------
def class_positions(order: str, key: str, size: int, n: int, draw: int, seed: int) -> np.ndarray:
    """n of a class's `size` images (indices into its flat (K * N_class,) arrays) drawn without
    replacement, sorted: the same for every record of the plan `order` (so two records of one plan
    are audited at the same positions, as `scoring.audit.draw` does), one draw per index."""
    rng = np.random.default_rng(item_seed(seed, f"check-audit/{order}/{key}/{n}", draw))
    return np.sort(rng.choice(size, size=min(n, size), replace=False))


def audit_draws(labels: np.ndarray, f: np.ndarray | None, positions: list[np.ndarray], target: float, *,
                lam: float | None = None, guard: bool = True, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """The audited interval of one class over many audit draws: labels (M,) in [0, 1] on all M
    images, the classifier's output f (M,) (None: the labels alone), positions (one (n,) array per
    draw). Per draw: whether [lo, hi] holds `target`, its width, and estimate - target."""
    covered, width, error = [], [], []
    for pos in positions:
        fl, fa = (f[pos], f) if f is not None else (np.zeros(pos.size), np.zeros(labels.size))
        e = ppi.finite_population(labels[pos], fl, fa, lam=0.0 if f is None else lam, guard=guard, alpha=alpha)
        covered.append(e.ci[0] - 1e-12 <= target <= e.ci[1] + 1e-12)
        width.append(e.ci[1] - e.ci[0])
        error.append(e.estimate - target)
    return {"covered": np.array(covered, bool), "width": np.array(width), "error": np.array(error)}


def paired_draws(y_a: np.ndarray, y_b: np.ndarray, f_a: np.ndarray, f_b: np.ndarray,
                 positions: list[np.ndarray], units: int) -> tuple[np.ndarray, np.ndarray]:
    """The paired audited difference A - B of one class over the audit draws (same positions for
    both): (estimates, standard errors), each (draws,)."""
    est, se = [], []
    for pos in positions:
        d = ppi.paired_difference(y_a[pos], y_b[pos], f_a[pos], f_b[pos], f_a, f_b, units=units)
        est.append(d.estimate.estimate)
        se.append(d.estimate.se)
    return np.array(est), np.array(se)


def rejections(est: np.ndarray, se: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Two-sided normal test of d = 0 over the last axis of classes: est, se (draws, C) -> (draws,)
    bool. The mean over classes (independent audits): its se is sqrt(sum se^2) / C."""
    mean = est.mean(axis=-1)
    s = np.sqrt((se ** 2).sum(axis=-1)) / est.shape[-1]
    return np.abs(mean) > ppi.z_value(alpha) * s


def flip(labels: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """A noisy annotator: each 0/1 label flipped with probability p."""
    return np.where(rng.random(labels.shape) < p, 1.0 - labels, labels)


def rate(hits) -> dict:
    """A share of hits with its Wilson 95% interval."""
    hits = np.asarray(hits, bool)
    k, n = int(hits.sum()), int(hits.size)
    return {"rate": k / n if n else None, "ci": list(wilson_interval(k, n)) if n else None, "n": n}


# -- which records: chosen from the demo's own series, scored again with K images per sound ------------
def _runs(work: Path) -> list[Path]:
    return sorted(p.parent for p in (work / "runs").glob("*/*/checkpoints"))


def _middle_epoch(run: Path, last: int, split: str) -> int:
    """The epoch whose (K = 1) truth in the run's own series is nearest 15 points under the last
    epoch's: the alternative for the power (a d of ~10-20 points); 2/3 of the way without a series."""
    from s2i_bench.scoring import records, series

    path = run / "metric-informativity.jsonl"
    by = series.last_per_epoch(r for r in records.read(path) if r.split == split) if path.is_file() else {}
    if last not in by:
        return (2 * last) // 3
    goal = by[last].mean_all_classes("true_share") - 0.15
    return min((e for e in by if 1 <= e < last), key=lambda e: (abs(by[e].mean_all_classes("true_share") - goal), e))


def choose_jobs(work: Path, split: str, seed: int, quick: bool) -> list[dict]:
    """Every record to score: per run the last epoch (seed and seed + 1: the A/A pair), a middle
    epoch (the power's alternative); the first epoch of the seed-0 runs; the reference translators."""
    from s2i_bench.runs import RunFolder, checkpoint_epoch
    from s2i_bench.translators.reference import NAMES, PREFIX

    runs = _runs(work)[:1] if quick else _runs(work)
    jobs = []
    for run in runs:
        ckpts = {checkpoint_epoch(p): p for p in RunFolder(run).checkpoints()}
        last = max(ckpts)
        name = f"{run.parent.name}-{run.name}"
        chosen = [("late" if last >= MIDDLE_FROM else "middle", last, seed), ("late", last, seed + 1)]
        mid = _middle_epoch(run, last, split)
        chosen.append(("late" if mid >= MIDDLE_FROM else "middle", mid, seed))
        if run.name.endswith("-0") or quick:
            chosen.append(("early", min(ckpts), seed))
        jobs += [{"name": f"{name}-e{e:03d}", "kind": k, "spec": str(ckpts[e]), "run": f"{run.parent.name}/{run.name}",
                  "epoch": int(e), "seed": int(s)} for k, e, s in chosen if e in ckpts]
    refs = ("real-frame", "random-frame") if quick else NAMES
    jobs += [{"name": f"reference-{r}", "kind": "reference", "spec": PREFIX + r, "run": "references", "epoch": None,
              "seed": int(seed)} for r in refs]
    return jobs


def score_jobs(jobs: list[dict], work: Path, scratch: Path, samples: int) -> list[tuple[dict, object]]:
    """Each job's record with `samples` images per sound, in `scratch` (one file each, kept: a rerun
    scores only what is missing or was scored with other classifiers, store or K)."""
    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring import records
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators import load_translator
    from s2i_bench.translators.reference import is_reference, load_reference

    store = open_store(work / "store")
    p = store.protocol
    bundle = load_bundle(work / "classifiers" / "bundle.pt")
    bundle_sha = file_sha256(Path(bundle.path))
    scratch.mkdir(parents=True, exist_ok=True)
    out = []
    for job in progress(jobs, desc="check_audit: score", unit="record"):
        path = scratch / f"{job['name']}-seed{job['seed']}-k{samples}.jsonl"
        old = records.read(path) if path.is_file() else []
        if len(old) == 1 and (old[0].samples, old[0].classifiers_sha256, old[0].store_hash) == \
                (samples, bundle_sha, store.store_hash):
            out.append((job, old[0]))
            continue
        path.unlink(missing_ok=True)  # our own file, stale
        spec = job["spec"]
        t = load_reference(spec, store) if is_reference(spec) else load_translator(Path(spec))
        r = score_translator(t, store, bundle, protocol=p, split=p.scoring.split, seed=job["seed"], samples=samples,
                             batch_size=p.scoring.batch_size, run=job["run"], epoch=job["epoch"])
        records.append(path, r)
        out.append((job, records.read(path)[0]))
        print(f"scored {job['name']} seed {job['seed']}: truth {r.mean_all_classes('true_share'):.3f}",
              file=sys.stderr)
    return out


# -- the measurements ----------------------------------------------------------------------------------------
def class_arrays(record) -> dict[str, dict]:
    """Per class, the flat (K * N_class,) arrays of a record: the judge's truth, the classifier's
    decision and probability (None when not kept), and the Rogan-Gladen interval it carries."""
    d = record.decisions()
    out = {}
    for key, sl in record.class_slices().items():
        if record.share(key, "raw_share") is None or d["truth"] is None:
            continue
        prob = None if d.get("probability") is None else d["probability"][:, sl].reshape(-1).astype(np.float64)
        out[key] = {"truth": d["truth"][:, sl].reshape(-1).astype(np.float64),
                    "decision": d["informative"][:, sl].reshape(-1).astype(np.float64), "probability": prob,
                    "corrected_ci": record.cls(key).get("corrected_ci"), "units": record.n_sounds(key),
                    "corrected_share": record.share(key, "corrected_share"),
                    "order": d["order"]}
    return out


def _methods(c: dict, positions: list[np.ndarray], target: float) -> dict[str, dict]:
    """Every interval of METHODS over the draws of one (record, class, n)."""
    y = c["truth"]
    out = {}
    for score in ("probability", "decision"):
        if c[score] is not None:
            out[f"ppi/{score}"] = audit_draws(y, c[score], positions, target)
            out[f"ppi/{score}/no-guard"] = audit_draws(y, c[score], positions, target, guard=False)
    out["labels-only"] = audit_draws(y, None, positions, target)
    out["labels-only/no-guard"] = audit_draws(y, None, positions, target, guard=False)
    rg = c["corrected_ci"]
    if rg is not None:
        hit = rg[0] - 1e-12 <= target <= rg[1] + 1e-12
        out["rogan-gladen (record)"] = {"covered": np.full(len(positions), hit),
                                        "width": np.full(len(positions), rg[1] - rg[0]),
                                        "error": np.full(len(positions), np.nan if c["corrected_share"] is None
                                                         else c["corrected_share"] - target)}
    return out


def coverage(scored: list, ns, draws: int, seed: int) -> dict:
    """{method: {n: {"covered", "width", "error": (cells,), "kind", "truth_type": (cells,) str}}}
    over every (record, class, audit draw) cell."""
    acc: dict = {}
    for job, record in progress(scored, desc="check_audit: coverage", unit="record"):
        for key, c in class_arrays(record).items():
            target = float(c["truth"].mean())
            ttype = "truth in (0, 1)" if 0.0 < target < 1.0 else "truth at 0 or 1"
            for n in ns:
                positions = [class_positions(c["order"], key, c["truth"].size, n, i, seed) for i in range(draws)]
                for m, res in _methods(c, positions, target).items():
                    cell = acc.setdefault(m, {}).setdefault(n, {"covered": [], "width": [], "error": [], "kind": [],
                                                                 "truth_type": []})
                    for f in ("covered", "width", "error"):
                        cell[f].append(res[f])
                    cell["kind"].append(np.full(draws, job["kind"]))
                    cell["truth_type"].append(np.full(draws, ttype))
    return {m: {n: {f: np.concatenate(v) for f, v in by_n.items()} for n, by_n in by.items()} for m, by in acc.items()}


def summarise_coverage(cov: dict) -> dict:
    """Coverage overall and per cell type, mean width and bias, per method and n."""
    out = {}
    for m, by_n in cov.items():
        out[m] = {}
        for n, c in by_n.items():
            types = {str(t): c["covered"][c["kind"] == t] for t in np.unique(c["kind"])}
            types |= {str(t): c["covered"][c["truth_type"] == t] for t in np.unique(c["truth_type"])}
            err = c["error"][np.isfinite(c["error"])]
            out[m][str(n)] = {"cells": int(c["covered"].size), "coverage": rate(c["covered"]),
                              "by_cell_type": {t: rate(v) for t, v in sorted(types.items())},
                              "mean_width": float(c["width"].mean()),
                              "bias": float(err.mean()) if err.size else None,
                              "rmse": float(np.sqrt((err ** 2).mean())) if err.size else None}
    return out


def noisy_judge(scored: list, ns, draws: int, seed: int, p: float = NOISE) -> dict:
    """Labels from a judge that flips each with probability p (seeded, every image of the class
    flipped so the annotators' truth is known): coverage of the annotators' truth (the mean of the
    noisy labels over all images) and of the judge's truth, f = the default score."""
    out = {}
    for n in ns:
        hit_noisy, hit_judge, err = [], [], []
        for job, record in scored:
            for key, c in class_arrays(record).items():
                f = c["probability"] if c["probability"] is not None else c["decision"]
                for i in range(draws):
                    rng = np.random.default_rng(item_seed(seed, f"check-audit/noise/{job['name']}/{key}/{n}", i))
                    y = flip(c["truth"], p, rng)
                    pos = class_positions(c["order"], key, y.size, n, i, seed)
                    e = ppi.finite_population(y[pos], f[pos], f)
                    hit_noisy.append(e.ci[0] - 1e-12 <= y.mean() <= e.ci[1] + 1e-12)
                    hit_judge.append(e.ci[0] - 1e-12 <= c["truth"].mean() <= e.ci[1] + 1e-12)
                    err.append(e.estimate - c["truth"].mean())
        out[str(n)] = {"covers_annotators_truth": rate(hit_noisy), "covers_judges_truth": rate(hit_judge),
                       "bias_against_judge": float(np.mean(err))}
    return out


def paired(pairs: list[tuple], ns, draws: int, seed: int) -> list[dict]:
    """Per pair (A, B) of records of one plan and n: the mean-over-classes test of d = 0 at 5% over
    the audit draws (rejected, and rejected with the sign of the true d), the true d (record
    truths, A - B), and the per-class tests."""
    out = []
    for a, b in pairs:
        ca, cb = class_arrays(a), class_arrays(b)
        keys = [k for k in ca if k in cb]
        true_d = float(np.mean([ca[k]["truth"].mean() - cb[k]["truth"].mean() for k in keys]))
        for n in ns:
            est, se = np.zeros((draws, len(keys))), np.zeros((draws, len(keys)))
            for j, k in enumerate(keys):
                fa = ca[k]["probability"] if ca[k]["probability"] is not None else ca[k]["decision"]
                fb = cb[k]["probability"] if cb[k]["probability"] is not None else cb[k]["decision"]
                pos = [class_positions(ca[k]["order"], k, fa.size, n, i, seed) for i in range(draws)]
                est[:, j], se[:, j] = paired_draws(ca[k]["truth"], cb[k]["truth"], fa, fb, pos, ca[k]["units"])
            rejected = rejections(est, se)
            right_sign = rejected & (np.sign(est.mean(axis=1)) == np.sign(true_d))
            per_class = np.abs(est) > ppi.z_value(0.05) * se
            out.append({"n": n, "true_d": true_d, "rejected": rejected, "right_sign": right_sign,
                        "per_class_rejected": per_class.reshape(-1)})
    return out


def aa_pairs(scored: list, seed: int) -> list[tuple]:
    """The same checkpoint scored with seeds `seed` and `seed + 1`: the A/A pairs."""
    by = {(j["spec"], j["seed"]): r for j, r in scored}
    return [(r, by[(j["spec"], seed + 1)]) for j, r in scored if j["seed"] == seed and (j["spec"], seed + 1) in by]


def power_pairs(scored: list, seed: int) -> list[tuple]:
    """Every pair of checkpoints scored with `seed` (one plan) beyond the early epochs, the one with
    the higher truth as A: their truths differ by what training changed."""
    recs = [r for j, r in scored if j["seed"] == seed and j["kind"] in ("middle", "late")]
    recs.sort(key=lambda r: -r.mean_all_classes("true_share"))
    orders = [r.decisions()["order"] for r in recs]
    return [(a, b) for i, a in enumerate(recs) for j, b in enumerate(recs) if j > i and orders[i] == orders[j]]


def summarise_aa(rows: list[dict]) -> dict:
    out = {}
    for n in sorted({r["n"] for r in rows}):
        mine = [r for r in rows if r["n"] == n]
        out[str(n)] = {"pairs": len(mine), "fpr_mean_over_classes": rate(np.concatenate([r["rejected"] for r in mine])),
                       "fpr_per_class": rate(np.concatenate([r["per_class_rejected"] for r in mine])),
                       "true_d_of_the_records": [round(r["true_d"], 4) for r in mine]}
    return out


def summarise_power(rows: list[dict]) -> dict:
    out = {}
    for label, (lo, hi) in POWER_BINS.items():
        out[label] = {}
        for n in sorted({r["n"] for r in rows}):
            mine = [r for r in rows if r["n"] == n and lo <= abs(r["true_d"]) < hi]
            if not mine:
                continue
            out[label][str(n)] = {"pairs": len(mine), "mean_true_d": float(np.mean([r["true_d"] for r in mine])),
                                  "power": rate(np.concatenate([r["rejected"] for r in mine])),
                                  "power_right_sign": rate(np.concatenate([r["right_sign"] for r in mine]))}
    return out


# -- verdicts and the report ----------------------------------------------------------------------------------
def acceptance(cov: dict, aa: dict) -> dict:
    """The targets, each with whether it is met: the default interval's overall coverage in
    TARGET and no cell type under FLOOR for every n >= 25; the A/A FPR (mean over classes) <= 5%."""
    used = DEFAULT if DEFAULT in cov else "ppi/decision"  # records without probabilities: the audit's "auto"
    d = cov[used]
    big = [n for n in d if int(n) >= 25]
    overall = {n: d[n]["coverage"]["rate"] for n in d}
    worst = {n: min(d[n]["by_cell_type"].items(), key=lambda tv: tv[1]["rate"]) for n in d}
    fpr = {n: v["fpr_mean_over_classes"]["rate"] for n, v in aa.items()}
    return {"estimator": used,
            "coverage_overall_in_93_97": {"per_n": overall,
                                          "met_for_n_ge_25": all(TARGET[0] <= overall[n] <= TARGET[1] for n in big),
                                          "met_for_every_n": all(TARGET[0] <= v <= TARGET[1]
                                                                 for v in overall.values())},
            "no_cell_type_under_90": {"worst_per_n": {n: {"cell_type": t, "coverage": v["rate"]}
                                                      for n, (t, v) in worst.items()},
                                      "met_for_n_ge_25": all(worst[n][1]["rate"] >= FLOOR for n in big)},
            "aa_fpr_at_most_5": {"per_n": fpr, "met": all(v <= MAX_FPR for v in fpr.values())}}


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def markdown(result: dict) -> list[str]:
    cov, acc = result["coverage"], result["acceptance"]
    kinds = ", ".join(f"{v} {k}" for k, v in result["data"]["by_kind"].items())
    md = ["# The audited interval's validity on the synthetic world (check_audit)", "",
          f"`{result['command']}`; seed {result['seed']}; K = {result['samples']} images per sound; "
          f"{result['data']['records']} records ({kinds}); "
          f"{result['draws']['coverage']} audit draws per (record, class, n); code {result['code_version']}.", "",
          "| n | method | cells | coverage [95% CI] | early | middle | late | reference | truth in (0,1) | "
          "truth at 0/1 | mean width | bias |", "|" + " --- |" * 12]
    for n in result["ns"]:
        for m in METHODS:
            v = cov.get(m, {}).get(str(n))
            if v is None:
                continue
            t = v["by_cell_type"]
            c = v["coverage"]
            md.append(f"| {n} | {m} | {v['cells']} | {_pct(c['rate'])} [{_pct(c['ci'][0])}, {_pct(c['ci'][1])}] | "
                      + " | ".join(_pct(t.get(k, {}).get("rate")) for k in ("early", "middle", "late", "reference",
                                                                            "truth in (0, 1)", "truth at 0 or 1"))
                      + f" | {100 * v['mean_width']:.1f} pp | "
                      + ("–" if v["bias"] is None else f"{100 * v['bias']:+.2f} pp") + " |")
    md += ["", "## A/A and power of the paired audited difference (mean over classes, 5%)", "",
           "| n | A/A FPR (mean) | A/A FPR (per class) | " + " | ".join(f"power, {k}" for k in POWER_BINS) + " |",
           "| --- | --- | --- | " + " | ".join("---" for _ in POWER_BINS) + " |"]
    for n in result["ns"]:
        a = result["aa"].get(str(n), {"fpr_mean_over_classes": {"rate": None, "n": 0}, "fpr_per_class": {"rate": None}})
        pw = [result["power"][k].get(str(n)) for k in POWER_BINS]
        md.append(f"| {n} | {_pct(a['fpr_mean_over_classes']['rate'])} ({a['fpr_mean_over_classes']['n']} tests) | "
                  f"{_pct(a['fpr_per_class']['rate'])} | "
                  + " | ".join("–" if p is None else f"{_pct(p['power']['rate'])} ({p['pairs']} pairs, mean d "
                               f"{100 * p['mean_true_d']:.1f} pp)" for p in pw) + " |")
    md += ["", f"## A noisy judge (each label flipped with probability {NOISE})", "",
           "| n | covers the annotators' truth | covers the judge's truth | bias against the judge |",
           "| --- | --- | --- | --- |"]
    for n in result["ns"]:
        v = result["noisy_judge"][str(n)]
        md.append(f"| {n} | {_pct(v['covers_annotators_truth']['rate'])} | {_pct(v['covers_judges_truth']['rate'])} | "
                  f"{100 * v['bias_against_judge']:+.2f} pp |")
    c93, c90, fpr = acc["coverage_overall_in_93_97"], acc["no_cell_type_under_90"], acc["aa_fpr_at_most_5"]
    worst = ", ".join(f"n={n}: {w['cell_type']} {_pct(w['coverage'])}" for n, w in c90["worst_per_n"].items())
    md += ["", f"## Acceptance ({acc['estimator']})", "",
           f"- overall coverage in [93%, 97%] for every n >= 25: {'met' if c93['met_for_n_ge_25'] else 'NOT met'} "
           f"({', '.join(f'n={n}: {_pct(v)}' for n, v in c93['per_n'].items())})",
           f"- no cell type under 90% for every n >= 25: {'met' if c90['met_for_n_ge_25'] else 'NOT met'} "
           f"(worst: {worst})",
           f"- A/A FPR <= 5%: {'met' if fpr['met'] else 'NOT met'} "
           f"({', '.join(f'n={n}: {_pct(v)}' for n, v in fpr['per_n'].items())})", ""]
    return md


def _data(work: Path, scored: list) -> dict:
    from s2i_bench.data.store import open_store

    kinds: dict[str, int] = {}
    for j, _ in scored:
        kinds[j["kind"]] = kinds.get(j["kind"], 0) + 1
    return {"work": str(work), "store_hash": open_store(work / "store").store_hash,
            "classifiers_sha256": file_sha256(work / "classifiers" / "bundle.pt"), "records": len(scored),
            "by_kind": kinds,
            "scored": [{"name": j["name"], "kind": j["kind"], "run": j["run"], "epoch": j["epoch"], "seed": j["seed"],
                        "checksum": r.data.get("checksum"), "true_share": r.mean_all_classes("true_share"),
                        "has_probability": r.decisions().get("probability") is not None} for j, r in scored]}


def measure(scored: list, *, seed: int, ns, draws: dict) -> dict:
    """Every measurement of the check on scored records (no scoring here)."""
    cov = summarise_coverage(coverage(scored, ns, draws["coverage"], seed))
    aa = summarise_aa(paired(aa_pairs(scored, seed), ns, draws["aa"], seed))
    power = summarise_power(paired(power_pairs(scored, seed), ns, draws["power"], seed))
    return {"coverage": cov, "aa": aa, "power": power,
            "noisy_judge": noisy_judge(scored, ns, draws["noise"], seed),
            "acceptance": acceptance(cov, aa)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "demo-work", help="the demo's folder: store, classifiers, runs")
    ap.add_argument("--scratch", type=Path, default=None, help="the K-image records (default WORK/check-audit)")
    ap.add_argument("--samples", type=int, default=10, help="images per sound (K)")
    ap.add_argument("--seed", type=int, default=0, help="scoring seed (A/A: also seed + 1) and audit draws")
    ap.add_argument("--quick", action="store_true", help="one run, two references, K = 2, fewer draws (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    started, t0 = dt.datetime.now(), time.perf_counter()
    if not (args.work / "store").is_dir() or not (args.work / "classifiers" / "bundle.pt").is_file():
        sys.exit(f"error: {args.work}: no store/ or classifiers/bundle.pt (run `make demo` first)")
    samples = 2 if args.quick else args.samples
    draws = {"coverage": 8, "aa": 40, "power": 10, "noise": 8} if args.quick else \
        {"coverage": 40, "aa": 200, "power": 40, "noise": 40}
    ns = (10, 25) if args.quick else NS
    from s2i_bench.data.store import open_store

    p = open_store(args.work / "store").protocol
    jobs = choose_jobs(args.work, p.scoring.split, args.seed, args.quick)
    scored = score_jobs(jobs, args.work, args.scratch or args.work / "check-audit", samples)
    t1 = time.perf_counter()
    result = {"check": "audit", "command": "python -m benchmarks.check_audit " + " ".join(sys.argv[1:]),
              "seed": args.seed, "samples": samples, "ns": list(ns), "draws": draws, "noise": NOISE,
              "nominal": 0.95, "code_version": code_version(), "protocol": p.ref(), "machine": machine(),
              "estimator": ppi.ESTIMATOR, "data": _data(args.work, scored),
              "cells_per_n": None,
              "how": {"truth": "the judge's per-image truth stands in for the labels; the target is its mean over "
                               "the record's own K * N_class images",
                      "a/a": "the last checkpoint of each run scored with seeds s and s + 1 (same plan, same audited "
                             "positions); H0 d = 0 tested on the mean over classes and per class",
                      "power": "every pair of middle/late checkpoints scored with seed s (one plan), binned by the "
                               "difference of their record truths (mean over classes)",
                      "noisy_judge": f"every image's label flipped with probability {NOISE} (seeded per draw)"},
              **measure(scored, seed=args.seed, ns=ns, draws=draws)}
    result["cells_per_n"] = result["coverage"][result["acceptance"]["estimator"]][str(ns[0])]["cells"]
    result["timing"] = {"date": started.isoformat(timespec="seconds"), "scoring_seconds": round(t1 - t0, 1),
                        "measuring_seconds": round(time.perf_counter() - t1, 1),
                        "records_scoring_seconds": round(sum(r.seconds or 0.0 for _, r in scored), 1)}
    write("check_audit", started, result, markdown(result), args.out)


if __name__ == "__main__":
    main()
