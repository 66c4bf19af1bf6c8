"""The segment store: the one hand-off between `prepare` and everything downstream.

A store is a folder that numpy alone can read (a contract other tools may rely on):

    manifest.csv       one row per segment, in array order: segment_id, video_id, class,
                       class_index, split, start_s, source, group (near-duplicate group)
    spectrograms.npy   (N, 1, 128, 100) float16/float32 log-Mel values (not normalised)
    frames.npy         (N, 96, 96, 3) uint8 centre frames
    store.json         protocol, feature parameters, normalisation range (fitted on train),
                       split seed and policy, counts, sources, hashes, code version, time

`write_store` builds the folder under a temporary name and renames it into place, so a crash
never leaves a half store that looks complete. `open_store` checks what it reads and names the
file when something is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import (atomic_save_npy, atomic_write_json, check_replaceable, folder_hash, staging_sibling,
                              swap_into_place)
from s2i_bench.provenance import code_version, now_iso

STORE_FORMAT = "s2i-bench-store"
STORE_FORMAT_VERSION = 1
MANIFEST_COLUMNS = ["segment_id", "video_id", "class", "class_index", "split", "start_s", "source", "group"]
SPLITS = ("train", "val", "test")


def segment_id(video_id: str, class_key: str, start_s: int) -> str:
    """The id of the segment [start_s, start_s + 1) s of a video of a class: unique in a store."""
    return f"{video_id}_{class_key}_{int(start_s):03d}"


def segment_class(segment_id_: str, class_keys) -> str | None:
    """The class key inside `<video_id>_<class_key>_<k>`, or None."""
    import re

    for key in sorted(class_keys, key=len, reverse=True):
        if re.search(rf"_{re.escape(key)}_\d+$", segment_id_):
            return key
    return None


@dataclass
class Store:
    path: Path
    meta: dict[str, Any]
    manifest: Any  # pandas.DataFrame, rows in array order
    spectrograms: np.ndarray  # (N, 1, n_mels, frames) log values, memory-mapped
    frames: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    _protocol: Any = field(default=None, repr=False)

    # -- identity -------------------------------------------------------------------------
    @property
    def store_hash(self) -> str:
        return self.meta["store_hash"]

    @property
    def split_policy(self) -> str:
        return self.meta["split"]["policy"]

    @property
    def leaky(self) -> bool:
        """True when the split is known to leak (random policy or an allowed leaky audit)."""
        return bool(self.meta["split"].get("leaky", False))

    @property
    def synthetic(self) -> bool:
        """True when the store was made from the embedded synthetic world (the judge applies)."""
        return bool(self.meta.get("synthetic_world"))

    @property
    def protocol(self):
        if self._protocol is None:
            from s2i_bench.protocol import protocol_from_dict

            self._protocol = protocol_from_dict(self.meta["protocol_full"])
        return self._protocol

    def ref(self) -> dict[str, Any]:
        """What a result records about the data it used."""
        return {
            "path": str(self.path),
            "hash": self.store_hash,
            "split_policy": self.split_policy,
            "leaky": self.leaky,
            "protocol": self.meta["protocol"],
        }

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.manifest)

    def split_indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
        return np.flatnonzero(self.manifest["split"].to_numpy() == split)

    @cached_property
    def class_index(self) -> np.ndarray:
        return self.manifest["class_index"].to_numpy(dtype=np.int64)

    @cached_property
    def segment_ids(self) -> np.ndarray:
        return self.manifest["segment_id"].to_numpy(dtype=object)

    @property
    def format_version(self) -> int:
        return int(self.meta.get("format_version", STORE_FORMAT_VERSION))

    @property
    def has_waveforms(self) -> bool:
        return False

    @property
    def sample_rate(self) -> int:
        return int(self.meta.get("protocol_full", {}).get("audio", {}).get("sample_rate", 16000))

    def waveforms_of(self, rows) -> np.ndarray | None:
        return None

    def normalise(self, log_mel: np.ndarray) -> np.ndarray:
        """Log-Mel values -> network input in [-1, 1] with the range fitted on the train split."""
        return normalise_log_mel(log_mel, self.meta["normalisation"])


def normalise_log_mel(log_mel, normalisation: dict[str, float]):
    """Affine map of log values to [-1, 1], clipped. Works on numpy arrays and torch tensors."""
    low, high = float(normalisation["low"]), float(normalisation["high"])
    scaled = (log_mel - low) * (2.0 / (high - low)) - 1.0
    if isinstance(scaled, np.ndarray):
        return np.clip(scaled.astype(np.float32, copy=False), -1.0, 1.0)
    return scaled.float().clamp(-1.0, 1.0)


# -------------------------------------------------------------------------------------------
def open_store(path: str | Path) -> Store:
    """Open and check a store folder; every problem names the file it is in."""
    import pandas as pd

    path = Path(path)
    meta_path = path / "store.json"
    if not path.is_dir():
        raise UserError(f"{path}: not a store folder (make one with `s2i-bench prepare`)")
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing; {path} is not a complete store (make one with `s2i-bench prepare`)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format") != STORE_FORMAT:
        raise UserError(f"{meta_path}: not an s2i-bench store (format={meta.get('format')!r})")
    if meta.get("format_version") != STORE_FORMAT_VERSION:
        raise UserError(f"{meta_path}: store format version {meta.get('format_version')} is not supported "
                        f"(this s2i-bench reads version {STORE_FORMAT_VERSION})")
    manifest_path = path / "manifest.csv"
    try:
        manifest = pd.read_csv(manifest_path, dtype={"segment_id": str, "video_id": str, "class": str,
                                                     "split": str, "source": str, "group": str})
    except (OSError, ValueError) as e:
        raise UserError(f"{manifest_path}: cannot read ({e})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise UserError(f"{manifest_path}: missing columns {missing}")
    spectrograms = _load_array(path / "spectrograms.npy")
    frames = _load_array(path / "frames.npy")
    n = len(manifest)
    if spectrograms.ndim != 4 or spectrograms.shape[0] != n or spectrograms.shape[1] != 1:
        raise UserError(f"{path / 'spectrograms.npy'}: shape {spectrograms.shape}, expected ({n}, 1, n_mels, frames)")
    if spectrograms.dtype not in (np.float16, np.float32):
        raise UserError(f"{path / 'spectrograms.npy'}: dtype {spectrograms.dtype}, expected float16 or float32")
    if frames.ndim != 4 or frames.shape[0] != n or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise UserError(f"{path / 'frames.npy'}: shape {frames.shape} {frames.dtype}, expected ({n}, S, S, 3) uint8")
    bad_split = set(manifest["split"].unique()) - set(SPLITS)
    if bad_split:
        raise UserError(f"{manifest_path}: unknown split values {sorted(bad_split)}")
    return Store(path=path, meta=meta, manifest=manifest, spectrograms=spectrograms, frames=frames)


def _load_array(p: Path) -> np.ndarray:
    if not p.is_file():
        raise UserError(f"{p}: missing; the store is incomplete (rerun `s2i-bench prepare`)")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: cannot read as a numpy array ({e})") from None


def write_store(path: str | Path, manifest, spectrograms: np.ndarray, frames: np.ndarray,
                meta: dict[str, Any], extra_files: dict[str, bytes] | None = None,
                overwrite: bool = False) -> Path:
    """Write a complete store atomically: build `<path>.partial-<pid>`, then rename into place.

    `meta` is completed with the format tag, counts, the content hash, the code version and
    the creation time. `extra_files` (name -> bytes) land in the folder too (skipped.csv,
    audit.json, table1.csv, ...).
    """
    path = Path(path)
    check_replaceable(path, "store.json", "store", overwrite)
    manifest = manifest.reset_index(drop=True)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest is missing columns {missing}")
    n = len(manifest)
    assert spectrograms.shape[0] == n and frames.shape[0] == n, "arrays and manifest disagree on N"
    assert frames.dtype == np.uint8
    if not np.isfinite(spectrograms).all():
        raise ValueError("spectrograms contain NaN or infinity")

    tmp = staging_sibling(path)
    manifest.to_csv(tmp / "manifest.csv", index=False)
    atomic_save_npy(tmp / "spectrograms.npy", np.ascontiguousarray(spectrograms))
    atomic_save_npy(tmp / "frames.npy", np.ascontiguousarray(frames))
    for name, data in (extra_files or {}).items():
        (tmp / name).write_bytes(data)

    counts: dict[str, dict[str, int]] = {}
    for (cls, split), k in manifest.groupby(["class", "split"]).size().items():
        counts.setdefault(cls, {})[split] = int(k)
    full_meta = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        **meta,
        "num_segments": n,
        "counts": counts,
        "store_hash": folder_hash(tmp, ("manifest.csv", "spectrograms.npy", "frames.npy")),
        "code_version": code_version(),
        "created": now_iso(),
    }
    # store.json last: its presence is what marks the folder complete.
    atomic_write_json(tmp / "store.json", full_meta)
    swap_into_place(tmp, path)
    return path
