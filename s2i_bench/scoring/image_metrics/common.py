"""What the image metrics share: features handed to torchmetrics as they are, cosine rankings
against negatives, and percentile intervals of resamples. Pure functions, arrays in."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
import torch.nn as nn


class PassThrough(nn.Module):
    """A torchmetrics feature 'network' that is the identity on precomputed (N, D) features, so no
    Inception or CLIP weights are ever fetched."""

    def __init__(self, d: int):
        super().__init__()
        self.num_features = d  # torchmetrics reads the feature size from here

    def forward(self, x):
        return x


def as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))


@contextlib.contextmanager
def quiet_buffers():
    """torchmetrics warns that a metric keeps every feature in memory: here they are a few
    thousand vectors of the extractor's width (32 for the domain extractor), so the warning
    would only be noise in every scoring run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        yield


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64), so that dot products are cosines."""
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


_unit_rows = unit_rows


def ranked_similarity(anchor, positive, negatives) -> np.ndarray:
    """(N,) for each anchor: the share of its negatives (N, M, D) less cosine-similar to it than
    its positive (N, D), ties counting half. 0.5 = chance, 1 = always nearest its own."""
    a, p, n = _unit_rows(anchor), _unit_rows(positive), _unit_rows(negatives)
    pos = (a * p).sum(-1)  # (N,)
    neg = np.einsum("nd,nmd->nm", a, n)  # (N, M)
    return (neg < pos[:, None]).mean(1) + 0.5 * (neg == pos[:, None]).mean(1)


def negatives_for(n: int, m: int, seed: int) -> np.ndarray:
    """(n, m) indices of m other items for each of n items (never itself), seeded."""
    if n < 2:
        raise ValueError("ranking needs at least two items")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n - 1, size=(n, m))
    return idx + (idx >= np.arange(n)[:, None])  # skip the item itself


def percentile_interval(values, confidence: float) -> list[float] | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    a = (1 - confidence) / 2
    return [float(np.quantile(values, a)), float(np.quantile(values, 1 - a))]


def bootstrap(fn, n: int, replicates: int, seed: int, confidence: float = 0.95) -> list[float] | None:
    """Percentile interval of fn(resampled indices) over `replicates` resamples of n items."""
    rng = np.random.default_rng(seed)
    return percentile_interval([fn(rng.integers(0, n, size=n)) for _ in range(replicates)], confidence)


def paired_interval(fn, inputs) -> list[float] | None:
    """Percentile interval of fn(real resample, generated resample) over the shared resamples."""
    return percentile_interval([fn(inputs.real[i], inputs.fake[j]) for i, j in inputs.pairs], inputs.confidence)
