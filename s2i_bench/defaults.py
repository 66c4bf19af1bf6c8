"""The embedded default: what `make demo` built, used when a command is given no data.

    s2i-bench train-baseline           trains on demo-work/store into demo-work/runs/train-N
    s2i-bench score generator.pt       scores on demo-work/store with demo-work/classifiers/bundle.pt
    s2i-bench report --figures         reports demo-work/runs/* and the reference translators

The working folder is `demo-work` in the current folder (where `make demo` puts it), or
$S2I_BENCH_DEMO_WORK. Every command that falls back on it says so in one line; where it has
not been built, the command says which one builds it instead of a usage error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from s2i_bench.errors import UserError
from s2i_bench.runs import RECORDS, is_run_folder

logger = logging.getLogger(__name__)

ENV = "S2I_BENCH_DEMO_WORK"
BUILD_HINT = "`make demo` (or `s2i-bench demo`: about 10 minutes on 2 CPU cores)"


@dataclass(frozen=True)
class Work:
    """Where the demo keeps its working data (all under `root`, ignored by git)."""

    root: Path

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def bundle(self) -> Path:
        return self.root / "classifiers" / "bundle.pt"

    @property
    def references(self) -> Path:
        """Records of the reference translators (reference:real-frame, ...)."""
        return self.root / "references" / RECORDS

    @property
    def audit(self) -> Path:
        """The demo's label audit (`label-audit`): each run's last checkpoint and the references."""
        return self.root / "audit"

    @property
    def scores(self) -> Path:
        """Where a bare `score` of a plugin or a reference writes its record."""
        return self.root / "scores" / RECORDS

    @property
    def full_report(self) -> Path:
        """Where a bare `report` goes (demo-work/report stays the demo's own)."""
        return self.root / "report-all"


def work() -> Work:
    return Work(Path(os.environ.get(ENV) or "demo-work"))


def _missing(what: str, path: Path, option: str) -> UserError:
    return UserError(f"no {option} given, and the embedded default {what} ({path}) has not been built yet: run "
                     f"{BUILD_HINT} first, or pass {option}")


def say(what: str, path: Path) -> None:
    logger.info(f"using the embedded default {what}: {path} (built by `s2i-bench demo`)")


def store(option: str = "--data") -> Path:
    path = work().store
    if not (path / "store.json").is_file():
        raise _missing("store", path, option)
    say("store", path)
    return path


def bundle(option: str = "--classifiers") -> Path:
    path = work().bundle
    if not path.is_file():
        raise _missing("classifiers", path, option)
    say("classifiers", path)
    return path


def runs() -> list[Path]:
    """The default's run folders (the demo's and any trained on its store since)."""
    root = work().runs
    # runs/<name>/ or, for a group of seeds, runs/<name>/seed-<S>/
    candidates = [p for p in root.glob("*") if p.is_dir()] if root.is_dir() else []
    candidates += [c for p in candidates for c in p.glob("*") if c.is_dir()]
    found = sorted(p for p in candidates if is_run_folder(p))
    if not found:
        raise _missing("runs", root, "INPUTS")
    return found


def next_run_folder() -> Path:
    """demo-work/runs/train-N, the first N not taken."""
    root = work().runs
    n = 1
    while (root / f"train-{n}").exists():
        n += 1
    return root / f"train-{n}"
