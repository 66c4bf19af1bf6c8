"""The classifiers' training recipe beyond the paper's, and their calibration.

Two protocol options of `[classifiers]` change how the informativity CNNs are trained:

    real_frames_per_class = N   N real frames of the class (the store's training split, drawn
                                with a recorded seed) join the informative training images
    augment = "flip"            each training image mirrored left-right with probability 1/2
    augment = "flip-crop-jitter"  the flip, a random 96x96 crop of the image padded by 8 pixels
                                (reflected), and a brightness shift and contrast factor per image

Their defaults (0, "none") are the paper's recipe: nothing is added and no random number is
drawn, so the default training is bit for bit what it was before these options existed. The
validation and test images stay the pool's, so the epoch choice and the card's accuracy,
sensitivity and specificity are still measured on generated images.

Calibration (`reliability`) is measured on each classifier's held-out test images when it is
trained and written into the JSON card (docs/architecture.md, "Classifier bundle").
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from s2i_bench.errors import UserError
from s2i_bench.protocol import protocol_from_dict
from s2i_bench.seeding import item_seed

logger = logging.getLogger(__name__)

RECIPE_KEYS = ("real_frames_per_class", "augment")
PAPER_RECIPE = {"real_frames_per_class": 0, "augment": "none"}
CROP_PAD = 8  # pixels of reflection around a 96x96 image before its random 96x96 crop
BRIGHTNESS = 0.2  # a shift drawn from [-0.2, 0.2] in network units ([-1, 1] images)
CONTRAST = 0.2  # a factor drawn from [0.8, 1.2] around the image's own mean
CALIBRATION_BINS = 10
BINNING = ("10 equal-width bins of P(informative) (edges 0, 0.1, ..., 1; a value on an edge falls in the lower bin, "
           "as sklearn.calibration.calibration_curve bins); ECE = sum over bins of count / n x |share informative - "
           "mean probability|")


# -- the recipe ---------------------------------------------------------------------------------------------
def recipe_of(spec) -> dict[str, Any]:
    """The recipe keys of a ClassifierSpec."""
    return {k: getattr(spec, k) for k in RECIPE_KEYS}


def is_paper_recipe(spec) -> bool:
    return recipe_of(spec) == PAPER_RECIPE


def with_recipe(protocol, recipe: Mapping[str, Any] | None):
    """`protocol` with its `[classifiers]` recipe keys replaced by `recipe` (checked like any
    protocol: unknown keys, ranges, the augmentations); `protocol` itself when `recipe` is empty."""
    if not recipe:
        return protocol
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise UserError(f"classifier recipe: unknown key(s) {', '.join(unknown)} (valid: {', '.join(RECIPE_KEYS)})")
    d = protocol.to_dict()
    d["classifiers"] = {**d["classifiers"], **dict(recipe)}
    rebuilt = protocol_from_dict(d)
    return dataclasses.replace(protocol, classifiers=rebuilt.classifiers)


def real_frame_rows(store, class_key: str, n: int, seed: int) -> np.ndarray:
    """Rows of `n` training-split frames of `class_key` (all of them when the class has fewer),
    drawn without replacement from `item_seed(seed, "real-frames|<class>")`, in store order."""
    rows = store.split_indices("train")
    rows = rows[store.manifest["class"].to_numpy()[rows] == class_key]
    if n <= 0 or len(rows) == 0:
        return rows[:0]
    if len(rows) < n:
        logger.info(f"note: class {class_key}: {len(rows)} real training frames, fewer than the "
                    f"{n} real_frames_per_class asks for; all of them are used")
    rng = np.random.default_rng(item_seed(seed, f"real-frames|{class_key}"))
    return np.sort(rows[rng.choice(len(rows), size=min(n, len(rows)), replace=False)])


def augmenter(kind: str, seed: int):
    """A function (B, 3, S, S) -> (B, 3, S, S) augmenting training batches with random numbers
    from `item_seed(seed, "augment")`, or None for "none" (nothing drawn)."""
    if kind == "none":
        return None
    if kind not in ("flip", "flip-crop-jitter"):
        raise UserError(f"classifiers.augment {kind!r}: expected none, flip or flip-crop-jitter")
    rng = np.random.default_rng(item_seed(seed, "augment"))
    return lambda x: augment_batch(x, rng, kind)


def augment_batch(x: torch.Tensor, rng: np.random.Generator, kind: str) -> torch.Tensor:
    """x (B, 3, S, S) in [-1, 1] -> the same shape, augmented (module docstring). The draws, in
    this order: B flips, then (with crop and jitter) B x 2 crop offsets, B shifts, B factors."""
    b, side = x.shape[0], x.shape[-1]
    flip = torch.from_numpy(rng.random(b) < 0.5).to(x.device)  # (B,)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if kind == "flip":
        return x
    offsets = rng.integers(0, 2 * CROP_PAD + 1, size=(b, 2))  # (B, 2): top, left in the padded image
    shift = torch.from_numpy(rng.uniform(-BRIGHTNESS, BRIGHTNESS, size=b)).to(x)  # (B,)
    factor = torch.from_numpy(rng.uniform(1 - CONTRAST, 1 + CONTRAST, size=b)).to(x)  # (B,)
    padded = F.pad(x, (CROP_PAD,) * 4, mode="reflect")  # (B, 3, S + 16, S + 16)
    x = torch.stack([padded[i, :, top:top + side, left:left + side] for i, (top, left) in enumerate(offsets)])
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (x - mean) * factor[:, None, None, None] + mean + shift[:, None, None, None]
    return x.clamp(-1.0, 1.0)


# -- calibration --------------------------------------------------------------------------------------------
def reliability(labels, probabilities, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """How well P(informative) matches the labels (0/1), over `bins` equal-width bins of the
    probability (`BINNING`): per bin its range, count, mean probability and share of informative
    labels (None when empty); the expected calibration error (ECE: the count-weighted mean gap
    between a bin's share and its mean probability) and the Brier score (mean squared error of
    the probability)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} differ")
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], p)  # (n,) bin of each image: (lo, hi], the first [0, hi]
    count = np.bincount(ids, minlength=bins)
    sum_p = np.bincount(ids, weights=p, minlength=bins)
    sum_y = np.bincount(ids, weights=y, minlength=bins)
    n = int(len(p))
    # the edges as written are rounded (0.6, not 0.6000000000000001); the binning uses linspace's
    rows = [{"low": round(float(edges[i]), 12), "high": round(float(edges[i + 1]), 12), "count": int(count[i]),
             "mean_probability": float(sum_p[i] / count[i]) if count[i] else None,
             "share_informative": float(sum_y[i] / count[i]) if count[i] else None} for i in range(bins)]
    return {"n": n, "ece": float(np.abs(sum_y - sum_p).sum() / n) if n else None,
            "brier": float(np.mean((p - y) ** 2)) if n else None, "bins": rows}
