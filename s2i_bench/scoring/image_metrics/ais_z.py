"""AIS as MACS reports it: each sound's cosine with its own generated image, and the z-score of
that cosine against the same sound's cosines with every other generated image (MACS
`evaluation/ais.py`: (own - mean) / standard deviation, numpy's population SD). The value is the
mean z (0 = chance); the mean cosine is reported beside it."""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.common import bootstrap, unit_rows
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register
from s2i_bench.seeding import item_seed


def ais_z(audio, images) -> tuple[np.ndarray, np.ndarray]:
    """((N,) z-scores, (N,) own cosines) of sounds audio (N, D') against images (N, D)."""
    sim = unit_rows(audio) @ unit_rows(images).T  # (N sounds, N images)
    own = np.diag(sim).copy()
    others = sim[~np.eye(len(sim), dtype=bool)].reshape(len(sim), -1)  # (N, N - 1)
    sd = others.std(axis=1)
    return (own - others.mean(axis=1)) / np.where(sd > 0, sd, np.nan), own


def compute(inputs: MetricInputs) -> dict | None:
    if inputs.audio is None or inputs.image_embeddings is None or inputs.sounds < 3:
        return None
    pairs = [ais_z(inputs.audio, inputs.image_embeddings[d]) for d in range(inputs.samples)]
    z = np.stack([p[0] for p in pairs])  # (K, N)
    cos = np.stack([p[1] for p in pairs])
    return {"value": float(np.nanmean(z)), "chance": 0.0, "mean_cosine": float(cos.mean()),
            "encoders": inputs.audio_ref,
            "ci": bootstrap(lambda i: np.nanmean(z[:, i]), inputs.sounds, inputs.replicates,
                            item_seed(inputs.base_seed, "ais-z-bootstrap"), inputs.confidence)}


METRIC = register(Metric("ais_z", "AIS (z)", False, frozenset({"embeddings"}), compute, order=52,
                         description="z-score of each sound's cosine with its own image against its cosines with "
                                     "every other generated image (MACS's AIS)",
                         params={"against": "every other generated image of the same draw", "sd": "population"}))
