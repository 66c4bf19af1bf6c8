"""The numbers of a leaderboard: each system's metrics with intervals, HEIM's win rates, and the
pairwise differences that stay significant after Holm's adjustment.

Metrics (`board_metrics`): informativity (raw, corrected, class-match; the judge's truth on
synthetic data; the audited share when records carry an audit) and every number of the metric
registry's image metrics, each with its direction (lower is better for FID and KID).

Intervals (95%): the raw share, the class-match rate and the judge's truth, means over the scored
classes, by a bootstrap over the test sounds stratified by class (each sound with its K images),
from the records' per-image decisions; the corrected and audited shares and the image metrics by
the interval their record carries.

Win rate (Lee et al. 2023, HEIM, whose win rate is HELM's, Liang et al. 2022): for each metric, a
system's share of the other systems with a value that it beats (a tie counts half), and the mean
of those shares over the metrics; a metric fewer than two systems have is skipped (HELM's
`compute_aggregate_row_win_rates`).

Significance: for each pair and metric, a p-value: paired where `compare` has a paired test and
the two records were scored on the same sounds (their decisions' `order`): the raw share, the
judge's truth and IIS, by `compare`'s paired bootstrap over the sounds, stratified by class;
otherwise unpaired, a normal approximation from the two records' intervals (se = width / 2z);
none where a metric has no interval. Holm's adjustment runs across the pairs within each metric;
a difference is significant when its adjusted p is under 0.05.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable

import numpy as np

from s2i_bench.report.image_report import metric_readers
from s2i_bench.scoring.paired import ALPHA, _sound_weights, compare_checkpoint
from s2i_bench.scoring.records import Record
from s2i_bench.scoring.systems import Member, System, decisions_at
from s2i_bench.seeding import item_seed
from s2i_bench.stats import holm

CONFIDENCE = 0.95
N_BOOT = 1000
DECISION_FIELDS = {"raw_share": "informative", "class_match_rate": "class_match", "true_share": "truth"}
PAIRED = {"raw_share": "raw", "true_share": "true", "iis": "iis"}  # compare_checkpoint's measures
# shown in percent (density is a ratio that may pass 1: a number)
SHARES = ("raw_share", "corrected_share", "class_match_rate", "true_share", "audited_share", "precision", "recall",
          "coverage")
AUDITED = "audited_share"


@dataclass(frozen=True)
class BoardMetric:
    key: str
    label: str
    lower_is_better: bool
    value: Callable[[Record], float | None]

    @property
    def is_share(self) -> bool:
        return self.key in SHARES


def board_metrics() -> list[BoardMetric]:
    """Every metric a board may show, in order (the registry's, the truth and the audit after
    the informativity means)."""
    readers = [BoardMetric(k, label, lower, get) for k, label, get, lower in metric_readers()]
    extra = [BoardMetric("true_share", "judge's truth (synthetic)", False, lambda r: r.mean("true_share")),
             BoardMetric(AUDITED, "audited share", False, lambda r: r.mean(AUDITED))]
    n_info = sum(1 for m in readers if m.key in ("raw_share", "corrected_share", "class_match_rate"))
    return readers[:n_info] + extra + readers[n_info:]


# -- intervals -----------------------------------------------------------------------------------------
def decision_replicates(record: Record, field: str, weights: dict[str, np.ndarray]) -> np.ndarray | None:
    """(B,) bootstrap replicates of the mean over the scored classes of a decision field's share:
    each class's share under its resampling counts `weights[class]` (B, n_class) of its sounds."""
    d = record.decisions()
    if d is None or d.get(field) is None:
        return None
    per_sound = d[field].astype(np.float64).mean(axis=0)  # (N,): each sound's share of its K images
    keys = _scored_classes(record)
    slices = record.class_slices()
    reps = []
    for k in keys:
        sl, w = slices[k], weights[k]
        n = sl.stop - sl.start
        if n == 0:
            return None
        reps.append(w @ per_sound[sl] / n)  # (B,)
    return np.mean(np.stack(reps), axis=0)


def _scored_classes(record: Record) -> list[str]:
    keys = record.mean_result().get("classes")
    return [k for k in keys if k in record.class_keys] if isinstance(keys, list) and keys else record.class_keys


def interval(record: Record, metric: BoardMetric, *, seed: int, n_boot: int = N_BOOT,
             confidence: float = CONFIDENCE) -> list[float] | None:
    """The metric's interval for one record (module docstring), or None."""
    if metric.key in DECISION_FIELDS:
        if record.has_decisions:
            rng = np.random.default_rng(seed)
            weights = _sound_weights(rng, record.class_slices(), record.class_keys, n_boot)
            reps = decision_replicates(record, DECISION_FIELDS[metric.key], weights)
            if reps is not None:
                a = (1 - confidence) / 2
                return [float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))]
        return None
    if metric.key == "corrected_share":
        return record.mean_ci("corrected_share")
    if metric.key == AUDITED:
        ci = getattr(record, "audited_ci", None)
        return ci() if callable(ci) else None
    ci = record.image_metric_ci(metric.key)
    return list(ci) if ci else None


