"""`s2i-bench prepare`: videos -> the segment store (SPEC sections 2-3).

    sources ──extract (N workers, cached per video)──▶ segments ──fingerprints──▶ near-duplicate groups
        ──split (video-disjoint, stratified, seeded)──▶ audit ──balance──▶ normalise (train) ──▶ STORE

Every source file ends up either used (it gave segments) or in `skipped.csv` with its reason:
sources = used + skipped, and the summary line says so. Features of each finished video are
kept in `<out>.work/` until the store is written, so `--resume` continues an interrupted run
without decoding those videos again.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_path, atomic_write_json, progress, sha256_file
from s2i_bench.data.store import SPLITS, write_store

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
# Normalisation: the clip range [low, high] is these percentiles of every training log-Mel value,
# read from a histogram with this bin width (exact up to one bin, memory-flat at VEGAS scale).
NORM_PERCENTILES = (0.1, 99.9)
NORM_BIN = 0.01
WORK_SUFFIX = ".work"


@dataclass
class Source:
    path: Path                  # absolute
    rel: str                    # as recorded: relative to the source folder / CSV folder
    class_key: str | None
    video_id: str | None
    given_split: str | None = None
    skip_reason: str | None = None  # known before decoding (unknown class, missing file, ...)


# -- discovery --------------------------------------------------------------------------------
def video_id_of(stem: str, pattern: str) -> str:
    """The YouTube id in a file name (first match of the protocol's pattern), else the stem."""
    m = re.search(pattern, stem)
    return m.group(0) if m else stem


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def discover_folder(root: Path, protocol) -> list[Source]:
    sources: list[Source] = []
    exts = {e.lower() for e in protocol.data.video_extensions}
    matched_any = False
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        key = protocol.match_class(folder.name)
        matched_any |= key is not None
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in f.relative_to(root).parts):
                continue  # hidden files (.DS_Store, editor swap files) are not sources
            src = Source(f, _rel(f, root), key, video_id_of(f.stem, protocol.data.video_id_pattern))
            if key is None:
                src.skip_reason = f"folder {folder.name!r} matches no class of protocol {protocol.name!r}"
            elif f.suffix.lower() not in exts:
                src.skip_reason = f"not a video file (extension {f.suffix or 'none'!r})"
            sources.append(src)
    if not matched_any:
        names = ", ".join(protocol.class_keys)
        raise UserError(f"{root}: no sub-folder matches a class of protocol {protocol.name!r} "
                        f"(expected one folder per class: {names})")
    return sources


def discover_manifest(csv_path: Path, protocol) -> list[Source]:
    import pandas as pd

    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{csv_path}: cannot read as CSV ({e})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in ("path", "class") if c not in table.columns]
    if missing:
        raise UserError(f"{csv_path}: missing columns {missing} (expected path,class[,video_id][,split])")
    has_split = "split" in table.columns
    if has_split:
        values = table["split"].str.strip().str.lower()
        bad = sorted(set(values) - set(SPLIT_ALIASES))
        if bad:
            raise UserError(f"{csv_path}: split values {bad} are not train/val/test")
    root = csv_path.parent
    sources = []
    for row_number, row in enumerate(table.to_dict("records"), start=2):
        p = Path(row["path"].strip())
        path = p if p.is_absolute() else root / p
        key = protocol.match_class(row["class"])
        vid = (row.get("video_id") or "").strip() or video_id_of(path.stem, protocol.data.video_id_pattern)
        split = SPLIT_ALIASES[row["split"].strip().lower()] if has_split else None
        src = Source(path, _rel(path, root), key, vid, split)
        if key is None:
            src.skip_reason = f"class {row['class']!r} (line {row_number}) matches no class of protocol {protocol.name!r}"
        elif not path.is_file():
            src.skip_reason = f"file not found (line {row_number})"
        sources.append(src)
    if not sources:
        raise UserError(f"{csv_path}: no rows")
    return sources


