"""`s2i-bench prepare`: videos -> the segment store (SPEC sections 2-3).

    sources ──extract (N workers, cached per video)──▶ segments ──fingerprints──▶ near-duplicate groups
        ──split (video-disjoint, stratified, seeded)──▶ audit ──balance──▶ normalise (train) ──▶ STORE

Every source file ends up either used (it gave segments) or in `skipped.csv` with its reason:
sources = used + skipped, and the summary line says so. Features of each finished video are
kept in `<out>.work/` until the store is written, so `--resume` continues an interrupted run
without decoding those videos again.
"""

from __future__ import annotations

import logging
import json
import shutil
import shutil as sh
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2i_bench.data.audit import audit_segments, format_report
from s2i_bench.data.dedup import fingerprints, near_duplicate_pairs, video_groups
from s2i_bench.data.discovery import discover
from s2i_bench.data.extract import WAVEFORM_SCALE, check_cached_arrays, extract_all, load_cache, load_cache_meta
from s2i_bench.data.hires import parse_audio_rate, store_rate, to_store_rate
from s2i_bench.data.splits import (balance, carve_val, fit_normalisation, group_list, random_split, table1_frame,
                                   video_split)
from s2i_bench.data.store import SPLITS, segment_id
from s2i_bench.data.store_write import write_store
from s2i_bench.data.vggsound import discover_vggsound, table1_columns, youtube_pairs
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json, dig, release_pages, sha256_file, to_jsonable
from s2i_bench.locks import exclusive_lock
from s2i_bench.protocol import load_protocol
from s2i_bench.publish import check_replaceable

logger = logging.getLogger(__name__)

WORK_SUFFIX = ".work"


@dataclass
class Segments:
    """Every usable segment, in a fixed order (class, source, start), and the sources' fate."""

    manifest: object  # pandas.DataFrame
    spectrograms: np.ndarray  # (N, 1, 128, 100) in the store's dtype
    frames: np.ndarray  # (N, S, S, 3) uint8
    sources_meta: list[dict]
    skipped: list[dict]
    waveforms: np.ndarray | None = None  # (N, sr * segment) int16: each segment's own audio
    context: np.ndarray | None = None  # (N, sr * C) int16: C s centred on the segment, or None
    keep: np.ndarray | None = None  # rows of the arrays the manifest's rows are (after balancing)
    hires: np.ndarray | None = None  # (N, R * segment) int16: the same seconds at rate R (`--audio-rate`)
    hires_rate: int | None = None
    native_rates: dict | None = None  # {native rate: sources} of the used sources (with `--audio-rate`)
    gate: dict | None = None  # a VGGSound store's gate (`data/vggsound.py`)

    def __post_init__(self):
        if self.keep is None:
            self.keep = np.arange(len(self.manifest), dtype=np.int64)

    @property
    def n_used(self) -> int:
        return sum(1 for e in self.sources_meta if e["segments"] > 0)


def prepare_store(source, out, protocol, *, split_policy=None, seed=None, allow_leakage=False, workers=1,
                  resume=False, overwrite=False, audio_context_s: float = 0.0, audio_rate=None, clips=None,
                  labels=None) -> Path:
    """`audio_rate`: also keep each segment's audio at this rate, or "native" (`data/hires.py`);
    `clips`, `labels`: a VGGSound protocol's clip folder and VGGSounder tag file (`data/vggsound.py`)."""
    protocol = load_protocol(protocol)
    source, out = Path(source), Path(out)
    audio_context_s = check_context_seconds(audio_context_s, protocol)
    audio_rate = parse_audio_rate(audio_rate)
    check_replaceable(out, "store.json", "store", overwrite)
    if not source.exists():
        raise UserError(f"{source}: not found")
    seed = protocol.split.seed if seed is None else int(seed)
    gate = None
    if protocol.vggsound is not None:
        if source.is_dir() or source.suffix.lower() != ".csv":
            raise UserError(f"{source}: protocol {protocol.name!r} reads VGGSound's official CSV (YouTube id, start, "
                            f"label, train/test) with the clips under --clips")
        if split_policy is not None:  # the gate is the official test split's: a re-split would undo it
            raise UserError(f"--split-policy: protocol {protocol.name!r} follows VGGSound's official split")
        sources, root, gate = discover_vggsound(source, protocol, clips=clips, labels=labels)
        split_given = True
    elif clips is not None or labels is not None:
        raise UserError(f"--clips and --labels are for a VGGSound protocol (one with a [vggsound] table), not "
                        f"{protocol.name!r}")
    else:
        sources, root, split_given = discover(source, protocol)
    if split_policy is None:
        policy = "given" if split_given else protocol.split.policy
    else:
        policy = split_policy
        if split_given:
            logger.info(f"prepare: --split-policy {policy} given: the manifest's split column is ignored")
    work = out.with_name(out.name + WORK_SUFFIX)
    work.mkdir(parents=True, exist_ok=True)
    # One prepare per store at a time: a second one into the same --out refuses at once
    # instead of sharing (and deleting) the first one's cache.
    with exclusive_lock(work / ".lock", f"store {out}"):
        if not resume:
            for child in work.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        out = _prepare_locked(sources, root, out, work, protocol, policy, seed, allow_leakage, workers, overwrite,
                              source, audio_context_s, (audio_rate, gate))
    shutil.rmtree(work, ignore_errors=True)
    return out


