"""The report's inputs: run folders and records files -> runs, one series each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2i_bench.errors import UserError
from s2i_bench.runs import RunFolder, is_run_folder, record_files_in
from s2i_bench.scoring import records as records_mod
from s2i_bench.scoring.records import Record
from s2i_bench.scoring.sheets import read_sheet


@dataclass
class Run:
    """One translator's history: its metric records (one series), its log and its samples."""

    name: str
    folder: Path | None = None  # the run folder, None for records given alone
    options: dict = field(default_factory=dict)
    embedding_dim: int | None = None
    train_seed: int | None = None
    records: list[Record] = field(default_factory=list)  # informativity records, in file order
    record_files: list[Path] = field(default_factory=list)
    log: Any = None  # pandas.DataFrame of log.csv, or None
    sample_sheets: list[Path] = field(default_factory=list)  # .npz of fixed test sounds (Figs. 15/16)
    sheet_epochs: dict = field(default_factory=dict)  # sheet path -> epoch of the record that wrote it
    grids: list[Path] = field(default_factory=list)
    protocol: Any = None  # Protocol (resolved in `analysis.resolve_protocols`)
    protocol_note: str | None = None
    selection_records: list[Record] = field(default_factory=list)  # validation records (the honest choice)

    @property
    def split_policy(self) -> str:
        store = self.options.get("store") or {}
        if store.get("split_policy"):
            return str(store["split_policy"])
        for r in self.records:
            policy = r.split_policy
            if policy:
                return str(policy)
        return "unknown"

    @property
    def leaky(self) -> bool:
        store = self.options.get("store") or {}
        return bool(store.get("leaky")) or self.split_policy == "random" or any(
            r.leaky for r in self.records)

    @property
    def score_seeds(self) -> list[int]:
        return sorted({int(r.seed) for r in self.records if r.seed is not None})

    @property
    def label(self) -> str:
        """How figures and tables name the run."""
        return self.name

    def describe(self) -> str:
        dim = f"f = {self.embedding_dim}" if self.embedding_dim is not None else "f unknown"
        seeds = []
        if self.train_seed is not None:
            seeds.append(f"train seed {self.train_seed}")
        if self.score_seeds:
            seeds.append("score seed " + ", ".join(map(str, self.score_seeds)))
        return f"{self.label} ({dim}; {'; '.join(seeds) or 'seeds not recorded'}; split {self.split_policy})"


def _run_from_folder(folder: Path) -> Run:
    run_folder = RunFolder(folder)
    options = run_folder.read_options()
    run = Run(name=folder.name, folder=folder, options=options)
    dim = options.get("embedding_dim")
    run.embedding_dim = int(dim) if isinstance(dim, int) else None
    seed = options.get("seed")
    run.train_seed = int(seed) if isinstance(seed, int) else None
    for path in run_folder.record_files():
        records = records_mod.read(path, follow_links=False)
        run.records += records
        run.record_files.append(path)
        _attach_sheets(run, records, folder)
    run.log = run_folder.read_log()
    run.sample_sheets = sorted(run.sample_sheets)  # only the sheets the records name (never a neighbour's)
    run.grids = run_folder.grids()
    if not run.records and run.log is None:
        raise UserError(f"{folder}: a run folder with neither log.csv (written by `s2i-bench train-baseline`) nor "
                        "metric-informativity.jsonl (written by `s2i-bench score` or `train-baseline --classifiers`)")
    return run


def load_runs(inputs: list[Path]) -> tuple[list[Run], list[str]]:
    """Run folders and metric-*.jsonl files -> runs, one series each. Returns (runs, notes)."""
    notes: list[str] = []
    folders: list[Run] = []
    loose: list[tuple[Path, list[Record]]] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            if is_run_folder(p):
                folders.append(_run_from_folder(p))
                continue
            files = record_files_in(p)
            if not files:
                raise UserError(f"{p}: neither a run folder (no options.json; made by `s2i-bench train-baseline`) "
                                "nor a folder of metric-*.jsonl records (made by `s2i-bench score`)")
            loose += [(f, records_mod.read(f, follow_links=False)) for f in files]
        elif p.is_file() and p.suffix == ".jsonl":
            loose.append((p, records_mod.read(p)))
        elif p.exists():
            raise UserError(f"{p}: not a run folder or a metric-*.jsonl file (made by `s2i-bench train-baseline` / "
                            "`s2i-bench score`)")
        else:
            raise UserError(f"{p}: missing (a run folder from `s2i-bench train-baseline` or records from "
                            "`s2i-bench score`)")

    # Records given alone join the run folder they were scored from when it is among the inputs.
    by_name: dict[str, list[Run]] = {}
    for run in folders:
        by_name.setdefault(run.name, []).append(run)
    standalone: dict[str, Run] = {}
    for path, records in loose:
        if not records:
            notes.append(f"{path.name}: no informativity records")
            continue
        names_here = set()
        for r in records:
            home = [run for run in folders if r.translator_path and RunFolder(run.folder).owns(r.translator_path)]
            name = r.run
            if not home and len(by_name.get(name, [])) == 1:
                home = by_name[name]
            if home:
                target = home[0]
            else:
                target = standalone.setdefault(name, Run(name=name))
                if target.embedding_dim is None and r.embedding_dim is not None:
                    target.embedding_dim = r.embedding_dim
            target.records.append(r)
            if path not in target.record_files:
                target.record_files.append(path)
            _attach_sheets(target, [r], path.parent)
            names_here.add(target.name)
    for run in folders:
        if not run.records:
            notes.append(f"run {run.name}: no informativity records (score it with `s2i-bench score {run.folder} "
                         "--data STORE --classifiers BUNDLE`, or train with --classifiers)")
    runs = folders + list(standalone.values())
    runs = _split_series(runs, notes)
    _unique_names(runs)
    if not any(r.records for r in runs):
        raise UserError("no informativity records in the inputs: score the runs with `s2i-bench score RUN --data "
                        "STORE --classifiers BUNDLE` (or train them with `s2i-bench train-baseline --classifiers`)")
    return sorted(runs, key=_run_order), notes


