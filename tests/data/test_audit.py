"""The leakage audit and the near-duplicate search, on stores built without decoding video."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from s2i_bench.data.audit import audit_command, audit_store, format_report
from helpers import scene_painter, scene_sound
from s2i_bench.data.dedup import (fingerprints, frame_hashes, near_duplicate_pairs, spectrogram_distance,
                             video_groups)
from s2i_bench.data.features import centre_square, log_mel_segments
from s2i_bench.protocol import load_protocol
from s2i_bench.data.store import open_store
from s2i_bench.data.store_write import write_store
from s2i_bench.errors import UserError

PROTO = load_protocol("tiny")




def scene_segments(seed: int, n: int = 2, gain: float = 1.0, noise_seed: int | None = None):
    """Spectrograms (n, 1, 128, 100) and frames (n, 96, 96, 3) of scene `seed`, made directly
    (no codec). `noise_seed` perturbs pixels and samples a little, like a re-encode would."""
    paint = scene_painter(seed, 80, 60)
    wave = torch.from_numpy(scene_sound(seed, n + 0.5)[0] * gain)
    rng = np.random.default_rng(noise_seed) if noise_seed is not None else None
    if rng is not None:
        wave = wave + torch.from_numpy(rng.normal(0, 1e-3, wave.shape).astype(np.float32))
    spec = log_mel_segments(wave, list(range(n)), PROTO.audio).numpy()
    frames = []
    for k in range(n):
        img = paint(10 * k + 5).astype(np.float64)
        if rng is not None:
            img = img + rng.normal(0, 2.0, img.shape)
        frames.append(centre_square(np.clip(img, 0, 255).astype(np.uint8), 96))
    return spec, np.stack(frames)


def build_store(path, videos: list[tuple[str, str, str, int, dict]]):
    """videos: (video_id, class, split, scene seed, scene_segments kwargs) -> a written store."""
    rows, specs, frames = [], [], []
    for vid, cls, split, seed, kw in videos:
        spec, fr = scene_segments(seed, **kw)
        for k in range(len(spec)):
            rows.append({"segment_id": f"{vid}_{cls}_{k:03d}", "video_id": vid, "class": cls,
                         "class_index": PROTO.class_index(cls), "split": split, "start_s": float(k),
                         "source": f"{cls}/{vid}.mp4", "group": vid})
        specs.append(spec)
        frames.append(fr)
    meta = {"protocol": PROTO.ref(), "protocol_full": PROTO.to_dict(), "features": {},
            "normalisation": {"low": -20.0, "high": 10.0, "fitted_on": "train", "method": "test"},
            "split": {"policy": "given", "seed": 0, "ratios": [0.8, 0.1, 0.1], "balance": "none", "leaky": False},
            "sources": [], "synthetic_world": None}
    return open_store(write_store(path, pd.DataFrame(rows), np.concatenate(specs).astype(np.float16),
                                  np.concatenate(frames), meta))


def clean_videos():
    out = []
    seed = 0
    for cls in PROTO.class_keys:
        for split in ("train", "val", "test"):
            out.append((f"{cls[:4]}{split}{seed:03d}x", cls, split, seed, {}))
            seed += 1
    return out


def test_clean_store_passes(tmp_path, capsys):
    store = build_store(tmp_path / "clean", clean_videos())
    report = audit_store(store)
    assert report["clean"] and not report["leakage"], format_report(report)
    assert all(report["checks"].values()) and report["balanced"]
    assert audit_command(store.path) == 0
    assert "no leakage" in capsys.readouterr().out
    assert audit_command(store.path, as_json=True) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["num_segments"] == len(store)


def test_same_video_in_two_splits_and_reupload_across_splits_are_leakage(tmp_path):
    videos = clean_videos()
    dog_train = videos[3][0]
    assert videos[3][1:3] == ("dog", "train")
    # the dog video of train is also a fireworks video, in test: a multi-label id split apart
    videos.append((dog_train, "fireworks", "test", 3, {}))
    # a re-upload of scene 3 (in train) under another id, in test, slightly louder and noisier
    videos.append(("reupload999", videos[3][1], "test", 3, {"gain": 1.2, "noise_seed": 5}))
    store = build_store(tmp_path / "leaky", videos)
    report = audit_store(store)
    assert report["leakage"] and not report["clean"]
    several = {v["video_id"]: v for v in report["video_ids_in_several_splits"]}
    assert set(several) == {dog_train} and several[dog_train]["splits"] == {"train": 2, "test": 2}
    pairs = {(p["video_a"], p["video_b"]) for p in report["near_duplicates_across_splits"]}
    assert pairs == {tuple(sorted((dog_train, "reupload999")))}
    assert any(set(v["classes"]) == {"dog", "fireworks"} for v in report["multi_class_videos"])
    assert audit_command(store.path) == 1
    text = format_report(report)
    assert "reupload999" in text and dog_train in text


def test_near_duplicates_in_one_split_are_reported_not_leakage(tmp_path):
    videos = clean_videos()
    videos.append(("reupload999", videos[3][1], videos[3][2], 3, {"noise_seed": 1}))
    report = audit_store(build_store(tmp_path / "dup", videos))
    assert not report["leakage"]
    assert [(p["video_a"], p["video_b"]) for p in report["near_duplicates_within_split"]] == \
        [tuple(sorted((videos[3][0], "reupload999")))]


def test_tampered_store_fails_the_hash_check(tmp_path):
    store = build_store(tmp_path / "t", clean_videos())
    manifest = (store.path / "manifest.csv").read_text().replace(",val,", ",test,", 1)
    (store.path / "manifest.csv").write_text(manifest)
    with pytest.raises(UserError, match=(r"manifest.csv: its content .* is not the one store.json records"
                                         r".*s2i-bench audit")):
        open_store(store.path)  # every command refuses it, naming the file and the audit
    report = audit_store(open_store(store.path, verify=False))
    assert not report["checks"]["hash_matches_store_json"] and not report["clean"]
    assert any("manifest.csv" in p["file"] for p in report["problems"])


def test_cli_audit_exit_codes(tmp_path):
    from s2i_bench.cli import main

    clean = build_store(tmp_path / "c", clean_videos())
    leaky_videos = clean_videos()
    leaky_videos.append((leaky_videos[3][0], "fireworks", "val", 3, {}))  # dog/train id again, in val
    leaky = build_store(tmp_path / "l", leaky_videos)
    runner = CliRunner()
    assert runner.invoke(main, ["audit", str(clean.path)]).exit_code == 0
    result = runner.invoke(main, ["audit", str(leaky.path)])
    assert result.exit_code == 1 and "LEAKAGE" in result.output
    missing = runner.invoke(main, ["audit", str(tmp_path / "c" / "manifest.csv")])
    assert missing.exit_code == 2  # not a store: a user error, one line


# -- the fingerprints --------------------------------------------------------------------------
def test_frame_hash_is_stable_under_noise_and_brightness_and_differs_between_scenes():
    _, a = scene_segments(10, n=1)
    _, noisy = scene_segments(10, n=1, noise_seed=3)
    brighter = np.clip(a.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    others = np.concatenate([scene_segments(s, n=1)[1] for s in range(20, 40)])
    h, hn, hb, ho = frame_hashes(a), frame_hashes(noisy), frame_hashes(brighter), frame_hashes(others)
    dist = lambda x, y: np.bitwise_count(x ^ y)  # noqa: E731
    assert dist(h, hn)[0] <= 4 and dist(h, hb)[0] <= 2  # pixel noise (sigma 2), +12 grey levels
    assert dist(h, ho).min() > 3 * PROTO.split.phash_max_distance  # 20 other scenes: far away
    assert dist(h, frame_hashes(a[:, :, ::-1]))[0] > PROTO.split.phash_max_distance  # a mirror is another picture


def test_spectrogram_distance_gain_and_scene():
    spec, fr = scene_segments(4, n=1)
    louder1, _ = scene_segments(4, n=1, gain=10 ** (1 / 20))  # +1 dB
    louder3, _ = scene_segments(4, n=1, gain=10 ** (3 / 20))  # +3 dB
    other, _ = scene_segments(5, n=1)
    fp = fingerprints(np.concatenate([spec, louder1, louder3, other]), np.concatenate([fr] * 4), PROTO.audio)
    d1, d3, d_other = (spectrogram_distance(fp.spectra[0], fp.spectra[k]) for k in (1, 2, 3))
    threshold = PROTO.split.spectrogram_max_distance
    assert 0.002 < d1 < threshold < d3 < d_other  # 1 dB passes, 3 dB does not (documented)
    assert d3 == pytest.approx(3 * d1, rel=0.1)  # distance grows linearly with the gain in dB


def test_flat_frames_and_silence_are_left_out_of_the_search():
    spec, fr = scene_segments(6, n=2)
    black = np.zeros_like(fr)
    silent = np.full_like(spec, np.log(PROTO.audio.log_floor))
    fp = fingerprints(np.concatenate([spec, spec, silent]), np.concatenate([black, black, fr]), PROTO.audio)
    assert fp.usable.tolist() == [False, False, False, False, False, False]
    pairs = near_duplicate_pairs(fp, np.arange(6), 6, 0.05)
    assert len(pairs["i"]) == 0  # two black, silent intros are not "the same video"


def test_pair_search_equals_brute_force():
    """The blocked search finds exactly the pairs a plain double loop finds."""
    specs, frames, codes = [], [], []
    for v in range(12):
        seed = v if v < 9 else v - 9  # videos 9..11 re-upload scenes 0..2
        s, f = scene_segments(seed, n=2, noise_seed=v if v >= 9 else None)
        specs.append(s), frames.append(f), codes.extend([v, v])
    fp = fingerprints(np.concatenate(specs), np.concatenate(frames), PROTO.audio)
    codes = np.array(codes)
    got = near_duplicate_pairs(fp, codes, 6, 0.05, block_elements=7)  # tiny blocks: many of them
    expected = set()
    for i in range(len(codes)):
        for j in range(i + 1, len(codes)):
            h = bin(int(fp.hashes[i]) ^ int(fp.hashes[j])).count("1")
            if codes[i] != codes[j] and h <= 6 and spectrogram_distance(fp.spectra[i], fp.spectra[j]) <= 0.05:
                expected.add((i, j))
    assert set(zip(got["i"].tolist(), got["j"].tolist())) == expected
    assert {(codes[i], codes[j]) for i, j in expected} >= {(0, 9), (1, 10), (2, 11)}


def test_video_groups_are_transitive():
    groups = video_groups(["a", "b", "c", "d", "e"], [("b", "c"), ("d", "c")])
    assert groups == {"a": "a", "b": "b", "c": "b", "d": "b", "e": "e"}
