"""The attribute estimators (picture -> tone, size), the truth reader of scenes.json, and the
probe sounds (two sources, silence, noise, an unknown class): on renders made in the test."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from s2i_bench.errors import UserError
from s2i_bench.synth import judge_details, render_audio, render_crop
from s2i_bench.synth.attributes import estimate, estimator_id, scene_attributes
from s2i_bench.synth.judge import N_SIZE, N_TONE, template_distances
from s2i_bench.synth.mixtures import (COUNTS, MIX_LEVELS_DB, OUT_OF_PROTOCOL, PROBE_SECONDS, probe_audio,
                                      probe_picture, probe_set)
from s2i_bench.synth.scenes import CLASS_KEYS, draw_scene
from s2i_bench.synth.world import SCENES_FORMAT


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


@pytest.fixture(scope="module")
def renders():
    """30 fresh scenes per class at random tone, size, nuisance and time, as `prepare` crops them."""
    rng = np.random.default_rng(2024)
    out = {}
    for key in CLASS_KEYS:
        scenes = [draw_scene(key, rng, video_id="t", duration=3.0) for _ in range(30)]
        images = np.stack([render_crop(s, float(rng.uniform(0, 3))) for s in scenes])
        out[key] = (images, np.array([[s["attributes"]["tone"], s["attributes"]["size"]] for s in scenes]))
    return out


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_estimators_recover_tone_and_size_of_fresh_renders(renders, key):
    images, truth = renders[key]
    e = estimate(images, key)
    assert e["tone"].dtype == np.float32 and e["tone"].shape == (30,) and e["size"].shape == (30,)
    assert ((0 <= e["tone"]) & (e["tone"] <= 1) & (0 <= e["size"]) & (e["size"] <= 1)).all()
    # measured on these renders: tone rho >= 0.99 and MAE <= 0.02, size rho >= 0.97 and MAE <= 0.05
    assert spearman(truth[:, 0], e["tone"]) >= 0.95
    assert spearman(truth[:, 1], e["size"]) >= 0.9
    assert np.abs(e["tone"] - truth[:, 0]).mean() < 0.05
    assert np.abs(e["size"] - truth[:, 1]).mean() < 0.1


def test_estimates_are_deterministic_and_per_image(renders):
    images, _ = renders["dog"]
    whole = estimate(images, "dog")
    again = estimate(images, "dog")
    parts = [estimate(images[i:i + 7], "dog") for i in range(0, len(images), 7)]
    for name in ("tone", "size"):
        assert whole[name].tobytes() == again[name].tobytes()  # same batch, same bytes
        # another batching: the same up to float32 rounding of the matrix products
        np.testing.assert_allclose(whole[name], np.concatenate([p[name] for p in parts]), atol=1e-6)
    assert estimator_id() == estimator_id()


def test_template_distances_agree_with_the_judge(renders):
    images = np.concatenate([renders[k][0][:5] for k in CLASS_KEYS])
    for key in CLASS_KEYS:
        d = template_distances(images, key)
        assert d.shape == (len(images), N_SIZE * N_TONE)
        np.testing.assert_allclose(d.min(axis=1), judge_details(images, key)["own"], rtol=1e-6)


def test_estimators_refuse_what_the_judge_refuses():
    with pytest.raises(ValueError, match="uint8"):
        estimate(np.zeros((2, 96, 96, 3), np.float32), "dog")
    with pytest.raises(ValueError, match="shape"):
        estimate(np.zeros((2, 64, 64, 3), np.uint8), "dog")
    with pytest.raises(ValueError, match="unknown class"):
        estimate(np.zeros((2, 96, 96, 3), np.uint8), "cat")


# -- scenes.json: the truth -------------------------------------------------------------------------
def _scenes_file(tmp_path, videos, faults=()):
    path = tmp_path / "scenes.json"
    path.write_text(json.dumps({"format": SCENES_FORMAT, "videos": list(videos), "faults": list(faults)}))
    return path


def test_scene_attributes_reads_videos_and_faults(tmp_path):
    rng = np.random.default_rng(0)
    a = draw_scene("dog", rng, video_id="AAAAAAAAAAA", duration=2.0)
    b = draw_scene("fireworks", rng, video_id="BBBBBBBBBBB", duration=2.0)
    path = _scenes_file(tmp_path, [dict(a, path="dog/AAAAAAAAAAA.mp4")],
                        [{"kind": "reupload", "scene": b}, {"kind": "corrupt", "scene": None}])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    got = scene_attributes(path, digest)
    assert got == {"AAAAAAAAAAA": {"class": "dog", "tone": a["attributes"]["tone"], "size": a["attributes"]["size"]},
                   "BBBBBBBBBBB": {"class": "fireworks", "tone": b["attributes"]["tone"],
                                   "size": b["attributes"]["size"]}}
    with pytest.raises(UserError, match="not the scenes.json the store was prepared from"):
        scene_attributes(path, "0" * 64)


@pytest.mark.parametrize("change, needle", [
    (lambda v: v["attributes"].update(tone=1.5), "attributes.tone = 1.5 is not a number in [0, 1]"),
    (lambda v: v["attributes"].update(size="big"), "attributes.size"),
    (lambda v: v.update({"class": "cat"}), "class = 'cat'"),
    (lambda v: v.update(video_id=7), "video_id = 7"),
])
def test_scene_attributes_refuses_bad_fields_with_one_line(tmp_path, change, needle):
    scene = draw_scene("dog", np.random.default_rng(1), video_id="AAAAAAAAAAA", duration=2.0)
    change(scene)
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace("]", r"\]")) as err:
        scene_attributes(_scenes_file(tmp_path, [scene]))
    assert "\n" not in str(err.value) and "videos[0]" in str(err.value)


def test_scene_attributes_refuses_files_that_are_not_scenes(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        scene_attributes(bad)
    bad.write_text(json.dumps({"format": "other", "videos": []}))
    with pytest.raises(UserError, match="not a synthetic world"):
        scene_attributes(bad)
    with pytest.raises(UserError, match="cannot read"):
        scene_attributes(tmp_path / "missing.json")


# -- probes -------------------------------------------------------------------------------------------
def test_probe_set_is_a_pure_function_of_its_seed():
    a, b, c = probe_set(3), probe_set(3), probe_set(4)
    assert [p.id for p in a] == [p.id for p in b] and len({p.id for p in a}) == len(a)
    n_classes = len(CLASS_KEYS)
    expected = {"single": COUNTS["single"] * n_classes,
                "mixture": COUNTS["mixture"] * n_classes * (n_classes - 1) * len(MIX_LEVELS_DB),
                **{k: COUNTS[k] for k in OUT_OF_PROTOCOL}}
    assert {k: sum(p.kind == k for p in a) for k in expected} == expected
    for p, q, r in zip(a[:30:7], b[:30:7], c[:30:7]):
        assert probe_audio(p, 8000).tobytes() == probe_audio(q, 8000).tobytes()
        assert probe_audio(p, 8000).tobytes() != probe_audio(r, 8000).tobytes()
    mixtures = [p for p in a if p.kind == "mixture"]
    assert all(len(set(p.classes)) == 2 for p in mixtures)
    assert {(p.classes, p.level_db) for p in mixtures} == {((x, y), lv) for x in CLASS_KEYS for y in CLASS_KEYS
                                                         if x != y for lv in MIX_LEVELS_DB}


def test_mixture_sets_the_quieter_source_its_level_below_the_louder():
    sr = 16000
    p = next(p for p in probe_set(0) if p.kind == "mixture" and p.level_db == 12.0)
    louder, quieter = (render_audio(s, sr, channels=1, duration=PROBE_SECONDS)[0].astype(np.float64)
                       for s in p.scenes)
    mix = probe_audio(p, sr).astype(np.float64)
    rest = mix - louder  # what the quieter source added

    def db(x):
        return 20 * np.log10(np.sqrt(np.mean(x * x)))

    assert abs(db(louder) - p.scenes[0]["attributes"]["loudness_db"]) < 0.2
    assert abs(db(louder) - db(rest) - 12.0) < 0.3
    assert np.corrcoef(rest, quieter)[0, 1] > 0.999  # the quieter source itself, scaled


def test_out_of_protocol_probes_are_silence_noise_and_a_siren():
    sr = 16000
    probes = probe_set(0)
    silence = next(p for p in probes if p.kind == "silence")
    assert not probe_audio(silence, sr).any()
    noise = next(p for p in probes if p.kind == "white_noise")
    x = probe_audio(noise, sr).astype(np.float64)
    assert abs(20 * np.log10(np.sqrt(np.mean(x * x))) - noise.params["level_db"]) < 0.1
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    assert spectrum[: len(spectrum) // 2].sum() / spectrum.sum() == pytest.approx(0.5, abs=0.05)  # flat
    siren = next(p for p in probes if p.kind == "unknown")
    y = probe_audio(siren, sr).astype(np.float64)
    f = np.fft.rfftfreq(len(y), 1 / sr)
    power = np.abs(np.fft.rfft(y)) ** 2
    lo = siren.params["centre_hz"] * 2 ** -siren.params["depth_octaves"]
    hi = siren.params["centre_hz"] * 2 ** siren.params["depth_octaves"]
    assert power[(f >= lo * 0.95) & (f <= hi * 1.05)].sum() / power.sum() > 0.95  # a pure glide, no harmonics
    assert probe_picture(silence) is None and probe_picture(siren) is None


def test_probe_picture_is_the_louder_source_as_prepare_crops_it():
    p = next(p for p in probe_set(0) if p.kind == "mixture")
    picture = probe_picture(p)
    np.testing.assert_array_equal(picture, render_crop(p.scenes[0], 1.5))
    assert judge_details(picture[None], p.classes[0])["own"][0] <= 1.0