def check_context_seconds(audio_context_s, protocol) -> float:
    """--audio-context-s: 0 (none) or a window at least one segment long, at most 60 s."""
    c = float(audio_context_s or 0.0)
    seg = float(protocol.data.segment_seconds)
    if c != 0.0 and not (seg <= c <= 60.0):
        raise UserError(f"--audio-context-s {audio_context_s}: give 0 (no context) or between {seg:g} s (one "
                        f"segment) and 60 s")
    if c and abs(c * protocol.audio.sample_rate - round(c * protocol.audio.sample_rate)) > 1e-6:
        raise UserError(f"--audio-context-s {audio_context_s}: not a whole number of samples at "
                        f"{protocol.audio.sample_rate} Hz")
    return c


def _prepare_locked(sources, root, out, work, protocol, policy, seed, allow_leakage, workers, overwrite, source,
                    audio_context_s=0.0, extra=(None, None)):
    audio_rate, gate = extra
    caches = extract_all(sources, protocol, work, workers, audio_context_s,
                         keep_native=audio_rate is not None)  # 1. features (cached per video)
    seg = _segments(sources, caches, protocol, source, audio_context_s, work, out,
                    audio_rate)  # 2. the segments, in a fixed order
    seg.gate = gate
    fp, pairs, groups = _near_duplicates(seg, protocol)  # 3. near-duplicates, before splitting
    seg.manifest["group"] = seg.manifest["video_id"].map(groups)
    _split(seg.manifest, policy, protocol, seed)  # 4. the split
    report = _audit(seg, fp, pairs, groups, protocol, policy, allow_leakage, out)  # 5. the audit
    n_before = len(seg.manifest)
    _balance(seg, protocol, seed)  # 6. every class cut to the smallest class of each split
    train_idx = seg.keep[np.flatnonzero((seg.manifest["split"] == "train").to_numpy())]  # rows of the arrays
    normalisation = fit_normalisation(seg.spectrograms, train_idx, protocol.audio.log_floor)  # 7. from train only
    leaky = bool(report["leakage"]) or policy == "random"
    meta = _store_meta(protocol, normalisation, policy, seed, leaky, n_before, report, seg, root, audio_context_s)
    table1 = _write(out, seg, meta, report, protocol, overwrite)  # 8. the store, atomically
    stale_report = out.with_name(out.name + ".audit.json")  # from an earlier refused run
    if stale_report.is_file():
        stale_report.unlink()
    print(table1.to_string(index=False))
    per_split = seg.manifest["split"].value_counts()
    print(f"prepare: {len(seg.sources_meta)} sources: {seg.n_used} used, {len(seg.skipped)} skipped (skipped.csv); "
          f"{n_before} segments, {len(seg.manifest)} after balancing (train {per_split.get('train', 0)} / "
          f"val {per_split.get('val', 0)} / test {per_split.get('test', 0)}); split {policy}, seed {seed}; "
          f"{len(report['near_duplicate_groups'])} near-duplicate groups; audit: "
          f"{'LEAKY (allowed)' if leaky else 'clean'} -> {out}")
    _notes(seg, report)
    return out


