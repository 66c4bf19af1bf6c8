"""The candidate pool: images translated from validation sounds by many generators (SPEC section 5).

The paper drew its classifier images from the outputs of 17 translator models. `build_pool`
does the same: every model translates, per class, the same number of sounds of the protocol's
`classifiers.pool_split` (the paper's validation split; `synth` uses the training split, whose
~30 videos per class give the classifiers more scenes than ~4 validation videos), a seeded
choice per model and class, with test-time dropout keyed by per-image seeds, and every
image is kept with its provenance (model, epoch, file hash, segment, class) and a content hash.

A pool is a folder:

    pool.json     store ref, protocol (ref and full), seed, models, counts, shortfall, pool hash
    pool.csv      one row per image, in array order: image_id, class, model_id, model_epoch,
                  model_path, model_sha256, segment_id, draw, image_seed, image_sha256
    images.npy    (N, 96, 96, 3) uint8

It is built under a temporary name and renamed into place, so a crash never leaves a pool that
looks complete. `labels.py` adds labels.csv / sets.csv / labels.json to it later.
"""

from __future__ import annotations

import logging
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench import distributed
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_save_npy, atomic_write_json, dig, file_sha256, progress, sha256_file
from s2i_bench.images import net_to_uint8
from s2i_bench.protocol import protocol_from_dict
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.publish import built_aside, check_replaceable
from s2i_bench.runs import RunFolder
from s2i_bench.seeding import item_seed
from s2i_bench.translators import batch_for_rows, check_inputs, load_translator, translate_checked

logger = logging.getLogger(__name__)

POOL_FORMAT = "s2i-bench-pool"
POOL_FORMAT_VERSION = 2  # 2: per-file hashes; the pool hash covers the store and the protocol
POOL_COLUMNS = ["image_id", "class", "model_id", "model_epoch", "model_path", "model_sha256", "segment_id",
                "draw", "image_seed", "image_sha256"]
IMAGE_SIZE = 96
POOL_HASHED = ("pool.csv", "images.npy")  # what the pool hash covers
# every name a pool folder holds (`pool`, then `label`): `--overwrite` replaces only such a folder
POOL_NAMES = ("pool.json", *POOL_HASHED, "labels.csv", "sets.csv", "labels.json", ".lock")


@dataclass
class Pool:
    path: Path
    meta: dict[str, Any]
    table: Any  # pandas.DataFrame, rows in array order
    images: np.ndarray  # (N, 96, 96, 3) uint8, memory-mapped
    _protocol: Any = field(default=None, repr=False)

    @property
    def protocol(self):
        if self._protocol is None:
            self._protocol = protocol_from_dict(self.meta["protocol_full"])
        return self._protocol

    @property
    def pool_hash(self) -> str:
        return self.meta["pool_hash"]

    @property
    def content_hash(self) -> str:
        """What the labelling page and the annotation logs key on (a blind set has one too)."""
        return self.pool_hash

    @property
    def class_names(self) -> dict[str, str]:
        return dict(zip(self.protocol.class_keys, self.protocol.class_names))

    @property
    def store_hash(self) -> str | None:
        """The hash of the store whose sounds were translated."""
        return self.meta["store"].get("hash")

    @property
    def store_path(self) -> Path | None:
        """Where that store was (absolute), to find its real frames."""
        path = self.meta["store"].get("path")
        return Path(path) if path else None

    @property
    def synthetic(self) -> bool:
        """True when the sounds come from the synthetic world (the judge can label the images)."""
        return bool(self.meta["store"].get("synthetic_world"))

    @property
    def num_models(self) -> int:
        return int(self.meta["num_models"])

    @property
    def split(self) -> str:
        """Whose sounds were translated (train or val)."""
        return str(self.meta["split"])

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.table["image_id"])}

    def index_of(self, image_ids) -> np.ndarray:
        """Array rows of the given image ids (raises KeyError for an unknown id)."""
        return np.array([self._row_of[i] for i in image_ids], dtype=np.int64)


