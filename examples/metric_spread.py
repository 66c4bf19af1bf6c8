"""A new image metric in one file: how varied the generated images are, against the real frames.

`spread` is the mean distance of the generated images' features to their centroid, divided by
the same for the real frames of the scored sounds: 1 means as varied as the real frames, near 0 a
translator that draws one picture for every sound (mode collapse). Copy this file into
`s2i_bench/scoring/image_metrics/` and `s2i-bench score ... --metrics spread` computes it: the
package imports every module in it, and `register` adds the metric to the CLI's choices, the
record (`image_metrics.spread`), `Record.image_metric("spread")` and the report's columns.
"""

import numpy as np

from s2i_bench.scoring.image_metrics.common import paired_interval
from s2i_bench.scoring.image_metrics.registry import Metric, MetricInputs, register


def spread(real, fake) -> float:
    """Mean distance to the centroid of `fake` over that of `real` (both (N, D) features)."""
    def radius(x):
        x = np.asarray(x, dtype=np.float64)
        return float(np.linalg.norm(x - x.mean(axis=0), axis=1).mean())

    r = radius(real)
    return radius(fake) / r if r > 0 else float("nan")


def compute(inputs: MetricInputs) -> dict:
    # the same resamples as the other metrics' intervals (inputs.pairs)
    return {"value": spread(inputs.real, inputs.fake), "ci": paired_interval(spread, inputs)}


METRIC = register(Metric("spread", "spread", False, frozenset({"features"}), compute, order=60,
                         description="variety of the generated images' features against the real frames' (1 = "
                                     "as varied)"))
