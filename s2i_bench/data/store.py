"""The segment store: the one hand-off between `prepare` and everything downstream.

A store is a folder that numpy alone can read (a contract other tools may rely on):

    manifest.csv       one row per segment, in array order: segment_id, video_id, class,
                       class_index, split, start_s, source, group (near-duplicate group)
    spectrograms.npy   (N, 1, 128, 100) float16/float32 log-Mel values (not normalised)
    frames.npy         (N, 96, 96, 3) uint8 centre frames
    waveforms.npy      (N, 16000) int16 each segment's own second of audio, 16 kHz mono, as the
                       log-Mel saw it (float = int16 / 32767); format 3 and later
    waveforms_context.npy  (N, 16000 * C) int16, optional (`prepare --audio-context-s C`): the C s
                       centred on the segment, zeros outside the clip
    waveforms_hr.npy   (N, R) int16, optional (`prepare --audio-rate native|R`, format 4): the same
                       seconds at rate R (store.json `features.waveforms_hr`; `data/hires.py`)
    store.json         protocol, feature parameters, normalisation range (fitted on train),
                       split seed and policy, counts, sources, hashes, code version, time; a
                       VGGSound store's `gate` (`data/vggsound.py`: what VGGSounder's tags let in)

`write_store` builds the folder under a temporary name and renames it into place, so a crash
never leaves a half store that looks complete. `open_store` checks what it reads and names the
file when something is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.data.hires import audio_at
from s2i_bench.errors import UserError
from s2i_bench.fileio import dig, remembered_digest, sha256_file
from s2i_bench.protocol import protocol_from_dict

STORE_FORMAT = "s2i-bench-store"
# 2: per-file hashes, the protocol hashed; 3: waveforms.npy (+ context); 4: waveforms_hr.npy, `gate` (store_write)
STORE_FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
WAVEFORM_SCALE = 32767
MANIFEST_COLUMNS = ["segment_id", "video_id", "class", "class_index", "split", "start_s", "source", "group"]
SPLITS = ("train", "val", "test")


def segment_id(video_id: str, class_key: str, start_s: int) -> str:
    """The id of the segment [start_s, start_s + 1) s of a video of a class: unique in a store."""
    return f"{video_id}_{class_key}_{int(start_s):03d}"


def segment_class(segment_id_: str, class_keys) -> str | None:
    """The class key inside `<video_id>_<class_key>_<k>`, or None."""
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
    waveforms: np.ndarray | None = None  # (N, sr * segment) int16, memory-mapped (format 3)
    context: np.ndarray | None = None  # (N, sr * C) int16, memory-mapped, when prepared with a context
    hires: np.ndarray | None = None  # (N, R * segment) int16, memory-mapped, with `prepare --audio-rate`
    problems: list = field(default_factory=list, repr=False)  # (file, problem): what open_store found
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
    def synthetic_world(self) -> dict[str, Any] | None:
        """{seed, version, scenes_sha256, dirty, path} of the world's scenes.json, or None."""
        world = self.meta.get("synthetic_world")
        return dict(world) if isinstance(world, dict) else None

    @property
    def protocol(self):
        if self._protocol is None:
            self._protocol = protocol_from_dict(self.meta["protocol_full"])
        return self._protocol

    @property
    def protocol_ref(self) -> dict[str, str]:
        """name, version, fingerprint of the protocol the store was made with."""
        return dict(self.meta["protocol"])

    @property
    def recorded_protocol(self) -> dict[str, Any]:
        """The whole protocol as store.json records it (`Protocol.to_dict()`)."""
        return dict(self.meta.get("protocol_full") or {})

    @property
    def features(self) -> dict[str, Any]:
        """What the arrays hold ({audio: ..., image: ..., waveforms: ...}), as prepare recorded it."""
        return dict(self.meta.get("features") or {})

    @property
    def normalisation(self) -> dict[str, float]:
        """{low, high, fitted_on, method}: the log-Mel range mapped to [-1, 1] (`normalise`)."""
        return dict(self.meta["normalisation"])

    @property
    def split_info(self) -> dict[str, Any]:
        """{policy, seed, ratios, balance, leaky, segments_before_balance, near_duplicates}."""
        return dict(self.meta["split"])

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Segments per class and split (from store.json; older stores: counted from the manifest)."""
        recorded = self.meta.get("counts")
        if recorded:
            return {c: dict(d) for c, d in recorded.items()}
        counts: dict[str, dict[str, int]] = {}
        for (cls, split), n in self.manifest.groupby(["class", "split"]).size().items():
            counts.setdefault(cls, {})[split] = int(n)
        return counts

    @property
    def source_root(self) -> str | None:
        """The folder (or manifest) the store was prepared from."""
        return self.meta.get("source_root")

    def rebuild_hint(self, *options: str) -> str:
        """The command that rebuilds this store from its sources (with `options`)."""
        return " ".join(["`s2i-bench prepare", str(self.source_root or "VIDEOS"), "--out NEW_STORE", *options]) + "`"

    @property
    def gate(self) -> dict[str, Any] | None:
        """What VGGSounder's tags let in (`data/vggsound.py`), or None for an ungated store."""
        return self.meta.get("gate")

    def ref(self) -> dict[str, Any]:
        """What a result records about the data it used (with a gated store's gate, less `per_class`)."""
        gate = {"gate": {k: v for k, v in self.gate.items() if k != "per_class"}} if self.gate is not None else {}
        return {"path": str(self.path), "hash": self.store_hash, "split_policy": self.split_policy,
                "leaky": self.leaky, "protocol": self.protocol_ref, **gate}

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
        return self.waveforms is not None

    @property
    def sample_rate(self) -> int:
        return int(self.meta.get("protocol_full", {}).get("audio", {}).get("sample_rate", 16000))

    @property
    def hires_rate(self) -> int | None:
        """The rate of `waveforms_hr.npy` (`prepare --audio-rate`), or None."""
        rate = dig(self.meta, "features", "waveforms_hr", "sample_rate")
        return int(rate) if self.hires is not None and isinstance(rate, int) else None

    def audio_at(self, rows, rate: int) -> np.ndarray:
        """(len(rows), rate * segment) int16: the rows' own audio at `rate` (stored, or resampled down
        from the high-rate copy); refused when the store never kept audio that high."""
        self.require_waveforms()
        copies = {self.sample_rate: self.waveforms} | ({self.hires_rate: self.hires} if self.hires is not None else {})
        return audio_at(copies, rows, int(rate), str(self.path))

    @property
    def context_seconds(self) -> float | None:
        if self.context is None:
            return None
        return self.context.shape[1] / self.sample_rate

    def waveforms_of(self, rows) -> np.ndarray:
        """(len(rows), sr * segment) float32 in [-1, 1]: the rows' own audio."""
        self.require_waveforms()
        return np.asarray(self.waveforms[np.asarray(rows)], dtype=np.float32) / WAVEFORM_SCALE

    def context_of(self, rows) -> np.ndarray | None:
        """(len(rows), sr * C) float32: the context windows, or None without a context."""
        if self.context is None:
            return None
        return np.asarray(self.context[np.asarray(rows)], dtype=np.float32) / WAVEFORM_SCALE

    def require_waveforms(self, who: str = "this command") -> None:
        if self.waveforms is None:
            raise UserError(f"{self.path}: this store keeps no audio (store format {self.format_version}; audio came "
                            f"with format 3) and {who} needs the waveforms; rebuild it with {self.rebuild_hint()}")

    def normalise(self, log_mel: np.ndarray) -> np.ndarray:
        """Log-Mel values -> network input in [-1, 1] with the range fitted on the train split."""
        return normalise_log_mel(log_mel, self.normalisation)


