"""`s2i-bench synth OUT`: the synthetic world written as real videos, laid out like VEGAS.

    OUT/scenes.json              every video's scene (see `scenes.py`), the faults (--dirty),
                                 and how attributes map to sound and picture
    OUT/<class folder>/<id>.mp4  H.264 (libx264, yuv420p) + AAC (stereo) in MP4; <id> is an
                                 11-character YouTube-like id; folders are the VEGAS names

Video i of class c depends only on (seed, c, i): a world with more videos per class contains the
smaller one, and `--dirty` only adds files. The encoders run single-threaded with bit-exact
flags and no timestamps, so the same seed and software versions give byte-identical files.

`--dirty` adds, and lists under `faults` in scenes.json (kind, class, path, video_id, duplicates,
detail, scene):
    corrupt     an .mp4 cut to 40 % of its bytes (no `moov` atom: no decoder can open it)
    no_audio    a clip with a video stream only
    too_short   a clip of 0.6 s (no whole 1-s segment)
    shared_id   a clean video of one class copied, same id and bytes, into another class's
                folder (AudioSet is multi-label); `duplicates` names the original
    reupload    a clean video's scene re-encoded under a new id at another size and bitrate
                (near-identical frames and sound); `duplicates` names the original
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_bytes, progress, sha256_file
from s2i_bench.protocol import load_protocol
from s2i_bench.synth.audio import render_audio
from s2i_bench.synth.render import render_frames
from s2i_bench.synth.scenes import CLASS_ATTRIBUTES, CLASS_KEYS, WORLD_VERSION, draw_scene, random_video_id

SCENES_FORMAT = "s2i-bench-synthetic-world"
VIDEO_CRF, REUPLOAD_CRF = 23, 30
AUDIO_BITRATE, REUPLOAD_AUDIO_BITRATE = 64000, 48000
REUPLOAD_SCALE = 1.1  # the re-upload is 10 % larger (176x132 for 160x120)
FAULT_STREAM = 1_000_003  # the faults' random stream: independent of the clean videos


def encode_mp4(path: Path, frames: np.ndarray, audio: np.ndarray | None, fps: int, sample_rate: int,
               crf: int = VIDEO_CRF, audio_bitrate: int = AUDIO_BITRATE) -> None:
    """Write frames (T, H, W, 3) uint8 and audio (C, n) float32 (or None) as H.264 + AAC MP4,
    deterministically (one encoder thread, bit-exact muxing, no creation time)."""
    import av

    height, width = frames.shape[1:3]
    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as box:
        video = box.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.thread_count = 1
        # mbtree=0: x264's macroblock-tree rate control (on by default) made the bytes of clips
        # with moving content (the rail and water scenes) depend on the process's heap state, not
        # only on the frames: identical yuv frames encoded twice in one process gave up to 6
        # different files in 6 tries. Without it, 0 of 100 clips x 4 encodes differed.
        video.codec_context.options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
                                       "flags": "+bitexact",
                                       "x264-params": "threads=1:sliced-threads=0:mbtree=0"}
        sound = None
        if audio is not None:
            sound = box.add_stream("aac", rate=sample_rate, layout="stereo" if audio.shape[0] == 2 else "mono")
            sound.bit_rate = audio_bitrate
            sound.codec_context.thread_count = 1
            sound.codec_context.options = {"flags": "+bitexact", "aac_coder": "fast"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            box.mux(video.encode(frame))
        box.mux(video.encode(None))
        if sound is not None:
            # AAC takes fixed-size frames: feed 1024 samples at a time (the last one zero-padded)
            step = sound.codec_context.frame_size or 1024
            layout = "stereo" if audio.shape[0] == 2 else "mono"
            for start in range(0, audio.shape[1], step):
                chunk = audio[:, start:start + step]
                if chunk.shape[1] < step:
                    chunk = np.pad(chunk, ((0, 0), (0, step - chunk.shape[1])))
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk, dtype=np.float32), format="fltp",
                                                   layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
                box.mux(sound.encode(frame))
            box.mux(sound.encode(None))


def _frame_times(duration: float, fps: int) -> np.ndarray:
    return np.arange(int(round(duration * fps))) / fps


def _write_video(path: Path, scene: dict, spec, *, width: int | None = None, height: int | None = None,
                 with_audio: bool = True, crf: int = VIDEO_CRF, audio_bitrate: int = AUDIO_BITRATE) -> None:
    width, height = width or spec.width, height or spec.height
    frames = render_frames(scene, _frame_times(scene["duration_s"], spec.fps), width, height)
    audio = render_audio(scene, spec.sample_rate, spec.channels) if with_audio else None
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(path, frames, audio, spec.fps, spec.sample_rate, crf=crf, audio_bitrate=audio_bitrate)


def _folder_names(protocol) -> dict[str, str]:
    """Class key -> folder name. The world knows its five classes; the folder is the VEGAS name,
    which is the class key (and one of the protocol's aliases)."""
    out = {}
    for key in protocol.class_keys:
        if key not in CLASS_KEYS:
            raise UserError(f"protocol {protocol.name!r} has class {key!r}, which the synthetic world does not "
                            f"draw (it has: {', '.join(CLASS_KEYS)})")
        if protocol.match_class(key) != key:
            raise UserError(f"protocol {protocol.name!r}: folder name {key!r} does not match class {key!r}")
        out[key] = key
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} exists and is not empty; pass --overwrite to replace it")
        if not (out / "scenes.json").is_file():
            # --overwrite deletes the folder: only ever do that to a world this command wrote
            raise UserError(f"{out} is not empty and holds no scenes.json (not a synthetic world); "
                            "refusing to replace it even with --overwrite: choose a new or empty folder")
        _check_only_world_files(out)


