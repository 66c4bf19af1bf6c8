"""The image metrics the field reports, one file each, registered in `registry` (the one list
of metrics: `score --metrics`, the records' readers and the report read it).

    fid    Fréchet distance of the feature Gaussians (torchmetrics)
    kid    unbiased squared MMD, cubic polynomial kernel (torchmetrics)
    prdc   precision, recall, density, coverage (Naeem et al. 2020)
    iis    image-image similarity, ranked against other real frames
    ais    audio-image similarity, ranked against other sounds

Features are (N, D) float arrays from one extractor (`scoring.features`); the functions are pure
(arrays in, numbers out). Every module of this package is imported here, so a metric's file
registers itself: adding a metric is adding its file (docs/architecture.md, "Adding a metric").
"""

import importlib
import pkgutil

from s2i_bench.scoring.image_metrics.ais import ais
from s2i_bench.scoring.image_metrics.common import bootstrap, negatives_for, ranked_similarity
from s2i_bench.scoring.image_metrics.fid import FID_STABLE_IMAGES, fid
from s2i_bench.scoring.image_metrics.iis import iis
from s2i_bench.scoring.image_metrics.kid import kid
from s2i_bench.scoring.image_metrics.prdc import prdc
from s2i_bench.scoring.image_metrics.registry import (Metric, MetricInputs, Value, check_metrics, compute_all, get,
                                                      image_metrics, names, needing, register, values)

# every other metric file of this package (a new one needs no line here)
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FID_STABLE_IMAGES", "Metric", "MetricInputs", "Value", "ais", "bootstrap", "check_metrics", "compute_all",
           "fid", "get", "iis", "image_metrics", "kid", "names", "needing", "negatives_for", "prdc",
           "ranked_similarity", "register", "values"]