def normalise_log_mel(log_mel, normalisation: dict[str, float]):
    """Affine map of log values to [-1, 1], clipped. Works on numpy arrays and torch tensors."""
    low, high = float(normalisation["low"]), float(normalisation["high"])
    scaled = (log_mel - low) * (2.0 / (high - low)) - 1.0
    if isinstance(scaled, np.ndarray):
        return np.clip(scaled.astype(np.float32, copy=False), -1.0, 1.0)
    return scaled.float().clamp(-1.0, 1.0)


# -- identity: what the store hash covers -------------------------------------------------------
ARRAYS = ("spectrograms.npy", "frames.npy")
OPTIONAL_ARRAYS = ("waveforms.npy", "waveforms_context.npy", "waveforms_hr.npy")
# every name a store folder holds: `--overwrite` replaces only such a folder
STORE_NAMES = ("store.json", "manifest.csv", *ARRAYS, *OPTIONAL_ARRAYS, "skipped.csv", "table1.csv", "audit.json")


def content_hash(meta: dict[str, Any], file_hashes: dict[str, str]) -> str:
    """The store hash (format 2): its files' sha256 and what store.json says that changes what
    they mean (the protocol, the normalisation range, the split), as 16 hex digits. Two stores
    of the same videos under two protocols have two hashes."""
    norm = meta.get("normalisation") or {}
    split = meta.get("split") or {}
    blob = {"format_version": 2, "files": dict(sorted(file_hashes.items())),
            "protocol": dig(meta, "protocol", "fingerprint"),
            "normalisation": [norm.get("low"), norm.get("high")] if isinstance(norm, dict) else norm,
            "split": {k: split.get(k) for k in ("policy", "seed", "ratios", "balance", "leaky")}
            if isinstance(split, dict) else split,
            # whether the judge's truth applies is a claim about the data too
            "synthetic_world": meta.get("synthetic_world")}
    # format 4, only when present (older stores keep their hashes): the gate, the high-rate copy's rate
    blob |= {"gate": meta["gate"]} if meta.get("gate") is not None else {}
    blob |= {"hires_rate": rate} if (rate := dig(meta, "features", "waveforms_hr", "sample_rate")) else {}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _array_digest(path: Path) -> dict:
    """sha256 of an array file, and for float arrays whether every value is finite (one pass)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    out = {"sha256": h.hexdigest(), "finite": True}
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return out
    if a.dtype.kind == "f" and a.ndim >= 1:
        for i in range(0, a.shape[0], 4096):
            block = np.asarray(a[i:i + 4096])
            if not np.isfinite(block).all():
                bad = int(np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))[0]) + i
                out.update(finite=False, first_bad_row=bad)
                break
    return out


def _file_digest(path: Path, array: bool, fresh: bool = False) -> dict:
    """The digest of a store file; arrays are remembered per file version unless `fresh` (the
    audit hashes every byte every time: it must not trust a cache)."""
    if array:
        return _array_digest(path) if fresh else remembered_digest(path, _array_digest)
    return {"sha256": sha256_file(path), "finite": True}


# -- opening -----------------------------------------------------------------------------------
def open_store(path: str | Path, verify: bool = True) -> Store:
    """Open a store folder and check that it is what its store.json claims: the files' hashes
    (the manifest and store.json every time, the arrays once per file version, remembered by
    size and mtime), the store hash, and the content (finite spectrograms, a consistent
    manifest, a sane normalisation range). Every problem names the file; with `verify=False`
    (the audit) the problems are collected in `store.problems` instead of refused."""
    path = Path(path)
    meta = _read_meta(path)
    manifest = _read_manifest(path / "manifest.csv")
    spectrograms = _load_array(path / "spectrograms.npy")
    frames = _load_array(path / "frames.npy")
    store = Store(path=path, meta=meta, manifest=manifest, spectrograms=spectrograms, frames=frames)
    if (path / "waveforms.npy").is_file() or meta.get("format_version", 0) >= 3:
        store.waveforms = _load_array(path / "waveforms.npy")
    if (path / "waveforms_context.npy").is_file():
        store.context = _load_array(path / "waveforms_context.npy")
    if (path / "waveforms_hr.npy").is_file() or dig(meta, "features", "waveforms_hr") is not None:
        store.hires = _load_array(path / "waveforms_hr.npy")
    store.problems = store_problems(store, fresh=not verify)
    if verify and store.problems:
        where, what = store.problems[0]
        more = f" (and {len(store.problems) - 1} more)" if len(store.problems) > 1 else ""
        raise UserError(f"{where}: {what}{more}; the store is not what its store.json claims: see "
                        f"`s2i-bench audit {path}`, or rebuild it with `s2i-bench prepare`")
    return store


def _read_meta(path: Path) -> dict:
    meta_path = path / "store.json"
    if not path.is_dir():
        raise UserError(f"{path}: not a store folder (make one with `s2i-bench prepare`)")
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing; {path} is not a complete store (make one with `s2i-bench prepare`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise UserError(f"{meta_path}: not an s2i-bench store "
                        f"(format={meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise UserError(f"{meta_path}: store format version {meta.get('format_version')!r} is not supported "
                        f"(this s2i-bench reads versions {', '.join(map(str, READABLE_VERSIONS))}); rebuild it with "
                        f"`s2i-bench prepare`")
    for key, kind in (("normalisation", dict), ("split", dict), ("protocol", dict), ("protocol_full", dict)):
        if not isinstance(meta.get(key), kind):
            raise UserError(f"{meta_path}: '{key}' is {'missing' if key not in meta else 'not an object'}; the store "
                            f"is damaged (rebuild it with `s2i-bench prepare`)")
    return meta


def _read_manifest(manifest_path: Path):
    import pandas as pd

    try:
        manifest = pd.read_csv(manifest_path, dtype={"segment_id": str, "video_id": str, "class": str,
                                                     "split": str, "source": str, "group": str})
    except (OSError, ValueError) as e:
        raise UserError(f"{manifest_path}: cannot read ({e})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise UserError(f"{manifest_path}: missing columns {missing}")
    return manifest


def _load_array(p: Path) -> np.ndarray:
    if not p.is_file():
        raise UserError(f"{p}: missing; the store is incomplete (rerun `s2i-bench prepare`)")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: cannot read as a numpy array ({e})") from None


def store_problems(store: Store, fresh: bool = False) -> list[tuple[str, str]]:
    """(file, problem) for everything that is not as store.json says (empty: all is well)."""
    path, meta, manifest = store.path, store.meta, store.manifest
    problems: list[tuple[str, str]] = []
    problems += _meta_problems(path / "store.json", meta)
    problems += _shape_problems(store)
    if problems:
        return problems  # the rest would only repeat them
    problems += _manifest_problems(path / "manifest.csv", manifest, store)
    problems += _hash_problems(store, fresh)
    return problems


def _meta_problems(where: Path, meta: dict) -> list[tuple[str, str]]:
    out = []
    norm = meta["normalisation"]
    low, high = norm.get("low"), norm.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        out.append((str(where), f"normalisation low/high must be finite numbers (got {low!r}, {high!r})"))
    elif not low < high:
        out.append((str(where), f"normalisation low {low} is not below high {high}: the network input would be "
                                "undefined or inverted"))
    if meta["split"].get("policy") not in ("video", "random", "given"):
        out.append((str(where), f"split policy {meta['split'].get('policy')!r} is not video, random or given"))
    try:
        protocol_from_dict(meta["protocol_full"])
    except UserError as e:
        out.append((str(where), f"protocol_full is not a valid protocol ({e})"))
    else:
        # The fingerprint was the hash of protocol_full as written: compare with the dict as stored
        # (a newer s2i-bench may fill in protocol keys added since, which changes the parsed hash).
        fingerprint = hashlib.sha256(json.dumps(meta["protocol_full"], sort_keys=True).encode()).hexdigest()[:16]
        if meta["protocol"].get("fingerprint") != fingerprint:
            out.append((str(where), f"protocol fingerprint {meta['protocol'].get('fingerprint')!r} does not match "
                                    f"its protocol_full ({fingerprint})"))
    return out


def _shape_problems(store: Store) -> list[tuple[str, str]]:
    out, n, path = [], len(store.manifest), store.path
    sp, fr = store.spectrograms, store.frames
    try:
        audio = store.protocol.audio
        want = (1, audio.n_mels, audio.frames_per_segment)
        side = store.protocol.image.size
    except UserError:
        return out
    if sp.ndim != 4 or sp.shape[0] != n or tuple(sp.shape[1:]) != want:
        out.append((str(path / "spectrograms.npy"), f"shape {sp.shape}, expected ({n}, {want[0]}, {want[1]}, "
                                                    f"{want[2]}) for the {n} rows of manifest.csv"))
    if sp.dtype not in (np.float16, np.float32):
        out.append((str(path / "spectrograms.npy"), f"dtype {sp.dtype}, expected float16 or float32"))
    if fr.ndim != 4 or fr.shape[0] != n or tuple(fr.shape[1:]) != (side, side, 3) or fr.dtype != np.uint8:
        out.append((str(path / "frames.npy"), f"shape {fr.shape} {fr.dtype}, expected ({n}, {side}, {side}, 3) uint8"))
    samples = int(round(store.protocol.data.segment_seconds * store.protocol.audio.sample_rate))
    hr = dig(store.meta, "features", "waveforms_hr", "sample_rate")
    hr_width = int(round(store.protocol.data.segment_seconds * hr)) if isinstance(hr, int) and hr > 0 else -1
    for name, wave, width in (("waveforms.npy", store.waveforms, samples),
                              ("waveforms_context.npy", store.context, None),
                              ("waveforms_hr.npy", store.hires, hr_width)):
        if wave is None:
            continue
        if (wave.ndim != 2 or wave.shape[0] != n or wave.dtype != np.int16
                or (width is not None and wave.shape[1] != width) or (width is None and wave.shape[1] < samples)):
            out.append((str(path / name), f"shape {wave.shape} {wave.dtype}, expected ({n}, "
                                          f"{width if width is not None else f'>= {samples}'}) int16"))
    num = store.meta.get("num_segments")
    if num is not None and num != n:
        out.append((str(path / "manifest.csv"), f"{n} rows, but store.json says {num} segments"))
    return out


def _manifest_problems(where: Path, manifest, store: Store) -> list[tuple[str, str]]:
    out = []
    bad_split = sorted(set(manifest["split"].astype(str)) - set(SPLITS))
    if bad_split:
        out.append((str(where), f"unknown split values {bad_split}"))
    keys = store.protocol.class_keys
    unknown = sorted(set(manifest["class"].astype(str)) - set(keys))
    if unknown:
        out.append((str(where), f"classes {unknown} are not classes of protocol {store.protocol.name!r}"))
        return out
    expected = manifest["class"].map({k: i for i, k in enumerate(keys)})
    wrong = np.flatnonzero(pd_values(manifest["class_index"]) != expected.to_numpy())
    if len(wrong):
        r = int(wrong[0])
        out.append((str(where), f"row {r + 2}: class_index {manifest['class_index'].iloc[r]!r} does not match class "
                                f"{manifest['class'].iloc[r]!r} (index {int(expected.iloc[r])}); "
                                f"{len(wrong)} rows differ"))
    if not manifest["segment_id"].is_unique:
        dup = manifest["segment_id"][manifest["segment_id"].duplicated()].iloc[0]
        out.append((str(where), f"segment id {dup!r} appears twice"))
    return out


def pd_values(column) -> np.ndarray:
    """A manifest column as int64, non-numbers as -1 (so a comparison names them)."""
    import pandas as pd

    return pd.to_numeric(column, errors="coerce").fillna(-1).to_numpy(dtype=np.int64)


def _hash_problems(store: Store, fresh: bool = False) -> list[tuple[str, str]]:
    out, path, meta = [], store.path, store.meta
    names = ["manifest.csv", *ARRAYS] + [n for n in OPTIONAL_ARRAYS if (path / n).is_file()]
    recorded = meta.get("files") or {}
    hashes = {}
    for name in names:
        digest = _file_digest(path / name, array=name.endswith(".npy"), fresh=fresh)
        hashes[name] = digest["sha256"]
        want = recorded.get(name) if isinstance(recorded, dict) else None
        if isinstance(want, dict) and want.get("sha256") not in (None, digest["sha256"]):
            out.append((str(path / name), f"its content (sha256 {digest['sha256'][:12]}) is not the one store.json "
                                          f"records ({str(want.get('sha256'))[:12]}): the file was changed"))
        if not digest.get("finite", True):
            out.append((str(path / name), f"row {digest.get('first_bad_row')} holds NaN or infinite values"))
    if meta["format_version"] >= 2:
        claimed, actual = meta.get("store_hash"), content_hash(meta, hashes)
    else:  # format 1: the files only (the protocol was not covered)
        h = hashlib.sha256()
        for name in ("manifest.csv", *ARRAYS):
            h.update(name.encode())
            h.update(hashes[name].encode())
        claimed, actual = meta.get("store_hash"), h.hexdigest()[:16]
    if claimed != actual:
        out.append((str(path / "store.json"), f"store_hash {claimed!r} does not match the store's content ({actual}): "
                                              "a file or store.json was edited"))
    return out
