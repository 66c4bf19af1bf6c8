"""Messages to the user: one logger per package (`s2i_bench`, a plugin's own), printed on stderr.

Every module logs through `logging.getLogger(__name__)`: warnings as `warning: ...`, progress
notes (`logger.info`) as the bare line. `setup(name)` gives a package's logger its handler once;
the toolkit sets up `s2i_bench` when it is imported, a translator package may set up its own. The
handler looks up `sys.stderr` at every line, so a redirected or captured stderr gets them.
"""

from __future__ import annotations

import logging
import sys


class StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
            sys.stderr.write(f"{prefix}{record.getMessage()}\n")
        except Exception:  # never let a message break the command
            self.handleError(record)


def setup(name: str = "s2i_bench") -> logging.Logger:
    """The package's logger, printing INFO and above on stderr (once, however often called)."""
    log = logging.getLogger(name)
    if not any(isinstance(h, StderrHandler) for h in log.handlers):
        log.addHandler(StderrHandler(logging.INFO))
    log.setLevel(logging.INFO)
    log.propagate = False
    return log
