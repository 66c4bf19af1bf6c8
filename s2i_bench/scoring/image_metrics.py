"""The image metrics the field reports, on features (pure functions: arrays in, numbers out).

    fid(real, fake)                  Fréchet distance of the two feature Gaussians (torchmetrics)
    kid(real, fake, subsets, size)   unbiased squared MMD, cubic polynomial kernel (torchmetrics)
    prdc(real, fake, k)              precision, recall, density, coverage (Naeem et al. 2020)
    iis(fake, own_real, others)      image-image similarity, ranked against other real frames
    ais(audio, fake, negatives)      audio-image similarity, ranked against other sounds

Features are (N, D) float arrays from one extractor (`scoring.features`). FID and KID go through
torchmetrics' own classes with the features handed in as they are (a pass-through feature
module), so no Inception or CLIP weights are ever fetched. PRDC follows the definitions of Naeem
et al. (k-nearest-neighbour balls around the real features), tested against the `prdc` package.
IIS and AIS are rankings in [0, 1] (0.5 = chance): for each generated image, the share of
negatives less similar (cosine) than its own positive (ties count half).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np

# Below this many images FID's upward bias (about 36.5 / N in the 32-d domain features) exceeds
# 1% of the FID between two classes' real frames (measured on the synthetic world,
# benchmarks/check_image_metrics.py, 2026-12-02): a record then warns and points to KID.
FID_STABLE_IMAGES = 190


def _pass_through(num_features: int):
    """A torchmetrics feature 'network' that is the identity on precomputed (N, D) features."""
    import torch.nn as nn

    class PassThrough(nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.num_features = d  # torchmetrics reads the feature size from here

        def forward(self, x):
            return x

    return PassThrough(num_features)


def _tensor(x):
    import torch

    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))


@contextlib.contextmanager
def _quiet_buffers():
    """torchmetrics warns that a metric keeps every feature in memory: here they are a few
    thousand vectors of the extractor's width (32 for the domain extractor), so the warning
    would only be noise in every scoring run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        yield


def fid(real, fake) -> float:
    """Fréchet distance between Gaussians fitted to `real` and `fake` features (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = np.asarray(real), np.asarray(fake)
    with _quiet_buffers():
        metric = FrechetInceptionDistance(feature=_pass_through(real.shape[1]))
    metric.update(_tensor(real), real=True)
    metric.update(_tensor(fake), real=False)
    return float(metric.compute())


def kid(real, fake, subsets: int = 100, subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation over subsets) of the unbiased KID (torchmetrics; the subsets are
    drawn with torch's generator, seeded here)."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = np.asarray(real), np.asarray(fake)
    size = subset_size or min(len(real), len(fake), 1000)
    size = min(size, len(real), len(fake))
    if size == len(real) == len(fake):
        subsets = 1  # every subset would be all of both sets: the same estimate each time (SD 0)
    with _quiet_buffers():
        metric = KernelInceptionDistance(feature=_pass_through(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(_tensor(real), real=True)
    metric.update(_tensor(fake), real=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        mean, std = metric.compute()
    finally:
        torch.random.set_rng_state(state)
    return float(mean), float(std)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d2 = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of every point to its k-th nearest neighbour in the same set (itself excluded)."""
    d = _pairwise(x, x)
    return np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself (distance 0)


