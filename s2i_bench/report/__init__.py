"""`s2i-bench report`: the paper's figures and tables for a set of runs, beside the paper's numbers.

The report only reads what the other commands wrote (docs/architecture.md):

    RUN/options.json, RUN/log.csv, RUN/metric-*.jsonl, RUN/samples-*.npz, RUN/grids/   train-baseline, score
    *.jsonl (metric records)                                                         score
    STORE/store.json, manifest.csv, frames.npy   (--data, Table 1 and Fig. 16)        prepare
    BUNDLE.json, the bundle card                  (--classifiers)                     train-classifiers

and writes OUT/index.md, OUT/index.html, OUT/tables/*.{csv,md,tex}, OUT/series/*.csv,
OUT/figures/*.{png,pdf,svg} (with --figures) and OUT/report.json (what was read and written).
It never trains or scores. The series metrics (post-update replacement, window average,
moving averages) are those of `s2i_bench.scoring.metrics`; nothing here recomputes them differently.

Tables contain no time stamps and no absolute paths, so the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json, atomic_write_text, check_publishable, progress, publish_folder, read_jsonl, staged_folder

# results/paper/paper-numbers.csv, shipped as package data (s2i_bench.paper)
PAPER_NUMBERS = Path(str(importlib.resources.files("s2i_bench.paper"))) / "paper-numbers.csv"
FORMATS = ("png", "pdf", "svg")
MEASURES = ("raw_share", "corrected_share", "true_share")
REPORT_KIND = "s2i-bench-report"  # the kind of folder `report` owns (io.publish_folder)


# -- inputs ---------------------------------------------------------------------------------------
@dataclass
class Run:
    """One translator's history: its metric records (one series), its log and its samples."""

    name: str
    folder: Path | None = None  # the run folder, None for records given alone
    options: dict = field(default_factory=dict)
    embedding_dim: int | None = None
    train_seed: int | None = None
    records: list[dict] = field(default_factory=list)  # informativity records, in file order
    record_files: list[Path] = field(default_factory=list)
    log: Any = None  # pandas.DataFrame of log.csv, or None
    sample_sheets: list[Path] = field(default_factory=list)  # .npz of fixed test sounds (Figs. 15/16)
    sheet_epochs: dict = field(default_factory=dict)  # sheet path -> epoch of the record that wrote it
    grids: list[Path] = field(default_factory=list)
    protocol: Any = None  # Protocol (resolved in `_resolve_protocols`)
    protocol_note: str | None = None

    @property
    def split_policy(self) -> str:
        store = self.options.get("store") or {}
        if store.get("split_policy"):
            return str(store["split_policy"])
        for r in self.records:
            policy = (r.get("store") or {}).get("split_policy")
            if policy:
                return str(policy)
        return "unknown"

    @property
    def leaky(self) -> bool:
        store = self.options.get("store") or {}
        return bool(store.get("leaky")) or self.split_policy == "random" or any(
            (r.get("store") or {}).get("leaky") for r in self.records)

    @property
    def score_seeds(self) -> list[int]:
        return sorted({int(r["seed"]) for r in self.records if r.get("seed") is not None})

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


