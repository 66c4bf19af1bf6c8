"""AIS, audio-image similarity: each generated image's embedding against its own sound's
embedding (a pair of encoders of the user's), ranked against 20 other test sounds (0.5 = chance)."""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.common import bootstrap, negatives_for, ranked_similarity
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register
from s2i_bench.seeding import item_seed

NEGATIVES = 20


def ais(audio, fake, negatives: int = NEGATIVES, seed: int = 0) -> np.ndarray:
    """(N,) each generated image's rank against the embeddings of `negatives` other sounds."""
    audio = np.asarray(audio)
    idx = negatives_for(len(audio), negatives, seed)
    return ranked_similarity(fake, audio, audio[idx])


def compute(inputs: MetricInputs) -> dict | None:
    if inputs.audio is None or inputs.image_embeddings is None:
        return None
    per = np.stack([ais(inputs.audio, inputs.image_embeddings[d], seed=item_seed(inputs.base_seed, "ais") + d)
                    for d in range(inputs.samples)])  # (K, N)
    return {"value": float(per.mean()), "chance": 0.5, "negatives": NEGATIVES, "encoders": inputs.audio_ref,
            "ci": bootstrap(lambda i: per[:, i].mean(), inputs.sounds, inputs.replicates,
                            item_seed(inputs.base_seed, "ais-bootstrap"), inputs.confidence)}


METRIC = register(Metric("ais", "AIS", False, frozenset({"embeddings"}), compute,
                         description="each image's similarity to its own sound (encoders of yours), ranked against "
                                     "20 other sounds (0.5 = chance)", order=50,
                         params={"negatives": NEGATIVES, "negatives_from": "other scored sounds, seeded",
                                 "ties": "half"}))