def prdc(real, fake, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of Naeem et al. (2020) with k nearest neighbours."""
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


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a, b


def ranked_similarity(anchor, positive, negatives) -> np.ndarray:
    """(N,) for each anchor: the share of its negatives (N, M, D) less cosine-similar to it than
    its positive (N, D), ties counting half. 0.5 = chance, 1 = always nearest its own."""
    a, p = _cosine_rows(anchor, positive)
    _, n = _cosine_rows(anchor, negatives)
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


def iis(fake, own_real, real_pool=None, negatives: int = 20, seed: int = 0) -> np.ndarray:
    """(N,) image-image similarity: each generated image's similarity to the real frame of its own
    segment, ranked against `negatives` real frames of other segments (from `real_pool`, default
    the own frames of the others), seeded."""
    own_real = np.asarray(own_real)
    pool = own_real if real_pool is None else np.asarray(real_pool)
    idx = negatives_for(len(own_real), negatives, seed) if real_pool is None else \
        np.random.default_rng(seed).integers(0, len(pool), size=(len(own_real), negatives))
    return ranked_similarity(fake, own_real, pool[idx])


def ais(audio, fake, negatives: int = 20, seed: int = 0) -> np.ndarray:
    """(N,) audio-image similarity: each generated image's similarity to its own sound's audio
    embedding, ranked against the embeddings of `negatives` other test sounds, seeded."""
    audio = np.asarray(audio)
    idx = negatives_for(len(audio), negatives, seed)
    return ranked_similarity(fake, audio, audio[idx])


def bootstrap(fn, n: int, replicates: int, seed: int, confidence: float = 0.95) -> list[float] | None:
    """Percentile interval of fn(resampled indices) over `replicates` resamples of n items."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(replicates):
        v = fn(rng.integers(0, n, size=n))
        if v is not None and np.isfinite(v):
            values.append(v)
    if not values:
        return None
    a = (1 - confidence) / 2
    return [float(np.quantile(values, a)), float(np.quantile(values, 1 - a))]


def summary(real, fake, *, own_real=None, audio=None, which=("fid", "kid", "prdc", "iis"), replicates: int = 100,
            seed: int = 0, confidence: float = 0.95, k: int = 5) -> dict[str, Any]:
    """Every requested metric of `fake` against `real` features, each with a bootstrap interval
    (FID, KID, PRDC: both sets resampled; IIS, AIS: the generated images resampled)."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    out: dict[str, Any] = {"n_real": int(len(real)), "n_generated": int(len(fake)), "dims": int(real.shape[1])}
    rng = np.random.default_rng(seed)
    pairs = [(rng.integers(0, len(real), len(real)), rng.integers(0, len(fake), len(fake))) for _ in range(replicates)]

    def paired_interval(fn):
        values = [fn(real[i], fake[j]) for i, j in pairs]
        values = [v for v in values if v is not None and np.isfinite(v)]
        if not values:
            return None
        a = (1 - confidence) / 2
        return [float(np.quantile(values, a)), float(np.quantile(values, 1 - a))]

    if "fid" in which:
        out["fid"] = {"value": fid(real, fake), "ci": paired_interval(fid)}
    if "kid" in which:
        mean, std = kid(real, fake, seed=seed)
        out["kid"] = {"value": mean, "subset_std": std,
                      "ci": paired_interval(lambda r, f: kid(r, f, subsets=10, seed=seed)[0])}
    if "prdc" in which:
        values = prdc(real, fake, k)
        boots = [prdc(real[i], fake[j], k) for i, j in pairs[: max(10, replicates // 4)]]
        a = (1 - confidence) / 2
        out["prdc"] = {m: {"value": v, "ci": [float(np.quantile([b[m] for b in boots], a)),
                                             float(np.quantile([b[m] for b in boots], 1 - a))]}
                       for m, v in values.items()}
        out["prdc"]["k"] = k
    if "iis" in which and own_real is not None:
        per = iis(fake, own_real, seed=seed)
        out["iis"] = {"value": float(per.mean()), "ci": bootstrap(lambda i: per[i].mean(), len(per), replicates, seed,
                                                                  confidence), "negatives": 20, "chance": 0.5}
    if "ais" in which and audio is not None:
        per = ais(audio, fake, seed=seed)
        out["ais"] = {"value": float(per.mean()), "ci": bootstrap(lambda i: per[i].mean(), len(per), replicates, seed,
                                                                  confidence), "negatives": 20, "chance": 0.5}
    return out