def pool_content_hash(file_hashes: dict[str, str], store_hash: str | None, protocol_fingerprint: str | None) -> str:
    """The pool hash (format 2): its files, the store its sounds came from and the protocol."""
    blob = {"format_version": 2, "files": dict(sorted(file_hashes.items())), "store": store_hash,
            "protocol": protocol_fingerprint}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def open_pool(path: str | Path, verify: bool = True) -> Pool:
    """Open and check a pool folder: every problem names the file; images or table changed
    since the pool was made (its hash) are refused."""
    import pandas as pd

    path = Path(path)
    meta_path = path / "pool.json"
    if not path.is_dir():
        raise UserError(f"{path}: not a pool folder (make one with `s2i-bench pool`)")
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing; {path} is not a pool (make one with `s2i-bench pool`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != POOL_FORMAT or meta.get("format_version") not in (1, 2):
        raise UserError(f"{meta_path}: not an s2i-bench pool of format version 1 or 2")
    try:
        table = pd.read_csv(path / "pool.csv", dtype={"image_id": str, "class": str, "model_id": str,
                                                       "segment_id": str, "model_sha256": str,
                                                       "image_sha256": str, "model_path": str})
    except (OSError, ValueError) as e:
        raise UserError(f"{path / 'pool.csv'}: cannot read ({e})") from None
    missing = [c for c in POOL_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path / 'pool.csv'}: missing columns {missing}")
    try:
        images = np.load(path / "images.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path / 'images.npy'}: cannot read as a numpy array ({e})") from None
    if images.shape != (len(table), IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        raise UserError(f"{path / 'images.npy'}: shape {images.shape} {images.dtype}, expected "
                        f"({len(table)}, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) uint8 (one image per row of pool.csv)")
    if table["image_id"].duplicated().any():
        raise UserError(f"{path / 'pool.csv'}: duplicate image ids")
    if verify:
        _verify_pool(path, meta)
    return Pool(path=path, meta=meta, table=table, images=images)


def _verify_pool(path: Path, meta: dict) -> None:
    hashes = {"pool.csv": sha256_file(path / "pool.csv"),
              "images.npy": file_sha256(path / "images.npy")}
    if meta.get("format_version") == 2:
        actual = pool_content_hash(hashes, dig(meta, "store", "hash"), dig(meta, "protocol", "fingerprint"))
        recorded = meta.get("files") or {}
        for name, digest in hashes.items():
            if dig(recorded, name, "sha256") not in (None, digest):
                raise UserError(f"{path / name}: changed since the pool was made (its sha256 is not the one pool.json "
                                f"records): labels and classifiers made from it would describe other images")
    else:
        h = hashlib.sha256()
        for name in POOL_HASHED:
            h.update(name.encode())
            h.update(hashes[name].encode())
        actual = h.hexdigest()[:16]
    if meta.get("pool_hash") != actual:
        raise UserError(f"{path / 'pool.json'}: pool_hash {meta.get('pool_hash')!r} does not match the pool's content "
                        f"({actual}): a file or pool.json was edited")


# -- building ---------------------------------------------------------------------------------
def expand_generators(generators, per_run: str = "all") -> list[Path]:
    """Checkpoint files stay as they are; a run folder contributes every checkpoint in it
    (`per_run="all"`, each checkpoint is a distinct model, as the paper's 17) or only its
    latest (`per_run="last"`)."""
    if per_run not in ("all", "last"):
        raise ValueError(f"per_run must be 'all' or 'last', got {per_run!r}")
    paths: list[Path] = []
    for g in generators:
        g = Path(g)
        if g.is_dir():
            found = RunFolder(g).checkpoints()
            if not found:
                raise UserError(f"{g}: run folder without checkpoints")
            paths.extend(found if per_run == "all" else found[-1:])
        elif g.is_file():
            paths.append(g)
        else:
            raise UserError(f"{g}: no such generator file or run folder")
    return paths


def _model_id(info: dict, path: Path, taken: set[str]) -> str:
    """A readable unique id: `<run>-e<epoch>` for our checkpoints, else the file stem."""
    run, epoch = info.get("run"), info.get("epoch")
    if run is not None and epoch is not None:
        base = f"{Path(str(run)).name}-e{int(epoch):06d}"
    else:
        base = path.stem
    model_id, k = base, 1
    while model_id in taken:
        k += 1
        model_id = f"{base}-{k}"
    return model_id


@dataclass
class _PoolParts:
    """What the models have translated so far."""

    records: list[dict] = field(default_factory=list)
    image_chunks: list[np.ndarray] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    shortfall: list[dict] = field(default_factory=list)


def build_pool(generators, store, out, split: str | None = None, per_model: int | None = None, seed: int = 0,
               overwrite: bool = False, device: str = "cpu", per_run: str = "all",
               draws_per_sound: int | None = None, batch_size: int | None = None,
               translator_options: dict | None = None) -> Path:
    """Translate `per_model` sounds per class of `split` with each generator into the pool `out`.

    `split` defaults to the protocol's `classifiers.pool_split` (the paper, `vegas5`: val).
    Each model gets its own seeded choice of sounds per class. When a class has fewer sounds
    than `per_model`, each sound is translated `draws_per_sound` times (different test-time
    dropout masks; default: the protocol's `classifiers.pool_draws_per_sound`); if that is still
    not enough the model supplies what exists, and the shortfall is printed and recorded.
    """
    out = Path(out)
    check_replaceable(out, "pool.json", "pool", overwrite, POOL_NAMES)
    data = open_store(store)
    protocol = data.protocol
    spec = protocol.classifiers
    per_model = per_model or spec.pool_per_model
    split = split or spec.pool_split
    if split not in ("train", "val"):
        # images of test sounds would train the classifiers that later score those same sounds
        raise UserError(f"pool split must be train or val, not {split!r}: the test sounds are for scoring")
    draws_per_sound = draws_per_sound or getattr(spec, "pool_draws_per_sound", 1)
    batch_size = batch_size or protocol.scoring.batch_size
    if draws_per_sound < 1 or per_model < 1:
        raise UserError("per-model count and draws per sound must be at least 1")
    paths = expand_generators(generators, per_run=per_run)
    split_rows = data.split_indices(split)
    rows_of_class = {c: split_rows[data.class_index[split_rows] == i] for i, c in enumerate(protocol.class_keys)}

    settings = {"split": split, "per_model": per_model, "draws_per_sound": draws_per_sound, "seed": seed,
                "per_run": per_run, "device": str(device)}
    shard = distributed.current(device)  # under torchrun: the models dealt out over the ranks
    if shard is not None:
        parts = _build_sharded(shard, paths, data, out, protocol, rows_of_class, settings, batch_size,
                               shard.device(device), translator_options)
        if parts is None:  # ranks other than 0: their models are in rank 0's pool
            distributed.close()
            return out
    else:
        parts = _PoolParts()
        bar = progress(total=len(paths) * len(protocol.class_keys), desc="pool", unit="model-class")
        for path, sha in _unique_files(paths, bar, len(protocol.class_keys)):
            translator = load_translator(path, device=device, **(translator_options or {}))
            model_id = _model_id(translator.info, path, {m["model_id"] for m in parts.models})
            _translate_model(translator, path, sha, model_id, data, protocol, rows_of_class, parts, settings,
                             batch_size, device, bar)
            del translator
        bar.close()
    if not parts.records:
        raise UserError("the pool is empty: no generator produced an image")
    meta = _write_pool(out, parts, data, store, protocol, settings)
    if shard is not None:
        shutil.rmtree(_shard_folder(out), ignore_errors=True)  # every model is in the pool now
        distributed.close()
    print(f"pool {out}: {meta['num_images']} images from {len(parts.models)} models, {per_model} per model and "
          f"class (hash {meta['pool_hash']})")
    if len(parts.models) < spec.num_models:
        logger.info(f"note: {len(parts.models)} models; the protocol asks for {spec.num_models}")
    _report_shortfall(parts.shortfall)
    return out


def _unique_files(paths: list[Path], bar=None, per_file: int = 1) -> list[tuple[Path, str]]:
    """(path, sha256) of each generator file, the first of identical files only (said)."""
    seen: dict[str, str] = {}
    out = []
    for path in paths:
        sha = _file_sha(path)
        if sha in seen:
            if distributed.is_main():  # under torchrun every rank sees it: one says it
                logger.info(f"note: {path} is the same file as {seen[sha]}; used once")
            if bar is not None:
                bar.update(per_file)
            continue
        seen[sha] = str(path)
        out.append((path, sha))
    return out


def _translate_model(translator, path, sha, model_id, data, protocol, rows_of_class, parts: _PoolParts,
                     settings: dict, batch_size: int, device, bar=None) -> None:
    """One model's images of every class into `parts`, and its entry in the pool's model list."""
    counts = {}
    for class_key in protocol.class_keys:
        counts[class_key] = _translate_class(translator, data, path, sha, model_id, class_key,
                                             rows_of_class[class_key], parts, seed=settings["seed"],
                                             per_model=settings["per_model"],
                                             draws_per_sound=settings["draws_per_sound"], batch_size=batch_size,
                                             device=device)
        if bar is not None:
            bar.update(1)
    info = translator.info
    parts.models.append({"model_id": model_id, "path": str(path), "sha256": sha, "kind": info.get("kind"),
                         "epoch": info.get("epoch"), "embedding_dim": info.get("embedding_dim"),
                         "run": info.get("run"), "counts": counts})


# -- pool under torchrun -----------------------------------------------------------------------------
def _shard_folder(out: Path) -> Path:
    return out.with_name(f".{out.name}.shards")


def _build_sharded(shard, paths, data, out: Path, protocol, rows_of_class, settings: dict, batch_size: int,
                   device, translator_options) -> _PoolParts | None:
    """The models dealt out round-robin over the ranks. Model ids depend on the models before
    (a repeated name gets -2, -3, ...), and the sounds each model draws on its id, so first
    every rank names its models (`model-I.json`: run and epoch), then each translates its own
    into `model-I.npy` + `model-I.json` in `.<pool>.shards/` beside the pool, and rank 0
    assembles them in the generators' order: the same pool, byte for byte, as one process
    makes. A model already there with the same settings (a rank killed mid-way) is not
    translated again. Returns the parts on rank 0, None on the others."""
    folder = _shard_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    unique = _unique_files(paths)
    key = {**settings, "store_hash": data.store_hash, "protocol": protocol.fingerprint, "batch_size": batch_size}
    key.pop("device")
    mine = shard.mine(list(range(len(unique))))
    if shard.rank == 0 and len(unique) < shard.world:
        logger.info(f"pool: {len(unique)} model(s) on {shard.world} ranks: {shard.world - len(unique)} rank(s) have "
                    "nothing to do")

    def done(i: int) -> dict | None:
        meta_path = folder / f"model-{i:05d}.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        ok = meta.get("key") == key and meta.get("sha256") == unique[i][1] and "records" in meta
        return meta if ok and (folder / f"model-{i:05d}.npy").is_file() else None

    # 1. names: each rank reads the info of its models (translators are loaded again below)
    for i in mine:
        name_path = folder / f"name-{i:05d}.json"
        if done(i) is None:
            info = load_translator(unique[i][0], device="cpu", **(translator_options or {})).info
            atomic_write_json(name_path, {"sha256": unique[i][1], "run": info.get("run"), "epoch": info.get("epoch")})
    shard.barrier()
    ids, taken = [], set()
    for i, (path, sha) in enumerate(unique):
        meta = done(i)
        named = meta["name"] if meta else json.loads((folder / f"name-{i:05d}.json").read_text())
        ids.append(_model_id(named, path, taken))
        taken.add(ids[-1])
    # 2. each rank's models, one file pair each
    bar = progress(total=len(mine), desc=f"pool rank {shard.rank}", unit="model")
    for i in mine:
        if done(i) is None:
            path, sha = unique[i]
            translator = load_translator(path, device=device, **(translator_options or {}))
            one = _PoolParts()
            _translate_model(translator, path, sha, ids[i], data, protocol, rows_of_class, one, settings, batch_size,
                             device)
            del translator
            images = np.concatenate(one.image_chunks) if one.image_chunks else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3),
                                                                                       np.uint8)
            atomic_save_npy(folder / f"model-{i:05d}.npy", images)
            named = json.loads((folder / f"name-{i:05d}.json").read_text())
            atomic_write_json(folder / f"model-{i:05d}.json",
                              {"key": key, "sha256": sha, "name": named, "records": one.records,
                               "model": one.models[0], "shortfall": one.shortfall})
        bar.update(1)
    bar.close()
    shard.barrier()
    if shard.rank != 0:
        return None
    parts = _PoolParts()
    for i in range(len(unique)):
        meta = done(i)
        if meta is None or meta["model"]["model_id"] != ids[i]:
            raise UserError(f"{folder}: model {i} ({unique[i][0]}) is missing after every rank finished")
        images = np.load(folder / f"model-{i:05d}.npy", allow_pickle=False)
        parts.records += meta["records"]
        parts.models.append(meta["model"])
        parts.shortfall += meta["shortfall"]
        if len(images):
            parts.image_chunks.append(images)
    return parts


