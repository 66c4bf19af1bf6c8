"""Extraction: every source decoded once (in worker processes), its features cached per video in
`<out>.work/videos/` so that `prepare --resume` continues an interrupted run."""

from __future__ import annotations

import logging
import hashlib
import io
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from s2i_bench.data.discovery import Source
from s2i_bench.data.features import ClipError, extract_clip
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_path, progress, sha256_file

logger = logging.getLogger(__name__)

WAVEFORM_SCALE = 32767  # int16 = round(clip(x, -1, 1) * 32767): the store's waveform encoding
CACHE_VERSION = 2  # 2: the segments' waveforms (and context) are cached too (+ native windows: `hires`)


def to_int16(wave: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16 (values beyond full scale are clipped)."""
    return np.round(np.clip(wave, -1.0, 1.0) * WAVEFORM_SCALE).astype(np.int16)


def _features_key(protocol, audio_context_s: float = 0.0, keep_native: bool = False) -> str:
    d = protocol.to_dict()
    extra = {"keep_native": True} if keep_native else {}  # caches without native audio keep their names
    blob = json.dumps({**{k: d[k] for k in ("data", "audio", "image")}, "cache_version": CACHE_VERSION,
                       "audio_context_s": float(audio_context_s), **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_name(src: Source, features_key: str) -> str:
    st = src.path.stat()
    blob = os.fsencode(src.path.resolve()) + f"|{st.st_size}|{st.st_mtime_ns}|{features_key}".encode()
    return hashlib.sha256(blob).hexdigest()[:24] + ".npz"


def _extract_to_cache(path: Path, protocol, cache_path: Path, audio_context_s: float = 0.0,
                      keep_native: bool = False) -> dict:
    """Decode one file, save its features (or its skip reason) to `cache_path`; small result."""
    arrays = {}
    try:
        meta = {"size": path.stat().st_size, "sha256": sha256_file(path), "reason": None}
    except OSError as e:  # unreadable (permission denied, gone): this file is skipped, the run goes on
        meta = {"size": None, "sha256": None, "reason": f"cannot read: {e.strerror or e}"}
    try:
        if meta["reason"] is not None:
            raise ClipError(meta["reason"])
        clip = extract_clip(path, protocol, audio_context_s=audio_context_s, keep_native=keep_native)
        arrays = {"starts": np.asarray(clip.starts, np.int64), "spectrograms": clip.spectrograms,
                  "frames": clip.frames, "waveforms": to_int16(clip.waveforms)}
        if clip.context is not None:
            arrays["context"] = to_int16(clip.context)
        if clip.native is not None:  # (S, r * segment + 2 m) at the clip's rate info["sample_rate"]
            arrays["native"] = to_int16(clip.native)
            meta["native_margin"] = clip.native_margin
        meta.update(info=clip.info, audio_seconds=clip.audio_seconds, video_seconds=clip.video_seconds)
    except ClipError as e:
        meta["reason"] = str(e)
    except Exception as e:  # bad input must never lose the run; the reason says what happened
        meta["reason"] = f"unexpected error: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return {"segments": len(arrays.get("starts", [])), "reason": meta["reason"]}


def load_cache_meta(cache_path: Path) -> tuple[dict, np.ndarray]:
    """(meta, segment starts) of a cached video, without reading its arrays."""
    with np.load(cache_path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        starts = z["starts"] if "starts" in z.files else np.zeros(0, np.int64)
    return meta, starts


def load_cache(cache_path: Path) -> tuple[dict, dict]:
    with np.load(cache_path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        arrays = {k: z[k] for k in z.files if k != "meta"}
    return meta, arrays


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: --workers is the parallelism
    os.environ.setdefault("S2I_BENCH_QUIET", "1")


def extract_all(sources: list[Source], protocol, work: Path, workers: int,
                audio_context_s: float = 0.0, keep_native: bool = False) -> dict[str, Path]:
    """Features of every decodable source, cached in `work/videos/`. Returns rel -> cache path."""
    import torch

    features_key = _features_key(protocol, audio_context_s, keep_native)
    (work / "videos").mkdir(parents=True, exist_ok=True)
    todo: dict[str, tuple[Path, Path]] = {}
    caches: dict[str, Path] = {}
    for src in sources:
        if src.skip_reason:
            continue
        cache = work / "videos" / _cache_name(src, features_key)
        caches[src.rel] = cache
        if not cache.is_file():
            todo.setdefault(str(cache), (src.path, cache))
    done = sum(1 for c in set(caches.values()) if c.is_file())
    if done:
        logger.info(f"prepare: resuming, {done} videos already extracted in {work}")
    bar = progress(total=len(todo), desc="prepare: decoding", unit="video")
    segments = 0
    # A worker costs seconds to start (it imports torch): never more workers than videos left.
    workers = min(workers, len(todo))
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for path, cache in todo.values():
                segments += _extract_to_cache(path, protocol, cache, audio_context_s, keep_native)["segments"]
                bar.update(1)
                bar.set_postfix(segments=segments)
        finally:
            torch.set_num_threads(threads)
    else:
        # spawn, not fork: the parent may hold torch/OpenMP threads, which fork does not survive.
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            futures = [pool.submit(_extract_to_cache, path, protocol, cache, audio_context_s, keep_native)
                       for path, cache in todo.values()]
            try:
                for fut in as_completed(futures):
                    segments += fut.result()["segments"]
                    bar.update(1)
                    bar.set_postfix(segments=segments)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()
    return caches


def check_cached_arrays(arrays: dict, protocol, rel: str, audio_context_s: float = 0.0) -> None:
    """The cache is our own file, but a resumed run may meet one from another version."""
    a, im = protocol.audio, protocol.image
    s = arrays["spectrograms"].shape
    f = arrays["frames"].shape
    n = len(arrays["starts"])
    samples = int(round(protocol.data.segment_seconds * a.sample_rate))
    w = arrays["waveforms"].shape if "waveforms" in arrays else None
    c = arrays["context"].shape if "context" in arrays else None
    want_c = (n, int(round(audio_context_s * a.sample_rate))) if audio_context_s > 0 else None
    if (s != (n, 1, a.n_mels, a.frames_per_segment) or f != (n, im.size, im.size, 3)
            or arrays["frames"].dtype != np.uint8 or w != (n, samples) or c != want_c):
        raise UserError(f"{rel}: cached features have shapes {s}, {f}, {w}, {c}; delete the .work folder and rerun")
    if not np.isfinite(arrays["spectrograms"]).all():
        raise UserError(f"{rel}: cached spectrograms contain NaN; delete the .work folder and rerun")
