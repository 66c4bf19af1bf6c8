"""IIS, image-image similarity: each generated image's cosine similarity to the real frame of its
own segment, ranked against 20 real frames of other segments (ties count half; 0.5 = chance)."""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.common import bootstrap, negatives_for, ranked_similarity
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register

NEGATIVES = 20


def iis(fake, own_real, real_pool=None, negatives: int = NEGATIVES, seed: int = 0) -> np.ndarray:
    """(N,) each generated image's rank against `negatives` real frames of other segments (from
    `real_pool`, default the own frames of the others), seeded."""
    own_real = np.asarray(own_real)
    pool = own_real if real_pool is None else np.asarray(real_pool)
    idx = negatives_for(len(own_real), negatives, seed) if real_pool is None else \
        np.random.default_rng(seed).integers(0, len(pool), size=(len(own_real), negatives))
    return ranked_similarity(fake, own_real, pool[idx])


def compute(inputs: MetricInputs) -> dict:
    per = iis(inputs.fake, inputs.own_real, seed=inputs.seed)  # (K*N,), draw-major
    return {"value": float(per.mean()),
            "ci": bootstrap(lambda i: per[i].mean(), len(per), inputs.replicates, inputs.seed, inputs.confidence),
            "negatives": NEGATIVES, "chance": 0.5, "_per_image": per.reshape(inputs.samples, inputs.sounds)}


METRIC = register(Metric("iis", "IIS", False, frozenset({"features"}), compute, per_image=True,
                         description="each image's similarity to its own segment's real frame, ranked against "
                                     "20 other real frames (0.5 = chance)", order=40,
                         params={"negatives": NEGATIVES, "negatives_from": "real frames of other scored sounds, seeded",
                                 "ties": "half"}))