def _check_only_world_files(out: Path) -> None:
    """--overwrite replaces a world only when every file in it is one that scenes.json lists with
    the sha256 it has (a planted scenes.json, or a file of the user's among the videos, is
    refused: nothing is deleted that this command did not write)."""
    try:
        doc = json.loads((out / "scenes.json").read_text(encoding="utf-8"))
        listed = {str(e["path"]): str(e["sha256"]) for e in [*doc["videos"], *doc.get("faults", [])]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{out / 'scenes.json'}: not a synthetic world's scene file; refusing to replace {out} even "
                        f"with --overwrite") from None
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_symlink() or (p.is_file() and rel != "scenes.json" and (
                rel not in listed or sha256_file(p) != listed[rel])):
            raise UserError(f"{out}: {rel} is not a file that `s2i-bench synth` wrote there (scenes.json does not "
                            f"list it with this content); refusing to replace {out} even with --overwrite: move it "
                            f"away or choose a new folder")


def _unique_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        vid = random_video_id(rng)
        if vid.lower() not in taken:  # case-insensitive file systems: ids must differ beyond case
            taken.add(vid.lower())
            return vid


def _make_clean_video(job: tuple) -> tuple[str, int]:
    """Render and encode one clean video (runs in a worker process): -> (sha256, frames)."""
    path, scene, spec = job
    _write_video(Path(path), scene, spec)
    return sha256_file(path), len(_frame_times(scene["duration_s"], spec.fps))


def _default_workers(num_videos: int) -> int:
    # Worker start-up costs about a second; below ~20 videos one process is faster.
    return 1 if num_videos < 20 else max(1, min(4, os.cpu_count() or 1))


def write_world(out, protocol, *, videos_per_class: int | None = None, seed: int | None = None,
                dirty: bool = False, overwrite: bool = False, workers: int | None = None) -> Path:
    """Write the synthetic world to `out` (see the module docstring). Returns the folder.
    `workers` processes render and encode (default: up to 4 for 20 videos or more); the files
    do not depend on it."""
    protocol = load_protocol(protocol)
    spec = protocol.synth
    videos_per_class = spec.videos_per_class if videos_per_class is None else int(videos_per_class)
    seed = spec.seed if seed is None else int(seed)
    if videos_per_class < 1:
        raise UserError(f"--videos-per-class must be at least 1, got {videos_per_class}")
    if not (1.0 <= spec.min_seconds <= spec.max_seconds):
        raise UserError(f"protocol {protocol.name!r}: synth.min_seconds must be >= 1 and <= synth.max_seconds")
    out = Path(out).resolve()  # "." or "x/" must still give a real folder name for the swap below
    if not out.name:
        raise UserError(f"{out} cannot hold the synthetic world: choose a sub-folder")
    _check_out(out, overwrite)
    folders = _folder_names(protocol)

    # Build in a hidden sibling folder, then swap it in: a crash never leaves a half world at OUT.
    tmp = out.parent / f".{out.name}.synth-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    taken: set[str] = set()
    plan = _plan(folders, videos_per_class, seed, spec, taken)
    try:
        videos, faults = _render_all(tmp, plan, folders, spec, seed, taken, dirty, workers)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    doc = _scenes_doc(protocol, spec, folders, seed, videos_per_class, dirty, videos, faults)
    atomic_write_bytes(tmp / "scenes.json", (json.dumps(doc, indent=1) + "\n").encode())
    _swap_in(tmp, out)
    print(f"synthetic world: {len(videos)} videos" + (f" + {len(faults)} planted faults" if faults else "")
          + f" ({sum(v['duration_s'] for v in videos) / 60:.1f} min of video, seed {seed}) in {out}")
    return out


