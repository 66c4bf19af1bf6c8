"""s2i-bench: the evaluation and benchmarking toolkit for sound-to-image translation."""

__version__ = "0.1.0"
