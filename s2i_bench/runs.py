"""The run folder: the one module that spells its files (written by `train-baseline`, read by
`score`, `pool`, `report` and the demo).

    RUN/options.json                  resolved options, written before any work
    RUN/log.csv                       one row per epoch: epoch, d_updated, pixel_loss, ... (the trainer's columns)
    RUN/checkpoints/generator-EEEEEE.pt   the translator after epoch EEEEEE (epochs from 0)
    RUN/grids/grid-EEEEEE.png         images of fixed validation sounds
    RUN/metric-informativity.jsonl    metric records (s2i_bench.scoring.records)
    RUN/samples-epoch-EEEEEE-KEY.npz  sample sheets of fixed test sounds (Figs. 15/16; KEY: store, split, seed)
    RUN/resume.pt                     what the trainer needs to continue
    RUN/.lock                         held while a process writes the folder

A trainer may keep files of its own beside these (`run.path / name`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json, atomic_write_text, open_no_follow
from s2i_bench.locks import exclusive_lock, remove_stale_temporaries

OPTIONS = "options.json"
LOG = "log.csv"
CHECKPOINTS = "checkpoints"
GRIDS = "grids"
RECORDS = "metric-informativity.jsonl"
RECORD_FILES = "metric-*.jsonl"  # every records file of a folder (other metric kinds may be added)
RESUME = "resume.pt"
LOCK = ".lock"
CHECKPOINT_NAME = re.compile(r"^generator-(\d{6,})\.pt$")
MAX_EPOCH = 1_000_000  # far beyond any schedule (the paper: 4000); larger numbers are an error, not a run


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch in a checkpoint file name `generator-EEEEEE.pt`, or None."""
    m = CHECKPOINT_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def run_of_checkpoint(path: str | Path) -> str:
    """The run a translator file belongs to: the run folder of `RUN/checkpoints/<file>`, else
    the file's stem."""
    path = Path(path)
    if path.parent.name == CHECKPOINTS and path.parent.parent.name:
        return path.parent.parent.name
    return path.stem


def is_run_folder(path: str | Path) -> bool:
    """A folder `train-baseline` wrote (it holds options.json)."""
    return (Path(path) / OPTIONS).is_file()


def record_files_in(folder: str | Path) -> list[Path]:
    """The metric record files (`metric-*.jsonl`) of a run folder, or of any folder of records."""
    folder = Path(folder)
    return sorted(folder.glob(RECORD_FILES)) if folder.is_dir() else []


