"""The judge: is an image an informative picture of class c? (the truth on synthetic data)

An image is informative of class c when it shows a class-c scene with definite audible
attributes: the class layout AND a definite colour of the class's tone region. A blurry picture
that gets both right passes; the class mean (hue averaged to grey, objects smeared) does not.

How: a bank of templates rendered from the world definition with a fixed internal seed. For
every class, a grid of (tone, size) cells; each cell's template is the mean of a few renders with
random nuisance (position, secondary colours, time) and carries

  - a per-pixel spread of the nuisance (pooled over the tones of its size) that weighs the
    structural distance: pixels the nuisance moves count little, stable ones count a lot;
  - the tone region: the pixels whose colour changes with tone at that size, and the mean
    colour of that region, with its nuisance spread.

The distance of an image to a template is the mean weighted squared pixel difference (at 16x16)
plus the weighted squared difference of the region colours. Region colours average away local
nuisance, so hue that is averaged to grey (a class mean) stands out even when edges are fuzzy.
The distance to a class is the minimum over its templates; its threshold is 1.6 times the 99th
percentile of the distances of frames of fresh class scenes (calibration, also from a fixed
seed). An image passes for class c when (1) its distance is within the threshold, (2) in
threshold units it is smaller than its distance to every other class, and (3) it has the class
layout: after removing its mean colour, it correlates >= 0.5 with some class-c template (flat
images and noise have no layout; the pixel distance alone lets a flat image of the right colour
come close when the class object is small).

Nothing is trained at run time: the bank is a pure function of the world definition, built once
per process (a few seconds) and kept in memory, and cached on disk when a cache folder is
writable (`$S2I_BENCH_CACHE`, else `$XDG_CACHE_HOME/s2i-bench`, else `~/.cache/s2i-bench`; set
`S2I_BENCH_CACHE=off` to disable). The cache key hashes this file, `render.py` and `scenes.py`.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2i_bench.fileio import atomic_write_bytes, progress
from s2i_bench.synth.render import CROP_WINDOW, render_frames
from s2i_bench.synth.scenes import CLASS_KEYS, WORLD_VERSION, draw_scene

JUDGE_VERSION = "1"
IMAGE_SIZE = 96
FEATURE_SIZE = 16  # the judge looks at 16x16 block means: blur and upsampling barely matter
N_TONE, N_SIZE, DRAWS = 16, 7, 4  # bank grid (ends included) and nuisance draws per cell
CALIBRATION_SCENES = 160  # per class
EPS_PIXEL, EPS_COLOUR = 0.03, 0.02  # floors of the nuisance spreads (in [0, 1] colour units)
REGION_THRESHOLD = 0.25  # a pixel is in the tone region when its tone variance is >= 25% of the max
THRESHOLD_FACTOR, THRESHOLD_QUANTILE = 1.6, 0.99
LAYOUT_MIN = 0.5  # real frames correlate >= 0.8 with a template of their class; noise < 0.2, flat 0
BANK_SEED = 20240601  # fixed: the judge is part of the world definition, not of any run


@dataclass
class Bank:
    means: np.ndarray  # (K, D) template pixels, D = 16*16*3, values in [0, 1]
    weights: np.ndarray  # (K, D) 1 / (nuisance variance + eps^2)
    regions: np.ndarray  # (K, P) tone-region weights over the P = 256 pixels, rows sum to 1
    colours: np.ndarray  # (K, 3) mean colour of the tone region
    colour_weights: np.ndarray  # (K, 3) 1 / (nuisance variance of that colour + eps^2)
    labels: np.ndarray  # (K,) class index
    thresholds: np.ndarray  # (C,) per class

    # precomputed for the expanded squared distance and the layout correlation
    def __post_init__(self):
        self.mw = (self.means * self.weights).astype(np.float32)
        self.mmw = (self.means * self.means * self.weights).sum(1).astype(np.float32)
        self.layouts = _centred_unit(self.means).astype(np.float32)


def reduce_blocks(images: np.ndarray, size: int = FEATURE_SIZE) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size*size*3) float32 block means in [0, 1]."""
    n, s = images.shape[0], images.shape[1]
    k = s // size
    # integer sums over contiguous runs (6x faster than a float mean over strided axes);
    # uint16 holds k*k*255 for k <= 16
    rows = images.reshape(n * size, k, s * 3).sum(axis=1, dtype=np.uint16)  # (n*size, S*3)
    blocks = rows.reshape(n * size * size, k, 3).sum(axis=1, dtype=np.uint16)  # (n*size*size, 3)
    return blocks.reshape(n, -1).astype(np.float32) * np.float32(1.0 / (255.0 * k * k))