def discover(source: Path, protocol) -> tuple[list[Source], Path, bool]:
    """-> (sources, root folder, split given in a manifest)."""
    if source.is_dir():
        return discover_folder(source, protocol), source, False
    if source.suffix.lower() == ".csv":
        sources = discover_manifest(source, protocol)
        return sources, source.parent, any(s.given_split for s in sources)
    raise UserError(f"{source}: expected a folder with one sub-folder per class, or a manifest .csv")


# -- extraction (runs in worker processes) ----------------------------------------------------
def _features_key(protocol) -> str:
    d = protocol.to_dict()
    blob = json.dumps({k: d[k] for k in ("data", "audio", "image")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_name(src: Source, features_key: str) -> str:
    st = src.path.stat()
    blob = f"{src.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{features_key}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24] + ".npz"


def _extract_to_cache(path: Path, protocol, cache_path: Path) -> dict:
    """Decode one file, save its features (or its skip reason) to `cache_path`; small result."""
    from s2i_bench.data.features import ClipError, extract_clip

    meta = {"size": path.stat().st_size, "sha256": sha256_file(path), "reason": None}
    arrays = {}
    try:
        clip = extract_clip(path, protocol)
        arrays = {"starts": np.asarray(clip.starts, np.int64), "spectrograms": clip.spectrograms,
                  "frames": clip.frames}
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


def _load_cache(cache_path: Path) -> tuple[dict, dict]:
    with np.load(cache_path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        arrays = {k: z[k] for k in z.files if k != "meta"}
    return meta, arrays


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: --workers is the parallelism
    os.environ.setdefault("S2I_BENCH_QUIET", "1")


def extract_all(sources: list[Source], protocol, work: Path, workers: int) -> dict[str, Path]:
    """Features of every decodable source, cached in `work/videos/`. Returns rel -> cache path."""
    import torch

    features_key = _features_key(protocol)
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
        print(f"prepare: resuming, {done} videos already extracted in {work}", file=sys.stderr)
    bar = progress(total=len(todo), desc="prepare: decoding", unit="video")
    segments = 0
    # A worker costs seconds to start (it imports torch): never more workers than videos left.
    workers = min(workers, len(todo))
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for path, cache in todo.values():
                segments += _extract_to_cache(path, protocol, cache)["segments"]
                bar.update(1)
                bar.set_postfix(segments=segments)
        finally:
            torch.set_num_threads(threads)
    else:
        import multiprocessing as mp

        # spawn, not fork: the parent may hold torch/OpenMP threads, which fork does not survive.
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            futures = [pool.submit(_extract_to_cache, path, protocol, cache) for path, cache in todo.values()]
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


# -- splitting --------------------------------------------------------------------------------
def video_split(group_counts: dict[str, dict[str, int]], ratios: dict[str, float], seed: int) -> dict[str, str]:
    """Assign whole groups (videos and their near-duplicates) to splits, stratified by class.

    group_counts: group -> {class: segments}. Groups are visited in a seeded random order; each
    goes to the split that most lacks its classes' segments (target ratio minus share so far).
    A split that has no group of a class yet is served first (so a class with at least three
    videos is present in every split), train before test before val.
    """
    rng = np.random.default_rng(seed)
    groups = sorted(group_counts)
    order = [groups[i] for i in rng.permutation(len(groups))]
    totals: dict[str, int] = {}
    n_groups: dict[str, int] = {}
    for g in groups:
        for c, n in group_counts[g].items():
            totals[c] = totals.get(c, 0) + n
            n_groups[c] = n_groups.get(c, 0) + 1
    active = [s for s in ("train", "test", "val") if ratios[s] > 0]
    seg = {c: {s: 0 for s in SPLITS} for c in totals}
    grp = {c: {s: 0 for s in SPLITS} for c in totals}
    out = {}
    for g in order:
        def score(s):
            total = 0.0
            for c, n in group_counts[g].items():
                total += ratios[s] - seg[c][s] / totals[c]
                if grp[c][s] == 0 and n_groups[c] >= len(active):
                    total += 1.0  # starved split: serve it first
            return total
        best = max(active, key=lambda s: (score(s), -active.index(s)))
        out[g] = best
        for c, n in group_counts[g].items():
            seg[c][best] += n
            grp[c][best] += 1
    return out


def random_split(classes: np.ndarray, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Segment-level split (leaky by design): per class, shuffle and cut by the ratios."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(classes), dtype=object)
    for c in sorted(set(classes)):
        idx = np.flatnonzero(classes == c)
        idx = idx[rng.permutation(len(idx))]
        n_train = int(round(ratios["train"] * len(idx)))
        n_val = int(round(ratios["val"] * len(idx)))
        out[idx[:n_train]] = "train"
        out[idx[n_train:n_train + n_val]] = "val"
        out[idx[n_train + n_val:]] = "test"
    return out


def balance(manifest, seed: int) -> np.ndarray:
    """Indices kept when every class is subsampled (seeded) to the smallest class count of its split."""
    rng = np.random.default_rng([seed, 1])  # its own stream: balancing never moves the split
    keep = []
    classes = sorted(manifest["class"].unique())
    for split in SPLITS:
        per_class = {c: np.flatnonzero((manifest["split"] == split).to_numpy() & (manifest["class"] == c).to_numpy())
                     for c in classes}
        m = min(len(v) for v in per_class.values())
        for c in classes:
            idx = per_class[c]
            keep.append(np.sort(rng.choice(idx, size=m, replace=False)) if m < len(idx) else idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


# -- normalisation ----------------------------------------------------------------------------
def fit_normalisation(spectrograms: np.ndarray, train_idx: np.ndarray, log_floor: float, chunk: int = 2048) -> dict:
    """[low, high] = percentiles 0.1 / 99.9 of all training log-Mel values (histogram, bin 0.01)."""
    lo_edge = math.floor(math.log(log_floor) / NORM_BIN) * NORM_BIN - NORM_BIN
    hi_val = max(float(np.max(spectrograms[train_idx[i:i + chunk]])) for i in range(0, len(train_idx), chunk))
    n_bins = int(math.ceil((hi_val - lo_edge) / NORM_BIN)) + 2
    edges = lo_edge + NORM_BIN * np.arange(n_bins + 1)
    counts = np.zeros(n_bins, np.int64)
    for i in range(0, len(train_idx), chunk):
        block = np.asarray(spectrograms[train_idx[i:i + chunk]], dtype=np.float32).ravel()
        counts += np.histogram(block, bins=edges)[0]
    cum = np.cumsum(counts)
    total = cum[-1]
    low_bin = int(np.searchsorted(cum, total * NORM_PERCENTILES[0] / 100.0, side="left"))
    high_bin = int(np.searchsorted(cum, total * NORM_PERCENTILES[1] / 100.0, side="left"))
    low, high = float(edges[low_bin]), float(edges[high_bin + 1])
    if not high - low > 10 * NORM_BIN:
        raise UserError(f"training log-Mel values span only [{low:.3f}, {high:.3f}]: is all the audio silent?")
    return {"low": round(low, 6), "high": round(high, 6), "fitted_on": "train",
            "method": f"percentiles {NORM_PERCENTILES[0]} / {NORM_PERCENTILES[1]} of every training log-Mel value "
                      f"(histogram with bins of {NORM_BIN}; low = lower bin edge, high = upper bin edge); "
                      f"network input = 2 (x - low) / (high - low) - 1, clipped to [-1, 1]"}


# -- the command ------------------------------------------------------------------------------
def prepare_store(source, out, protocol, *, split_policy=None, seed=None, allow_leakage=False, workers=1,
                  resume=False, overwrite=False) -> Path:
    import pandas as pd

    from s2i_bench.data.audit import audit_segments, format_report
    from s2i_bench.data.dedup import fingerprints, near_duplicate_pairs, video_groups
    from s2i_bench.protocol import load_protocol

    protocol = load_protocol(protocol)
    source, out = Path(source), Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    if not source.exists():
        raise UserError(f"{source}: not found")
    seed = protocol.split.seed if seed is None else int(seed)
    sources, root, split_given = discover(source, protocol)
    if split_policy is None:
        policy = "given" if split_given else protocol.split.policy
    else:
        policy = split_policy
        if split_given:
            print(f"prepare: --split-policy {policy} given: the manifest's split column is ignored", file=sys.stderr)
    work = out.with_name(out.name + WORK_SUFFIX)
    if work.exists() and not resume:
        shutil.rmtree(work)

    # 1. features of every source (cached per video; --resume reuses the cache)
    caches = extract_all(sources, protocol, work, workers)

    # 2. segments, in a fixed order: class, source, start
    # Arrays are held in the store's dtype from the start: at VEGAS scale float32 would double
    # the largest allocation (about 7 GB for 141k segments) for nothing.
    store_dtype = np.float16 if protocol.audio.store_dtype == "float16" else np.float32
    rows, specs, frames, skipped, sources_meta = [], [], [], [], []
    seen: dict[tuple[str, str], str] = {}
    order = sorted(range(len(sources)), key=lambda i: (protocol.class_index(sources[i].class_key)
                                                      if sources[i].class_key else len(protocol.classes),
                                                      sources[i].rel))
    for i in order:
        src = sources[i]
        entry = {"path": src.rel, "class": src.class_key, "video_id": src.video_id, "size": None,
                 "sha256": None, "segments": 0}
        reason = src.skip_reason
        if reason is None:
            meta, arrays = _load_cache(caches[src.rel])
            entry.update(size=meta["size"], sha256=meta["sha256"])
            reason = meta["reason"]
            if reason is None and (src.video_id, src.class_key) in seen:
                reason = f"video id {src.video_id} already read for class {src.class_key} from {seen[(src.video_id, src.class_key)]}"
            if reason is None:
                _check_arrays(arrays, protocol, src.rel)
                seen[(src.video_id, src.class_key)] = src.rel
                ci = protocol.class_index(src.class_key)
                for j, k in enumerate(arrays["starts"].tolist()):
                    rows.append({"segment_id": f"{src.video_id}_{src.class_key}_{k:03d}", "video_id": src.video_id,
                                 "class": src.class_key, "class_index": ci, "split": src.given_split,
                                 "start_s": float(k) * protocol.data.segment_seconds, "source": src.rel})
                specs.append(arrays["spectrograms"].astype(store_dtype, copy=False))
                frames.append(arrays["frames"])
                entry["segments"] = len(arrays["starts"])
        elif src.path.is_file():
            entry.update(size=src.path.stat().st_size, sha256=sha256_file(src.path))
        if reason is not None:
            skipped.append({"source": src.rel, "class": src.class_key or "", "video_id": src.video_id or "",
                            "reason": reason})
        sources_meta.append(entry)
    n_used = sum(1 for e in sources_meta if e["segments"] > 0)
    assert n_used + len(skipped) == len(sources_meta), "every source is used or skipped"
    if not rows:
        raise UserError(f"{source}: no usable segments in {len(sources)} sources "
                        f"(first reason: {skipped[0]['reason'] if skipped else 'none'})")
    manifest = pd.DataFrame(rows)
    spectrograms = np.concatenate(specs)  # (N, 1, 128, 100) in the store's dtype
    frame_array = np.concatenate(frames)  # (N, 96, 96, 3) uint8
    del specs, frames
    missing_classes = sorted(set(protocol.class_keys) - set(manifest["class"]))
    if missing_classes:
        raise UserError(f"{source}: no usable segments for classes {missing_classes}; "
                        f"every split would be empty after balancing (see {len(skipped)} skipped sources)")

    # 3. near-duplicates, found before splitting
    sp = protocol.split
    fp = fingerprints(spectrograms, frame_array, protocol.audio)
    video_ids = sorted(manifest["video_id"].unique())
    video_code = {v: i for i, v in enumerate(video_ids)}
    codes = manifest["video_id"].map(video_code).to_numpy()
    pairs = near_duplicate_pairs(fp, codes, sp.phash_max_distance, sp.spectrogram_max_distance)
    vid = manifest["video_id"].to_numpy()
    groups = video_groups(video_ids, list(zip(vid[pairs["i"]], vid[pairs["j"]])))
    manifest["group"] = manifest["video_id"].map(groups)

    # 4. the split
    ratios = {"train": sp.train, "val": sp.val, "test": sp.test}
    if policy == "video":
        counts = manifest.groupby(["group", "class"]).size()
        group_counts: dict[str, dict[str, int]] = {}
        for (g, c), n in counts.items():
            group_counts.setdefault(g, {})[c] = int(n)
        assignment = video_split(group_counts, ratios, seed)
        manifest["split"] = manifest["group"].map(assignment)
    elif policy == "random":
        manifest["split"] = random_split(manifest["class"].to_numpy(), ratios, seed)
    elif policy != "given":
        raise UserError(f"unknown split policy {policy!r} (valid: video, random)")

    # 5. the audit, on every segment (before balancing), and the refusal of a leaky split
    report = audit_segments(manifest, fp, protocol, pairs=pairs)
    report["near_duplicate_groups"] = _group_list(manifest, groups)
    report["sources"] = {"total": len(sources_meta), "used": n_used, "skipped": len(skipped)}
    leaky = bool(report["leakage"]) or policy == "random"
    if report["leakage"] and not allow_leakage:
        report_path = out.with_name(out.name + ".audit.json")
        atomic_write_json(report_path, report)
        print(format_report(report, limit=10), file=sys.stderr)
        raise UserError(f"the {policy} split leaks ({report['summary']}); report: {report_path}; "
                        f"pass --allow-leakage to write the store anyway (it will be marked leaky)")

    # 6. balance every class to the smallest class of each split
    n_before = len(manifest)
    if sp.balance == "min_class":
        keep = balance(manifest, seed)
        manifest = manifest.iloc[keep].reset_index(drop=True)
        spectrograms, frame_array = spectrograms[keep], frame_array[keep]
    empty = [s for s in SPLITS if not (manifest["split"] == s).any()]
    if empty:
        raise UserError(f"after balancing, split(s) {empty} have no segments "
                        f"({n_before} segments of {manifest['video_id'].nunique()} videos; too few videos per class?)")

    # 7. normalisation range from the training split only
    train_idx = np.flatnonzero((manifest["split"] == "train").to_numpy())
    normalisation = fit_normalisation(spectrograms, train_idx, protocol.audio.log_floor)

    # 8. the store
    table1 = table1_frame(manifest, protocol)
    skipped_csv = pd.DataFrame(skipped, columns=["source", "class", "video_id", "reason"]).to_csv(index=False)
    pdict = protocol.to_dict()
    meta = {
        "protocol": protocol.ref(),
        "protocol_full": pdict,
        "features": {"audio": {**pdict["audio"], "mono": "mean of channels", "window": "hamming, periodic",
                               "mel_scale": "htk", "mel_norm": None, "log": "natural",
                               "framing": "frame i centred at start + hop/2 + i*hop; zeros outside the clip"},
                     "image": {**pdict["image"], "crop": "centre square, side min(h, w)",
                               "resize": "bilinear, antialiased", "dtype": "uint8"},
                     "data": pdict["data"]},
        "normalisation": normalisation,
        "split": {"policy": policy, "seed": seed, "ratios": [sp.train, sp.val, sp.test], "balance": sp.balance,
                  "leaky": leaky, "segments_before_balance": n_before,
                  "near_duplicates": {"phash_max_distance": sp.phash_max_distance,
                                      "spectrogram_max_distance": sp.spectrogram_max_distance,
                                      "groups": len(report["near_duplicate_groups"])}},
        "sources": sources_meta,
        "source_root": str(root.resolve()),
        "synthetic_world": _synthetic_world(root),
    }
    write_store(out, manifest[["segment_id", "video_id", "class", "class_index", "split", "start_s", "source",
                               "group"]],
                spectrograms, frame_array, meta,
                extra_files={"skipped.csv": skipped_csv.encode(), "table1.csv": table1.to_csv(index=False).encode(),
                             "audit.json": (json.dumps(_jsonable(report), indent=2) + "\n").encode()},
                overwrite=overwrite)
    shutil.rmtree(work, ignore_errors=True)
    stale_report = out.with_name(out.name + ".audit.json")  # from an earlier refused run
    if stale_report.is_file():
        stale_report.unlink()

    print(table1.to_string(index=False))
    per_split = manifest["split"].value_counts()
    print(f"prepare: {len(sources_meta)} sources: {n_used} used, {len(skipped)} skipped (skipped.csv); "
          f"{n_before} segments, {len(manifest)} after balancing (train {per_split.get('train', 0)} / "
          f"val {per_split.get('val', 0)} / test {per_split.get('test', 0)}); split {policy}, seed {seed}; "
          f"{len(report['near_duplicate_groups'])} near-duplicate groups; audit: "
          f"{'LEAKY (allowed)' if leaky else 'clean'} -> {out}")
    return out


def _check_arrays(arrays: dict, protocol, rel: str) -> None:
    """The cache is our own file, but a resumed run may meet one from another version."""
    a, im = protocol.audio, protocol.image
    s = arrays["spectrograms"].shape
    f = arrays["frames"].shape
    n = len(arrays["starts"])
    if s != (n, 1, a.n_mels, a.frames_per_segment) or f != (n, im.size, im.size, 3) or arrays["frames"].dtype != np.uint8:
        raise UserError(f"{rel}: cached features have shapes {s}, {f}; delete the .work folder and rerun")
    if not np.isfinite(arrays["spectrograms"]).all():
        raise UserError(f"{rel}: cached spectrograms contain NaN; delete the .work folder and rerun")


def _group_list(manifest, groups: dict[str, str]) -> list[dict]:
    """Near-duplicate groups with more than one video: ids, classes, splits."""
    members: dict[str, list[str]] = {}
    for v, g in groups.items():
        members.setdefault(g, []).append(v)
    out = []
    by_video = manifest.groupby("video_id")
    for g, vids in sorted(members.items()):
        if len(vids) < 2:
            continue
        out.append({"group": g, "videos": sorted(vids),
                    "splits": sorted({s for v in vids for s in by_video.get_group(v)["split"].dropna().unique()}),
                    "classes": sorted({c for v in vids for c in by_video.get_group(v)["class"].unique()})})
    return out


def table1_frame(manifest, protocol):
    """Table 1 of the paper for this store: videos and segments per class and split."""
    import pandas as pd

    rows = []
    for key, name in zip(protocol.class_keys, protocol.class_names):
        part = manifest[manifest["class"] == key]
        row = {"class": name, "videos": int(part["video_id"].nunique())}
        row.update({s: int((part["split"] == s).sum()) for s in SPLITS})
        rows.append(row)
    table = pd.DataFrame(rows)
    total = {"class": "Total", "videos": int(manifest["video_id"].nunique())}
    total.update({s: int(table[s].sum()) for s in SPLITS})
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def _synthetic_world(root: Path) -> dict | None:
    """Non-null when the source folder is the embedded synthetic world (its scenes.json)."""
    scenes = root / "scenes.json"
    if not scenes.is_file():
        return None
    try:
        data = json.loads(scenes.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{scenes}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{scenes}: expected a JSON object")
    return {"seed": data.get("seed"), "version": data.get("version"), "scenes_sha256": sha256_file(scenes),
            "dirty": bool(data.get("dirty", False)), "path": str(scenes.resolve())}


def _jsonable(obj):
    from s2i_bench.fileio import to_jsonable

    return to_jsonable(obj)