def _load_json(path: Path, made_by: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing (written by `{made_by}`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def _share_ok(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0)


def read_records(path: Path) -> list[dict]:
    """The informativity records of one metric-*.jsonl file, checked; other kinds are skipped."""
    try:
        raw = read_jsonl(path)
    except json.JSONDecodeError:
        bad = next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                   if line.strip() and not _is_json(line))
        raise UserError(f"{path}: line {bad} is not valid JSON; not a metric record file written by "
                        "`s2i-bench score`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    out = []
    for i, r in enumerate(raw, start=1):
        where = f"{path}: record {i}"
        if not isinstance(r, dict):
            raise UserError(f"{where}: not a JSON object")
        if r.get("kind") != "informativity":
            continue
        epoch = r.get("epoch")
        if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
            raise UserError(f"{where}: epoch must be a whole number >= 0, got {epoch!r}")
        classes = r.get("classes")
        if not isinstance(classes, dict) or not classes:
            raise UserError(f"{where}: no per-class results ('classes')")
        for key, c in classes.items():
            if not isinstance(c, dict):
                raise UserError(f"{where}: classes.{key} is not an object")
            for m in (*MEASURES, "class_match_rate"):
                if not _share_ok(c.get(m)):
                    raise UserError(f"{where}: classes.{key}.{m} = {c.get(m)!r} is not a share in [0, 1]")
            ci = c.get("corrected_ci")
            if ci is not None and (not isinstance(ci, list) or len(ci) != 2 or not all(_share_ok(b) for b in ci)):
                raise UserError(f"{where}: classes.{key}.corrected_ci = {ci!r} is not an interval in [0, 1]")
        r = dict(r)
        r["_source"] = f"{path.name}:{i}"
        out.append(r)
    return out


def _read_log(path: Path):
    import pandas as pd

    try:
        log = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read as CSV ({e})") from None
    missing = [c for c in ("epoch", "pixel_loss") if c not in log.columns]
    if missing:
        raise UserError(f"{path}: missing columns {missing} (a run log written by `s2i-bench train-baseline` has "
                        "epoch, d_updated, pixel_loss, ...)")
    log["epoch"] = pd.to_numeric(log["epoch"], errors="coerce")
    log["pixel_loss"] = pd.to_numeric(log["pixel_loss"], errors="coerce")
    if log["epoch"].isna().any():
        raise UserError(f"{path}: column 'epoch' has empty or non-numeric values")
    log["epoch"] = log["epoch"].astype(np.int64)
    # A resumed run may repeat epochs: the last row of an epoch is the one that counts.
    return log.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _run_from_folder(folder: Path) -> Run:
    options = _load_json(folder / "options.json", "s2i-bench train-baseline")
    run = Run(name=folder.name, folder=folder, options=options)
    dim = options.get("embedding_dim")
    run.embedding_dim = int(dim) if isinstance(dim, int) else None
    seed = options.get("seed")
    run.train_seed = int(seed) if isinstance(seed, int) else None
    for path in sorted(folder.glob("metric-*.jsonl")):
        records = read_records(path)
        run.records += records
        run.record_files.append(path)
        _attach_sheets(run, records, folder)
    if (folder / "log.csv").is_file():
        run.log = _read_log(folder / "log.csv")
    run.sample_sheets = sorted({*run.sample_sheets, *folder.glob("samples-*.npz"), *folder.glob("*/samples-*.npz")})
    run.grids = sorted((folder / "grids").glob("grid-*.png")) if (folder / "grids").is_dir() else []
    if not run.records and run.log is None:
        raise UserError(f"{folder}: a run folder with neither log.csv (written by `s2i-bench train-baseline`) nor "
                        "metric-informativity.jsonl (written by `s2i-bench score` or `train-baseline --classifiers`)")
    return run


def _record_run_name(r: dict) -> str:
    g = r.get("generator") or {}
    for name in (r.get("run"), g.get("run")):
        if name:
            return str(name)
    p = Path(str(g.get("path") or "unnamed"))
    # RUN/checkpoints/generator-000060.pt belongs to RUN
    if p.parent.name == "checkpoints" and p.parent.parent.name:
        return p.parent.parent.name
    return p.stem


def _is_inside(path: str | None, folder: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def load_runs(inputs: list[Path]) -> tuple[list[Run], list[str]]:
    """Run folders and metric-*.jsonl files -> runs, one series each. Returns (runs, notes)."""
    notes: list[str] = []
    folders: list[Run] = []
    loose: list[tuple[Path, list[dict]]] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            if (p / "options.json").is_file():
                folders.append(_run_from_folder(p))
                continue
            files = sorted(p.glob("metric-*.jsonl"))
            if not files:
                raise UserError(f"{p}: neither a run folder (no options.json; made by `s2i-bench train-baseline`) "
                                "nor a folder of metric-*.jsonl records (made by `s2i-bench score`)")
            loose += [(f, read_records(f)) for f in files]
        elif p.is_file() and p.suffix == ".jsonl":
            loose.append((p, read_records(p)))
        elif p.exists():
            raise UserError(f"{p}: not a run folder or a metric-*.jsonl file (made by `s2i-bench train-baseline` / "
                            "`s2i-bench score`)")
        else:
            raise UserError(f"{p}: missing (a run folder from `s2i-bench train-baseline` or records from `s2i-bench score`)")

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
            g = r.get("generator") or {}
            home = [run for run in folders if _is_inside(g.get("path"), run.folder)]
            name = _record_run_name(r)
            if not home and len(by_name.get(name, [])) == 1:
                home = by_name[name]
            if home:
                target = home[0]
            else:
                target = standalone.setdefault(name, Run(name=name))
                if target.embedding_dim is None and isinstance(g.get("embedding_dim"), int):
                    target.embedding_dim = int(g["embedding_dim"])
            target.records.append(r)
            if path not in target.record_files:
                target.record_files.append(path)
            _attach_sheets(target, [r], path.parent)
            names_here.add(target.name)
        # Sample sheets beside a records file belong to its run when the file holds one run only.
        sheets = sorted(path.parent.glob("samples-*.npz"))
        if sheets and len(names_here) == 1:
            target = next(r for r in [*folders, *standalone.values()] if r.name in names_here)
            target.sample_sheets = sorted({*target.sample_sheets, *sheets})
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


def _series_key(r: dict) -> tuple:
    """What must agree for records to form one series (as `scoring.matching_records` selects):
    the same classifiers, store, split, seed and samples."""
    return ((r.get("classifiers") or {}).get("sha256"), (r.get("store") or {}).get("hash"), r.get("split"),
            r.get("seed"), r.get("samples"))


def _split_series(runs: list[Run], notes: list[str]) -> list[Run]:
    out = []
    for run in runs:
        groups: dict[tuple, list[dict]] = {}
        for r in run.records:
            groups.setdefault(_series_key(r), []).append(r)
        if len(groups) <= 1:
            out.append(run)
            continue
        keys = list(groups)
        differ = [i for i in range(5) if len({k[i] for k in keys}) > 1]
        what = ("bundle", "store", "split", "seed", "samples")
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


# -- protocol ----------------------------------------------------------------------------------------
def _resolve_protocols(runs: list[Run], store) -> Any:
    """Give every run its full protocol and check that they agree on what the metrics need."""
    from s2i_bench.protocol import load_protocol, protocol_from_dict

    for run in runs:
        ref = run.options.get("protocol") or next((r.get("protocol") for r in run.records if r.get("protocol")), None)
        full = run.options.get("protocol_full")
        if full is None and isinstance(ref, dict) and "classes" in ref:
            full = ref
        if isinstance(full, dict):
            try:
                run.protocol = protocol_from_dict(full)
                continue
            except UserError as e:
                run.protocol_note = f"the protocol in options.json could not be rebuilt ({e})"
        if not isinstance(ref, dict) or not ref.get("name"):
            raise UserError(f"run {run.name}: no protocol recorded in options.json or the metric records")
        if store is not None and store.meta.get("protocol", {}).get("fingerprint") == ref.get("fingerprint"):
            run.protocol = store.protocol
            continue
        try:
            run.protocol = load_protocol(str(ref["name"]))
        except UserError as e:
            raise UserError(f"run {run.name}: protocol {ref['name']!r} is recorded but cannot be loaded ({e}); "
                            "pass --data STORE made with it") from None
        if ref.get("fingerprint") and ref["fingerprint"] != run.protocol.fingerprint:
            run.protocol_note = (f"recorded protocol {ref['name']} has fingerprint {ref['fingerprint']}; the installed "
                                 f"protocols/{ref['name']}.toml has {run.protocol.fingerprint} (its metric settings are used)")
    first = runs[0].protocol
    for run in runs[1:]:
        p = run.protocol
        for what, a, b in (("classes", first.class_keys, p.class_keys), ("metrics", first.metrics, p.metrics),
                           ("training.d_every_epochs", first.training.d_every_epochs, p.training.d_every_epochs)):
            if a != b:
                raise UserError(f"runs {runs[0].name} and {run.name} were made with different {what} "
                                f"({first.name} vs {p.name}); report them separately")
    return first


# -- analysis ------------------------------------------------------------------------------------------
@dataclass
class Analysis:
    """The series of one run and their summaries, from `s2i_bench.scoring.metrics`."""

    run: Run
    summaries: dict[str, dict]  # measure -> summarise_classes summary
    frames: dict[str, Any]  # measure -> replaced frame (epoch, d_update, replaced, left_out, classes, mean)
    moving: dict[str, dict[str, np.ndarray]]  # measure -> column -> moving average aligned with frame
    last: dict[str, dict]  # class key or "mean" -> values of the last scored epoch's record
    last_epoch: int | None
    pixel_ma: np.ndarray | None = None  # moving average of log.pixel_loss


def analyse(run: Run, protocol) -> Analysis:
    from s2i_bench.scoring import metrics

    keys = protocol.class_keys
    spec = protocol.metrics
    d_epochs = None
    if run.log is not None and "d_updated" in run.log.columns:
        d_epochs = run.log.loc[run.log["d_updated"].astype(bool), "epoch"].tolist()
    summaries, frames, moving = {}, {}, {}
    scored = [r for r in run.records if r.get("epoch") is not None]
    for measure in MEASURES:
        if not any((r.get("classes") or {}).get(k, {}).get(measure) is not None for r in scored for k in keys):
            continue
        series = metrics.series_from_records(scored, keys, measure=measure, d_update_epochs=d_epochs,
                                             d_every_epochs=protocol.training.d_every_epochs)
        summary, frame = metrics.summarise_frame(series, keys, spec)
        summaries[measure], frames[measure] = summary, frame
        moving[measure] = {c: metrics.moving_average(frame["epoch"].to_numpy(), frame[c].to_numpy(dtype=float),
                                                     spec.moving_average) for c in (*keys, "mean")}
    last_epoch, last = None, {}
    if scored:
        last_epoch = max(int(r["epoch"]) for r in scored)
        record = [r for r in scored if int(r["epoch"]) == last_epoch][-1]
    elif run.records:
        record = run.records[-1]
    else:
        record = None
    if record is not None:
        last = {k: dict((record.get("classes") or {}).get(k) or {}) for k in keys}
        last["mean"] = dict(record.get("mean") or {})
    pixel_ma = None
    if run.log is not None and len(run.log):
        pixel_ma = metrics.moving_average(run.log["epoch"].to_numpy(), run.log["pixel_loss"].to_numpy(dtype=float),
                                          spec.moving_average)
    return Analysis(run, summaries, frames, moving, last, last_epoch, pixel_ma)


def summary_row(a: Analysis) -> dict:
    """The per-run dict `tables.informativity_table` reads."""
    metrics_by_measure = {}
    for measure, s in a.summaries.items():
        metrics_by_measure[measure] = {**s["classes"], "mean": s["mean"]}
    n_epochs = a.summaries.get("raw_share", {}).get("num_epochs")
    seeds = a.run.score_seeds
    return {"run": a.run.label, "embedding_dim": a.run.embedding_dim, "split_policy": a.run.split_policy,
            "seed": seeds[0] if len(seeds) == 1 else (" ".join(map(str, seeds)) or None),
            "n_epochs": n_epochs, "last_epoch": a.last_epoch, "last": a.last, "metrics": metrics_by_measure}


# -- store, bundle, paper -------------------------------------------------------------------------------
def load_paper_numbers(path: Path = PAPER_NUMBERS):
    """results/paper/paper-numbers.csv indexed by key (None when the file is not shipped)."""
    import pandas as pd

    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"key": str, "relation": str, "source": str})
    return table.set_index("key")


def load_card(bundle: Path) -> dict:
    """The bundle's JSON card (BUNDLE.json); without one, the card stored inside BUNDLE.pt."""
    bundle = Path(bundle)
    card_path = bundle if bundle.suffix == ".json" else bundle.with_suffix(".json")
    if not card_path.is_file() and bundle.suffix == ".pt" and bundle.is_file():
        from s2i_bench.informativity.classifiers import load_bundle

        return load_bundle(bundle).card  # loaded with weights_only=True
    card = _load_json(card_path, "s2i-bench train-classifiers")
    if card.get("format") != "s2i-bench-classifiers":
        raise UserError(f"{card_path}: not a classifier bundle card (format={card.get('format')!r}; written by "
                        "`s2i-bench train-classifiers`)")
    return card


def segment_class(segment_id: str, class_keys) -> str | None:
    """The class key inside `<video_id>_<class_key>_<k>`, or None."""
    for key in sorted(class_keys, key=len, reverse=True):
        if re.search(rf"_{re.escape(key)}_\d+$", segment_id):
            return key
    return None


def _attach_sheets(run: Run, records: list[dict], base: Path) -> None:
    """Sample sheets named by the records (`sample_sheet`: absolute, or relative to where the
    scoring ran or to the records file's folder), with the epoch of the record that wrote them."""
    for r in records:
        name = r.get("sample_sheet")
        if not name:
            continue
        candidates = [Path(name)] if Path(name).is_absolute() else [Path(name), base / name, base / Path(name).name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            continue  # the record outlived its sheet; the figures fall back to other sheets
        if path not in run.sample_sheets:
            run.sample_sheets.append(path)
        if r.get("epoch") is not None:
            run.sheet_epochs[path] = int(r["epoch"])


def read_sample_sheet(path: Path) -> dict:
    """A sample sheet written by `s2i_bench.scoring.score`: images (N,S,S,3) uint8 and segment_ids (N,)
    str; optional frames (N,S',S',3) uint8 (the real centre frames), class_keys (N,) str, seeds.
    Loaded without pickle; shapes and types checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a sample sheet written by `s2i-bench score` ({e})") from None
    images, ids = data.get("images"), data.get("segment_ids")
    if images is None or ids is None:
        raise UserError(f"{path}: needs arrays 'images' and 'segment_ids' (has {sorted(data)})")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{path}: images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    if ids.ndim != 1 or ids.shape[0] != images.shape[0] or ids.dtype.kind not in "US":
        raise UserError(f"{path}: segment_ids must be (N,) strings matching images, got {ids.dtype} {ids.shape}")
    out = {"path": path, "images": images, "segment_ids": [str(s) for s in ids]}
    if "class_keys" in data:
        if data["class_keys"].shape != ids.shape or data["class_keys"].dtype.kind not in "US":
            raise UserError(f"{path}: class_keys must be (N,) strings matching images")
        out["class_keys"] = [str(s) for s in data["class_keys"]]
    if "frames" in data:
        frames = data["frames"]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != images.shape[0] or frames.shape[-1] != 3:
            raise UserError(f"{path}: frames must be uint8 (N, S, S, 3) matching images, got {frames.dtype} "
                            f"{frames.shape}")
        out["frames"] = frames
    return out


def pick_sample_sheet(run: Run) -> dict | None:
    """The run's sheet of the latest epoch (by the record that wrote it, else by file name)."""
    if not run.sample_sheets:
        return None
    path = max(run.sample_sheets, key=lambda p: (run.sheet_epochs.get(p, -1), p.name))
    sheet = read_sample_sheet(path)
    sheet["epoch"] = run.sheet_epochs.get(path)
    return sheet


# -- the report --------------------------------------------------------------------------------------
@dataclass
class Item:
    """One figure or table in the index."""

    kind: str  # "figure" | "table"
    title: str
    caption: str  # one line: what it shows
    provenance: str  # which runs, protocol, seeds
    files: list[Path]  # relative to OUT
    table: Any = None  # tables.Table for tables (shown inline)


def _check_formats(formats) -> list[str]:
    formats = [f.lower().lstrip(".") for f in (formats or ["png"])]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"--format: unknown {', '.join(bad)} (valid: {', '.join(FORMATS)})")
    return list(dict.fromkeys(formats)) or ["png"]


def build_report(inputs, out, figures: bool = False, store=None, bundle=None, formats=("png",),
                 overwrite: bool = False) -> Path:
    """Render the report of INPUTS (run folders, metric-*.jsonl files) into OUT; returns index.md.

    OUT is the report's own: new, empty, or an earlier report (its file manifest says which
    files it wrote, with their hashes). The report is rendered into a staging folder inside OUT,
    then moved in file by file; a file of the user's in the way, or one of the report's that the
    user has changed since, is refused (unless `overwrite`); earlier report files that this one
    does not write are removed only when unchanged."""
    formats = _check_formats(formats)
    final = Path(out)
    check_publishable(final, REPORT_KIND, overwrite=overwrite, what="`s2i-bench report`")
    with staged_folder(final) as stage:
        _render_report(inputs, stage, figures=figures, store=store, bundle=bundle, formats=formats)
        publish_folder(stage, final, REPORT_KIND, overwrite=overwrite, what="`s2i-bench report`")
    return final / "index.md"


def _render_report(inputs, out: Path, figures: bool, store, bundle, formats) -> None:
    from s2i_bench.report import tables as T

    runs, notes = load_runs([Path(p) for p in inputs])
    store_obj = None
    if store is not None:
        from s2i_bench.data.store import open_store

        store_obj = open_store(store)
    card = load_card(bundle) if bundle is not None else None
    protocol = _resolve_protocols(runs, store_obj)
    for run in runs:
        if run.protocol_note:
            notes.append(f"run {run.name}: {run.protocol_note}")
    if store_obj is not None and store_obj.meta.get("protocol", {}).get("name") != protocol.name:
        notes.append(f"the store was made with protocol {store_obj.meta.get('protocol', {}).get('name')}, "
                     f"the runs with {protocol.name}")
    paper = load_paper_numbers()
    if paper is None:
        notes.append(f"{PAPER_NUMBERS}: missing, so no paper values are shown")
    analyses = [analyse(run, protocol) for run in runs]

    items: list[Item] = []
    written: list[Path] = []
    ctx = _Context(out, protocol, runs, store_obj, card)

    # Tables (always).
    table_jobs = []
    if store_obj is not None:
        table_jobs.append(("table1", lambda: _table1(T, store_obj, protocol, paper), [], True))
    if card is not None:
        table_jobs.append(("classifiers", lambda: T.classifier_table(card, protocol.class_keys, protocol.class_names,
                                                                    paper), [], True))
    table_jobs.append(("informativity", lambda: T.informativity_table(
        [summary_row(a) for a in analyses], protocol.class_keys, protocol.class_names, paper,
        protocol.metrics.moving_average, (protocol.metrics.window_start, protocol.metrics.window_end)), runs, False))

    figure_jobs = _figure_jobs(ctx, analyses, paper, formats) if figures else []
    for job in progress(table_jobs + figure_jobs, desc="report", unit="item"):
        name, make, used_runs, is_data_table = job[:4]
        if name in ("table1", "classifiers", "informativity"):
            table = make()
            paths = table.write(out / "tables")
            rel = [p.relative_to(out) for p in paths.values()]
            written += rel
            items.append(Item("table", table.title, table.caption,
                              ctx.provenance(used_runs, store=name == "table1", bundle=name == "classifiers"),
                              rel, table))
        else:
            item = make()
            if item is not None:
                items.append(item)
                written += item.files

    # The replaced series behind Figs. 7-11, as data.
    for a in analyses:
        for measure, frame in a.frames.items():
            rel = Path("series") / f"{_slug(a.run.label)}-{measure.replace('_share', '')}.csv"
            atomic_write_text(out / rel, frame.to_csv(index=False, float_format="%.6g", na_rep=""))
            written.append(rel)

    if not figures:
        notes.append("figures not rendered (pass --figures)")
    _write_index(ctx, items, notes)
    written += [Path("index.md"), Path("index.html")]
    _write_manifest(ctx, written, formats, figures, notes)


def _table1(T, store, protocol, paper):
    manifest = store.manifest
    videos = manifest.groupby("class")["video_id"].nunique().to_dict()
    counts = store.meta.get("counts") or {}
    if not counts:  # older stores: count from the manifest
        for (cls, split), n in manifest.groupby(["class", "split"]).size().items():
            counts.setdefault(cls, {})[split] = int(n)
    return T.table1(counts, videos, protocol.class_keys, protocol.class_names, paper, store.split_policy)


@dataclass
class _Context:
    out: Path
    protocol: Any
    runs: list[Run]
    store: Any
    card: dict | None

    @property
    def random_split(self) -> list[Run]:
        return [r for r in self.runs if r.split_policy == "random"]

    @property
    def leaky_split(self) -> list[Run]:
        """Runs on a video split that the audit found leaky and the user allowed anyway."""
        return [r for r in self.runs if r.leaky and r.split_policy != "random"]

    @property
    def split_warning(self) -> str | None:
        """The short form for figure titles."""
        if self.random_split:
            return "split: RANDOM (segment-level, leaky)"
        return "split: LEAKY (allowed by --allow-leakage)" if self.leaky_split else None

    def title_lines(self) -> list[str]:
        p = self.protocol
        lines = [f"Protocol {p.name} {p.version} (fingerprint {p.fingerprint}); "
                 f"{len(self.runs)} run(s): {', '.join(r.label for r in self.runs)}."]
        versions = sorted({str(v) for r in self.runs
                           for v in [r.options.get("code_version"), *(x.get("code_version") for x in r.records)] if v})
        if versions:
            # The code that made the numbers (the report's own version would change the index
            # with every commit although the inputs did not change).
            lines.append("Code version of the inputs: " + ", ".join(versions) + ".")
        if self.leaky_split:
            lines.insert(0, "WARNING: LEAKY split (the audit found videos or near-duplicates across splits and "
                         "`prepare --allow-leakage` kept them) for " + ", ".join(r.label for r in self.leaky_split)
                         + ": informativity may be inflated.")
        if self.random_split:
            lines.insert(0, "WARNING: split policy RANDOM (segment-level, leaky) for "
                         + ", ".join(r.label for r in self.random_split)
                         + ": test sounds come from videos seen in training, so informativity is inflated.")
        return lines

    def provenance(self, runs: list[Run], store: bool = False, bundle: bool = False) -> str:
        parts = []
        if runs:
            parts.append("runs: " + "; ".join(r.describe() for r in runs))
        p = self.protocol
        parts.append(f"protocol {p.name} {p.version} ({p.fingerprint})")
        if store and self.store is not None:
            sp = self.store.meta.get("split") or {}
            parts.append(f"store {self.store.store_hash} (split {sp.get('policy')}, seed {sp.get('seed')})")
        if bundle and self.card is not None:
            c = self.card
            known = [f"source {c.get('source', 'trained')}"]
            known += [f"seed {c['seed']}"] if c.get("seed") is not None else []
            known += [f"pool {str(c['pool_hash'])[:12]}"] if c.get("pool_hash") else []
            parts.append("classifiers: " + ", ".join(known))
        if runs:
            bundles = sorted({str((rec.get("classifiers") or {}).get("sha256"))[:12] for r in runs for rec in r.records
                              if (rec.get("classifiers") or {}).get("sha256")})
            if bundles:
                parts.append("scored with classifiers " + ", ".join(bundles))
        return "; ".join(parts) + "."


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "run"


def _figure_jobs(ctx: _Context, analyses: list[Analysis], paper, formats) -> list:
    from s2i_bench.report import figures as F

    keys, names = ctx.protocol.class_keys, ctx.protocol.class_names
    spec = ctx.protocol.metrics
    jobs = []
    warn = ctx.split_warning

    def figure_item(stem, title, caption, runs, make, store=False):
        def job():
            with F.style():
                fig = make()
                if fig is None:
                    return None
                if warn:
                    F.add_warning(fig, warn)
                files = F.save(fig, ctx.out / "figures" / stem, formats)
            return Item("figure", title, caption, ctx.provenance(runs, store=store), [f.relative_to(ctx.out) for f in files])
        return (stem, job, runs, False)

    scored = [a for a in analyses if "raw_share" in a.frames]
    if scored:
        jobs.append(figure_item(
            "fig07-11-informativity", "Figs. 7–11: informativity per epoch",
            f"Share of test images called informative per epoch (raw, after the post-update replacement), per class "
            f"and mean, one panel per run/embedding size; replaced epochs marked, {spec.moving_average}-epoch moving "
            "average drawn.", [a.run for a in scored],
            lambda: F.informativity_per_epoch(scored, keys, names, spec)))
    with_dim = [a for a in scored if a.run.embedding_dim is not None]
    if with_dim:
        jobs.append(figure_item(
            "fig12-embedding-size", "Fig. 12: informativity against embedding size",
            f"Window average (epochs {spec.window_start}–{spec.window_end}) and maximum {spec.moving_average}-epoch "
            "moving average of informativity against the embedding size f, per class and mean, with the paper's "
            "value where it gives one (> 14% at f = 512, §5.4.1).", [a.run for a in with_dim],
            lambda: F.embedding_size(with_dim, keys, names, paper)))
    logged = [a for a in analyses if a.run.log is not None and len(a.run.log)]
    if logged:
        jobs.append(figure_item(
            "fig13-pixel-loss-moving-average", "Fig. 13: moving average of the training pixel loss",
            f"{spec.moving_average}-epoch moving average of the generator's training pixel loss (MSE on images in "
            "[-1, 1]) per run/embedding size.", [a.run for a in logged],
            lambda: F.pixel_loss(logged, moving=True, length=spec.moving_average)))
        jobs.append(figure_item(
            "fig14-pixel-loss", "Fig. 14: average pixel loss per epoch",
            "The generator's training pixel loss (MSE, epoch mean) per epoch, per run/embedding size.",
            [a.run for a in logged], lambda: F.pixel_loss(logged, moving=False, length=spec.moving_average)))
    # Figs. 15/16 show one translator, as the paper does (its best, f = 512): the run with the
    # highest maximum moving average of mean informativity among those with a sample sheet.
    with_sheet = [a for a in analyses if a.run.sample_sheets]
    best = _best_run(with_sheet)
    if best is not None:
        run, sheet = best.run, pick_sample_sheet(best.run)
        epoch = sheet.get("epoch")
        at = f" after epoch {epoch}" if epoch is not None else ""
        why = "" if len(with_sheet) == 1 else ", the run with the highest mean informativity"
        jobs.append(figure_item(
            "fig15-samples", f"Fig. 15: generated images per class ({run.label})",
            f"Images translated from fixed test sounds by {run.label}{why}{at}, one row per class "
            f"(sheet {sheet['path'].name}).", [run],
            lambda: F.sample_grid(sheet, keys, names)))
        if "frames" in sheet or ctx.store is not None:
            source = "the sheet" if "frames" in sheet else "the store"
            jobs.append(figure_item(
                "fig16-originals", f"Fig. 16: original frames beside translations ({run.label})",
                f"Centre frame of each test segment (left of each pair, from {source}) beside the image {run.label} "
                f"translated from its sound{at}, one row per class.", [run],
                lambda: F.originals_beside(sheet, ctx.store, keys, names), store="frames" not in sheet))
    else:
        grid_runs = [a.run for a in analyses if a.run.grids]
        if grid_runs:
            best_grid = _best_run([a for a in analyses if a.run.grids]).run
            jobs.append(("fig15-grid", lambda: _copy_grid(ctx, best_grid), [best_grid], False))
    if any("corrected_share" in a.frames or a.last for a in analyses):
        with_last = [a for a in analyses if a.last]
        jobs.append(figure_item(
            "beyond-raw-vs-corrected", "Raw vs corrected informativity (beyond the paper)",
            "At each run's last scored epoch: the raw share the classifiers report, the Rogan–Gladen corrected share "
            "with its 95% bootstrap interval, and (synthetic data) the judge's true share, per class and mean.",
            [a.run for a in with_last], lambda: F.raw_vs_corrected(with_last, keys, names)))
    if any(r.get("classes", {}).get(k, {}).get("class_match_rate") is not None for a in analyses
           for r in a.run.records for k in keys):
        jobs.append(figure_item(
            "beyond-class-match", "Class-match rate vs informativity (beyond the paper)",
            "Every scored epoch and class: the share of images a real-frame 5-class classifier assigns to the sound's "
            "class (the metric the paper rejected, §5.3) against the share called informative; points right of the "
            "diagonal are the inflation.", [a.run for a in analyses],
            lambda: F.class_match(analyses, keys, names, paper)))
    if any("true_share" in a.frames for a in analyses):
        truth = [a for a in analyses if "true_share" in a.frames]
        jobs.append(figure_item(
            "beyond-judge-truth", "Estimates against the judge's truth (synthetic data, beyond the paper)",
            "Every scored epoch and class: raw and corrected informativity against the synthetic world judge's true "
            "share; the diagonal is a perfect estimate.", [a.run for a in truth],
            lambda: F.judge_truth(truth, keys, names)))
    policies = {a.run.split_policy for a in scored}
    if {"random", "video"} <= policies:
        jobs.append(figure_item(
            "beyond-split-policy", "Random vs video-disjoint split (beyond the paper)",
            "Mean informativity (window average; and the judge's truth when known) of runs trained and scored on a "
            "random segment-level split against a video-disjoint split, per embedding size.", [a.run for a in scored],
            lambda: F.split_policy(scored)))
    return jobs


def _best_run(analyses: list[Analysis]) -> Analysis | None:
    """The analysis with the highest maximum moving average of mean raw informativity (then
    window average, then last mean share); the first on a tie."""
    def score(a: Analysis):
        mean = (a.summaries.get("raw_share") or {}).get("mean") or {}
        last = (a.last.get("mean") or {}).get("raw_share")
        return tuple(-1.0 if v is None else float(v)
                     for v in (mean.get("max_moving_average"), mean.get("window_average"), last))
    return max(analyses, key=score) if analyses else None


def _copy_grid(ctx: _Context, run: Run) -> Item:
    """No sample sheet: show the run's last training grid (fixed validation sounds) as it is."""
    grid = run.grids[-1]
    rel = Path("figures") / "fig15-grid.png"
    (ctx.out / "figures").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid, ctx.out / rel)
    return Item("figure", f"Fig. 15 (training grid): {run.label}",
                f"The last image grid saved during training ({grid.name}: fixed validation sounds); no sample sheet "
                "of test sounds was found (written by `s2i-bench score`).", ctx.provenance([run]), [rel])


