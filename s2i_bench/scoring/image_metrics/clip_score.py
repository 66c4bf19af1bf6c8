"""CLIP score with the class prompt: how well each generated image matches the text of its
sound's class, in a CLIP preset's space (`scoring.presets`), as torchmetrics' `CLIPScore`
computes it: 100 x max(cosine(image, text), 0), averaged over the images. (Hessel et al.'s
CLIPScore scales by 2.5 instead; the scale is part of the record's recipe.)"""

from __future__ import annotations

import numpy as np

from s2i_bench.scoring.image_metrics.common import bootstrap, unit_rows
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register

SCALE = 100.0


def clip_score(images, texts, class_index, scale: float = SCALE) -> np.ndarray:
    """(M,) scale x max(cos, 0) of each image (M, D) with its class's text (texts (C, D), class_index (M,))."""
    cos = (unit_rows(images) * unit_rows(texts)[np.asarray(class_index)]).sum(-1)
    return scale * np.maximum(cos, 0.0)


def compute(inputs: MetricInputs) -> dict | None:
    if inputs.text is None or inputs.fake is None or inputs.class_index is None:
        return None
    per = clip_score(inputs.fake, inputs.text, np.tile(inputs.class_index, inputs.samples))
    per = per.reshape(inputs.samples, inputs.sounds)  # (K, N): fake is draw-major
    return {"value": float(per.mean()), "scale": SCALE,
            "ci": bootstrap(lambda i: per[:, i].mean(), inputs.sounds, inputs.replicates, inputs.seed,
                            inputs.confidence)}


METRIC = register(Metric("clip_score", "CLIP score", False, frozenset({"features", "text"}), compute, order=55,
                         description="100 x max(cosine, 0) of each image with its class prompt (a CLIP preset)",
                         params={"scale": SCALE, "clip_below": 0.0, "text": "the class prompt of the preset"}))