def _centred_unit(feats: np.ndarray) -> np.ndarray:
    """Remove each image's mean colour and scale to unit norm: what is left is the layout."""
    f = feats.reshape(len(feats), -1, 3)
    f = (f - f.mean(1, keepdims=True)).reshape(len(feats), -1)
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-6)


def _render_features(scene: dict, t: float) -> np.ndarray:
    # rendered straight into the centre square at 2x the feature size, then block-averaged:
    # close to what a 96x96 centre crop of a decoded frame gives at 16x16
    img = render_frames(scene, [t], 2 * FEATURE_SIZE, 2 * FEATURE_SIZE, CROP_WINDOW)
    return reduce_blocks(img)[0]


def build_bank() -> Bank:
    """Render the templates and calibrate the thresholds (deterministic; a few seconds)."""
    rng = np.random.default_rng(BANK_SEED)
    P = FEATURE_SIZE * FEATURE_SIZE
    means, weights, regions, colours, colour_weights, labels = [], [], [], [], [], []
    bar = progress(total=len(CLASS_KEYS) * (N_SIZE * N_TONE * DRAWS + CALIBRATION_SCENES),
                   desc="judge bank (once)", unit="render")
    for ci, key in enumerate(CLASS_KEYS):
        for si in range(N_SIZE):
            size = si / (N_SIZE - 1)  # the grid includes the ends: scenes at 0 or 1 have a template
            draws = np.empty((N_TONE, DRAWS, P * 3), np.float32)
            for ti in range(N_TONE):
                tone = ti / (N_TONE - 1)
                for r in range(DRAWS):
                    scene = draw_scene(key, rng, video_id="judge", duration=2.0, tone=tone, size=size)
                    draws[ti, r] = _render_features(scene, float(rng.uniform(0, 2.0)))
                    bar.update()
            cell_means = draws.mean(1)  # (T, D)
            residual = draws - cell_means[:, None]
            pixel_var = residual.reshape(-1, P * 3).var(0) * DRAWS / (DRAWS - 1)
            tone_var = cell_means.reshape(N_TONE, P, 3).var(0).sum(-1)  # (P,) how much tone moves it
            region = tone_var / tone_var.max()
            region = np.where(region >= REGION_THRESHOLD, region, 0.0)
            region = (region / region.sum()).astype(np.float32)
            draw_colours = np.einsum("tdpc,p->tdc", draws.reshape(N_TONE, DRAWS, P, 3), region)
            colour_var = ((draw_colours - draw_colours.mean(1, keepdims=True)).reshape(-1, 3).var(0)
                          * DRAWS / (DRAWS - 1))
            for ti in range(N_TONE):
                means.append(cell_means[ti])
                weights.append(1.0 / (pixel_var + EPS_PIXEL**2))
                regions.append(region)
                colours.append(draw_colours[ti].mean(0))
                colour_weights.append(1.0 / (colour_var + EPS_COLOUR**2))
                labels.append(ci)
    bank = Bank(np.stack(means).astype(np.float32), np.stack(weights).astype(np.float32),
                np.stack(regions), np.stack(colours).astype(np.float32),
                np.stack(colour_weights).astype(np.float32), np.array(labels, np.int64),
                np.ones(len(CLASS_KEYS), np.float32))
    # calibration: frames of fresh scenes at random tone, size and time
    thresholds = []
    for ci, key in enumerate(CLASS_KEYS):
        feats = []
        for _ in range(CALIBRATION_SCENES):
            scene = draw_scene(key, rng, video_id="judge", duration=2.0)
            feats.append(_render_features(scene, float(rng.uniform(0, 2.0))))
            bar.update()
        d = _class_distances(bank, np.stack(feats))[0][:, ci]
        thresholds.append(THRESHOLD_FACTOR * np.quantile(d, THRESHOLD_QUANTILE))
    bar.close()
    bank.thresholds = np.array(thresholds, np.float32)
    return bank


