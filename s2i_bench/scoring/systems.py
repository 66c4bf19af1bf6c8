"""What `s2i-bench compare` compares: the systems (a run, a records file, or a group of seed runs)
loaded from their folders, the one series of records they all have, and their per-image
decisions at one checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import file_sha256
from s2i_bench.informativity.bundle import load_bundle
from s2i_bench.protocol import load_protocol, protocol_from_dict
from s2i_bench.runs import RunFolder, is_run_folder
from s2i_bench.scoring import records as R
from s2i_bench.scoring.presets import difference
from s2i_bench.scoring.series import last_per_epoch

# what must agree between the members of a group of seeds (everything else may differ)
GROUP_KEYS = ("baseline", "protocol.fingerprint", "profile", "embedding_dim", "epochs", "batch_size", "store.hash")


@dataclass
class Member:
    """One trained translator (one seed): its records of the chosen series."""

    name: str
    folder: Path | None
    options: dict
    records: list[R.Record] = field(default_factory=list)
    d_update_epochs: list[int] | None = None

    @property
    def seed(self):
        return self.options.get("seed")


@dataclass
class System:
    name: str
    members: list[Member]

    @property
    def is_group(self) -> bool:
        return len(self.members) > 1


# -- loading --------------------------------------------------------------------------------------
def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def member_from_folder(folder: Path) -> Member:
    run = RunFolder(folder)
    options = run.read_options()
    recs = [r for p in run.record_files() for r in R.read(p, follow_links=False)]
    log_epochs = run.d_update_epochs() if run.log_path.is_file() else None
    return Member(folder.name, folder, options, recs, log_epochs)


def load_system(spec: str | Path) -> System:
    """A run folder, a records file, or a group folder of seed runs (see the module docstring)."""
    path = Path(spec)
    if not path.exists():
        raise UserError(f"{path}: not found (a run folder, a metric-*.jsonl file or a folder of seed-S run folders)")
    if path.is_file():
        recs = R.read(path)
        if not recs:
            raise UserError(f"{path}: no informativity records")
        names = sorted({r.run for r in recs})
        if len(names) > 1:
            raise UserError(f"{path}: records of {len(names)} translators ({', '.join(names[:4])}); give one "
                            "translator's records (or its run folder)")
        return System(path.stem if path.stem != "metric-informativity" else path.parent.name,
                      [Member(names[0], None, {}, recs)])
    if is_run_folder(path):
        return System(path.name, [member_from_folder(path)])
    children = sorted(p for p in path.iterdir() if p.is_dir() and is_run_folder(p))
    if not children:
        raise UserError(f"{path}: neither a run folder (options.json) nor a group of run folders (seed-S/)")
    members = [member_from_folder(p) for p in children]
    _check_group(path, members)
    return System(path.name, members)


def _check_group(path: Path, members: list[Member]) -> None:
    first = members[0]
    for m in members[1:]:
        for key in GROUP_KEYS:
            a, b = _dig(first.options, key), _dig(m.options, key)
            if a != b:
                raise UserError(f"{path}: its runs {first.name} and {m.name} differ in {key} ({a!r} vs {b!r}), not "
                                "only in the training seed; compare them as separate systems")
    seeds = [m.seed for m in members]
    if len(set(map(str, seeds))) < len(seeds):
        raise UserError(f"{path}: two of its runs have the same training seed ({seeds}); a group is one "
                        "configuration trained with different seeds")


def _series_keys(m: Member, split: str) -> set[tuple]:
    return {r.series_key for r in m.records if r.split == split and r.has_decisions}


FIELDS = ("classifiers", "store", "split", "scoring seed", "samples", "protocol")


def common_series(systems: list[System], split: str, bundle_sha: str | None, store_hash: str | None) -> tuple:
    """The one series key (bundle, store, split, seed, samples, protocol) that every member has,
    or a UserError naming what differs."""
    members = [(s.name, m) for s in systems for m in s.members]
    keys = {f"{n}/{m.name}": _series_keys(m, split) for n, m in members}
    for who, k in keys.items():
        if not k:
            raise UserError(f"{who}: no {split} records with per-image decisions (scored by this s2i-bench's "
                            f"`score`, or by `train-baseline --classifiers`); score it with `s2i-bench score`")
    common = set.intersection(*keys.values())
    if bundle_sha is not None:
        common = {k for k in common if k[0] == bundle_sha}
    if store_hash is not None:
        common = {k for k in common if k[1] == store_hash}
    if len(common) == 1:
        return next(iter(common))
    if not common:
        (wa, ka), *rest = keys.items()
        wb, kb = next(((w, k) for w, k in rest if not k & ka), rest[-1])
        a, b = sorted(ka)[0], sorted(kb)[0]
        differ = [f"{FIELDS[i]} ({str(a[i])[:16]} vs {str(b[i])[:16]})" for i in range(len(FIELDS)) if a[i] != b[i]]
        if not differ and bundle_sha is not None:
            differ = [f"classifiers (the records were scored with {str(a[0])[:12]}, "
                      f"--classifiers is {bundle_sha[:12]})"]
        if not differ and store_hash is not None:
            differ = [f"store (the records were scored on {a[1]}, --data is {store_hash})"]
        raise UserError(f"{wa} and {wb} were not scored alike, so they cannot be compared sound for sound: they "
                        f"differ in {', '.join(differ) or 'their series'}; score both with the same store, split, "
                        "seed, samples and classifiers")
    raise UserError(f"the systems share {len(common)} series (different classifiers or seeds); pass --classifiers "
                    "and --data to choose one")


# -- the decisions of one checkpoint --------------------------------------------------------------
def _at_epoch(m: Member, key: tuple, epoch: int | None) -> R.Record:
    recs = [r for r in m.records if r.series_key == key]
    by_epoch = last_per_epoch(recs)
    if epoch is None:
        return recs[-1] if not by_epoch else by_epoch[max(by_epoch)]
    if epoch not in by_epoch:
        raise UserError(f"{m.name}: no record at epoch {epoch} (scored epochs {min(by_epoch)}..{max(by_epoch)})"
                        if by_epoch else f"{m.name}: its records have no epochs; leave out --epoch")
    return by_epoch[epoch]


def _epochs(m: Member, key: tuple) -> set[int]:
    return set(last_per_epoch([r for r in m.records if r.series_key == key]))


def _slices(record: R.Record, class_keys) -> dict[str, slice]:
    return record.class_slices(class_keys)


@dataclass
class Decisions:
    """A system's per-image decisions at one checkpoint: (members, K, N) bool per field."""

    informative: np.ndarray
    truth: np.ndarray | None
    order: str
    slices: dict[str, slice]
    iis: np.ndarray | None = None  # (members, K, N) per-image IIS ranks, when scored with --metrics iis


