"""Acceptance figures of the synthetic world and its judge (issue 2), on a world made with a seed
the tests never use.

    .venv/bin/python -m benchmarks.check_synth_world [--seed 2026] [--videos-per-class 40] [--world DIR]

Writes results/benchmarks/check_synth_world-<date>.json and .md. What it measures, on the real
.mp4 files decoded by `s2i_bench.features.extract_clip` (centre crop, 96x96, as `prepare` does):

  - judge pass rate of each class's frames for their own class (target >= 95 %), of the same
    frames blurred with a Gaussian of sigma 1.5 px (>= 80 %), of frames of every other class,
    uniform images, Gaussian noise and each class's mean image (each <= 5 %);
  - the "conditional mean" check: the mean frame of the k = 10 other videos of the class whose
    audible attributes (tone, size) are nearest a video's (what a pixel-MSE translator tends
    to) should pass often, while the class mean fails;
  - per class, ridge regression from each segment's time-averaged log-Mel bands to each scene
    attribute, R^2 on videos it did not see (5-fold split grouped by video; target >= 0.5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from s2i_bench.data.features import extract_clip
from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version, library_versions, machine_info
from s2i_bench.protocol import load_protocol
from s2i_bench.synth import judge, write_world

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {"own": 0.95, "blurred": 0.80, "negatives": 0.05, "r2": 0.5}


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of uint8 (N, H, W, 3) images, reflecting at the edges."""
    radius = int(np.ceil(4 * sigma))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = images.astype(np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        acc = np.zeros_like(out)
        for i, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis)
        out = acc
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_segments(world: Path, protocol) -> dict:
    doc = json.loads((world / "scenes.json").read_text())
    rows, frames, bands = [], [], []
    for v in doc["videos"]:
        clip = extract_clip(world / v["path"], protocol)
        for k, start in enumerate(clip.starts):
            rows.append({"video_id": v["video_id"], "class": v["class"], "start": start, **v["attributes"]})
            frames.append(clip.frames[k])
            bands.append(clip.spectrograms[k, 0].mean(axis=1))  # (128,) time-averaged log-Mel
    return {"doc": doc, "rows": rows, "frames": np.stack(frames), "bands": np.stack(bands)}