# -- win rates -----------------------------------------------------------------------------------------
def win_rates(values: dict[str, dict[str, float | None]], metrics: list[BoardMetric]) -> dict[str, dict[str, Any]]:
    """{system: {metric key: its win rate or None, "mean": the mean over the metrics or None}}
    (HEIM / HELM; module docstring)."""
    out: dict[str, dict[str, Any]] = {s: {} for s in values}
    for m in metrics:
        have = {s: v[m.key] for s, v in values.items() if v.get(m.key) is not None}
        if len(have) < 2:
            continue
        for s, v in have.items():
            others = [w for t, w in have.items() if t != s]
            better = sum((v < w) if m.lower_is_better else (v > w) for w in others)
            ties = sum(v == w for w in others)
            out[s][m.key] = (better + 0.5 * ties) / len(others)
    for s, rates in out.items():
        shown = [v for v in rates.values() if v is not None]
        rates["mean"] = float(np.mean(shown)) if shown else None
    return out


def head_to_head(values: dict[str, dict[str, float | None]], metrics: list[BoardMetric], a: str, b: str):
    """(A's share of the metrics both have on which A beats B, ties half; how many) or (None, 0)."""
    both = [m for m in metrics if values[a].get(m.key) is not None and values[b].get(m.key) is not None]
    if not both:
        return None, 0
    score = 0.0
    for m in both:
        va, vb = values[a][m.key], values[b][m.key]
        score += 0.5 if va == vb else float((va < vb) if m.lower_is_better else (va > vb))
    return score / len(both), len(both)


# -- pairwise significance -----------------------------------------------------------------------------
def unpaired_p(va: float, ca, vb: float, cb, confidence: float = CONFIDENCE) -> float | None:
    """Two-sided p of "A and B are equal" from two independent estimates and their intervals
    (normal approximation: se = interval width / 2z); None without both intervals."""
    if not ca or not cb or None in (ca[0], ca[1], cb[0], cb[1]):
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    se = float(np.hypot((ca[1] - ca[0]) / (2 * z), (cb[1] - cb[0]) / (2 * z)))
    d = abs(va - vb)
    if se == 0:
        return 1.0 if d == 0 else 0.0
    return float(2 * (1 - NormalDist().cdf(d / se)))


def _same_sounds(ra: Record, rb: Record) -> bool:
    if not (ra.has_decisions and rb.has_decisions) or ra.class_keys != rb.class_keys:
        return False
    da, db = ra.decisions(), rb.decisions()
    return da["order"] == db["order"] and da["shape"][1] == db["shape"][1] and \
        all(ra.n_sounds(k) == rb.n_sounds(k) for k in ra.class_keys)


def paired_p_values(a: str, ra: Record, b: str, rb: Record, *, seed: int, n_boot: int = N_BOOT) -> dict[str, float]:
    """{compare's measure ("raw", "true", "iis"): p} of the mean over classes, by `compare`'s
    paired bootstrap over the sounds (stratified by class); {} when the records were not scored
    on the same sounds."""
    if not _same_sounds(ra, rb):
        return {}
    keys = ra.class_keys
    sa, sb = System(a, [Member(a, None, {}, [ra])]), System(b, [Member(b, None, {}, [rb])])
    da, db = decisions_at(sa, ra.series_key, ra.epoch, keys), decisions_at(sb, rb.series_key, rb.epoch, keys)
    rows = compare_checkpoint(sa, sb, da, db, keys, None, n_boot=n_boot, seed=seed, confidence=CONFIDENCE)
    return {r["measure"]: float(r["p_value"]) for r in rows if r["class"] == "mean"}


def pairwise(records: dict[str, Record], values: dict[str, dict[str, Any]], cis: dict[str, dict[str, Any]],
             metrics: list[BoardMetric], *, seed: int, n_boot: int = N_BOOT) -> list[dict[str, Any]]:
    """Every pair of systems on every metric both have: the difference A - B, which is better,
    the p-value and its test, Holm's adjusted p (across the pairs, within each metric) and
    whether it is significant."""
    rows = []
    for a, b in itertools.combinations(records, 2):
        paired = paired_p_values(a, records[a], b, records[b], n_boot=n_boot,
                                 seed=item_seed(seed, f"leaderboard/pair/{a}|{b}"))
        for m in metrics:
            va, vb = values[a].get(m.key), values[b].get(m.key)
            if va is None or vb is None:
                continue
            p, test = None, "no test: no interval"
            if m.key in PAIRED and PAIRED[m.key] in paired:
                p, test = paired[PAIRED[m.key]], "paired bootstrap over the same sounds (stratified by class)"
            else:
                p = unpaired_p(va, cis[a].get(m.key), vb, cis[b].get(m.key))
                if p is not None:
                    test = "unpaired: normal approximation from the two intervals"
            better = None if va == vb else (a if (va < vb) == m.lower_is_better else b)
            rows.append({"a": a, "b": b, "metric": m.key, "label": m.label, "difference": va - vb, "better": better,
                         "p_value": p, "test": test})
    for m in metrics:
        idx = [i for i, r in enumerate(rows) if r["metric"] == m.key and r["p_value"] is not None]
        for i, p in zip(idx, holm([rows[i]["p_value"] for i in idx])):
            rows[i]["p_holm"] = float(p)
            rows[i]["significant"] = bool(p < ALPHA)
    for r in rows:
        r.setdefault("p_holm", None)
        r.setdefault("significant", False)
    return rows