def decisions_at(system: System, key: tuple, epoch: int | None, class_keys) -> Decisions:
    recs = [_at_epoch(m, key, epoch) for m in system.members]
    ds = [r.decisions() for r in recs]
    orders = {d["order"] for d in ds}
    if len(orders) != 1:
        raise UserError(f"{system.name}: its members were scored on different sounds")
    truth = None if any(d["truth"] is None for d in ds) else np.stack([d["truth"] for d in ds])
    iis = None if any(d.get("iis") is None for d in ds) else np.stack([d["iis"] for d in ds])
    return Decisions(np.stack([d["informative"] for d in ds]), truth, orders.pop(), _slices(recs[0], class_keys), iis)


def check_recipes(systems: list[System], key: tuple, epoch: int | None, window: bool = False) -> None:
    """Image metrics compare only within one recipe (`scoring.presets`: network, checkpoint,
    resize, precision, audio encoder, metric constants): records of the compared checkpoints (or,
    with `window`, of the whole series) whose recipes differ are refused, naming the first field
    that differs. Records without image metrics are not concerned."""
    seen: list[tuple[str, R.Record]] = []
    for s in systems:
        for m in s.members:
            recs = (list(last_per_epoch([r for r in m.records if r.series_key == key]).values()) if window
                    else [_at_epoch(m, key, epoch)])
            seen += [(f"{s.name}/{m.name}" if s.is_group else s.name, r) for r in recs if r.recipe_identity]
    if not seen:
        return
    first_who, first = seen[0]
    for who, r in seen[1:]:
        if r.recipe_identity == first.recipe_identity:
            continue
        field = ((difference(first.recipe, r.recipe) or f"identity ({first.recipe_identity} vs "
                  f"{r.recipe_identity})") if first.recipe and r.recipe else
                 f"recipe ({first.recipe_identity} vs {r.recipe_identity}: one record predates recipes)")
        raise UserError(f"{first_who} and {who} computed their image metrics in different recipes, so they cannot be "
                        f"compared: they differ in {field}; score both with the same --feature-preset and weights "
                        "(or --feature-extractor)")


# -- what the records name --------------------------------------------------------------------------
def named_bundle(systems: list[System], key: tuple):
    """The bundle the records name, when it is still there and is the one they were scored with
    (its test set gives the corrected intervals); else (None, why there is no corrected measure)."""
    for s in systems:
        for m in s.members:
            for r in m.records:
                if r.series_key != key:
                    continue
                path = r.classifiers.get("path")
                if path and Path(path).is_file() and file_sha256(Path(path)) == key[0]:
                    try:
                        return load_bundle(path), None
                    except UserError as e:
                        return None, f"no corrected measure: the records' classifiers could not be loaded ({e})"
                return None, ("no corrected measure: the classifiers the records were scored with are not at "
                              f"{path} any more; pass --classifiers")
    return None, "no corrected measure: pass --classifiers"


def protocol_of(systems: list[System]):
    """The protocol the records were scored under: the run's full copy, else the named one."""
    m = systems[0].members[0]
    if m.options.get("protocol_full"):
        return protocol_from_dict(m.options["protocol_full"])
    name = m.records[0].protocol.get("name") if m.records else None
    if not name:
        raise UserError("cannot tell the protocol of the records; pass --data STORE")
    return load_protocol(name)
