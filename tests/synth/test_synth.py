"""The synthetic world: files, layout, determinism, faults, overwrite rules, and that picture and
sound really carry the scene attributes. Worlds here are tiny (1-2 videos per class, 2-3 s)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_bench.synth import draw_scene, render_audio, render_crop, render_frame, write_world
from s2i_bench.synth.render import CROP_WINDOW, render_frames
from s2i_bench.synth.scenes import CLASS_KEYS

av = pytest.importorskip("av")
TINY = load_protocol("tiny")
FAULT_KINDS = {"corrupt", "no_audio", "too_short", "shared_id", "reupload"}


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dirty_world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("w") / "dirty", TINY, videos_per_class=1, seed=7, dirty=True)


@pytest.fixture(scope="module")
def scenes(dirty_world) -> dict:
    return json.loads((dirty_world / "scenes.json").read_text())


# -- determinism ------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes_and_another_seed_does_not(dirty_world, tmp_path):
    again = write_world(tmp_path / "again", TINY, videos_per_class=1, seed=7, dirty=True)
    assert file_hashes(again) == file_hashes(dirty_world)

    other = write_world(tmp_path / "other", TINY, videos_per_class=1, seed=8)
    a, b = file_hashes(dirty_world), file_hashes(other)
    assert a["scenes.json"] != b["scenes.json"]
    assert not set(a.values()) & set(b.values())  # no video shared between the two worlds


@pytest.mark.slow
def test_hundred_videos_per_class_written_three_times_are_byte_identical(tmp_path):
    # The encoder once made moving scenes (rail, water) depend on the heap state of the worker
    # process: 150 of these 500 files differed between two runs. The bug was intermittent, so
    # the world is written three times, in worker processes as `synth` runs them (~35 s).
    worlds = [file_hashes(write_world(tmp_path / name, TINY, videos_per_class=100, seed=4242, workers=2))
              for name in ("a", "b", "c")]
    assert len(worlds[0]) == 5 * 100 + 1
    for other in worlds[1:]:
        differing = sorted(p for p in worlds[0] if worlds[0][p] != other[p])
        assert not differing, f"{len(differing)} files differ, e.g. {differing[:3]}"


def test_more_videos_per_class_contain_the_smaller_world(dirty_world, tmp_path):
    # video i of class c depends only on (seed, c, i); --dirty only adds files; worker
    # processes change nothing
    bigger = write_world(tmp_path / "bigger", TINY, videos_per_class=2, seed=7, workers=2)
    small, big = file_hashes(dirty_world), file_hashes(bigger)
    doc = json.loads((dirty_world / "scenes.json").read_text())
    for v in doc["videos"]:
        assert big[v["path"]] == small[v["path"]] == v["sha256"]
    assert len([p for p in big if p.endswith(".mp4")]) == 2 * len(CLASS_KEYS)


# -- layout -----------------------------------------------------------------------------------
def test_layout_ids_and_scenes_json(dirty_world, scenes):
    id_pattern = re.compile(TINY.data.video_id_pattern)
    assert scenes["version"] and scenes["seed"] == 7 and scenes["dirty"] is True
    assert len(scenes["videos"]) == len(CLASS_KEYS)
    for folder in sorted(p for p in dirty_world.iterdir() if p.is_dir()):
        assert TINY.match_class(folder.name) == folder.name  # VEGAS folder names, matched by the protocol
    for v in scenes["videos"]:
        path = dirty_world / v["path"]
        assert path.is_file() and path.parent.name == v["class"]
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{10}", v["video_id"])
        assert id_pattern.search(path.stem).group(0) == v["video_id"]
        assert TINY.synth.min_seconds <= v["duration_s"] <= TINY.synth.max_seconds
        assert v["num_frames"] == round(v["duration_s"] * TINY.synth.fps)
        a = v["attributes"]
        assert 0 <= a["tone"] <= 1 and 0 <= a["size"] <= 1
        assert {"hue_deg", "tone_hz", "object_size", "loudness_db"} <= set(a)
    for key, c in scenes["classes"].items():
        assert {"tone", "size"} <= set(c["audible_visible"])  # two attributes both heard and seen
    ids = ([v["video_id"] for v in scenes["videos"]]
           + [f["video_id"] for f in scenes["faults"] if f["kind"] != "shared_id"])
    assert len(set(i.lower() for i in ids)) == len(ids)


def test_files_are_h264_aac_landscape_stereo(dirty_world, scenes):
    v = scenes["videos"][0]
    with av.open(str(dirty_world / v["path"])) as box:
        video, audio = box.streams.video[0], box.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.codec_context.width, video.codec_context.height) == (TINY.synth.width, TINY.synth.height)
        assert video.codec_context.width != video.codec_context.height  # cropping is exercised
        assert audio.codec_context.sample_rate == TINY.synth.sample_rate != TINY.audio.sample_rate
        assert audio.codec_context.channels == 2
        frames = [f.to_ndarray(format="rgb24") for f in box.decode(video)]
    assert len(frames) == v["num_frames"]
    # the encoded frame is the rendered one, up to H.264 / yuv420p loss
    scene = {k: v[k] for k in ("video_id", "class", "duration_s", "seed", "attributes", "nuisance")}
    rendered = render_frame(scene, 1.0, TINY.synth.width, TINY.synth.height)
    assert np.abs(frames[10].astype(float) - rendered).mean() < 6.0


# -- faults -----------------------------------------------------------------------------------
def test_dirty_faults_are_planted_and_listed(dirty_world, scenes):
    faults = {f["kind"]: f for f in scenes["faults"]}
    assert set(faults) == FAULT_KINDS and len(scenes["faults"]) == len(FAULT_KINDS)
    for f in scenes["faults"]:
        assert (dirty_world / f["path"]).is_file()
        assert Path(f["path"]).stem == f["video_id"] and Path(f["path"]).parent.name == f["class"]
        assert f["sha256"] == hashlib.sha256((dirty_world / f["path"]).read_bytes()).hexdigest()

    with pytest.raises(av.error.InvalidDataError):
        av.open(str(dirty_world / faults["corrupt"]["path"]))

    with av.open(str(dirty_world / faults["no_audio"]["path"])) as box:
        assert len(box.streams.audio) == 0 and len(box.streams.video) == 1

    with av.open(str(dirty_world / faults["too_short"]["path"])) as box:
        assert float(box.duration) / av.time_base < 1.0

    shared = faults["shared_id"]
    original = shared["duplicates"]
    assert shared["video_id"] == original["video_id"] and shared["class"] != Path(original["path"]).parent.name
    assert (dirty_world / shared["path"]).read_bytes() == (dirty_world / original["path"]).read_bytes()

    re_up = faults["reupload"]
    source = re_up["duplicates"]
    assert re_up["video_id"] != source["video_id"]
    assert (dirty_world / re_up["path"]).read_bytes() != (dirty_world / source["path"]).read_bytes()
    from s2i_bench.data.features import centre_square

    def centre_crop(path):
        with av.open(str(path)) as box:
            frame = next(iter(box.decode(video=0)))
            return (frame.width, frame.height), centre_square(frame.to_ndarray(format="rgb24"), 96)

    size_a, crop_a = centre_crop(dirty_world / re_up["path"])
    size_b, crop_b = centre_crop(dirty_world / source["path"])
    assert size_a != size_b  # another size and bitrate ...
    assert np.abs(crop_a.astype(float) - crop_b).mean() < 6.0  # ... but the same picture


def test_clean_world_has_no_faults(tmp_path):
    out = write_world(tmp_path / "clean", TINY, videos_per_class=1, seed=11)
    doc = json.loads((out / "scenes.json").read_text())
    assert doc["faults"] == [] and doc["dirty"] is False
    assert len(list(out.rglob("*.mp4"))) == len(CLASS_KEYS)


# -- overwrite rules and bad input ------------------------------------------------------------
def test_nonempty_out_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        write_world(out, TINY, videos_per_class=1, seed=3)
    # --overwrite never deletes a folder that is not a synthetic world
    with pytest.raises(UserError, match="scenes.json"):
        write_world(out, TINY, videos_per_class=1, seed=3, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    write_world(empty, TINY, videos_per_class=1, seed=3)  # an empty folder is fine
    with pytest.raises(UserError, match="--overwrite"):
        write_world(empty, TINY, videos_per_class=1, seed=3)
    before = json.loads((empty / "scenes.json").read_text())
    write_world(empty, TINY, videos_per_class=1, seed=4, overwrite=True)
    after = json.loads((empty / "scenes.json").read_text())
    assert before["seed"] == 3 and after["seed"] == 4
    assert not list(tmp_path.glob(".*synth-tmp"))  # the build folder is gone


def test_cli_refuses_nonempty_out_with_one_line(tmp_path):
    from click.testing import CliRunner

    from s2i_bench.cli import main

    out = tmp_path / "world"
    out.mkdir()
    (out / "x").write_text("x")
    result = CliRunner().invoke(main, ["synth", str(out), "--protocol", "tiny", "--videos-per-class", "1"])
    assert result.exit_code == 2
    assert "not empty" in result.output and "Traceback" not in result.output


# -- picture and sound carry the attributes ---------------------------------------------------
def _scene(key, tone, size, seed=0):
    return draw_scene(key, np.random.default_rng(seed), video_id="testvideo01", duration=3.0, tone=tone, size=size)


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_loudness_follows_size_and_channels_mix_to_the_mono_sound(key):
    quiet, loud = _scene(key, 0.5, 0.1), _scene(key, 0.5, 0.9)
    a_quiet, a_loud = render_audio(quiet, 22050, 2), render_audio(loud, 22050, 2)
    assert a_quiet.shape == (2, 3 * 22050) and a_quiet.dtype == np.float32
    assert np.abs(a_loud).max() <= 1.0

    def db(a):
        return 20 * np.log10(np.sqrt(np.mean(a.mean(0) ** 2)))

    assert db(a_quiet) == pytest.approx(quiet["attributes"]["loudness_db"], abs=0.5)
    assert db(a_loud) == pytest.approx(loud["attributes"]["loudness_db"], abs=1.0)  # peaks may clip a little
    assert not np.allclose(a_loud[0], a_loud[1])  # panned: a naive "left channel" is wrong
    assert np.array_equal(render_audio(loud, 22050, 2), a_loud)  # same scene, same samples


def _power_spectrum(scene):
    mono = render_audio(scene, 22050, 1)[0]
    return np.fft.rfftfreq(len(mono), 1 / 22050), np.abs(np.fft.rfft(mono)) ** 2


@pytest.mark.parametrize("key", ["baby_cry", "dog"])
def test_voices_are_pitched_at_tone_hz(key):
    # harmonic-sum pitch estimate: the f whose first five multiples hold the most power
    for tone in (0.1, 0.9):
        scene = _scene(key, tone, 0.5)
        f, power = _power_spectrum(scene)
        candidates = np.arange(150.0, 900.0, 2.0)
        score = [sum(power[np.abs(f - k * c) < 0.03 * k * c].sum() for k in range(1, 6)) for c in candidates]
        estimate = candidates[int(np.argmax(score))]
        assert estimate == pytest.approx(scene["attributes"]["tone_hz"], rel=0.15)


@pytest.mark.parametrize("key", ["rail_transport", "fireworks", "water_flowing"])
def test_noise_bands_move_with_tone(key):
    def log_centroid(scene):
        f, power = _power_spectrum(scene)
        keep = (f > 20) & (f < 8000)
        return np.exp(np.sum(np.log(f[keep]) * power[keep]) / power[keep].sum())

    low, high = _scene(key, 0.1, 0.5), _scene(key, 0.9, 0.5)
    assert log_centroid(high) > 1.3 * log_centroid(low)


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_hue_follows_tone_and_object_grows_with_size(key):
    import colorsys

    low, high = _scene(key, 0.1, 0.5), _scene(key, 0.9, 0.5)
    assert abs(high["attributes"]["hue_deg"] - low["attributes"]["hue_deg"]) > 150
    # the pixels that change between the two tones take the hue of the scene
    a, b = render_crop(low, 1.0).astype(float), render_crop(high, 1.0).astype(float)
    changed = np.abs(a - b).sum(-1) > 60
    assert changed.mean() > 0.12  # a large region carries the tone
    for img, scene in ((a, low), (b, high)):
        r, g, bl = img[changed].mean(0) / 255
        hue = colorsys.rgb_to_hsv(r, g, bl)[0] * 360
        assert min(abs(hue - scene["attributes"]["hue_deg"]), 360 - abs(hue - scene["attributes"]["hue_deg"])) < 35

    small, big = _scene(key, 0.5, 0.0), _scene(key, 0.5, 1.0)
    assert big["attributes"]["object_size"] > small["attributes"]["object_size"]
    diff = np.abs(render_crop(small, 1.0).astype(float) - render_crop(big, 1.0)).sum(-1) > 60
    assert diff.mean() > 0.03  # the size change is visible


def test_render_is_resolution_free_and_crop_matches_the_frame_centre():
    scene = _scene("dog", 0.3, 0.6)
    frame = render_frame(scene, 0.5, 160, 120)
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    # the centre 120x120 of the landscape frame is the crop window
    centre = frame[:, 20:140].astype(float)
    direct = render_frames(scene, [0.5], 120, 120, CROP_WINDOW)[0]
    assert np.abs(centre - direct).mean() < 1.0
    small = render_crop(scene, 0.5, size=96)
    assert small.shape == (96, 96, 3)


def test_every_video_has_its_own_scene_but_segments_share_it():
    rng = np.random.default_rng(5)
    a = draw_scene("water_flowing", rng, video_id="a" * 11, duration=5.0)
    b = draw_scene("water_flowing", rng, video_id="b" * 11, duration=5.0)
    assert a["attributes"] != b["attributes"]
    # frames of one video differ by motion only; frames of two videos differ by the scene
    fa = render_frames(a, [0.5, 3.5], 64, 64, CROP_WINDOW).astype(float)
    fb = render_frames(b, [0.5], 64, 64, CROP_WINDOW).astype(float)
    assert np.abs(fa[0] - fa[1]).mean() < np.abs(fa[0] - fb[0]).mean()


def test_unknown_class_in_protocol_is_a_user_error(tmp_path):
    import dataclasses

    from s2i_bench.protocol import ClassSpec

    proto = dataclasses.replace(TINY, classes=TINY.classes + (ClassSpec("drum", "Drum", ("drum",)),))
    with pytest.raises(UserError, match="drum"):
        write_world(tmp_path / "w", proto, videos_per_class=1)
