"""The metric registry: every metric `score --metrics` can compute, declared once.

A metric is one file in this package that builds a `Metric` and `register`s it: its name (what
`--metrics` takes and what the record's `image_metrics` is keyed by), its label, whether lower
is better, what it needs (`needs`: "features" of the generated and real images, "embeddings" of
the images and the sounds by encoders of the user's, "text" embeddings of the class prompts in
the features' space (a CLIP preset), "decisions" per image), its definition's constants
(`params`: negatives, tie rule, scale; they enter the record's recipe identity), the numbers it
reports (`values`: one named like the metric, or several, as PRDC's four), and a pure compute
function: arrays in (`MetricInputs`), the record's entry out. Scoring, the CLI's `--metrics`
choices, the records' readers and the report all read this registry; nothing else lists the
metrics. Adding a metric is one new file here (and its test): see docs/architecture.md.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from s2i_bench.errors import UserError

INFORMATIVITY = "informativity"  # the record itself: always scored, not an image-set metric


@dataclass(frozen=True)
class Value:
    """One number a metric reports (a record's `image_metrics[metric][...]` entry)."""

    key: str
    label: str
    lower_is_better: bool = False


@dataclass(frozen=True)
class MetricInputs:
    """What a metric's compute function gets; every array comes from one scoring of one split.

    real (N, D): features of the scored sounds' real frames; fake (K*N, D): features of the
    generated images, draw-major (all of draw 0, then draw 1, ...); own_real (K*N, D): each
    generated image's own real frame; pairs: the bootstrap's (real, fake) index resamples, shared
    by the metrics so their intervals come from the same resamples; audio (N, D'): the sounds'
    embeddings; image_embeddings (K, N, D'): the generated images' embeddings by the paired image
    encoder; class_index (N,): each sound's class (a row of `text`); text (C, D): the class
    prompts' embeddings in the features' space (CLIP presets), None otherwise."""

    real: np.ndarray | None
    fake: np.ndarray | None
    own_real: np.ndarray | None
    pairs: list[tuple[np.ndarray, np.ndarray]]
    samples: int  # K
    sounds: int  # N
    seed: int  # the image metrics' seed (item_seed(base_seed, "image-metrics"))
    base_seed: int  # the scoring seed, for metrics that derive seeds of their own
    replicates: int
    confidence: float
    audio: np.ndarray | None = None
    image_embeddings: np.ndarray | None = None
    audio_ref: dict | None = None
    class_index: np.ndarray | None = None
    text: np.ndarray | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    lower_is_better: bool
    needs: frozenset[str]
    compute: Callable[[MetricInputs], dict[str, Any]] | None  # None: not an image-set metric (informativity)
    values: tuple[Value, ...] = field(default=())
    description: str = ""
    per_image: bool = False  # the compute function also gives a (K, N) per-image score (for paired tests)
    order: int = 100  # where its entry, CLI choice and report column come (lower first)
    params: dict = field(default_factory=dict, hash=False)  # the definition's constants (negatives, ties, scale)

    def value_list(self) -> tuple[Value, ...]:
        return self.values or (Value(self.name, self.label, self.lower_is_better),)


_METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in _METRICS and _METRICS[metric.name] != metric:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    _METRICS[metric.name] = metric
    return metric


def get(name: str) -> Metric:
    if name not in _METRICS:
        raise UserError(_unknown(name))
    return _METRICS[name]


def _ordered() -> list[Metric]:
    return sorted(_METRICS.values(), key=lambda m: (m.order, m.name))


def names() -> tuple[str, ...]:
    """Every metric, informativity first, the others in their declared order."""
    return tuple(m.name for m in _ordered())


def image_metrics() -> tuple[Metric, ...]:
    """The metrics computed on image sets (everything but informativity), in their order."""
    return tuple(m for m in _ordered() if m.compute is not None)


def values() -> tuple[tuple[Metric, Value], ...]:
    """Every number the image-set metrics report, with its metric."""
    return tuple((m, v) for m in image_metrics() for v in m.value_list())


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, names(), n=1)
    return (f"--metrics: unknown metric {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            + f" (known: {', '.join(names())})")


def check_metrics(metrics) -> tuple[str, ...]:
    """`--metrics` names (a list or "a,b"), checked; informativity is always scored (it is the record)."""
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    out = []
    for m in metrics or (INFORMATIVITY,):
        m = str(m).strip().lower()
        if not m:
            continue
        get(m)
        out.append(m)
    return tuple(dict.fromkeys([INFORMATIVITY, *out]))


def needing(which, need: str) -> tuple[str, ...]:
    """The metrics of `which` that need `need` ("features", "embeddings", "text", "decisions")."""
    return tuple(m for m in which if need in get(m).needs)


def compute_all(which, inputs: MetricInputs) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the record's entries of every image-set metric of `which`, in registry order; per-image
    scores (K, N) of the metrics that give them)."""
    out: dict[str, Any] = {}
    per_image: dict[str, np.ndarray] = {}
    for metric in image_metrics():
        if metric.name not in which:
            continue
        entry = metric.compute(inputs)
        if entry is None:
            continue
        if metric.per_image:
            per_image[metric.name] = entry.pop("_per_image")
        out[metric.name] = entry
    return out, per_image


register(Metric(INFORMATIVITY, "informativity", False, frozenset({"decisions"}), None, order=0,
                values=(Value("raw_share", "informativity, raw"), Value("corrected_share", "informativity, corrected"),
                        Value("class_match_rate", "class-match rate")),
                description="the share of images each class's classifier calls informative (the paper's metric; "
                            "always scored: it is the record)"))
