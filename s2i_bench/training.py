"""`s2i-bench train-baseline`: resolve the options, write them, hand the run to a baseline.

    options.json (first) -> the plugin's trainer(run, store, protocol, options, hooks)

The toolkit owns the run folder (`runs.RunFolder`: the lock, options.json) and the in-loop
scoring (a hook the trainer calls after every epoch: the same scoring function as `score`);
the trainer owns the models and the loop. The reference translator registers its trainer as
plugin `s2i-translator` (baselines/s2i_translator/plugin.py); `--baseline NAME` picks another.

Multi-GPU: `torchrun --nproc_per_node N -m s2i_bench.cli train-baseline ...`; rank 0 alone
writes the run folder (and holds its lock).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from s2i_bench import defaults
from s2i_bench.data.store import open_store
from s2i_bench.distributed import check_device
from s2i_bench.errors import UserError
from s2i_bench.informativity.bundle import load_bundle
from s2i_bench.protocol import load_protocol, protocol_from_dict
from s2i_bench.provenance import code_version, library_versions, now_iso
from s2i_bench.runs import RunFolder, check_out_folder
from s2i_bench.safeload import load_weights_only
from s2i_bench.scoring import records
from s2i_bench.scoring.score import score_translator
from s2i_bench.translators import registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """What a trainer is asked to do (recorded in options.json)."""

    embedding_dim: int
    epochs: int
    seed: int
    save_every: int
    grid_every: int
    device: str
    use_compile: bool = False
    autoencoder: str | None = None  # a trained autoencoder to reuse
    resume: bool = False


@dataclass
class TrainingHooks:
    """Called by the trainer on rank 0. `on_epoch_end(epoch, translator, d_updated)` runs after
    the epoch's checkpoint is saved and before its log row, so a crash inside it leaves the
    epoch to be redone by --resume."""

    on_epoch_end: Callable[[int, Any, bool], None] | None = None


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def check_store_against_protocol(store, protocol) -> None:
    """Refuse a store whose features or classes differ from the protocol's, naming the first
    difference (training on other features would make the run's protocol a lie)."""
    recorded, full = store.features, store.recorded_protocol
    proto = protocol.to_dict()
    for section in ("audio", "image"):
        theirs = recorded.get(section) or full.get(section) or {}
        for key, ours in proto[section].items():
            if key == "store_dtype":  # how values are stored, not what they are
                continue
            if key in theirs and theirs[key] != ours and not (
                    isinstance(ours, (int, float)) and isinstance(theirs[key], (int, float))
                    and math.isclose(float(theirs[key]), float(ours))):
                raise UserError(f"{store.path}: made with {section}.{key} = {theirs[key]!r}, but protocol "
                                f"{protocol.name!r} has {ours!r}; prepare the store with this protocol or pass "
                                f"--protocol {store.protocol_ref.get('name', '<the store protocol>')}")
    store_classes = sorted(set(store.manifest["class"]))
    if store_classes != sorted(protocol.class_keys):
        raise UserError(f"{store.path}: classes {store_classes} differ from protocol {protocol.name!r} "
                        f"classes {sorted(protocol.class_keys)}")
    side = store.frames.shape[1]
    if side != protocol.image.size:
        raise UserError(f"{store.path}: frames are {side}x{side}, protocol {protocol.name!r} has image.size "
                        f"{protocol.image.size}")
    if tuple(store.spectrograms.shape[1:]) != (1, protocol.audio.n_mels, protocol.audio.frames_per_segment):
        raise UserError(f"{store.path}: spectrograms of shape {store.spectrograms.shape[1:]} do not fit protocol "
                        f"{protocol.name!r}")


def _resolve(run, store, protocol, given: dict[str, Any], resume: bool,
             main: bool = True) -> tuple[Any, TrainOptions, dict | None]:
    """(protocol, options, previous options.json or None): a resumed run keeps its own settings
    unless the user repeats them (a different one is refused)."""
    previous = None
    if resume:
        if not run.options_path.is_file():
            raise UserError(f"{run.path}: nothing to resume (no options.json); start it without --resume")
        previous = run.read_options()
        try:
            recorded = protocol_from_dict(previous["protocol_full"])
            started = {k: previous[k] for k in ("embedding_dim", "seed", "epochs", "save_every", "grid_every")}
            store_hash = previous["store"]["hash"]
        except (KeyError, TypeError) as e:
            raise UserError(f"{run.options_path}: not the options of a run made by `s2i-bench train-baseline` "
                            f"(missing {e})") from None
        if protocol is not None and protocol.fingerprint != recorded.fingerprint:
            raise UserError(f"{run.path}: was started with protocol {recorded.name!r} "
                            f"({recorded.fingerprint}); --protocol gives {protocol.name!r} ({protocol.fingerprint})")
        protocol = recorded
        if store.store_hash != store_hash:
            raise UserError(f"{run.path}: was started on store {store_hash}, {store.path} is {store.store_hash}")
        for name in ("embedding_dim", "seed"):
            if given.get(name) is not None and given[name] != started[name]:
                raise UserError(f"{run.path}: was started with {name} {started[name]}, not {given[name]}")
        given = {**started, **{k: v for k, v in given.items() if v is not None and k not in ("embedding_dim", "seed")}}
    else:
        if main and run.options_path.is_file():  # (other ranks of a torchrun follow rank 0, which checks)
            raise UserError(f"{run.path}: already holds a run; pass --resume to continue it or choose another --out")
        protocol = protocol or store.protocol
    tr = protocol.training
    f = int(given.get("embedding_dim") or tr.embedding_dim)
    if f <= 0 or f % 4:
        raise UserError(f"--embedding-dim {f}: must be a positive multiple of 4 (D views x as (f/4, 2, 2))")
    options = TrainOptions(
        embedding_dim=f, epochs=int(given.get("epochs") or tr.epochs),
        seed=int(tr.seed if given.get("seed") is None else given["seed"]),
        save_every=int(given.get("save_every") or tr.save_every),
        grid_every=int(given.get("grid_every") or tr.grid_every),
        device=given["device"], use_compile=bool(given.get("use_compile")),
        autoencoder=str(given["autoencoder"]) if given.get("autoencoder") else None, resume=resume)
    return protocol, options, previous


def _options_json(run, store, protocol, options: TrainOptions, previous: dict | None, classifiers, baseline: str,
                  world_size: int) -> dict[str, Any]:
    if previous is not None:
        resumed = list(previous.get("resumed", [])) + [
            {"at": now_iso(), "command_line": sys.argv, "code_version": code_version(), "epochs": options.epochs}]
        return {**previous, "epochs": options.epochs, "resumed": resumed}
    return {
        "kind": "s2i-train-baseline", "baseline": baseline,
        "protocol": protocol.ref(), "protocol_full": protocol.to_dict(), "profile": protocol.model.profile,
        "embedding_dim": options.embedding_dim, "seed": options.seed, "epochs": options.epochs,
        "save_every": options.save_every, "grid_every": options.grid_every,
        "batch_size": protocol.training.batch_size, "device": options.device, "world_size": world_size,
        "compile": options.use_compile, "store": store.ref(), "autoencoder": options.autoencoder,
        "classifiers": str(classifiers) if classifiers else None,
        "code_version": code_version(), "libraries": library_versions(),
        "command_line": sys.argv, "created": now_iso(), "resumed": [],
    }


def in_loop_scoring(run, store, bundle, protocol, device: str) -> Callable[[int, Any, bool], None]:
    """The hook that scores every epoch's translator with `bundle` into the run's records: the
    test sounds, and the validation sounds the protocol chooses epochs on."""
    sc = protocol.scoring

    splits = sc.scored_splits  # the reported split, then where epochs and windows are chosen

    def on_epoch_end(epoch: int, translator, d_updated: bool) -> None:
        for split in splits:
            record = score_translator(translator, store, bundle, protocol=protocol, split=split, seed=sc.seed,
                                      samples=1, batch_size=sc.batch_size, device=device, epoch=epoch,
                                      d_update=d_updated, run=run.name)
            records.append(run.records_path, record)

    return on_epoch_end


def train_baseline(store, run_dir, protocol=None, embedding_dim=None, epochs=None, device="cpu", resume=False,
                   autoencoder=None, classifiers=None, save_every=None, seed=None, use_compile=False,
                   grid_every=None, baseline: str | None = None) -> Path:
    """Train a baseline translator (default: the reference translator) on `store` into `run_dir`."""
    device = check_device(device)
    protocol = load_protocol(protocol) if protocol is not None else None
    plugin = registry.trainer(baseline)
    run = RunFolder(check_out_folder(Path(run_dir), "run folder"))
    store_obj = open_store(store)
    given = dict(embedding_dim=embedding_dim, epochs=epochs, seed=seed, save_every=save_every, grid_every=grid_every,
                 device=str(device), use_compile=use_compile, autoencoder=autoencoder)
    main = _rank() == 0
    world_size = int(os.environ.get("WORLD_SIZE", "1"))

    # Everything that can be refused is checked before the folder is touched: a bad store, bundle
    # or option leaves nothing behind. Inside the lock the options are resolved again (another
    # process may have started the run meanwhile).
    proto, options, _ = _resolve(run, store_obj, protocol, given, resume, main)
    check_store_against_protocol(store_obj, proto)
    if options.autoencoder is not None:  # a stranger's file: refused before anything is written
        load_weights_only(options.autoencoder, "autoencoder")
    hooks = TrainingHooks()
    if classifiers is not None and main:
        bundle = load_bundle(classifiers, device=options.device)
        hooks.on_epoch_end = in_loop_scoring(run, store_obj, bundle, proto, options.device)

    def go() -> Path:
        proto, options, previous = _resolve(run, store_obj, protocol, given, resume, main)
        if main:
            run.make_folders()
            run.write_options(_options_json(run, store_obj, proto, options, previous, classifiers, plugin.name,
                                            world_size))
        plugin.trainer(run=run, store=store_obj, protocol=proto, options=options, hooks=hooks)
        return run.path

    if not main:
        return go()
    with run.lock():
        return go()


def parse_seeds(seeds: str, seed: int | None = None) -> list[int]:
    """`--seeds S1,S2,...`: distinct whole numbers (not with `--seed`)."""
    if seed is not None:
        raise UserError("give --seed or --seeds, not both")
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: expected whole numbers separated by commas, e.g. 0,1,2") from None
    if not seed_list or len(set(seed_list)) < len(seed_list):
        raise UserError(f"--seeds {seeds!r}: give distinct seeds, e.g. 0,1,2")
    return seed_list


def train_command(store, run_dir, protocol=None, *, classifiers=None, seed: int | None = None,
                  seeds: str | None = None, **options) -> None:
    """`s2i-bench train-baseline`. Without `store`: the embedded default's store, its classifiers
    (when built) and a new run folder. `seeds` ("0,1,2"): one run per seed into RUN_DIR/seed-S/.
    `options` go to `train_baseline` as they are."""
    if store is None:
        store = defaults.store()
        if classifiers is None and defaults.work().bundle.is_file():
            classifiers = defaults.bundle()
        if run_dir is None:
            run_dir = defaults.next_run_folder()
            logger.info(f"train-baseline: run folder {run_dir}")
    elif run_dir is None:
        raise UserError("missing --out RUN_FOLDER (the folder to train into)")
    if seeds is not None:
        jobs = [(Path(run_dir) / f"seed-{s}", s) for s in parse_seeds(seeds, seed)]
    else:
        jobs = [(run_dir, seed)]
    for folder, s in jobs:
        if len(jobs) > 1:
            logger.info(f"train-baseline: seed {s} -> {folder}")
        train_baseline(store=store, run_dir=folder, protocol=protocol, classifiers=classifiers, seed=s, **options)
