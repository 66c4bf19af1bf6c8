"""Retrieval R@1/5/10: each generated image, as a query among the real frames of all the scored
test sounds, finds its own sound's frame among its k nearest by cosine. The rank of the own
frame is 1 + the number of other frames at least as similar (ties count against it); chance is
k / N."""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.common import bootstrap, unit_rows
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, Value, register

KS = (1, 5, 10)


def retrieval_ranks(fake, real) -> np.ndarray:
    """(N,) the rank of real frame i among all N real frames (N, D) for query fake i (N, D)."""
    sim = unit_rows(fake) @ unit_rows(real).T  # (N, N)
    own = np.diag(sim)
    others_at_least = (sim >= own[:, None]).sum(1) - 1  # the own frame always counts itself
    return 1 + others_at_least


def compute(inputs: MetricInputs) -> dict | None:
    if inputs.fake is None or inputs.real is None:
        return None
    k, n = inputs.samples, inputs.sounds
    fake = inputs.fake.reshape(k, n, -1)  # draw-major
    ranks = np.stack([retrieval_ranks(fake[d], inputs.real) for d in range(k)])  # (K, N)
    out: dict = {"candidates": n}
    for top in KS:
        hits = (ranks <= top).astype(np.float64)
        out[f"retrieval_r{top}"] = {"value": float(hits.mean()), "chance": min(1.0, top / n),
                                    "ci": bootstrap(lambda i, h=hits: h[:, i].mean(), n, inputs.replicates,
                                                    inputs.seed, inputs.confidence)}
    return out


METRIC = register(Metric("retrieval", "retrieval", False, frozenset({"features"}), compute, order=45,
                         values=tuple(Value(f"retrieval_r{t}", f"R@{t}") for t in KS),
                         description="each image retrieves its own sound's real frame among all scored test frames "
                                     "(R@1/5/10, cosine)",
                         params={"k": list(KS), "candidates": "real frames of all scored sounds",
                                 "ties": "against the own frame"}))
