"""Small pure statistics shared by the classifiers' cards and the metrics (numpy only)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (None when n = 0)."""
    if n == 0:
        return None

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def binary_summary(labels: np.ndarray, predictions: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy with its Wilson interval, sensitivity, specificity and the confusion counts."""
    labels = np.asarray(labels).astype(int)
    predictions = np.asarray(predictions).astype(int)
    tp = int(((labels == 1) & (predictions == 1)).sum())
    fn = int(((labels == 1) & (predictions == 0)).sum())
    tn = int(((labels == 0) & (predictions == 0)).sum())
    fp = int(((labels == 0) & (predictions == 1)).sum())
    n = tp + fn + tn + fp
    return {
        "test_accuracy": (tp + tn) / n if n else None,
        "accuracy_ci": wilson_interval(tp + tn, n, confidence),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
    }


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes: `only_a` pairs where A says
    yes and B no, `only_b` the reverse. Under H0 the discordant pairs split as Binomial(b + c,
    1/2); p = min(1, 2 * P(X <= min(b, c))). No discordant pair: p = 1."""
    b, c = int(only_a), int(only_b)
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (n may be thousands)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    cdf = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * cdf)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))  # monotone: never below an earlier step
        adjusted[i] = running
    return adjusted


def bootstrap_p_value(replicates) -> float:
    """Two-sided p-value of "the difference is 0" from bootstrap replicates of a difference:
    twice the smaller share of replicates on either side of 0 (ties count to both sides), at
    most 1. Every replicate 0 (A against itself): 1."""
    d = np.asarray(replicates, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    return float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))


def minimum_detectable_difference(n: int, discordance: float, confidence: float = 0.95,
                                  power: float = 0.8) -> float | None:
    """The smallest paired difference in a share that a two-sided test at 1 - confidence finds with
    probability `power`, for n paired items of which a share `discordance` differ (normal
    approximation of McNemar's test: (z_a + z_b) * sqrt(discordance / n)). The discordance is
    floored at 1/n (a comparison with no discordant pair cannot say more than one item does)."""
    if n <= 0:
        return None

    psi = max(float(discordance), 1.0 / n)
    return float((_z(confidence) + NormalDist().inv_cdf(power)) * math.sqrt(psi / n))


def lang_reiczigel_interval(positives: int, n: int, se_hits: int, se_n: int, sp_hits: int, sp_n: int,
                            confidence: float = 0.95) -> tuple[float, float] | None:
    """Lang & Reiczigel (2014) interval for a prevalence corrected with a sensitivity and a
    specificity estimated on independent samples (`se_hits` of `se_n` positives called positive,
    `sp_hits` of `sp_n` negatives called negative): Agresti-Coull-style pseudo-counts (z^2 / 2
    positives and negatives added to the scored sample, one of each to the two validation
    samples), the delta-method standard error of the adjusted Rogan-Gladen estimate, a shift
    for its skew, clipped to [0, 1]. None when the adjusted Youden index is not positive."""
    if n <= 0 or se_n <= 0 or sp_n <= 0:
        return None
    z = _z(confidence)
    n_, p_ = n + z * z, (positives + z * z / 2) / (n + z * z)
    se_n_, se_ = se_n + 2, (se_hits + 1) / (se_n + 2)
    sp_n_, sp_ = sp_n + 2, (sp_hits + 1) / (sp_n + 2)
    youden = se_ + sp_ - 1
    if youden <= 0:
        return None
    prev = (p_ + sp_ - 1) / youden
    std = math.sqrt(p_ * (1 - p_) / n_ + se_ * (1 - se_) / se_n_ * prev ** 2
                    + sp_ * (1 - sp_) / sp_n_ * (1 - prev) ** 2) / youden
    shift = 2 * z * z * (prev * se_ * (1 - se_) / se_n_ - (1 - prev) * sp_ * (1 - sp_) / sp_n_)
    low, high = prev + shift - z * std, prev + shift + z * std
    return max(0.0, min(1.0, low)), max(0.0, min(1.0, high))