def _run_order(run: Run):
    return (run.embedding_dim is None, run.embedding_dim or 0, run.split_policy, run.name)


def _set_aside_selection(run: Run) -> None:
    """Validation records beside test ones are the selection series (epochs and windows are
    chosen on them), not a series of their own."""
    splits = {r.split for r in run.records}
    if "val" in splits and len(splits) > 1:
        run.selection_records = [r for r in run.records if r.split == "val"]
        run.records = [r for r in run.records if r.split != "val"]


def _split_series(runs: list[Run], notes: list[str]) -> list[Run]:
    out = []
    for run in runs:
        _set_aside_selection(run)
        groups: dict[tuple, list[Record]] = {}
        for r in run.records:
            groups.setdefault(r.series_key, []).append(r)
        if len(groups) <= 1:
            out.append(run)
            continue
        keys = list(groups)
        what = ("bundle", "store", "split", "seed", "samples", "protocol")
        differ = [i for i in range(len(what)) if len({k[i] for k in keys}) > 1]
        for k, records in groups.items():
            suffix = ",".join(f"{what[i]} {str(k[i])[:8]}" for i in differ)
            part = Run(**{**run.__dict__, "name": f"{run.name} [{suffix}]", "records": records})
            out.append(part)
        notes.append(f"run {run.name}: records scored under different settings "
                     f"({', '.join(what[i] for i in differ)}) are reported as separate series")
    return out


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, list[Run]] = {}
    for run in runs:
        seen.setdefault(run.name, []).append(run)
    for name, same in seen.items():
        if len(same) < 2:
            continue
        for run in same:
            parent = run.folder.parent.name if run.folder is not None else "records"
            run.name = f"{parent}/{name}" if parent else name
        if len({r.name for r in same}) < len(same):
            for i, run in enumerate(same):
                run.name = f"{run.name}#{i + 1}"


def _attach_sheets(run: Run, records: list[Record], base: Path) -> None:
    """Sample sheets named by the records (`sample_sheet`: absolute, or relative to where the
    scoring ran or to the records file's folder), with the epoch of the record that wrote them."""
    for r in records:
        name = r.sample_sheet
        if not name:
            continue
        candidates = [Path(name)] if Path(name).is_absolute() else [Path(name), base / name, base / Path(name).name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            continue  # the record outlived its sheet; the figures fall back to other sheets
        if path not in run.sample_sheets:
            run.sample_sheets.append(path)
        if r.epoch is not None:
            run.sheet_epochs[path] = int(r.epoch)


def is_reference_run(run: Run) -> bool:
    """A run made only of reference translators' records (`s2i-bench score reference:NAME`)."""
    return bool(run.records) and all(r.translator_kind == "reference" for r in run.records)


def reference_levels(references: list[Run], class_keys) -> list[dict]:
    """Each reference translator's level (its latest record): raw, corrected and true shares per
    class and their means, in a fixed order (the scale from ceiling to chance)."""
    order = {"real-frame": 0, "retrieval": 1, "class-prototype": 2, "random-frame": 3}
    levels = []
    for run in references:
        r = run.records[-1]
        level = {"name": str(r.translator_name or run.name), "run": run, "corrected_ci": r.mean_ci("corrected_share")}
        for measure, short in (("raw_share", "raw"), ("corrected_share", "corrected"), ("true_share", "true")):
            values = {k: r.share(k, measure) for k in class_keys}
            values["mean"] = r.mean(measure)
            level[short] = values
        levels.append(level)
    return sorted(levels, key=lambda lv: (order.get(lv["name"], 9), lv["name"]))


def pick_sample_sheet(run: Run) -> dict | None:
    """The run's sheet of the latest epoch (by the record that wrote it, else by file name)."""
    if not run.sample_sheets:
        return None
    path = max(run.sample_sheets, key=lambda p: (run.sheet_epochs.get(p, -1), p.name))
    sheet = read_sheet(path)
    sheet["epoch"] = run.sheet_epochs.get(path)
    return sheet
