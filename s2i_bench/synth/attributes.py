"""Attribute estimators: which tone and size a picture of a class shows, read from the picture alone.

    estimate(images, class_key) -> {"tone": (N,), "size": (N,)} float32 in [0, 1]
        images: uint8 (N, 96, 96, 3), read as pictures of `class_key` (its tone region, its object)
    scene_attributes(scenes_json, sha256=None) -> {video_id: {"class", "tone", "size"}}
        the true attributes of every video of a world (the strict reader of scenes.json's scenes)
    ESTIMATORS: what each estimator is, recorded beside the scores

tone: the judge's templates (`judge.template_distances`, the class's N_SIZE x N_TONE grid, each
    template the mean of renders with random nuisance). The weights exp(-(d - d_min) / (SOFTMIN
    * d_min)) over the class's templates (d: the judge's distance, d_min the image's nearest)
    average the templates' tones: a soft nearest template, finer than the grid's 1/15 steps and
    scale-free (an image far from every template spreads its weight, never divides by zero).
size: the templates confuse a dog's length with its position and fur (Spearman 0.51-0.77 on fresh
    renders, measured), so size is a ridge regression per class from the image's 32x32 block
    means (3,072 numbers) to size, fitted on RIDGE_SCENES renders of fresh scenes (random tone,
    nuisance and time) of the class drawn from a fixed seed: like the judge's bank, a pure
    function of the world definition. It is built once per process (about 10 s) and cached on
    disk beside the judge's bank (same folder, same `S2I_BENCH_CACHE` switch).

Both are validated on real frames by `scoring.attributes` (`estimator_error`) and by
`benchmarks/check_attributes.py`; a picture that is not of the class gets a number too (the
estimators do not decide informativity: the judge does).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import progress
from s2i_bench.synth.judge import JUDGE_VERSION, N_TONE, cached_arrays, reduce_blocks, template_distances
from s2i_bench.synth.render import CROP_WINDOW, render_frames
from s2i_bench.synth.scenes import CLASS_KEYS, WORLD_VERSION, draw_scene
from s2i_bench.synth.world import SCENES_FORMAT

ESTIMATOR_VERSION = "1"
SOFTMIN = 1.0  # template weights fall by e per d_min of extra distance
SIZE_FEATURE = 32  # the size regression reads 32x32 block means (the judge's 16x16 blur a small object away)
RIDGE_SCENES = 1500  # renders per class
RIDGE_LAMBDA = 1.0  # on features in [0, 1]: chosen on fresh renders (1 vs 10: Spearman 0.99 vs 0.98)
RIDGE_SEED = 20240602  # fixed: the estimator is part of the world definition, not of any run
ESTIMATORS = {
    "tone": "soft nearest template of the judge's bank (tone grid of 16, weights exp(-(d - d_min) / d_min))",
    "size": f"ridge regression from 32x32 block means, fitted on {RIDGE_SCENES} renders per class (fixed seed)",
}


@dataclass
class SizeModel:
    mean: np.ndarray  # (C, D) feature means of the renders, D = 32*32*3
    weights: np.ndarray  # (C, D) ridge weights
    intercept: np.ndarray  # (C,) mean size of the renders


def _features(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) -> (N, 32*32*3) float32 block means in [0, 1]."""
    return reduce_blocks(images, SIZE_FEATURE)


def build_size_model() -> SizeModel:
    """Render the training scenes and fit one ridge regression per class (deterministic)."""
    rng = np.random.default_rng(RIDGE_SEED)
    side = 2 * SIZE_FEATURE  # rendered at 64x64 and block-averaged, as the judge's bank is
    means, weights, intercepts = [], [], []
    bar = progress(total=len(CLASS_KEYS) * RIDGE_SCENES, desc="size estimator (once)", unit="render")
    for key in CLASS_KEYS:
        x = np.empty((RIDGE_SCENES, SIZE_FEATURE * SIZE_FEATURE * 3), np.float64)
        y = np.empty(RIDGE_SCENES, np.float64)
        for i in range(RIDGE_SCENES):
            scene = draw_scene(key, rng, video_id="attributes", duration=2.0)
            x[i] = _features(render_frames(scene, [float(rng.uniform(0, 2.0))], side, side, CROP_WINDOW))[0]
            y[i] = scene["attributes"]["size"]
            bar.update()
        mean = x.mean(axis=0)
        xc = x - mean
        # the dual form: an (n, n) system for n renders instead of (D, D) for D = 3072 features
        alpha = np.linalg.solve(xc @ xc.T + RIDGE_LAMBDA * np.eye(len(xc)), y - y.mean())
        means.append(mean)
        weights.append(xc.T @ alpha)
        intercepts.append(y.mean())
    bar.close()
    return SizeModel(np.stack(means).astype(np.float32), np.stack(weights).astype(np.float32),
                     np.array(intercepts, np.float32))


