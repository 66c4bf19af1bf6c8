"""AIS as SonicDiffusion ranks it: the share of other sounds whose embedding is strictly less
similar (cosine) to the generated image than its own sound's (SonicDiffusion `evaluation.py`:
`>` against every cached negative; here the negatives are all the other scored test sounds)."""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.common import bootstrap, unit_rows
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register
from s2i_bench.seeding import item_seed


def ais_rank(audio, images) -> np.ndarray:
    """(N,) for image i (images (N, D)): the share of the N - 1 other sounds (audio (N, D')) less
    similar to it than sound i, ties counting as not less."""
    sim = unit_rows(images) @ unit_rows(audio).T  # (N images, N sounds)
    own = np.diag(sim)
    return (sim < own[:, None]).sum(1) / (len(sim) - 1)  # the own sound is never < itself


def compute(inputs: MetricInputs) -> dict | None:
    if inputs.audio is None or inputs.image_embeddings is None or inputs.sounds < 2:
        return None
    per = np.stack([ais_rank(inputs.audio, inputs.image_embeddings[d]) for d in range(inputs.samples)])  # (K, N)
    return {"value": float(per.mean()), "chance": 0.5, "negatives": inputs.sounds - 1, "encoders": inputs.audio_ref,
            "ci": bootstrap(lambda i: per[:, i].mean(), inputs.sounds, inputs.replicates,
                            item_seed(inputs.base_seed, "ais-rank-bootstrap"), inputs.confidence)}


METRIC = register(Metric("ais_rank", "AIS (rank)", False, frozenset({"embeddings"}), compute, order=51,
                         description="share of all other test sounds less similar to each image than its own "
                                     "(SonicDiffusion's AIS, strict)",
                         params={"negatives": "all other scored sounds", "ties": "not less"}))