def _plan(folders: dict[str, str], videos_per_class: int, seed: int, spec, taken: set[str]) -> list[tuple]:
    """(class key, scene) of every clean video, in folder order: video i of class c depends only
    on (seed, c, i)."""
    plan = []
    for key in folders:
        for i in range(videos_per_class):
            rng = np.random.default_rng([seed, CLASS_KEYS.index(key), i])
            vid = _unique_id(rng, taken)
            duration = round(float(rng.uniform(spec.min_seconds, spec.max_seconds)) * spec.fps) / spec.fps
            plan.append((key, draw_scene(key, rng, video_id=vid, duration=duration)))
    return plan


def _render_all(tmp: Path, plan, folders, spec, seed: int, taken: set[str], dirty: bool, workers: int | None):
    """Render and encode every clean video (in worker processes) and the faults: (videos, faults)."""
    num_faults = 5 if dirty else 0
    workers = _default_workers(len(plan)) if workers is None else max(1, int(workers))
    rels = [f"{folders[key]}/{scene['video_id']}.mp4" for key, scene in plan]
    for folder in set(folders.values()):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(str(tmp / rel), scene, spec) for rel, (_, scene) in zip(rels, plan)]
    bar = progress(total=len(plan) + num_faults, desc="synth", unit="video")
    videos = []
    pool = None
    try:
        if workers == 1:
            results = map(_make_clean_video, jobs)
        else:
            # fork where there is one: spawn would re-run a caller's script without a __main__
            # guard; the workers use only numpy and PyAV, never the parent's threads
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
            results = pool.map(_make_clean_video, jobs, chunksize=4)
        for rel, (_, scene), (digest, num_frames) in zip(rels, plan, results):
            videos.append({"path": rel, "sha256": digest, "num_frames": num_frames, **scene})
            bar.update()
        faults = _write_faults(tmp, videos, folders, spec, seed, taken, bar) if dirty else []
    except BaseException:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            pool = None
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    return videos, faults


def _scenes_doc(protocol, spec, folders, seed, videos_per_class, dirty, videos, faults) -> dict:
    names = dict(zip(protocol.class_keys, protocol.class_names))
    return {
        "format": SCENES_FORMAT,
        "version": WORLD_VERSION,
        "seed": seed,
        "protocol": protocol.ref(),
        "videos_per_class": videos_per_class,
        "dirty": dirty,
        "video": {"width": spec.width, "height": spec.height, "fps": spec.fps, "codec": "h264 (libx264)",
                  "crf": VIDEO_CRF, "pix_fmt": "yuv420p"},
        "audio": {"sample_rate": spec.sample_rate, "channels": spec.channels, "codec": "aac",
                  "bit_rate": AUDIO_BITRATE},
        "encoders": _encoder_versions(),
        "classes": {key: {"name": names[key], "folder": folders[key],
                          "picture": CLASS_ATTRIBUTES[key]["picture"], "sound": CLASS_ATTRIBUTES[key]["sound"],
                          "audible_visible": {a: CLASS_ATTRIBUTES[key][a] for a in ("tone", "size", "wagon")
                                              if a in CLASS_ATTRIBUTES[key]}}
                    for key in folders},
        "attributes": {
            "tone": "latent in [0, 1]: hue_deg = hue0 + hue_span * tone; tone_hz = lo * (hi / lo) ** tone",
            "size": "latent in [0, 1]: object_size (frame heights) and loudness_db (RMS of the mono mix) grow with it",
        },
        "videos": videos,
        "faults": faults,
    }


