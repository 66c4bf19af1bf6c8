"""PRDC: precision, recall, density and coverage of Naeem et al. (2020), with k-nearest-neighbour
balls around the real (and, for recall, the generated) features."""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, Value, register

K = 5  # Naeem et al.'s choice


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d2 = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of every point to its k-th nearest neighbour in the same set (itself excluded)."""
    d = _pairwise(x, x)
    return np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself (distance 0)


def prdc(real, fake, k: int = K) -> dict[str, float]:
    """Precision, recall, density and coverage with k nearest neighbours."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"PRDC with k = {k} needs more than {k} real and generated images")
    real_r, fake_r = _kth_radius(real, k), _kth_radius(fake, k)
    d = _pairwise(real, fake)  # (R, F)
    inside_real = d <= real_r[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d <= fake_r[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) <= real_r).mean()),
    }


def compute(inputs: MetricInputs) -> dict:
    values = prdc(inputs.real, inputs.fake, K)
    # a quarter of the resamples (at least 10): each costs four pairwise distance matrices
    boots = [prdc(inputs.real[i], inputs.fake[j], K) for i, j in inputs.pairs[: max(10, inputs.replicates // 4)]]
    a = (1 - inputs.confidence) / 2
    out: dict = {m: {"value": v, "ci": [float(np.quantile([b[m] for b in boots], a)),
                                        float(np.quantile([b[m] for b in boots], 1 - a))]}
                 for m, v in values.items()}
    out["k"] = K
    return out


METRIC = register(Metric("prdc", "PRDC", False, frozenset({"features"}), compute,
                         values=(Value("precision", "precision"), Value("recall", "recall"),
                                 Value("density", "density"), Value("coverage", "coverage")),
                         description="precision, recall, density, coverage (k = 5 nearest neighbours)", order=30,
                         params={"k": K, "ball": "<="}))
