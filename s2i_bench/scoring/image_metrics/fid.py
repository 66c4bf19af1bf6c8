"""FID: the Fréchet distance between Gaussians fitted to the real and the generated features
(Heusel et al. 2017), computed by torchmetrics.

With fewer images than dimensions (the Inception's 2048-d features of a test split of a few
hundred sounds), the features are first written in an orthonormal basis of the span of the two
sets' centred union. The distance does not change (both means' difference and both covariances
live in that span, and sqrt(S1 S2) only loses zero eigenvalues), but the square root no longer
runs over a 2048 x 2048 product whose null space is rounding noise: 8 s per FID became 0.6 s
at 300 + 300 images on one CPU thread (FID's bootstrap interval computes it 100 times),
and the value moved closer to the exact one (docs/metrics.md, "What the tests measure")."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from s2i_bench.scoring.image_metrics.common import PassThrough, as_tensor, paired_interval, quiet_buffers
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register

# Below this many images FID's upward bias (about 36.5 / N in the 32-d domain features) exceeds
# 1% of the FID between two classes' real frames (measured on the synthetic world,
# benchmarks/check_image_metrics.py, 2026-12-02): a record then warns and points to KID.
FID_STABLE_IMAGES = 190


def in_their_span(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D), (M, D) -> (N, k), (M, k): both sets in an orthonormal basis of the span of their
    centred union, when it has fewer points than dimensions; else unchanged (float64).

    The basis comes from the eigenvectors of the (N + M) x (N + M) Gram matrix, in torch (numpy's
    SVD of the features was 15x slower, and numpy's BLAS threads oversubscribe a busy machine).
    Directions whose variance is below 1e-12 of the largest are left out: each changes FID by at
    most about its variance, so by 1e-12 relative."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(real) + len(fake) - 1 >= real.shape[1] or min(len(real), len(fake)) < 2:
        return real, fake  # full rank, or too few for a covariance (torchmetrics says so)
    both = torch.from_numpy(np.concatenate([real, fake]))
    centred = both - both.mean(0)  # (N + M, D)
    w, u = torch.linalg.eigh(centred @ centred.T)  # ascending; w = squared singular values
    keep = w > w[-1].clamp_min(0) * 1e-12
    if not bool(keep.any()):  # every feature the same: FID is 0 in any basis
        return real[:, :1] * 0, fake[:, :1] * 0
    basis = centred.T @ u[:, keep] / w[keep].sqrt()  # (D, k), orthonormal columns
    return (torch.from_numpy(real) @ basis).numpy(), (torch.from_numpy(fake) @ basis).numpy()


def fid(real, fake) -> float:
    """Fréchet distance between Gaussians fitted to `real` and `fake` features (torchmetrics)."""
    real, fake = in_their_span(np.asarray(real), np.asarray(fake))
    with quiet_buffers():
        metric = FrechetInceptionDistance(feature=PassThrough(real.shape[1]))
    metric.update(as_tensor(real), real=True)
    metric.update(as_tensor(fake), real=False)
    return float(metric.compute())


def compute(inputs: MetricInputs) -> dict:
    entry = {"value": fid(inputs.real, inputs.fake), "ci": paired_interval(fid, inputs)}
    if len(inputs.fake) < FID_STABLE_IMAGES:
        entry["warning"] = (f"{len(inputs.fake)} images: FID is biased upwards below about {FID_STABLE_IMAGES} "
                            "(benchmarks/check_image_metrics.py); compare KID instead")
    return entry


METRIC = register(Metric("fid", "FID", True, frozenset({"features"}), compute,
                         description="Fréchet distance of the feature Gaussians; biased upwards with few images",
                         order=10))
