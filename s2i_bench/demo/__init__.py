"""`s2i-bench demo` (what `make demo` runs): the paper's whole study on the embedded synthetic world.

    synth -> prepare (video-disjoint) -> train-baseline at every embedding size of the protocol
    (one checkpoint per epoch) -> pool from >= num_models checkpoints -> label --judge ->
    train-classifiers -> score every run (every epoch: the series and its summary) -> report

Each step is the same function its command calls, so the demo is also the end-to-end test of the
commands fitting together. A step skips itself when its outputs exist and its key (protocol,
parameters, the keys of the steps it reads, a hash of the code) is unchanged; `--force` redoes
all. Working data (videos, store, runs, pool, bundle) goes to `--out` (ignored by git); the
report goes to `--report` (committed as results/demo/).

    pipeline    the steps of the study (`run_demo`)
    steps       the step runner: a step reruns only when its key changed
    headline    the headline numbers, demo.json, the comparison with the committed reference
    reference   `update_reference` (the committed study), the timings file
"""

from s2i_bench.demo.pipeline import run_demo
from s2i_bench.demo.reference import update_reference

__all__ = ["run_demo", "update_reference"]