def _file_sha(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def _translate_class(translator, data, path: Path, sha: str, model_id: str, class_key: str, rows: np.ndarray,
                     parts: _PoolParts, *, seed: int, per_model: int, draws_per_sound: int, batch_size: int,
                     device) -> int:
    """One model's images of one class into `parts`; returns how many it gave."""

    check_inputs(translator, data)
    # (row, draw) candidates: every sound once, then again with the next draw index. Keyed by
    # the model id, not the file hash: a checkpoint records the code version, so the same
    # weights saved by another commit would otherwise draw other sounds.
    rng = np.random.default_rng(item_seed(seed, f"pool|{model_id}|{class_key}"))
    chosen = [(r, d) for d in range(draws_per_sound) for r in rng.permutation(rows)][:per_model]
    if len(chosen) < per_model:
        parts.shortfall.append({"model_id": model_id, "class": class_key, "wanted": per_model, "got": len(chosen),
                                "missing": per_model - len(chosen), "sounds": int(len(rows)),
                                "draws_per_sound": draws_per_sound})
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start:start + batch_size]
        idx = np.array([r for r, _ in batch], dtype=np.int64)
        seg_ids = [str(data.segment_ids[r]) for r in idx]
        # Per-image seeds keyed by model id, segment and draw: independent of batching.
        seeds = np.array([item_seed(seed, f"{model_id}|{s}", d) for s, (_, d) in zip(seg_ids, batch)], dtype=np.int64)
        batch_in = batch_for_rows(data, idx, seeds, device, inputs=getattr(translator, "inputs", ("log_mel",)))
        # the same checks as scoring: B images, finite, in [-1, 1]; then the protocol's size
        _, images = translate_checked(translator, batch_in, size=IMAGE_SIZE, where=str(path), rows=idx)
        images_u8 = net_to_uint8(images)  # (B, 96, 96, 3) uint8
        parts.image_chunks.append(images_u8)
        for k, (seg, (_, d)) in enumerate(zip(seg_ids, batch)):
            parts.records.append({"class": class_key, "model_id": model_id, "model_epoch": translator.info.get("epoch"),
                                  "model_path": str(path), "model_sha256": sha, "segment_id": seg, "draw": d,
                                  "image_seed": int(seeds[k]),
                                  "image_sha256": hashlib.sha256(images_u8[k].tobytes()).hexdigest()})
    return len(chosen)


