"""KID: the unbiased squared maximum mean discrepancy with a cubic polynomial kernel (Bińkowski
et al. 2018), computed by torchmetrics over subsets; the small-sample alternative to FID."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.image.kid import KernelInceptionDistance

from s2i_bench.scoring.image_metrics.common import PassThrough, as_tensor, paired_interval, quiet_buffers
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register


def kid(real, fake, subsets: int = 100, subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation over subsets) of the unbiased KID (torchmetrics; the subsets are
    drawn with torch's generator, seeded here)."""
    real, fake = np.asarray(real), np.asarray(fake)
    size = subset_size or min(len(real), len(fake), 1000)
    size = min(size, len(real), len(fake))
    if size == len(real) == len(fake):
        subsets = 1  # every subset would be all of both sets: the same estimate each time (SD 0)
    with quiet_buffers():
        metric = KernelInceptionDistance(feature=PassThrough(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(as_tensor(real), real=True)
    metric.update(as_tensor(fake), real=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        mean, std = metric.compute()
    finally:
        torch.random.set_rng_state(state)
    return float(mean), float(std)


def compute(inputs: MetricInputs) -> dict:
    mean, std = kid(inputs.real, inputs.fake, seed=inputs.seed)
    return {"value": mean, "subset_std": std,
            "ci": paired_interval(lambda r, f: kid(r, f, subsets=10, seed=inputs.seed)[0], inputs)}


METRIC = register(Metric("kid", "KID", True, frozenset({"features"}), compute,
                         description="unbiased squared MMD, cubic polynomial kernel", order=20,
                         params={"subsets": 100, "subset_size": "min(1000, N real, N generated)", "degree": 3}))