def _notes(seg: Segments, report: dict) -> None:
    """What the summary line does not say but a user must know."""
    if seg.gate is not None:
        out = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in seg.gate["left_out"].items() if n) or "none"
        logger.info(f"prepare: VGGSounder's tags let in {seg.gate['clips_let_in']} of {seg.gate['csv_rows']} CSV rows "
                    f"(left out: {out}; {seg.gate['untagged_let_in']} untagged clips of ungated splits kept); "
                    f"store.json gate, table1.csv and skipped.csv say which")
    multi = report.get("multi_class_videos") or []
    if multi:
        first = multi[0]
        logger.info(f"prepare: note: {len(multi)} video id(s) appear in several classes (kept in one split; e.g. "
                    f"{first.get('video_id')}: {', '.join(first.get('classes', []))}); "
                    f"see audit.json multi_class_videos")
    dropped = [(e["path"], d) for e in seg.sources_meta for d in e.get("dropped_segments", [])]
    if dropped:
        path, d = dropped[0]
        logger.info(f"prepare: note: {len(dropped)} segment(s) left out because no video frame lies near their centre "
                    f"(variable frame rate; e.g. {path} at {d['centre_s']} s, nearest frame {d['nearest_frame_s']} s); "
                    f"store.json sources list them")


def _segments(sources, caches, protocol, source: Path, audio_context_s: float = 0.0, work: Path | None = None,
              out: Path | None = None, audio_rate=None) -> Segments:
    """Every usable segment in the order class, source, start. Two passes over the cached
    features: the first reads only each video's segment count (and its fate), the second copies
    the arrays into memory-mapped files in the work folder as it goes, so peak memory does not
    grow with the number of videos (the store's dtype from the start)."""
    import pandas as pd

    store_dtype = np.float16 if protocol.audio.store_dtype == "float16" else np.float32
    rows, used, skipped, sources_meta, native_rates = _fates(sources, caches, protocol)  # 1. which give segments
    if not rows:
        raise UserError(f"{source}: no usable segments in {len(sources)} sources "
                        f"(first reason: {skipped[0]['reason'] if skipped else 'none'})")
    manifest = pd.DataFrame(rows)
    missing_classes = sorted(set(protocol.class_keys) - set(manifest["class"]))
    if missing_classes:
        raise UserError(f"{source}: no usable segments for classes {missing_classes}; "
                        f"every split would be empty after balancing (see {len(skipped)} skipped sources)")
    hires_rate = store_rate(audio_rate, native_rates) if audio_rate is not None else None
    if work is not None:
        check_disk_space(out or work, work, len(manifest), protocol, audio_context_s, hires_rate)
    arrays = _allocate(work, len(manifest), protocol, store_dtype, audio_context_s, hires_rate)
    _fill(arrays, used, caches, protocol, audio_context_s, hires_rate)  # 2. the arrays, video by video
    return Segments(manifest, arrays["spectrograms"], arrays["frames"], sources_meta, skipped,
                    waveforms=arrays["waveforms"], context=arrays["context"], hires=arrays["hires"],
                    hires_rate=hires_rate, native_rates=native_rates if audio_rate is not None else None)


