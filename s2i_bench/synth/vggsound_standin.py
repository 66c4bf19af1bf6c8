"""A VGGSound stand-in: the synthetic world's scenes in VGGSound's CSV and naming conventions,
with a VGGSounder-style tag file, so `protocols/vggsound.toml` can be tested end to end offline.

    s2i-bench synth OUT --vggsound [--videos-per-class N] [--seed S]

    OUT/clips/<YouTube id>_<start, 6 digits>.mp4   H.264 + AAC videos of the synthetic world
    OUT/vggsound.csv                 the official CSV's form: YouTube id, start second, label,
                                     train|test; no header; one row names a clip that is missing
                                     (real downloads of VGGSound always miss some)
    OUT/standin-vggsounder.csv       VGGSounder's tag file's form, for the test clips (as VGGSounder
                                     tags VGGSound's test split only)
    OUT/vggsound-standin.toml        a protocol: `extends = "vggsound"`, the five classes under their
                                     VGGSound labels, this tag file, small settings for tests
    OUT/standin.json                 what was written: every clip, its split and tags, and which
                                     CSV rows the gate must leave out (and why)

The test clips of each class, by position: 0 has its label tagged A (audible only), 1 is flagged
static_image, 2 voice_over, the rest are tagged AV or V; every tagged clip also carries an
audible-only second label ("male speech, man speaking": not a target, whatever its tag). One
more test clip has no tags at all (left out: test clips must be tagged). Clip i of class c
depends only on (seed, c, i), as in the world.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_bytes, atomic_write_text, progress, sha256_file
from s2i_bench.protocol import load_protocol
from s2i_bench.synth.audio import render_audio
from s2i_bench.synth.render import render_frames
from s2i_bench.synth.scenes import CLASS_KEYS, draw_scene, random_video_id
from s2i_bench.synth.world import encode_mp4

STANDIN_FORMAT = "s2i-bench-vggsound-standin"
# VGGSound's labels of the world's five classes (their keys in protocols/vggsound.toml)
LABELS = {"baby_cry": "baby crying", "dog": "dog barking", "rail_transport": "railroad car, train wagon",
          "fireworks": "fireworks banging", "water_flowing": "stream burbling"}
EXTRA_LABEL = "male speech, man speaking"  # tagged A on every tagged clip: audible only, never a target
STREAM = 2_000_003  # the stand-in's random stream: independent of the world's videos
TAG_HEADER = ["video_id", "label", "modality", "background_music", "static_image", "voice_over"]
CASES = ("audible_only", "static_image", "voice_over")  # test clips 0, 1, 2 of every class
MIN_PER_CLASS = 8
TAGS_NAME, PROTOCOL_NAME, CSV_NAME = "standin-vggsounder.csv", "vggsound-standin.toml", "vggsound.csv"

PROTOCOL_TEXT = '''# Written by `s2i-bench synth OUT --vggsound`: protocols/vggsound.toml on the stand-in's five
# classes, with settings small enough for tests. Nothing measured with it means anything.
extends = "vggsound"
name = "vggsound-standin"
version = "0.1.0"
description = "Test-only: VGGSound's protocol on a synthetic stand-in (five classes, VGGSounder-style tags)."
{classes}
[vggsound]
labels = "{tags}"

[classifiers]
class_match_epochs = 4
batch_size = 16

[metrics]
bootstrap_samples = 50
image_metrics_bootstrap = 20

[scoring]
batch_size = 64

[synth]
min_seconds = 2.0
max_seconds = 3.0
'''


def _protocol_text() -> str:
    full = load_protocol("vggsound")
    classes = ""
    for key in CLASS_KEYS:
        spec = full.classes[full.class_keys.index(full.match_class(LABELS[key]))]
        classes += f'\n[[classes]]\nkey = "{spec.key}"\nname = "{spec.name}"\n'
    return PROTOCOL_TEXT.format(classes=classes, tags=TAGS_NAME)


def _check_out(out: Path, overwrite: bool) -> None:
    """OUT is new or empty, or (with --overwrite) a stand-in whose every file standin.json lists."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    files = [p for p in out.rglob("*") if not p.is_dir()] if out.is_dir() else []
    if not files:
        return
    doc = out / "standin.json"
    try:
        listed = json.loads(doc.read_text(encoding="utf-8"))["files"] if overwrite else None
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    if not isinstance(listed, dict):
        raise UserError(f"{out}: not empty" + ("" if overwrite else "; pass --overwrite to replace a stand-in")
                        + (" and not a VGGSound stand-in this command wrote (no standin.json)" if overwrite else ""))
    for p in files:
        rel = p.relative_to(out).as_posix()
        if rel != "standin.json" and (p.is_symlink() or listed.get(rel) != sha256_file(p)):
            raise UserError(f"{out}: {rel} is not a file the stand-in wrote there; refusing to replace {out}")
    for p in files:
        p.unlink()


