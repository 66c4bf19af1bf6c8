"""The judge: own-class frames pass (sharp and blurred), and frames of other classes, flat images,
noise and class means fail; input is checked; the answer is deterministic and batch-free.

Frames are rendered straight into the 96x96 centre square (no encoding), from seeds the judge's
own bank does not use. The full acceptance figures on decoded videos are measured by
benchmarks/check_synth_world.py."""

from __future__ import annotations

import numpy as np
import pytest

from s2i_bench.synth import draw_scene, judge, judge_details, render_crop
from s2i_bench.synth.scenes import CLASS_KEYS

PER_CLASS = 24


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reference: a plain numpy convolution with edge padding)."""
    radius = int(np.ceil(4 * sigma))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = images.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = sum(w * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i, w in enumerate(kernel))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    out = {}
    for ci, key in enumerate(CLASS_KEYS):
        rng = np.random.default_rng([42, ci])
        scenes = [draw_scene(key, rng, video_id="judgetest01", duration=10.0) for _ in range(PER_CLASS)]
        out[key] = np.stack([render_crop(s, float(rng.uniform(0.5, 9.5))) for s in scenes])
    return out


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_own_class_frames_pass_sharp_and_blurred(frames, key):
    assert judge(frames[key], key).mean() >= 0.95
    assert judge(blur(frames[key], 1.5), key).mean() >= 0.8


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_frames_of_other_classes_fail(frames, key):
    others = np.concatenate([frames[k] for k in CLASS_KEYS if k != key])
    assert judge(others, key).mean() <= 0.05


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_flat_noise_and_class_mean_images_fail(frames, key):
    rng = np.random.default_rng(7)
    flat = np.broadcast_to(rng.integers(0, 256, size=(40, 1, 1, 3), dtype=np.uint8), (40, 96, 96, 3))
    extremes = np.stack([np.full((96, 96, 3), v, np.uint8) for v in (0, 128, 255)])
    noise = np.clip(rng.normal(127.5, 60, size=(20, 96, 96, 3)), 0, 255).astype(np.uint8)
    class_mean = frames[key].astype(np.float64).mean(0).round().astype(np.uint8)[None]
    assert not judge(flat, key).any()
    assert not judge(extremes, key).any()
    assert not judge(noise, key).any()
    assert not judge(class_mean, key).any()
    assert not judge(blur(class_mean, 1.5), key).any()


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_blurry_mean_of_scenes_with_the_same_audible_attributes_passes(key):
    # what a pixel-MSE translator converges to when the sound fixes tone and size: the mean
    # over the nuisance (positions, secondary colours, time) -> blurry but informative
    rng = np.random.default_rng([43, CLASS_KEYS.index(key)])
    passed = []
    for tone, size in ((0.2, 0.3), (0.5, 0.8), (0.85, 0.5)):
        crops = [render_crop(draw_scene(key, rng, video_id="judgetest02", duration=10.0, tone=tone, size=size),
                             float(rng.uniform(0, 10))) for _ in range(10)]
        mean = np.stack(crops).astype(np.float64).mean(0).round().astype(np.uint8)[None]
        passed.append(bool(judge(blur(mean, 1.5), key)[0]))
    assert sum(passed) >= 2


def test_deterministic_and_independent_of_batching(frames):
    mixed = np.concatenate([frames[k][:6] for k in CLASS_KEYS])
    key = CLASS_KEYS[2]
    whole = judge(mixed, key)
    assert np.array_equal(whole, judge(mixed, key))
    one_by_one = np.array([judge(img[None], key)[0] for img in mixed])
    assert np.array_equal(whole, one_by_one)
    details = judge_details(mixed, key)
    assert set(details) == {"own", "other", "layout"} and details["own"].shape == (len(mixed),)
    assert judge(mixed[:0], key).shape == (0,)


def test_bad_input_is_refused_with_a_clear_message(frames):
    good = frames["dog"][:2]
    with pytest.raises(ValueError, match="uint8"):
        judge(good.astype(np.float32), "dog")
    with pytest.raises(ValueError, match=r"\(N, 96, 96, 3\)"):
        judge(good[:, :48, :48], "dog")
    with pytest.raises(ValueError, match=r"\(N, 96, 96, 3\)"):
        judge(good[0], "dog")
    with pytest.raises(ValueError, match="unknown class"):
        judge(good, "drum")


def test_accepts_a_torch_tensor(frames):
    torch = pytest.importorskip("torch")
    imgs = frames["fireworks"][:4]
    assert np.array_equal(judge(torch.from_numpy(imgs), "fireworks"), judge(imgs, "fireworks"))


def test_bank_cache_round_trip(tmp_path):
    from s2i_bench.synth.judge import get_bank, load_bank, save_bank

    bank = get_bank()
    path = tmp_path / "bank.npz"
    save_bank(bank, path)
    again = load_bank(path)
    for name in ("means", "weights", "regions", "colours", "colour_weights", "labels", "thresholds"):
        assert np.array_equal(getattr(bank, name), getattr(again, name))
    # a file that is not a bank of this version is refused, not trusted
    np.savez(tmp_path / "bad.npz", means=np.zeros((2, 2)), weights=np.zeros((2, 2)), regions=np.zeros((2, 2)),
             colours=np.zeros((2, 3)), colour_weights=np.zeros((2, 3)), labels=np.zeros(2), thresholds=np.ones(5))
    with pytest.raises(ValueError, match="not a judge bank"):
        load_bank(tmp_path / "bad.npz")


def test_cached_arrays_build_once_then_read_and_rebuild_a_bad_file(tmp_path, monkeypatch):
    from s2i_bench.synth.judge import cached_arrays

    monkeypatch.setenv("S2I_BENCH_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}

    shapes = {"a": (2, 3)}
    first = cached_arrays("thing", "k1", shapes, "a thing", build)
    again = cached_arrays("thing", "k1", shapes, "a thing", build)  # read from disk, not built
    assert len(calls) == 1 and np.array_equal(first["a"], again["a"]) and (tmp_path / "thing-k1.npz").is_file()
    np.savez(tmp_path / "thing-k1.npz", a=np.full((2, 3), np.nan))  # stale or damaged: rebuilt, overwritten
    assert np.array_equal(cached_arrays("thing", "k1", shapes, "a thing", build)["a"], first["a"]) and len(calls) == 2
    assert np.isfinite(np.load(tmp_path / "thing-k1.npz")["a"]).all()
