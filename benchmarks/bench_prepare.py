"""`prepare` throughput: segments per second per core, and the projected time for VEGAS-5.

Self-contained: it writes its own clips with PyAV into a temporary folder, then times feature
extraction (`s2i_bench.features.extract_clip`, one thread, one process = one core):
  - "vegas-like": 10-s clips, 640x360 H.264 (x264 veryfast: B-frames, CABAC) at 30 fps,
    44.1 kHz stereo AAC: roughly what a YouTube clip of VEGAS is;
  - "synth-like": 3-10 s clips, 160x120 H.264 at 10 fps, 44.1 kHz AAC: the embedded world's format.
It also times the near-duplicate search (quadratic in segments) at a few sizes and extrapolates
it to VEGAS-5, and runs `prepare_store` end to end on the synth-like clips with 1 and 2 workers.

    .venv/bin/python -m benchmarks.bench_prepare [--vegas-videos 6] [--synth-videos 25]

Writes results/benchmarks/bench_prepare-<date>.json and .md, recording the machine. CPU time
(process time) is what "per core" means here; wall time on a shared machine is larger. Numbers
taken on a busy machine are pessimistic: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version, library_versions, cpu_model
from s2i_bench.protocol import load_protocol

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

VEGAS_VIDEOS = 14142
VEGAS_MAX_SECONDS = 10



def write_clips(folder: Path, n: int, *, seconds, width, height, fps, seed0: int) -> list[Path]:
    from tests.helpers import write_scene_clip

    paths = []
    rng = np.random.default_rng(seed0)
    for i in range(n):
        s = float(seconds) if np.isscalar(seconds) else float(rng.uniform(*seconds))
        path = folder / f"bench{seed0 + i:06d}.mp4"
        write_scene_clip(path, seed0 + i, s, audio_codec="aac", sample_rate=44100, channels=2, width=width,
                         height=height, fps=fps, video_options={"preset": "veryfast"})
        paths.append(path)
    return paths


def time_extraction(paths: list[Path], protocol) -> dict:
    """One thread; per clip: CPU seconds and segments. Also a pass that decodes every video frame
    (what a naive extractor pays before converting any frame), for comparison."""
    import av

    from s2i_bench.data.features import extract_clip

    torch.set_num_threads(1)
    extract_clip(paths[0], protocol)  # warm-up: imports, filterbank cache
    cpu, wall, segments, decode_video_cpu = 0.0, 0.0, 0, 0.0
    for p in paths:
        c0, w0 = time.process_time(), time.perf_counter()
        clip = extract_clip(p, protocol)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        segments += len(clip.starts)
        c0 = time.process_time()
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for _ in container.decode(stream):
                pass
        decode_video_cpu += time.process_time() - c0
    return {"videos": len(paths), "segments": segments, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "segments_per_s_per_core": round(segments / cpu, 1),
            "full_video_decode_cpu_s": round(decode_video_cpu, 3),
            "full_video_decode_vs_extraction": round(decode_video_cpu / cpu, 3)}


def selective_decoding(paths: list[Path], protocol, repeats: int = 3) -> dict:
    """Decode less: extraction with the selective decoder (unreferenced frames skipped unless
    wanted, decoding stopped after the last centre frame) against decoding every frame
    (`skip_frames=False`), best of `repeats` CPU seconds each; and whether the frames kept are
    byte-identical (they must be: the selective path only skips frames nothing refers to)."""
    from s2i_bench.data.features import extract_clip

    torch.set_num_threads(1)
    extract_clip(paths[0], protocol)  # warm-up

    def run(skip: bool):
        best, clips = float("inf"), None
        for _ in range(repeats):
            c0 = time.process_time()
            got = [extract_clip(p, protocol, skip_frames=skip) for p in paths]
            best = min(best, time.process_time() - c0)
            clips = got
        return best, clips

    full_s, full = run(False)
    fast_s, fast = run(True)
    segments = sum(len(c.starts) for c in full)
    identical = all(a.starts == b.starts and np.array_equal(a.frames, b.frames)
                    and np.array_equal(a.spectrograms, b.spectrograms) for a, b in zip(full, fast))
    return {"clips": len(paths), "segments": segments,
            "every_frame": {"cpu_s": round(full_s, 3), "segments_per_s_per_core": round(segments / full_s, 1)},
            "selective": {"cpu_s": round(fast_s, 3), "segments_per_s_per_core": round(segments / fast_s, 1),
                          "used": sum(bool(c.info.get("selective_decoding")) for c in fast)},
            "speed_up": round(full_s / fast_s, 3), "frames_identical": bool(identical)}


def audio_cost(paths: list[Path], protocol, repeats: int = 3) -> dict:
    """What keeping the audio costs: extraction CPU without the waveforms (the segments' audio
    not cut out: store format 2), with them (format 3, the default) and with a 10-s context, best
    of `repeats`; and the bytes per segment of each array in a store."""
    import s2i_bench.data.features as feat

    from s2i_bench.data.extract import to_int16

    real = feat.waveform_windows
    torch.set_num_threads(1)

    def run(context_s: float, without: bool = False) -> float:
        if without:
            feat.waveform_windows = lambda wave, centres, seconds, sr: np.zeros((len(centres), 0), np.float32)
        try:
            best = float("inf")
            for _ in range(repeats):
                c0 = time.process_time()
                for p in paths:
                    clip = feat.extract_clip(p, protocol, audio_context_s=context_s)
                    to_int16(clip.waveforms)
                    if clip.context is not None:
                        to_int16(clip.context)
                best = min(best, time.process_time() - c0)
            return best
        finally:
            feat.waveform_windows = real

    run(0.0)  # warm-up
    before, after, context = run(0.0, without=True), run(0.0), run(10.0)
    a = protocol.audio
    samples = int(round(protocol.data.segment_seconds * a.sample_rate))
    per_segment = {"spectrograms_float16": 2 * a.n_mels * a.frames_per_segment,
                   "frames_uint8": 3 * protocol.image.size ** 2, "waveforms_int16": 2 * samples,
                   "context_10s_int16": 2 * 10 * a.sample_rate}
    without = per_segment["spectrograms_float16"] + per_segment["frames_uint8"]
    return {"clips": len(paths), "extraction_cpu_s": {"without_waveforms": round(before, 3),
                                                      "with_waveforms": round(after, 3),
                                                      "with_waveforms_and_10s_context": round(context, 3)},
            "extraction_overhead": round(after / before - 1, 4),
            "bytes_per_segment": per_segment, "store_bytes_per_segment": {
                "format_2": without, "format_3": without + per_segment["waveforms_int16"],
                "format_3_with_10s_context": (without + per_segment["waveforms_int16"]
                                              + per_segment["context_10s_int16"])},
            "store_growth": round(per_segment["waveforms_int16"] / without, 3)}


def time_pair_search(sizes=(5000, 10000, 20000)) -> dict:
    """Near-duplicate search on random fingerprints: quadratic, so t = a * n^2 with a read at the
    largest size (small sizes are dominated by fixed costs)."""
    from s2i_bench.data.dedup import Fingerprints, near_duplicate_pairs

    out = {}
    for n in sizes:
        rng = np.random.default_rng(n)
        fp = Fingerprints(rng.integers(0, 2 ** 63, n, dtype=np.uint64), rng.random((n, 240), dtype=np.float32),
                          np.ones(n, bool))
        c0 = time.process_time()
        near_duplicate_pairs(fp, np.arange(n) // 10, 6, 0.05)
        out[n] = time.process_time() - c0
    a = out[max(out)] / max(out) ** 2
    return {"cpu_s": {str(k): round(v, 3) for k, v in out.items()}, "seconds_per_pair_squared": a}


def time_prepare(world: Path, protocol, workers: int) -> dict:
    from s2i_bench.data.prepare import prepare_store

    out = world.parent / f"store-w{workers}"
    w0 = time.perf_counter()
    prepare_store(world, out, protocol, workers=workers, overwrite=True)
    wall = time.perf_counter() - w0
    from s2i_bench.data.store import open_store

    s = open_store(out)
    return {"workers": workers, "wall_s": round(wall, 2),
            "segments_before_balance": s.split_info["segments_before_balance"], "segments": len(s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vegas-videos", type=int, default=6)
    ap.add_argument("--synth-videos", type=int, default=25, help="per class is this / 5")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    protocol = load_protocol("synth")
    started = dt.datetime.now()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare-"))
    try:
        print("writing clips ...", file=sys.stderr)
        vegas = write_clips(tmp / "vegas", args.vegas_videos, seconds=10, width=640, height=360, fps=30, seed0=0)
        per_class = max(1, args.synth_videos // 5)
        synth = []
        for ci, key in enumerate(protocol.class_keys):
            synth += write_clips(tmp / "world" / key, per_class, seconds=(3, 10), width=160, height=120, fps=10,
                                 seed0=1000 + 100 * ci)
        print("timing extraction ...", file=sys.stderr)
        vegas_t = time_extraction(vegas, protocol)
        synth_t = time_extraction(synth, protocol)
        print("timing selective decoding ...", file=sys.stderr)
        decode_less = {"vegas_like": selective_decoding(vegas, protocol),
                       "synth_like": selective_decoding(synth, protocol)}
        print("timing the audio store ...", file=sys.stderr)
        audio = audio_cost(vegas, protocol)
        print("timing the near-duplicate search ...", file=sys.stderr)
        pairs = time_pair_search()
        print("timing prepare end to end ...", file=sys.stderr)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        runs = [time_prepare(tmp / "world", protocol, w) for w in (1, 2)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rate = vegas_t["segments_per_s_per_core"]
    vegas_segments = VEGAS_VIDEOS * VEGAS_MAX_SECONDS  # upper bound: every clip 10 s long
    search_s = pairs["seconds_per_pair_squared"] * vegas_segments ** 2
    projection = {str(cores): {"extraction_min": round(vegas_segments / (rate * cores) / 60, 1),
                               "near_duplicate_search_min": round(search_s / 60, 1),
                               "total_min": round((vegas_segments / (rate * cores) + search_s) / 60, 1)}
                  for cores in (2, 16)}
    result = {
        "benchmark": "prepare",
        "date": started.isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {**library_versions(), "s2i_bench": code_version()},
        "vegas_like": {"clip": "10 s, 640x360 H.264 veryfast 30 fps, 44.1 kHz stereo AAC", **vegas_t},
        "synth_like": {"clip": "3-10 s, 160x120 H.264 veryfast 10 fps, 44.1 kHz stereo AAC", **synth_t},
        "selective_decoding": decode_less,
        "audio_store": audio,
        "near_duplicate_search": pairs,
        "prepare_end_to_end_synth_like": runs,
        "vegas5_projection": {"videos": VEGAS_VIDEOS, "segments_assumed": vegas_segments,
                              "segments_per_s_per_core": rate, "by_cores": projection,
                              "note": "extraction scales with cores (--workers); the near-duplicate search runs on "
                                      "one core in the main process"},
        "target_segments_per_s_per_core": 50,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_prepare-{started:%Y%m%d-%H%M%S}"
    atomic_write_json(stem.with_suffix(".json"), result)
    md = [f"# prepare benchmark, {result['date']}", "",
          f"Machine: {result['machine']['cores']} cores, {result['machine']['cpu_model']}, torch "
          f"{result['versions'].get('torch')}, PyAV {result['versions'].get('av')}; load average before "
          f"{result['machine']['load_average_before']} (a busy machine makes every number pessimistic).", "",
          "| clips | videos | segments | CPU s | segments/s/core "
          "| decoding every video frame alone, vs our extraction |",
          "| --- | --- | --- | --- | --- | --- |"]
    for name in ("vegas_like", "synth_like"):
        r = result[name]
        md.append(f"| {r['clip']} | {r['videos']} | {r['segments']} | {r['cpu_s']} | "
                  f"{r['segments_per_s_per_core']} | {r['full_video_decode_vs_extraction']:.0%} |")
    md += ["", "Decode less (best of 3, one core): extraction decoding every video frame vs the selective decoder "
               "(unreferenced frames skipped unless wanted, decoding stopped after the last centre frame):", "",
           "| clips | segments | every frame: segments/s/core | selective: segments/s/core "
           "| speed-up | frames identical |",
           "| --- | --- | --- | --- | --- | --- |"]
    for name in ("vegas_like", "synth_like"):
        d = decode_less[name]
        md.append(f"| {result[name]['clip']} | {d['segments']} | {d['every_frame']['segments_per_s_per_core']} | "
                  f"{d['selective']['segments_per_s_per_core']} | x{d['speed_up']} | "
                  f"{'yes' if d['frames_identical'] else 'NO'} |")
    ac, ab = audio["extraction_cpu_s"], audio["store_bytes_per_segment"]
    md += ["", f"Keeping the audio (store format 3), on the {audio['clips']} VEGAS-like clips: extraction "
               f"{ac['without_waveforms']} CPU s without the waveforms, {ac['with_waveforms']} s with them "
               f"({100 * audio['extraction_overhead']:+.1f}%), {ac['with_waveforms_and_10s_context']} s with a 10-s "
               f"context. Store bytes per segment: {ab['format_2']} (format 2) -> {ab['format_3']} (format 3, "
               f"+{100 * audio['store_growth']:.0f}%) -> {ab['format_3_with_10s_context']} with a 10-s context."]
    md += ["", f"Near-duplicate search (one core): {pairs['cpu_s']} CPU s for n segments "
               f"(quadratic: {pairs['seconds_per_pair_squared']:.2e} s x n^2).", "",
           f"VEGAS-5 projection ({VEGAS_VIDEOS} videos, at most {vegas_segments} segments):", "",
           "| cores | extraction (min) | near-duplicate search (min) | total (min) |", "| --- | --- | --- | --- |"]
    for cores, p in projection.items():
        md.append(f"| {cores} | {p['extraction_min']} | {p['near_duplicate_search_min']} | {p['total_min']} |")
    md += ["", "prepare end to end on the synth-like clips: " +
           ", ".join(f"{r['workers']} worker(s) {r['wall_s']} s wall for {r['segments_before_balance']} segments"
                     for r in runs), ""]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md))
    print("\n".join(md))
    print(f"wrote {stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