def check_out_folder(path: Path, what: str) -> Path:
    """`path` may become a folder: it is one already, or nothing on its way is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another --out for the {what}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{path}: {parent} is a file, so no {what} can be made under it")
            break
    return path


class RunFolder:
    """A run folder at `path` (it need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- names ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def options_path(self) -> Path:
        return self.path / OPTIONS

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def records_path(self) -> Path:
        return self.path / RECORDS

    @property
    def resume_path(self) -> Path:
        return self.path / RESUME

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"generator-{int(epoch):06d}.pt"

    def grid_path(self, epoch: int) -> Path:
        return self.path / GRIDS / f"grid-{int(epoch):06d}.png"

    def sample_sheet_path(self, epoch: int, key: str) -> Path:
        """The sheet of one epoch; `key` (`scoring.sheets.sheet_key`) tells apart the sheets of
        other stores, splits and seeds."""
        return self.path / f"samples-epoch-{int(epoch):06d}-{key}.npz"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- what is there -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.options_path.is_file() or self.checkpoint_dir.is_dir()

    def record_files(self) -> list[Path]:
        """Every metric record file of the run (`metric-*.jsonl`)."""
        return record_files_in(self.path)

    def owns(self, path: str | Path) -> bool:
        """Whether `path` (a translator file a record names) lies inside this run folder."""
        try:
            Path(path).resolve().relative_to(self.path.resolve())
            return True
        except (ValueError, OSError):
            return False

    def checkpoints(self) -> list[Path]:
        """The checkpoints, sorted by epoch (files only: a dangling or looping link is skipped)."""
        found = []
        if not self.checkpoint_dir.is_dir():
            return []
        for p in self.checkpoint_dir.iterdir():
            epoch = checkpoint_epoch(p)
            if epoch is None:
                continue
            try:
                if not p.is_file():
                    continue
            except OSError:  # a symlink loop
                continue
            found.append((epoch, p))
        return [p for _, p in sorted(found)]

    def grids(self) -> list[Path]:
        folder = self.path / GRIDS
        return sorted(folder.glob("grid-*.png")) if folder.is_dir() else []

    # -- options -------------------------------------------------------------------------------
    def read_options(self) -> dict[str, Any]:
        try:
            options = json.loads(self.options_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{self.options_path}: missing; {self.path} is not a run folder (made by "
                            "`s2i-bench train-baseline`)") from None
        except (OSError, ValueError) as e:
            raise UserError(f"{self.options_path}: cannot read ({e})") from None
        if not isinstance(options, dict):
            raise UserError(f"{self.options_path}: expected a JSON object")
        return options

    def write_options(self, options: dict[str, Any]) -> None:
        atomic_write_json(self.options_path, options)

    # -- the log -------------------------------------------------------------------------------
    def read_log(self):
        """log.csv as a DataFrame (epochs whole numbers in range; a resumed run's repeated epoch:
        the last row counts), or None when there is none."""
        import numpy as np
        import pandas as pd

        if not self.log_path.is_file():
            return None
        try:
            log = pd.read_csv(self.log_path)
        except (OSError, ValueError) as e:
            raise UserError(f"{self.log_path}: cannot read as CSV ({e})") from None
        if "epoch" not in log.columns:
            raise UserError(f"{self.log_path}: no 'epoch' column (a run log written by `s2i-bench train-baseline` "
                            "has epoch, d_updated, pixel_loss, ...)")
        epochs = pd.to_numeric(log["epoch"], errors="coerce")
        bad = epochs.isna() | (epochs < 0) | (epochs > MAX_EPOCH) | (epochs != epochs.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{self.log_path}: row {row + 2}: epoch {log['epoch'].iloc[row]!r} is not a whole "
                            f"number in 0..{MAX_EPOCH}")
        log["epoch"] = epochs.astype(np.int64)
        for column in ("pixel_loss",):
            if column in log.columns:
                log[column] = pd.to_numeric(log[column], errors="coerce")
        return log.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)

    def d_update_epochs(self) -> list[int] | None:
        """The epochs the log marks as D-update epochs (`d_updated`), or None without a log."""
        log = self.read_log()
        if log is None or "d_updated" not in log.columns:
            return None
        return log.loc[log["d_updated"].astype(bool), "epoch"].astype(int).tolist()

    def append_log(self, row: dict[str, Any], columns: list[str]) -> None:
        new = not self.log_path.is_file()
        # never through a link: a planted log.csv link would make the rows land in another file
        with os.fdopen(open_no_follow(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                             for k, v in row.items()})
            f.flush()
            os.fsync(f.fileno())

    def truncate_log(self, last_epoch: int, columns: list[str]) -> None:
        """Keep the log rows of epochs <= last_epoch (a crash may have left a row that the resume
        state does not cover)."""
        if not self.log_path.is_file():
            return
        rows = list(csv.DictReader(io.StringIO(self.log_path.read_text())))
        kept = [r for r in rows if r.get("epoch", "").strip().isdigit() and int(r["epoch"]) <= last_epoch]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.log_path, buf.getvalue())

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while this process writes the folder: a second writer refuses at once. Stale
        temporary files a killed writer left are removed once the lock is ours."""
        check_out_folder(self.path, "run folder")
        self.path.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path / LOCK, f"run folder {self.path}"):
            for folder in (self.path, self.checkpoint_dir, self.path / GRIDS):
                remove_stale_temporaries(folder)
            yield

    def make_folders(self) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (self.path / GRIDS).mkdir(parents=True, exist_ok=True)