def _fates(sources, caches, protocol):
    """(manifest rows, used [(source, segments)], skipped rows, store.json sources, {native audio
    rate: used sources}) from the caches' metadata alone."""
    rows, used, skipped, sources_meta, native_rates = [], [], [], [], {}
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
            meta, starts = load_cache_meta(caches[src.rel])
            entry.update(size=meta["size"], sha256=meta["sha256"])
            reason = meta["reason"]
            if reason is None and (src.video_id, src.class_key) in seen:
                reason = (f"video id {src.video_id} already read for class {src.class_key} from "
                          f"{seen[(src.video_id, src.class_key)]}")
            if reason is None:
                seen[(src.video_id, src.class_key)] = src.rel
                ci = protocol.class_index(src.class_key)
                for k in starts.tolist():
                    rows.append({"segment_id": segment_id(src.video_id, src.class_key, k), "video_id": src.video_id,
                                 "class": src.class_key, "class_index": ci, "split": src.given_split,
                                 "start_s": float(k) * protocol.data.segment_seconds, "source": src.rel})
                used.append((src, len(starts)))
                entry["segments"] = len(starts)
                rate = dig(meta, "info", "sample_rate")
                native_rates[rate] = native_rates.get(rate, 0) + 1
                if dig(meta, "info", "dropped_segments"):
                    entry["dropped_segments"] = meta["info"]["dropped_segments"]
        elif src.path.is_file():
            try:
                entry.update(size=src.path.stat().st_size, sha256=sha256_file(src.path))
            except OSError:
                pass  # unreadable: its skip reason says so
        if reason is not None:
            skipped.append({"source": src.rel, "class": src.class_key or "", "video_id": src.video_id or "",
                            "reason": reason})
        sources_meta.append(entry)
    assert sum(1 for e in sources_meta if e["segments"] > 0) + len(skipped) == len(sources_meta)
    return rows, used, skipped, sources_meta, native_rates


def _fill(arrays: dict, used, caches, protocol, audio_context_s: float, hires_rate: int | None) -> None:
    """Copy every used video's cached arrays into `arrays` in order (the native audio resampled
    to the store's high rate), releasing the pages written."""
    offset = 0
    seg = float(protocol.data.segment_seconds)
    for src, n in used:
        meta, cached = load_cache(caches[src.rel])
        check_cached_arrays(cached, protocol, src.rel, audio_context_s)
        for name in ("spectrograms", "frames", "waveforms", "context"):
            if arrays.get(name) is not None:
                arrays[name][offset:offset + n] = cached[name].astype(arrays[name].dtype, copy=False)
        if hires_rate is not None:
            if "native" not in cached:
                raise UserError(f"{src.rel}: its cached features have no native-rate audio; delete the .work folder "
                                f"and rerun")
            arrays["hires"][offset:offset + n] = to_store_rate(cached["native"], int(meta["info"]["sample_rate"]),
                                                               int(meta["native_margin"]), hires_rate, seg, src.rel)
        offset += n
        release_pages(*arrays.values())  # written through to the file: the resident set stays flat
    for a in arrays.values():
        if a is not None:
            a.flush()


def bytes_per_segment(protocol, audio_context_s: float = 0.0, hires_rate: int | None = None) -> int:
    """Bytes of one segment in a store: spectrogram, frame, waveform (and context, high-rate copy)."""
    a, im = protocol.audio, protocol.image
    spec = a.n_mels * a.frames_per_segment * (2 if a.store_dtype == "float16" else 4)
    wave = 2 * int(round(protocol.data.segment_seconds * a.sample_rate))
    hires = 2 * int(round(protocol.data.segment_seconds * hires_rate)) if hires_rate else 0
    return spec + 3 * im.size ** 2 + wave + 2 * int(round(audio_context_s * a.sample_rate)) + hires


def check_disk_space(out: Path, work: Path, n: int, protocol, audio_context_s: float,
                     hires_rate: int | None = None) -> None:
    """The arrays go to the work folder first, then to the store beside it: refuse before writing
    anything when the disk cannot hold both (with 5% to spare)."""
    need = int(2 * n * bytes_per_segment(protocol, audio_context_s, hires_rate) * 1.05)
    probe = out.parent if out.parent.exists() else Path(".")
    free = sh.disk_usage(probe).free
    if need > free:
        raise UserError(f"{out}: the store of {n} segments needs about {need:,} bytes on this disk (the arrays in "
                        f"{work.name}/ and the store beside it), but {probe} has {free:,} free; free space or give "
                        f"--out on another disk")