# -- index --------------------------------------------------------------------------------------------
def _write_index(ctx: _Context, items: list[Item], notes: list[str]) -> None:
    title = "s2i-bench report"
    head = ctx.title_lines()
    md = [f"# {title}", ""]
    for line in head:
        md += [f"**{line}**" if line.startswith("WARNING") else line, ""]
    if notes:
        md += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    for it in items:
        md += [f"## {it.title}", "", it.caption, "", f"*From:* {it.provenance}", ""]
        if it.kind == "figure":
            png = [f for f in it.files if f.suffix == ".png"] or it.files[:1]
            if png and png[0].suffix in (".png", ".svg"):
                md += [f"![{it.title}]({png[0].as_posix()})", ""]
        else:
            md += [it.table.markdown_block()]
        md += ["Files: " + ", ".join(f"[{f.name}]({f.as_posix()})" for f in it.files), ""]
    atomic_write_text(ctx.out / "index.md", "\n".join(md).rstrip() + "\n")

    e = html.escape
    h = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%}.warn{color:#a00;font-weight:bold}"
         ".from{color:#555;font-size:90%}</style></head><body>", f"<h1>{e(title)}</h1>"]
    h += [f"<p class=\"{'warn' if line.startswith('WARNING') else 'head'}\">{e(line)}</p>" for line in head]
    if notes:
        h.append("<p>Notes:</p><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    for it in items:
        h += [f"<h2>{e(it.title)}</h2>", f"<p>{e(it.caption)}</p>", f"<p class=\"from\"><em>From:</em> {e(it.provenance)}</p>"]
        if it.kind == "figure":
            img = [f for f in it.files if f.suffix in (".png", ".svg")]
            if img:
                h.append(f"<img src=\"{e(img[0].as_posix())}\" alt=\"{e(it.title)}\">")
        else:
            headers, body = it.table.text_cells()
            h.append("<table><thead><tr>" + "".join(f"<th>{e(x)}</th>" for x in headers) + "</tr></thead><tbody>")
            h += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in row) + "</tr>" for row in body]
            h.append("</tbody></table>")
            h += [f"<p>{e(n)}</p>" for n in it.table.notes]
        h.append("<p>Files: " + ", ".join(f"<a href=\"{e(f.as_posix())}\">{e(f.name)}</a>" for f in it.files) + "</p>")
    h.append("</body></html>")
    atomic_write_text(ctx.out / "index.html", "\n".join(h) + "\n")


def _write_manifest(ctx: _Context, written: list[Path], formats, figures: bool, notes: list[str]) -> None:
    """OUT/report.json: what was read (by name and hash) and written. No time, no absolute path."""
    runs = []
    for r in ctx.runs:
        runs.append({"name": r.label, "embedding_dim": r.embedding_dim, "split_policy": r.split_policy,
                     "train_seed": r.train_seed, "score_seeds": r.score_seeds, "records": len(r.records),
                     "record_files": [p.name for p in r.record_files],
                     "sample_sheets": [p.name for p in r.sample_sheets]})
    manifest = {
        "format": "s2i-bench-report", "format_version": 1,
        "protocol": ctx.protocol.ref(), "runs": runs,
        "store": None if ctx.store is None else {"hash": ctx.store.store_hash, "split_policy": ctx.store.split_policy},
        "classifiers": None if ctx.card is None else {"pool_hash": ctx.card.get("pool_hash"), "seed": ctx.card.get("seed")},
        "figures": figures, "formats": formats, "notes": notes,
        "files": sorted(p.as_posix() for p in written),
    }
    atomic_write_json(ctx.out / "report.json", manifest)