_MODEL: SizeModel | None = None
_FIELDS = ("mean", "weights", "intercept")


def _cache_key() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256(f"{WORLD_VERSION}|{ESTIMATOR_VERSION}".encode())
    for name in ("attributes.py", "render.py", "scenes.py"):
        h.update((here / name).read_bytes())
    h.update(np.__version__.encode())
    return h.hexdigest()[:20]


def estimator_id() -> str:
    """Identifies the estimators (this code, the world, the judge's bank): recorded with the scores."""
    return f"{ESTIMATOR_VERSION}-{_cache_key()[:12]}-judge{JUDGE_VERSION}"


def _built_model_arrays() -> dict[str, np.ndarray]:
    model = build_size_model()
    return {f: getattr(model, f) for f in _FIELDS}


def get_size_model() -> SizeModel:
    """The size regression, built once per process (or read from the disk cache)."""
    global _MODEL
    if _MODEL is None:
        c, d = len(CLASS_KEYS), SIZE_FEATURE * SIZE_FEATURE * 3
        shapes = {"mean": (c, d), "weights": (c, d), "intercept": (c,)}
        _MODEL = SizeModel(**cached_arrays("size-estimator", _cache_key(), shapes, "a size estimator",
                                           _built_model_arrays))
    return _MODEL


def estimate(images, class_key: str) -> dict[str, np.ndarray]:
    """The tone and size (N,) float32 in [0, 1] that uint8 (N, 96, 96, 3) images show, read as
    pictures of `class_key` (see the module docstring)."""
    d = template_distances(images, class_key)  # (N, N_SIZE * N_TONE), checks the images and the class
    tones = (np.arange(d.shape[1]) % N_TONE) / (N_TONE - 1)  # (K,) the grid's tone of each column
    nearest = d.min(axis=1, keepdims=True)
    w = np.exp(-(d - nearest) / (SOFTMIN * np.maximum(nearest, 1e-6)))
    tone = (w @ tones) / w.sum(axis=1)
    model, ci = get_size_model(), CLASS_KEYS.index(class_key)
    images = np.asarray(images.detach().cpu().numpy() if hasattr(images, "detach") else images)
    size = (_features(images) - model.mean[ci]) @ model.weights[ci] + model.intercept[ci]
    return {"tone": np.clip(tone, 0, 1).astype(np.float32), "size": np.clip(size, 0, 1).astype(np.float32)}


# -- the truth: scenes.json -----------------------------------------------------------------------
def _unit(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise UserError(f"{where} = {value!r} is not a number in [0, 1]")
    return float(value)


def _scene_entry(scene, where: str) -> tuple[str, dict]:
    if not isinstance(scene, dict) or not isinstance(scene.get("attributes"), dict):
        raise UserError(f"{where}: not a scene (an object with video_id, class and attributes)")
    vid, key = scene.get("video_id"), scene.get("class")
    if not isinstance(vid, str) or not vid:
        raise UserError(f"{where}.video_id = {vid!r} is not a video id")
    if key not in CLASS_KEYS:
        raise UserError(f"{where}.class = {key!r} is not a class of the synthetic world")
    attrs = scene["attributes"]
    return vid, {"class": key, "tone": _unit(attrs.get("tone"), f"{where}.attributes.tone"),
                 "size": _unit(attrs.get("size"), f"{where}.attributes.size")}


def scene_attributes(path, sha256: str | None = None) -> dict[str, dict]:
    """{video_id: {class, tone, size}} of every video of the world's scenes.json (the clean
    videos, and the faults that have a scene). `sha256`: what the store recorded; another file
    is refused. Every problem is one line naming the file and the field."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the synthetic world's scenes ({e.strerror or e}); the attribute "
                        "scores need the scenes.json the store was prepared from") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(f"{path}: not the scenes.json the store was prepared from (its sha256 differs from the "
                        "store's record); write the world again with the same seed, or prepare a new store")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SCENES_FORMAT:
        raise UserError(f"{path}: format is not {SCENES_FORMAT!r}; not a synthetic world's scenes.json")
    videos, faults = doc.get("videos"), doc.get("faults", [])
    if not isinstance(videos, list) or not isinstance(faults, list):
        raise UserError(f"{path}: 'videos' and 'faults' must be lists")
    out: dict[str, dict] = {}
    entries = [(f"videos[{i}]", v) for i, v in enumerate(videos)]
    entries += [(f"faults[{i}].scene", f.get("scene")) for i, f in enumerate(faults)
                if isinstance(f, dict) and f.get("scene") is not None]
    for where, scene in entries:
        vid, entry = _scene_entry(scene, f"{path}: {where}")
        out.setdefault(vid, entry)  # a shared_id fault repeats its original's scene
    return out