def _allocate(work: Path | None, n: int, protocol, store_dtype, audio_context_s: float,
              hires_rate: int | None = None) -> dict:
    """Memory-mapped arrays for n segments in `work/arrays/` (in memory without a work folder)."""
    a, im = protocol.audio, protocol.image
    samples = int(round(protocol.data.segment_seconds * a.sample_rate))
    shapes = {"spectrograms": ((n, 1, a.n_mels, a.frames_per_segment), store_dtype),
              "frames": ((n, im.size, im.size, 3), np.uint8), "waveforms": ((n, samples), np.int16),
              "context": ((n, int(round(audio_context_s * a.sample_rate))), np.int16) if audio_context_s else None,
              "hires": ((n, int(round(protocol.data.segment_seconds * hires_rate))), np.int16) if hires_rate else None}
    out = {}
    for name, spec in shapes.items():
        if spec is None:
            out[name] = None
        elif work is None:
            out[name] = np.zeros(spec[0], dtype=spec[1])
        else:
            (work / "arrays").mkdir(parents=True, exist_ok=True)
            out[name] = np.lib.format.open_memmap(work / "arrays" / f"{name}.npy", mode="w+", dtype=spec[1],
                                                  shape=spec[0])
    return out


def _near_duplicates(seg: Segments, protocol):
    """Fingerprints, near-identical segment pairs across videos, and the video groups they make."""
    sp = protocol.split
    fp = fingerprints(seg.spectrograms, seg.frames, protocol.audio)
    manifest = seg.manifest
    video_ids = sorted(manifest["video_id"].unique())
    video_code = {v: i for i, v in enumerate(video_ids)}
    codes = manifest["video_id"].map(video_code).to_numpy()
    pairs = near_duplicate_pairs(fp, codes, sp.phash_max_distance, sp.spectrogram_max_distance)
    vid = manifest["video_id"].to_numpy()
    # clips cut from one YouTube video go together, as near-duplicates do (a VGGSound store's ids)
    same_video = youtube_pairs(video_ids) if protocol.vggsound is not None else []
    groups = video_groups(video_ids, list(zip(vid[pairs["i"]], vid[pairs["j"]])) + same_video)
    return fp, pairs, groups


def _split(manifest, policy: str, protocol, seed: int) -> None:
    sp = protocol.split
    ratios = {"train": sp.train, "val": sp.val, "test": sp.test}
    if policy == "video":
        group_counts: dict[str, dict[str, int]] = {}
        for (g, c), n in manifest.groupby(["group", "class"]).size().items():
            group_counts.setdefault(g, {})[c] = int(n)
        manifest["split"] = manifest["group"].map(video_split(group_counts, ratios, seed))
    elif policy == "random":
        manifest["split"] = random_split(manifest["class"].to_numpy(), ratios, seed)
    elif policy == "given" and not (manifest["split"] == "val").any():
        carve_val(manifest, ratios, seed)  # a manifest of train and test only (VGGSound's CSV)
    elif policy != "given":
        raise UserError(f"unknown split policy {policy!r} (valid: video, random)")


def _audit(seg: Segments, fp, pairs, groups, protocol, policy: str, allow_leakage: bool, out: Path) -> dict:
    """The audit on every segment (before balancing); a leaky split is refused unless allowed."""
    report = audit_segments(seg.manifest, fp, protocol, pairs=pairs)
    report["near_duplicate_groups"] = group_list(seg.manifest, groups)
    report["sources"] = {"total": len(seg.sources_meta), "used": seg.n_used, "skipped": len(seg.skipped)}
    if report["leakage"] and not allow_leakage:
        report_path = out.with_name(out.name + ".audit.json")
        atomic_write_json(report_path, report)
        logger.info(format_report(report, limit=10))
        raise UserError(f"the {policy} split leaks ({report['summary']}); report: {report_path}; "
                        f"pass --allow-leakage to write the store anyway (it will be marked leaky)")
    return report


def _balance(seg: Segments, protocol, seed: int) -> None:
    n_before = len(seg.manifest)
    if protocol.split.balance == "min_class":
        keep = np.asarray(balance(seg.manifest, seed), dtype=np.int64)
        seg.manifest = seg.manifest.iloc[keep].reset_index(drop=True)
        seg.keep = seg.keep[keep]  # rows of the arrays: nothing is copied until the store is written
    empty = [s for s in SPLITS if not (seg.manifest["split"] == s).any()]
    if empty:
        raise UserError(f"after balancing, split(s) {empty} have no segments "
                        f"({n_before} segments of {seg.manifest['video_id'].nunique()} videos; "
                        f"too few videos per class?)")