def _template_distances(bank: Bank, feats: np.ndarray) -> np.ndarray:
    """(N, D) features -> (N, K) distance to every template (structure plus tone-region colour)."""
    n = feats.shape[0]
    # structural: mean over pixels of w * (x - m)^2, expanded into two matrix products
    total = (feats * feats) @ bank.weights.T  # (N, K)
    total -= 2.0 * (feats @ bank.mw.T)
    total += bank.mmw[None]
    total *= np.float32(1.0 / feats.shape[1])
    # colour of each template's tone region in the image, per channel: (N, P) @ (P, K) -> (N, K)
    x = feats.reshape(n, -1, 3)
    for ch in range(3):
        diff = np.ascontiguousarray(x[:, :, ch]) @ bank.regions.T  # (N, K)
        diff -= bank.colours[None, :, ch]
        diff *= diff
        diff *= bank.colour_weights[None, :, ch] / np.float32(3.0)
        total += diff
    return total


def _class_distances(bank: Bank, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> (N, C) distance to the nearest template of each class, and (N, C) the
    best layout correlation with a template of each class."""
    n = feats.shape[0]
    total = _template_distances(bank, feats)  # (N, K)
    layout = _centred_unit(feats) @ bank.layouts.T  # (N, K) correlation in [-1, 1]
    dist = np.empty((n, len(CLASS_KEYS)), np.float32)
    corr = np.empty((n, len(CLASS_KEYS)), np.float32)
    for ci in range(len(CLASS_KEYS)):
        cols = slice(*np.flatnonzero(bank.labels == ci)[[0, -1]] + [0, 1])  # templates are grouped by class
        dist[:, ci] = total[:, cols].min(1)
        corr[:, ci] = layout[:, cols].max(1)
    return dist, corr


# -- cache ----------------------------------------------------------------------------------------
_BANK: Bank | None = None


def _cache_key() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256(f"{WORLD_VERSION}|{JUDGE_VERSION}".encode())
    for name in ("judge.py", "render.py", "scenes.py"):
        h.update((here / name).read_bytes())
    h.update(np.__version__.encode())
    return h.hexdigest()[:20]


def cache_dir() -> Path | None:
    env = os.environ.get("S2I_BENCH_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none", "no") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s2i-bench"


_FIELDS = ("means", "weights", "regions", "colours", "colour_weights", "labels", "thresholds")


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Named arrays as one .npz (plain arrays, no pickle), written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_arrays(path: Path, shapes: dict[str, tuple[int, ...]], what: str) -> dict[str, np.ndarray]:
    """The arrays of `shapes` read back from `path`, refused (ValueError naming `what`) unless every
    one has the shape this code expects and is finite."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {f: np.array(z[f]) for f in shapes}
    if any(arrays[f].shape != shape or not np.isfinite(arrays[f]).all() for f, shape in shapes.items()):
        raise ValueError(f"{path}: not {what} of this version")
    return arrays


def cached_arrays(stem: str, key: str, shapes: dict[str, tuple[int, ...]], what: str,
                  build) -> dict[str, np.ndarray]:
    """Arrays that `build()` makes (deterministically), kept in the s2i-bench cache folder as
    `<stem>-<key>.npz` (key: a hash of the code and versions that make them). A cached file is
    used only when `read_arrays` accepts it; an unreadable one is rebuilt and overwritten, and a
    read-only cache folder is fine (the arrays then live in memory only)."""
    folder = cache_dir()
    path = folder / f"{stem}-{key}.npz" if folder else None
    if path is not None and path.is_file():
        try:
            return read_arrays(path, shapes, what)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: rebuild below and overwrite it
    arrays = build()
    if path is not None:
        try:
            write_arrays(path, arrays)
        except OSError:
            pass
    return arrays


def _bank_shapes() -> dict[str, tuple[int, ...]]:
    k, d = len(CLASS_KEYS) * N_TONE * N_SIZE, FEATURE_SIZE * FEATURE_SIZE * 3
    return {"means": (k, d), "weights": (k, d), "regions": (k, d // 3), "colours": (k, 3),
            "colour_weights": (k, 3), "labels": (k,), "thresholds": (len(CLASS_KEYS),)}


def save_bank(bank: Bank, path: Path) -> None:
    write_arrays(path, {f: getattr(bank, f) for f in _FIELDS})


def load_bank(path: Path) -> Bank:
    """Read a cached bank (plain arrays, no pickle); shapes are checked against this code's."""
    arrays = read_arrays(path, _bank_shapes(), "a judge bank")
    return Bank(*(arrays[f] for f in _FIELDS))


def _built_bank_arrays() -> dict[str, np.ndarray]:
    bank = build_bank()
    return {f: getattr(bank, f) for f in _FIELDS}


def get_bank() -> Bank:
    """The bank, built once per process (or read from the disk cache)."""
    global _BANK
    if _BANK is None:
        arrays = cached_arrays("judge-bank", _cache_key(), _bank_shapes(), "a judge bank", _built_bank_arrays)
        _BANK = Bank(*(arrays[f] for f in _FIELDS))
    return _BANK
    folder = cache_dir()
    path = folder / f"judge-bank-{_cache_key()}.npz" if folder else None
    if path is not None and path.is_file():
        try:
            _BANK = load_bank(path)
            return _BANK
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: rebuild below and overwrite it
    _BANK = build_bank()
    if path is not None:
        try:
            save_bank(_BANK, path)
        except OSError:
            pass  # a read-only home is fine: the bank lives in memory
    return _BANK


# -- the public judge -------------------------------------------------------------------------------
def _check(images, class_key: str) -> tuple[np.ndarray, int]:
    if class_key not in CLASS_KEYS:
        raise ValueError(f"judge: unknown class {class_key!r} (valid: {', '.join(CLASS_KEYS)})")
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"judge: images must be uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got dtype {images.dtype}"
                         " (convert network output with s2i_bench.images.net_to_uint8)")
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"judge: images must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {tuple(images.shape)}")
    return images, CLASS_KEYS.index(class_key)


