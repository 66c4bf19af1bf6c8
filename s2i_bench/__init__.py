"""s2i-bench: the evaluation and benchmarking toolkit for sound-to-image translation."""

from s2i_bench.log import setup as _setup_logging

__version__ = "0.1.0"

_setup_logging("s2i_bench")  # warnings and notes of every module on stderr (s2i_bench.log)