def _write_pool(out: Path, parts: _PoolParts, data, store, protocol, settings: dict) -> dict:
    """pool.csv, images.npy and (last) pool.json in a folder beside `out`, then swapped in."""
    import pandas as pd

    table = pd.DataFrame(parts.records)
    table.insert(0, "image_id", [f"img{i:06d}" for i in range(len(table))])
    table = table[POOL_COLUMNS]
    with built_aside(out) as tmp:  # removed again if anything fails (a full disk): no half pool is left
        return _write_pool_files(tmp, table, parts, data, store, protocol, settings)


def _write_pool_files(tmp: Path, table, parts: _PoolParts, data, store, protocol, settings: dict) -> dict:
    table.to_csv(tmp / "pool.csv", index=False)
    atomic_save_npy(tmp / "images.npy", np.concatenate(parts.image_chunks))  # (N, 96, 96, 3) uint8
    files = {name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)} for name in POOL_HASHED}
    meta = {
        "format": POOL_FORMAT, "format_version": POOL_FORMAT_VERSION,
        # absolute store path: train-classifiers finds the real frames from any working folder
        "store": {**data.ref(), "path": str(Path(store).resolve()),
                  "synthetic_world": data.meta.get("synthetic_world")},
        "protocol": protocol.ref(), "protocol_full": protocol.to_dict(), **settings,
        "num_images": int(len(table)), "num_models": len(parts.models), "models": parts.models,
        "counts": {c: int((table["class"] == c).sum()) for c in protocol.class_keys},
        "shortfall": parts.shortfall,
        "files": files,
        "pool_hash": pool_content_hash({k: v["sha256"] for k, v in files.items()}, data.store_hash,
                                       protocol.fingerprint),
        "code_version": code_version(), "created": now_iso(),
    }
    atomic_write_json(tmp / "pool.json", meta)  # last: its presence marks the folder complete
    return meta


def _report_shortfall(shortfall: list[dict]) -> None:
    if not shortfall:
        return
    total = sum(s["missing"] for s in shortfall)
    lines = [f"{len(shortfall)} model/class pairs could not supply the per-model count ({total} images missing "
             f"in all):"]
    lines += [f"  {s['model_id']} / {s['class']}: {s['got']} of {s['wanted']} ({s['missing']} missing; "
              f"{s['sounds']} sounds x {s['draws_per_sound']} draws)" for s in shortfall[:10]]
    if len(shortfall) > 10:
        lines.append(f"  ... and {len(shortfall) - 10} more (see pool.json 'shortfall')")
    logger.warning("\n".join(lines))