def judge_details(images, class_key: str, batch_size: int = 2048) -> dict[str, np.ndarray]:
    """The judge's evidence for each image, (N,) float32 arrays:
    `own`: distance to `class_key` in units of its threshold; `other`: the same for the nearest
    other class; `layout`: best correlation of the image's layout (mean colour removed) with a
    template of `class_key`. An image passes when own <= 1, own < other and layout >= 0.5."""
    images, ci = _check(images, class_key)
    bank = get_bank()
    own, other, layout = (np.empty(len(images), np.float32) for _ in range(3))
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        dist, corr = _class_distances(bank, reduce_blocks(images[part]))
        dist /= bank.thresholds[None]
        own[part] = dist[:, ci]
        other[part] = np.delete(dist, ci, axis=1).min(1)
        layout[part] = corr[:, ci]
    return {"own": own, "other": other, "layout": layout}


def template_distances(images, class_key: str, batch_size: int = 2048) -> np.ndarray:
    """Distances (N, N_SIZE * N_TONE) float32 of uint8 (N, 96, 96, 3) images to every template of
    `class_key`, in units of its threshold. Column s * N_TONE + t is the template of size
    s / (N_SIZE - 1) and tone t / (N_TONE - 1): the attribute estimators (`synth.attributes`) read
    the grid."""
    images, ci = _check(images, class_key)
    bank = get_bank()
    cols = np.flatnonzero(bank.labels == ci)  # the class's templates, in grid order
    out = np.empty((len(images), len(cols)), np.float32)
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        out[part] = _template_distances(bank, reduce_blocks(images[part]))[:, cols] / bank.thresholds[ci]
    return out


def judge(images, class_key: str) -> np.ndarray:
    """Is each image an informative picture of `class_key`? images: uint8 (N, 96, 96, 3).
    Returns a bool array (N,). Deterministic; thousands of images per second on one CPU core
    once the bank is built."""
    d = judge_details(images, class_key)
    return (d["own"] <= 1.0) & (d["own"] < d["other"]) & (d["layout"] >= LAYOUT_MIN)