def ridge_r2(bands: np.ndarray, target: np.ndarray, groups: np.ndarray) -> float:
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predicted = np.zeros_like(target)
    for train, test in GroupKFold(n_splits=5).split(bands, target, groups):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        model.fit(bands[train], target[train])
        predicted[test] = model.predict(bands[test])
    return float(r2_score(target, predicted))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=2026, help="world seed (the tests use 0-99)")
    ap.add_argument("--videos-per-class", type=int, default=40)
    ap.add_argument("--world", type=Path, default=None, help="reuse (or write) the world here")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()

    protocol = load_protocol("synth")
    started = time.time()
    tmp = None
    world = args.world
    if world is None:
        tmp = tempfile.TemporaryDirectory(prefix="s2i-check-world-")
        world = Path(tmp.name) / "world"
    if not (world / "scenes.json").is_file():
        write_world(world, protocol, videos_per_class=args.videos_per_class, seed=args.seed)
    data = load_segments(world, protocol)
    seconds_world = time.time() - started
    rows, frames, bands = data["rows"], data["frames"], data["bands"]
    classes = np.array([r["class"] for r in rows])
    videos = np.array([r["video_id"] for r in rows])
    keys = protocol.class_keys
    rng = np.random.default_rng(args.seed)

    judged: dict = {"own": {}, "blurred": {}, "other_classes": {}, "class_mean": {}, "conditional_mean": {},
                    "uniform": {}, "noise": {}}
    uniform = np.broadcast_to(rng.integers(0, 256, size=(200, 1, 1, 3), dtype=np.uint8), (200, 96, 96, 3)).copy()
    noise = np.concatenate([
        np.clip(rng.normal(127.5, 60.0, size=(100, 96, 96, 3)), 0, 255),
        np.clip(rng.normal(rng.uniform(40, 215, size=(100, 1, 1, 3)), 25.0, size=(100, 96, 96, 3)), 0, 255),
    ]).astype(np.uint8)
    t0 = time.perf_counter()
    judge_calls = 0
    for key in keys:
        own = frames[classes == key]
        judged["own"][key] = float(judge(own, key).mean())
        judged["blurred"][key] = float(judge(gaussian_blur(own, 1.5), key).mean())
        judged["other_classes"][key] = {o: float(judge(frames[classes == o], key).mean()) for o in keys if o != key}
        mean_image = own.astype(np.float64).mean(0).round().astype(np.uint8)[None]
        judged["class_mean"][key] = bool(judge(mean_image, key)[0])
        judged["uniform"][key] = float(judge(uniform, key).mean())
        judged["noise"][key] = float(judge(noise, key).mean())
        judge_calls += 1

        # conditional mean: one centre-most frame per video; for each video, the mean of those
        # of the 10 other videos whose (tone, size) are nearest
        vids = sorted(set(videos[classes == key]))
        per_video = []
        attrs = []
        for v in vids:
            idx = np.flatnonzero(videos == v)
            per_video.append(frames[idx[len(idx) // 2]])
            attrs.append([rows[idx[0]]["tone"], rows[idx[0]]["size"]])
        per_video, attrs = np.stack(per_video).astype(np.float64), np.array(attrs)
        cond = []
        for i in range(len(vids)):
            d = ((attrs - attrs[i]) ** 2).sum(1)
            d[i] = np.inf
            nearest = np.argsort(d)[:10]
            cond.append(per_video[nearest].mean(0).round().astype(np.uint8))
        judged["conditional_mean"][key] = float(judge(np.stack(cond), key).mean())
    seconds_judge = time.perf_counter() - t0

    # speed on one core-sized batch (the bank is built by now)
    batch = frames[rng.integers(0, len(frames), size=4096)]
    t0 = time.perf_counter()
    for _ in range(3):
        judge(batch, keys[0])
    judge_rate = 3 * len(batch) / (time.perf_counter() - t0)

    r2 = {}
    for key in keys:
        sel = classes == key
        attrs = ["tone", "size"] + (["wagon_length"] if key == "rail_transport" else [])
        r2[key] = {a: ridge_r2(bands[sel], np.array([r[a] for r, s in zip(rows, sel) if s], float), videos[sel])
                   for a in attrs}

    worst_negative = max(
        max(max(v.values()) for v in judged["other_classes"].values()),
        max(judged["uniform"].values()), max(judged["noise"].values()),
        float(any(judged["class_mean"].values())),
    )
    passed = {
        "own >= 0.95": min(judged["own"].values()) >= TARGETS["own"],
        "blurred >= 0.80": min(judged["blurred"].values()) >= TARGETS["blurred"],
        "negatives <= 0.05": worst_negative <= TARGETS["negatives"],
        "ridge R2 >= 0.5 (tone and size, every class)": all(
            r2[k]["tone"] >= TARGETS["r2"] and r2[k]["size"] >= TARGETS["r2"] for k in keys),
    }
    now = dt.datetime.now(dt.timezone.utc)
    record = {
        "kind": "check_synth_world", "created": now.replace(microsecond=0).isoformat(),
        "seed": args.seed, "videos_per_class": args.videos_per_class, "protocol": protocol.ref(),
        "world": {"version": data["doc"]["version"], "videos": len(data["doc"]["videos"]), "segments": len(rows)},
        "judge": judged, "judge_images_per_s": judge_rate, "ridge_r2": r2,
        "worst_negative_rate": worst_negative, "passed": passed,
        "seconds": {"world_and_decode": seconds_world, "judging": seconds_judge},
        "machine": machine_info(), "code_version": code_version(), "libraries": library_versions(),
    }
    stamp = now.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"check_synth_world-{stamp}.json", record)

    lines = [f"# Synthetic world acceptance check ({record['created']})", "",
             f"World seed {args.seed} (not used by the tests), {args.videos_per_class} videos per class, "
             f"{len(rows)} segments; protocol {protocol.name} {protocol.fingerprint}; code {record['code_version']}.",
             f"Machine: {record['machine']['cpu_count']} cores, {record['machine']['cpu_model']}, "
             f"torch {record['machine']['torch']}, load average {record['machine']['load_average']}.", "",
             "| class | own frames | blurred σ=1.5 | worst other class | class mean | uniform | noise "
             "| conditional mean (k=10) | R² tone | R² size |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in keys:
        worst_other = max(judged["other_classes"][key].items(), key=lambda kv: kv[1])
        lines.append(f"| {key} | {judged['own'][key]:.1%} | {judged['blurred'][key]:.1%} | "
                     f"{worst_other[1]:.1%} ({worst_other[0]}) | "
                     f"{'passes' if judged['class_mean'][key] else 'fails'} | "
                     f"{judged['uniform'][key]:.1%} | {judged['noise'][key]:.1%} | "
                     f"{judged['conditional_mean'][key]:.1%} | {r2[key]['tone']:.2f} | {r2[key]['size']:.2f} |")
    if "wagon_length" in r2.get("rail_transport", {}):
        lines.append(f"\nrail_transport wagon length (clack period) R²: {r2['rail_transport']['wagon_length']:.2f}")
    lines += ["", f"Judge speed: {judge_rate:,.0f} images/s (one process, batches of 4096, bank built).", "",
              "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in passed.items()), ""]
    atomic_write_text(args.out / f"check_synth_world-{stamp}.md", "\n".join(lines))
    print("\n".join(lines))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
