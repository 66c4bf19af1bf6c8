"""Writing a store: the one writer of the format `data/store.py` reads (a store is built in a
folder beside its place and swapped in whole, store.json last, so a crash never leaves half a
store). `prepare` is its caller; tests and benchmarks write small stores with it too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.data.store import (ARRAYS, MANIFEST_COLUMNS, STORE_FORMAT, STORE_FORMAT_VERSION, STORE_NAMES,
                                  content_hash)
from s2i_bench.fileio import atomic_write_json, release_pages, sha256_file
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.publish import built_aside, check_replaceable


def _save_rows(path: Path, source: np.ndarray, rows: np.ndarray, block: int = 1024, check_finite: bool = False) -> None:
    """`source[rows]` as a .npy file (the bytes `np.save` writes), copied in blocks of rows."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=source.dtype, shape=(len(rows), *source.shape[1:]))
    for i in range(0, len(rows), block):
        part = rows[i:i + block]
        # sorted reads of a memory-mapped source, then back to the wanted order
        order = np.argsort(part, kind="stable")
        chunk = np.empty((len(part), *source.shape[1:]), dtype=source.dtype)
        chunk[order] = np.asarray(source[part[order]])
        if check_finite and chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            raise ValueError(f"{path.name}: NaN or infinity")
        out[i:i + len(part)] = chunk
        release_pages(source, out)  # streaming copy: neither map stays resident
    out.flush()
    del out


def write_store(path: str | Path, manifest, spectrograms: np.ndarray, frames: np.ndarray,
                meta: dict[str, Any], extra_files: dict[str, bytes] | None = None,
                overwrite: bool = False, waveforms: np.ndarray | None = None,
                context: np.ndarray | None = None, rows: np.ndarray | None = None,
                hires: np.ndarray | None = None) -> Path:
    """Write a complete store atomically: build `<path>.partial-<pid>`, then rename into place.

    `meta` is completed with the format tag, counts, the files' hashes, the store hash, the
    code version and the creation time. `extra_files` (name -> bytes) land in the folder too
    (skipped.csv, audit.json, table1.csv, ...). `waveforms` (N, sr * segment) int16: the segments' audio; `context`
    (N, sr * C) int16: the longer windows; `hires` (N, R * segment) int16: the same seconds at the rate
    `meta["features"]["waveforms_hr"]` names (format 4, as is a store with a `gate`). Without waveforms the
    store is written as format 2, without `hires` or a gate as format 3.
    `rows`: write only these rows of the arrays (in this order), copied in blocks, so the arrays
    may be memory-mapped files larger than memory.
    """
    path = Path(path)
    check_replaceable(path, "store.json", "store", overwrite, STORE_NAMES)
    manifest = manifest.reset_index(drop=True)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest is missing columns {missing}")
    n = len(manifest)
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    assert len(rows) == n, "rows and manifest disagree on N"
    assert frames.dtype == np.uint8

    with built_aside(path) as tmp:  # removed again if anything fails (a full disk): no half store is left
        _write_store_files(tmp, manifest, spectrograms, frames, meta, extra_files, (waveforms, context, hires), rows,
                           n)
    return path


def _write_store_files(tmp: Path, manifest, spectrograms, frames, meta, extra_files, audio, rows, n: int) -> None:
    waveforms, context, hires = audio
    manifest.to_csv(tmp / "manifest.csv", index=False)
    _save_rows(tmp / "spectrograms.npy", spectrograms, rows, check_finite=True)
    _save_rows(tmp / "frames.npy", frames, rows)
    names = ["manifest.csv", *ARRAYS]
    for name, wave in (("waveforms.npy", waveforms), ("waveforms_context.npy", context), ("waveforms_hr.npy", hires)):
        if wave is not None:
            assert wave.dtype == np.int16, f"{name}: int16 expected"
            _save_rows(tmp / name, wave, rows)
            names.append(name)
    for name, data in (extra_files or {}).items():
        (tmp / name).write_bytes(data)

    counts: dict[str, dict[str, int]] = {}
    for (cls, split), k in manifest.groupby(["class", "split"]).size().items():
        counts.setdefault(cls, {})[split] = int(k)
    files = {name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)} for name in names}
    full_meta = {
        "format": STORE_FORMAT,
        "format_version": (STORE_FORMAT_VERSION if hires is not None or meta.get("gate") is not None
                           else 3 if waveforms is not None else 2),
        **meta,
        "num_segments": n,
        "counts": counts,
        "files": files,
        "code_version": code_version(),
        "created": now_iso(),
    }
    full_meta["store_hash"] = content_hash(full_meta, {k: v["sha256"] for k, v in files.items()})
    # store.json last: its presence is what marks the folder complete.
    atomic_write_json(tmp / "store.json", full_meta)
