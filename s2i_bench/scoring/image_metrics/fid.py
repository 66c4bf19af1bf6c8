"""FID: the Fréchet distance between Gaussians fitted to the real and the generated features
(Heusel et al. 2017), computed by torchmetrics on the features as they are."""

from __future__ import annotations

import numpy as np
from torchmetrics.image.fid import FrechetInceptionDistance

from s2i_bench.scoring.image_metrics.common import PassThrough, as_tensor, paired_interval, quiet_buffers
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register

# Below this many images FID's upward bias (about 36.5 / N in the 32-d domain features) exceeds
# 1% of the FID between two classes' real frames (measured on the synthetic world,
# benchmarks/check_image_metrics.py, 2026-12-02): a record then warns and points to KID.
FID_STABLE_IMAGES = 190


def fid(real, fake) -> float:
    """Fréchet distance between Gaussians fitted to `real` and `fake` features (torchmetrics)."""
    real, fake = np.asarray(real), np.asarray(fake)
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
