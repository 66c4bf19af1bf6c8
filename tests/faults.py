"""Shared pieces of the fault tests (`tests/test_faults_*.py`): the catalogue of bad inputs and
hostile files tried against s2i-bench (../shared/faults/catalogue-4deea07.md) rebuilt with the
same primitives, and a helper that runs a command the way a user does and checks the outcome.

Every fault test states its catalogue case (`# 1.34`) and checks three things: the exit code
(2 = a clean refusal, one line, no traceback), the message names the file at fault, and nothing
was damaged or created that should not be.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner


def run_cli(*args) -> "CliResult":
    """`s2i-bench ARGS...` in this process; the result's output is stdout + stderr."""
    from s2i_bench.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return CliResult(result)


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.output = result.output
        self.exception = result.exception
        self.stdout = result.stdout

    def refused(self, *needles: str) -> "CliResult":
        """A clean refusal: exit 2, one error line, each needle in it, no traceback."""
        assert self.exit_code == 2, f"exit {self.exit_code}: {self.output[-1500:]} {self.exception!r}"
        errors = [ln for ln in self.output.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, self.output[-1500:]
        assert "Traceback" not in self.output, self.output[-1500:]
        for needle in needles:
            assert needle in errors[0], f"{needle!r} not in: {errors[0]}"
        return self

    def ok(self) -> "CliResult":
        assert self.exit_code == 0, f"exit {self.exit_code}: {self.output[-2000:]} {self.exception!r}"
        return self


def touched(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to compare before/after)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
