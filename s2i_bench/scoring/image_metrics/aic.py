"""AIC, audio-image content: the share of generated images that a CLIP preset, zero-shot over the
protocol's class prompts, puts in their sound's class (SonicDiffusion's AIC: argmax of the
image's cosine with each class text; chance is 1 / the number of classes)."""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.common import bootstrap, unit_rows
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register


def aic(images, texts, class_index) -> np.ndarray:
    """(M,) bool: the class whose text is most cosine-similar to each image (M, D) is its own."""
    predicted = np.argmax(unit_rows(images) @ unit_rows(texts).T, axis=1)  # (M,), first on a tie
    return predicted == np.asarray(class_index)


def compute(inputs: MetricInputs) -> dict | None:
    if inputs.text is None or inputs.fake is None or inputs.class_index is None:
        return None
    per = aic(inputs.fake, inputs.text, np.tile(inputs.class_index, inputs.samples))
    per = per.reshape(inputs.samples, inputs.sounds).astype(np.float64)  # (K, N)
    return {"value": float(per.mean()), "chance": 1.0 / len(inputs.text),
            "ci": bootstrap(lambda i: per[:, i].mean(), inputs.sounds, inputs.replicates, inputs.seed,
                            inputs.confidence)}


METRIC = register(Metric("aic", "AIC", False, frozenset({"features", "text"}), compute, order=56,
                         description="share of images a CLIP preset classifies zero-shot (class prompts) as their "
                                     "sound's class",
                         params={"classes": "the protocol's class prompts", "ties": "first class"}))