def _plan(per_class: int, seed: int, spec) -> list[dict]:
    """Every clip: class, id, start, split, tags (None: untagged), and what the gate must do."""
    taken: set[str] = set()
    clips = []
    n_test = max(len(CASES) + 2, int(round(0.4 * per_class)))
    for ci, key in enumerate(CLASS_KEYS):
        for i in range(per_class + (1 if ci == 1 else 0)):  # class 1 has one more test clip, untagged
            rng = np.random.default_rng([seed, STREAM, ci, i])
            ytid = random_video_id(rng)
            while ytid.lower() in taken:
                ytid = random_video_id(rng)
            taken.add(ytid.lower())
            duration = round(float(rng.uniform(spec.min_seconds, spec.max_seconds)) * spec.fps) / spec.fps
            split = "test" if i < n_test or i == per_class else "train"
            case = CASES[i] if i < len(CASES) else ("not_tagged" if i == per_class else None)
            tags = None
            if split == "test" and case != "not_tagged":
                own = "A" if case == "audible_only" else ("AV" if i % 2 else "V")
                flags = {"background_music": False, "static_image": case == "static_image",
                         "voice_over": case == "voice_over"}
                tags = {"labels": {LABELS[key]: own, EXTRA_LABEL: "A"}, "flags": flags}
            clips.append({"class": key, "label": LABELS[key], "youtube_id": ytid, "start": int(rng.integers(0, 300)),
                          "split": split, "tags": tags, "left_out": case,
                          "scene": draw_scene(key, rng, video_id=ytid, duration=duration)})
    return clips


def _csv_text(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_vggsound_standin(out, *, videos_per_class: int | None = None, seed: int | None = None,
                           overwrite: bool = False) -> Path:
    """Write the stand-in to `out` (see the module docstring); returns the folder."""
    out = Path(out)
    _check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PROTOCOL_NAME, _protocol_text())
    protocol = load_protocol(out / PROTOCOL_NAME)
    spec = protocol.synth
    per_class = 10 if videos_per_class is None else int(videos_per_class)
    if per_class < MIN_PER_CLASS:
        raise UserError(f"--videos-per-class {per_class}: the VGGSound stand-in needs at least {MIN_PER_CLASS} "
                        f"(three test clips per class are left out by the gate)")
    seed = spec.seed if seed is None else int(seed)
    clips = _plan(per_class, seed, spec)
    files = {}
    for clip in progress(clips, desc="synth (VGGSound stand-in)", unit="video"):
        scene = clip.pop("scene")
        rel = f"clips/{clip['youtube_id']}_{clip['start']:06d}.mp4"
        (out / "clips").mkdir(exist_ok=True)
        frames = render_frames(scene, np.arange(int(round(scene["duration_s"] * spec.fps))) / spec.fps,
                               spec.width, spec.height)
        encode_mp4(out / rel, frames, render_audio(scene, spec.sample_rate, spec.channels), spec.fps,
                   spec.sample_rate)
        clip["path"], clip["duration_s"] = rel, scene["duration_s"]
        files[rel] = sha256_file(out / rel)
    missing = {"class": CLASS_KEYS[0], "label": LABELS[CLASS_KEYS[0]], "youtube_id": "missingClip",
               "start": 30, "split": "train", "tags": None, "left_out": "file_not_found", "path": None}
    rows = [[c["youtube_id"], c["start"], c["label"], c["split"]] for c in [*clips, missing]]
    tag_rows = [TAG_HEADER] + [[f"{c['youtube_id']}_{c['start']:06d}", label, modality,
                                *(str(c["tags"]["flags"][f]) for f in TAG_HEADER[3:])]
                               for c in clips if c["tags"] for label, modality in c["tags"]["labels"].items()]
    for name, text in ((CSV_NAME, _csv_text(rows)), (TAGS_NAME, _csv_text(tag_rows))):
        atomic_write_text(out / name, text)
        files[name] = sha256_file(out / name)
    files[PROTOCOL_NAME] = sha256_file(out / PROTOCOL_NAME)
    doc = {"format": STANDIN_FORMAT, "version": 1, "seed": seed, "videos_per_class": per_class,
           "protocol": protocol.ref(), "clips": [*clips, missing], "files": files}
    atomic_write_bytes(out / "standin.json", (json.dumps(doc, indent=1) + "\n").encode())
    print(f"VGGSound stand-in: {len(clips)} clips, {CSV_NAME}, {TAGS_NAME} and {PROTOCOL_NAME} in {out}; "
          f"s2i-bench prepare {out / CSV_NAME} --protocol {out / PROTOCOL_NAME} --out STORE")
    return out
