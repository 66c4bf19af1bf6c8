"""The reference translator of Sound-to-Imagination (Fanzeres & Nadeu): models and training."""

from s2i_bench.log import setup as _setup_logging

_setup_logging("s2i_translator")  # its warnings on stderr, like the toolkit's
