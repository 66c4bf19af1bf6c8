"""`s2i-bench synth` throughput (videos per second) and the judge's speed.

    .venv/bin/python -m benchmarks.bench_synth [--videos-per-class 40] [--workers 1 2]

Times, on the `synth` protocol (160x120, 10 fps, 3-10 s, 22.05 kHz stereo AAC):
  - one video's stages on one core (process time): render frames, synthesise audio, encode
    H.264 + AAC, averaged over a sample of scenes of every class;
  - `write_world` end to end (wall and CPU time) with each number of worker processes given,
    i.e. what `s2i-bench synth` costs in `make demo` (default 40 videos per class);
  - the judge: building its bank (once per process, or read from the disk cache) and judging
    images on one core (BLAS limited to one thread).

Writes results/benchmarks/bench_synth-<date>.json and .md, recording the machine (cores, CPU,
torch version, load average). On a shared machine the wall times are pessimistic: re-run on a
quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version, library_versions, machine_info
from s2i_bench.protocol import load_protocol

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def stage_times(protocol, per_class: int = 3) -> dict:
    from s2i_bench.synth.audio import render_audio
    from s2i_bench.synth.render import render_frames
    from s2i_bench.synth.scenes import CLASS_KEYS, draw_scene
    from s2i_bench.synth.world import _frame_times, encode_mp4

    spec = protocol.synth
    rng = np.random.default_rng(123)
    totals = {"render": 0.0, "audio": 0.0, "encode": 0.0}
    seconds_of_video = 0.0
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for key in CLASS_KEYS:
            for _ in range(per_class):
                duration = round(float(rng.uniform(spec.min_seconds, spec.max_seconds)) * spec.fps) / spec.fps
                scene = draw_scene(key, rng, video_id="benchvideo0", duration=duration)
                t = time.process_time()
                frames = render_frames(scene, _frame_times(duration, spec.fps), spec.width, spec.height)
                totals["render"] += time.process_time() - t
                t = time.process_time()
                audio = render_audio(scene, spec.sample_rate, spec.channels)
                totals["audio"] += time.process_time() - t
                t = time.process_time()
                encode_mp4(Path(tmp) / "v.mp4", frames, audio, spec.fps, spec.sample_rate)
                totals["encode"] += time.process_time() - t
                seconds_of_video += duration
                n += 1
    per_video = {k: v / n for k, v in totals.items()}
    return {"videos": n, "mean_duration_s": seconds_of_video / n, "cpu_s_per_video": per_video,
            "cpu_s_per_video_total": sum(per_video.values()),
            "videos_per_cpu_s": n / sum(totals.values())}


def world_times(protocol, videos_per_class: int, workers: list[int]) -> list[dict]:
    from s2i_bench.synth import write_world

    out = []
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            c0, t0 = cpu_seconds(), time.perf_counter()
            write_world(Path(tmp) / "world", protocol, videos_per_class=videos_per_class, seed=123, workers=w)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            size = sum(p.stat().st_size for p in (Path(tmp) / "world").rglob("*") if p.is_file())
        videos = videos_per_class * len(protocol.classes)
        out.append({"workers": w, "videos": videos, "wall_s": wall, "cpu_s": cpu,
                    "videos_per_s": videos / wall, "videos_per_cpu_s": videos / cpu, "bytes": size})
    return out


def judge_times() -> dict:
    import importlib

    from threadpoolctl import threadpool_limits

    from s2i_bench.synth import draw_scene, render_crop
    from s2i_bench.synth.scenes import CLASS_KEYS

    # the module, not the function `s2i_bench.synth.judge` that the package exports
    judge_module = importlib.import_module("s2i_bench.synth.judge")

    with threadpool_limits(limits=1):
        t, c = time.perf_counter(), time.process_time()
        bank = judge_module.build_bank()
        build = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
        judge_module._BANK = bank  # use it, whatever the disk cache holds
        rng = np.random.default_rng(5)
        crops = np.stack([render_crop(draw_scene(CLASS_KEYS[i % 5], rng, video_id="benchjudge0", duration=4.0), 1.0)
                          for i in range(64)])
        images = crops[rng.integers(0, len(crops), size=8192)]
        judge_module.judge(images[:64], "dog")  # warm-up
        t, c = time.perf_counter(), time.process_time()
        repeats = 3
        for _ in range(repeats):
            judge_module.judge(images, "dog")
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    n = repeats * len(images)
    return {"bank_build": build, "images": n, "wall_s": wall, "cpu_s": cpu,
            "images_per_s_wall": n / wall, "images_per_cpu_s": n / cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos-per-class", type=int, default=None, help="default: the synth protocol's (40)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    protocol = load_protocol("synth")
    vpc = args.videos_per_class or protocol.synth.videos_per_class

    record = {"kind": "bench_synth", "machine": machine_info(), "protocol": protocol.ref(),
              "videos_per_class": vpc, "code_version": code_version(), "libraries": library_versions()}
    record["stages"] = stage_times(protocol)
    record["write_world"] = world_times(protocol, vpc, args.workers)
    record["judge"] = judge_times()
    record["machine"]["load_average_after"] = list(os.getloadavg())
    now = dt.datetime.now(dt.timezone.utc)
    record["created"] = now.replace(microsecond=0).isoformat()
    stamp = now.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"bench_synth-{stamp}.json", record)

    m, st, j = record["machine"], record["stages"], record["judge"]
    lines = [f"# synth benchmark ({record['created']})", "",
             f"Machine: {m['cpu_count']} cores, {m['cpu_model']}, torch {m['torch']}; load average before "
             f"{[round(x, 1) for x in m['load_average']]}, after {[round(x, 1) for x in m['load_average_after']]} "
             "(a busy machine makes wall times pessimistic; re-run on a quiet one).", "",
             f"Protocol `synth` ({protocol.synth.width}x{protocol.synth.height}, {protocol.synth.fps} fps, "
             f"{protocol.synth.min_seconds:g}-{protocol.synth.max_seconds:g} s, {protocol.synth.sample_rate} Hz x "
             f"{protocol.synth.channels} ch); code {record['code_version']}.", "",
             f"One video on one core (mean of {st['videos']}, {st['mean_duration_s']:.1f} s each): "
             + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in st["cpu_s_per_video"].items())
             + f" = {st['cpu_s_per_video_total'] * 1000:.0f} ms "
               f"({st['videos_per_cpu_s']:.1f} videos per CPU second).", "",
             "| write_world | videos | wall s | CPU s | videos/s (wall) | videos per CPU s | size MB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in record["write_world"]:
        lines.append(f"| {row['workers']} worker(s) | {row['videos']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | "
                     f"{row['videos_per_s']:.2f} | {row['videos_per_cpu_s']:.2f} | {row['bytes'] / 1e6:.1f} |")
    lines += ["", f"Judge: bank built in {j['bank_build']['wall_s']:.1f} s wall ({j['bank_build']['cpu_s']:.1f} CPU s; "
              "once per process, then cached on disk); judging "
              f"{j['images_per_s_wall']:,.0f} images/s wall, {j['images_per_cpu_s']:,.0f} images per CPU second "
              "(one BLAS thread).", ""]
    atomic_write_text(args.out / f"bench_synth-{stamp}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