def _swap_in(tmp: Path, out: Path) -> None:
    if out.exists():
        # keep the folder itself (it may be the shell's working directory): swap its contents
        for child in list(out.iterdir()):
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for child in list(tmp.iterdir()):
            child.rename(out / child.name)
        tmp.rmdir()
    else:
        tmp.rename(out)


def _encoder_versions() -> dict[str, str]:
    import av

    return {"pyav": av.__version__, "libavcodec": ".".join(str(v) for v in av.library_versions["libavcodec"])}


def _write_faults(root: Path, videos: list[dict], folders: dict[str, str], spec, seed: int,
                  taken: set[str], bar) -> list[dict]:
    """The five faults of SPEC section 8, each listed exactly (see the module docstring)."""
    rng = np.random.default_rng([seed, FAULT_STREAM])
    keys = list(folders)
    faults = []

    def pick(i):  # fault i lives in class i (mod the number of classes)
        return keys[i % len(keys)]

    def new_scene(key: str, duration: float) -> dict:
        return draw_scene(key, rng, video_id=_unique_id(rng, taken), duration=duration)

    def entry(kind, key, scene_or_none, rel, vid, duplicates, detail):
        return {"kind": kind, "class": key, "path": rel, "video_id": vid, "duplicates": duplicates,
                "detail": detail, "scene": scene_or_none}

    # 1. corrupt: a real encoding cut short; the moov atom (written last) is missing
    key = pick(0)
    scene = new_scene(key, 3.0)
    rel = f"{folders[key]}/{scene['video_id']}.mp4"
    _write_video(root / rel, scene, spec)
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: int(0.4 * len(data))])
    faults.append(entry("corrupt", key, None, rel, scene["video_id"], None,
                        f"truncated to {int(0.4 * len(data))} of {len(data)} bytes: no moov atom"))
    bar.update()

    # 2. no audio stream
    key = pick(1)
    scene = new_scene(key, 3.0)
    rel = f"{folders[key]}/{scene['video_id']}.mp4"
    _write_video(root / rel, scene, spec, with_audio=False)
    faults.append(entry("no_audio", key, scene, rel, scene["video_id"], None, "video stream only"))
    bar.update()

    # 3. shorter than one second: no whole segment
    key = pick(2)
    scene = new_scene(key, 0.6)
    rel = f"{folders[key]}/{scene['video_id']}.mp4"
    _write_video(root / rel, scene, spec)
    faults.append(entry("too_short", key, scene, rel, scene["video_id"], None, "0.6 s long"))
    bar.update()

    # 4. one id in two class folders: a clean video of class 3 copied into class 4's folder
    src_key, dst_key = pick(3), pick(4)
    if src_key != dst_key:
        original = next(v for v in videos if v["class"] == src_key)
        rel = f"{folders[dst_key]}/{original['video_id']}.mp4"
        shutil.copyfile(root / original["path"], root / rel)
        faults.append(entry("shared_id", dst_key, _scene_of(original), rel, original["video_id"],
                            {"video_id": original["video_id"], "path": original["path"]},
                            f"same file also labelled {dst_key} (multi-label)"))
    bar.update()

    # 5. the same content re-uploaded under another id: other size and bitrates
    key = pick(1)
    original = next(v for v in videos if v["class"] == key)
    scene = dict(_scene_of(original), video_id=_unique_id(rng, taken))
    rel = f"{folders[key]}/{scene['video_id']}.mp4"
    width = int(round(spec.width * REUPLOAD_SCALE / 2)) * 2  # even sizes for yuv420p
    height = int(round(spec.height * REUPLOAD_SCALE / 2)) * 2
    _write_video(root / rel, scene, spec, width=width, height=height, crf=REUPLOAD_CRF,
                 audio_bitrate=REUPLOAD_AUDIO_BITRATE)
    faults.append(entry("reupload", key, scene, rel, scene["video_id"],
                        {"video_id": original["video_id"], "path": original["path"]},
                        f"same scene re-encoded at {width}x{height}, crf {REUPLOAD_CRF}, "
                        f"audio {REUPLOAD_AUDIO_BITRATE // 1000} kb/s"))
    bar.update()
    for f in faults:
        f["sha256"] = sha256_file(root / f["path"])
    return faults


_SCENE_KEYS = ("video_id", "class", "duration_s", "seed", "attributes", "nuisance")


def _scene_of(video: dict) -> dict:
    return {k: video[k] for k in _SCENE_KEYS}