def _store_meta(protocol, normalisation, policy, seed, leaky, n_before, report, seg: Segments, root: Path,
                audio_context_s: float = 0.0) -> dict:

    sp = protocol.split
    pdict = protocol.to_dict()
    return {
        "protocol": protocol.ref(),
        "protocol_full": pdict,
        "features": {"audio": {**pdict["audio"], "mono": "mean of channels", "window": "hamming, periodic",
                               "mel_scale": "htk", "mel_norm": None, "log": "natural",
                               "framing": "frame i centred at start + hop/2 + i*hop; zeros outside the clip"},
                     "image": {**pdict["image"], "crop": "centre square, side min(h, w)",
                               "resize": "bilinear, antialiased", "dtype": "uint8"},
                     "data": pdict["data"],
                     "waveforms": {"file": "waveforms.npy", "dtype": "int16", "scale": WAVEFORM_SCALE,
                                   "decode": "float32 = int16 / 32767", "sample_rate": protocol.audio.sample_rate,
                                   "samples": int(round(protocol.data.segment_seconds * protocol.audio.sample_rate)),
                                   "what": "mono (mean of channels), resampled to the protocol's rate, the segment's "
                                           "own second, as the log-Mel saw it; beyond full scale clipped",
                                   "context_s": audio_context_s or None,
                                   "context_file": "waveforms_context.npy" if audio_context_s else None,
                                   "context_what": "the C s centred on the segment's centre, zeros outside the clip"
                                   if audio_context_s else None},
                     **_hires_meta(protocol, seg)},
        "normalisation": normalisation,
        "split": {"policy": policy, "seed": seed, "ratios": [sp.train, sp.val, sp.test], "balance": sp.balance,
                  "leaky": leaky, "segments_before_balance": n_before,
                  "near_duplicates": {"phash_max_distance": sp.phash_max_distance,
                                      "spectrogram_max_distance": sp.spectrogram_max_distance,
                                      "groups": len(report["near_duplicate_groups"])}},
        "sources": seg.sources_meta,
        "source_root": str(root.resolve()),
        "synthetic_world": _synthetic_world(root),
        **({"gate": seg.gate} if seg.gate is not None else {}),
    }


def _hires_meta(protocol, seg: Segments) -> dict:
    """store.json `features.waveforms_hr` (`data/hires.py`), when the store keeps one."""
    if seg.hires is None:
        return {}
    rate, seconds = seg.hires_rate, protocol.data.segment_seconds
    return {"waveforms_hr": {
        "file": "waveforms_hr.npy", "dtype": "int16", "scale": WAVEFORM_SCALE, "decode": "float32 = int16 / 32767",
        "sample_rate": rate, "samples": int(round(seconds * rate)),
        "native_rates": {str(r): n for r, n in sorted(seg.native_rates.items())},
        "what": "mono (mean of channels), each segment's own second at this rate: the sources' own audio, resampled "
                "(torchaudio's windowed sinc, 10 ms of real audio on each side) only where a source's rate differs "
                "(native_rates: sources per rate); aligned with waveforms.npy to within half a sample"}}


def _write(out: Path, seg: Segments, meta: dict, report: dict, protocol, overwrite: bool):
    import pandas as pd

    table1 = table1_frame(seg.manifest, protocol)
    if seg.gate is not None:  # what VGGSounder's tags let in and left out, per class (clips)
        for column, values in table1_columns(seg.gate, protocol.class_keys).items():
            table1[column] = values
    skipped_csv = pd.DataFrame(seg.skipped, columns=["source", "class", "video_id", "reason"]).to_csv(index=False)
    columns = ["segment_id", "video_id", "class", "class_index", "split", "start_s", "source", "group"]
    write_store(out, seg.manifest[columns], seg.spectrograms, seg.frames, meta,
                waveforms=seg.waveforms, context=seg.context, rows=seg.keep, hires=seg.hires,
                extra_files={"skipped.csv": skipped_csv.encode(), "table1.csv": table1.to_csv(index=False).encode(),
                             "audit.json": (json.dumps(to_jsonable(report), indent=2) + "\n").encode()},
                overwrite=overwrite)
    return table1


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
