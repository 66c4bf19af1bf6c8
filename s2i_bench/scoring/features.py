"""Feature extractors for the image metrics, all offline: nothing is ever downloaded.

    extractor = domain_extractor(bundle)                 the default: the bundle's real-frame
                                                         class-match CNN, its 32-d penultimate layer
    extractor = program_extractor("dinov2.pt2")          bring your own: a TorchScript / torch.export
                                                         feature network with a sidecar dinov2.json
    features = extractor(images)                         (B, 3, S, S) in [-1, 1] -> (B, D) float32

The domain extractor was trained by s2i-bench on the store's real training frames (it is the
class-match classifier of the bundle), so it needs no weights from anywhere and is pinned by the
bundle's sha256. A bring-your-own network is a stranger's program: it goes through the same
checks as a generator program (`translators.programs`: no code at load time, every operator on
the allowlist, its own process confined by the operating system, a time limit; the same
`--program-timeout`, `--program-memory` and `--unconfined`) and must be deterministic. Its
sidecar JSON declares what the network expects and pins the file:

    {"sha256": "<sha256 of the program file>", "input_size": [224, 224],
     "input_range": [-1, 1] | [0, 1], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

Images are resized to `input_size` (bilinear, antialiased), mapped to `input_range`, then
normalised by `mean` / `std` (both optional). An audio encoder for AIS has a sidecar with
`sample_rate` (the store's 16 kHz, or for a 1-s encoder any rate up to the store's high-rate
copy, `prepare --audio-rate`: it gets its own rate) and `seconds` (1: the segment; more: the
store's context window, `prepare --audio-context-s`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_save_npy, file_sha256
from s2i_bench.images import uint8_to_net
from s2i_bench.translators.programs import DEFAULT_TIMEOUT_S, ProgramWorker, checked_program

DOMAIN = "domain: class-match CNN fc2 (32-d)"


@dataclass
class Extractor:
    name: str
    sha256: str  # pins the weights: the bundle's, the program's or the preset's checkpoint
    fn: Callable[[Any], np.ndarray]  # (B, 3, S, S) float in [-1, 1] -> (B, D)
    info: dict
    # what the features are, path-free: the `image` part of the record's recipe (scoring.presets);
    # None: the extractor's name and sha256 stand for it
    recipe: dict | None = None
    # texts -> (C, D) embeddings in the same space (CLIP presets), for the metrics that need text
    text: Callable[[list[str]], np.ndarray] | None = None

    def __call__(self, images) -> np.ndarray:
        out = np.asarray(self.fn(images), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(images):
            raise UserError(f"{self.name}: features of shape {out.shape} for {len(images)} images; expected (B, D)")
        if not np.isfinite(out).all():
            raise UserError(f"{self.name}: NaN or infinite features")
        return out

    def ref(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, **self.info}


def domain_extractor(bundle) -> Extractor:
    """The bundle's class-match CNN (trained on the store's real frames) up to its penultimate
    layer (fc2 after batch norm and ReLU, dropout off): 32 features."""
    import torch
    import torch.nn.functional as F


    model = getattr(bundle, "_class_match", None)
    if model is None:
        raise UserError(f"{bundle.path}: has no class-match classifier, so no domain feature extractor; pass "
                        "--feature-extractor PROGRAM (a feature network of your own)")
    model.eval()

    @torch.no_grad()
    def fn(images):
        x = torch.as_tensor(images, dtype=torch.float32)
        for i in range(1, 6):
            conv, bn = getattr(model, f"conv{i}"), getattr(model, f"conv{i}_bn")
            x = F.relu(bn(conv(x)))  # the dropout layers are identities in eval mode
        x = x.flatten(1)  # (B, 32)
        return F.relu(model.fc2_bn(model.fc2(x))).numpy()  # (B, 32)

    return Extractor(DOMAIN, file_sha256(Path(bundle.path)), fn,
                     {"dims": 32, "kind": "domain", "bundle": str(bundle.path)})


def _sidecar(path: Path, sha: str) -> dict:
    side = path.with_suffix(".json")
    if not side.is_file():
        raise UserError(f"{path}: no sidecar {side.name} declaring the network's input (input_size, input_range, "
                        "mean, std) and its sha256; see docs/metrics.md")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{side}: expected a JSON object")
    if meta.get("sha256") != sha:
        raise UserError(f"{side}: pins sha256 {str(meta.get('sha256'))[:12]}, but {path.name} is {sha[:12]}: not the "
                        "network the sidecar describes")
    return meta


def _check_numbers(meta: dict, key: str, n: int | None, side: Path) -> list[float] | None:
    v = meta.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or (n is not None and len(v) != n) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v):
        raise UserError(f"{side}: {key} must be a list of {n or 'some'} finite numbers, got {v!r}")
    return [float(x) for x in v]


def _checked_program(path: Path, role: str) -> tuple[str, str]:
    kind, sha = checked_program(path, role)
    return sha, kind


def program_extractor(path, timeout_s: float | None = None, *, unconfined: bool = False,
                      memory_gib: float | None = None) -> Extractor:
    """A bring-your-own feature network (see the module docstring)."""
    import torch
    import torch.nn.functional as F


    path = Path(path)
    sha, kind = _checked_program(path, "feature network")
    meta = _sidecar(path, sha)
    side = path.with_suffix(".json")
    size = meta.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 8 <= v <= 1024 for v in size)):
        raise UserError(f"{side}: input_size must be [H, W] with 8..1024 pixels each, got {size!r}")
    low_high = _check_numbers(meta, "input_range", 2, side) or [-1.0, 1.0]
    mean, std = _check_numbers(meta, "mean", 3, side), _check_numbers(meta, "std", 3, side)
    if std is not None and any(v <= 0 for v in std):
        raise UserError(f"{side}: std must be positive")
    worker = ProgramWorker(path, "torchscript" if kind == "torchscript" else "export", "cpu",
                           DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s, input_shape=(3, *size),
                           role="feature network", unconfined=unconfined, memory_gib=memory_gib)

    def fn(images):
        x = torch.as_tensor(images, dtype=torch.float32)
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        x = (x + 1) / 2 * (low_high[1] - low_high[0]) + low_high[0]
        if mean is not None:
            x = x - torch.tensor(mean)[None, :, None, None]
        if std is not None:
            x = x / torch.tensor(std)[None, :, None, None]
        return worker.call(x.numpy(), np.zeros(len(x), dtype=np.int64)).reshape(len(x), -1)

    extractor = Extractor(str(meta.get("name") or path.name), sha, fn,
                          {"kind": "program", "path": str(path), "input_size": size, "input_range": low_high,
                           "mean": mean, "std": std, "confinement": worker.confinement})
    extractor.worker = worker
    return extractor


def audio_encoder(path, sample_rate: int, timeout_s: float | None = None, *, unconfined: bool = False,
                  memory_gib: float | None = None, high_rate: int | None = None):
    """A bring-your-own audio encoder for AIS: (B, T) waveforms -> (B, D). Returns (fn, ref).
    It gets its own rate: the store's (`sample_rate`), or up to the store's high-rate copy
    (`high_rate`, `prepare --audio-rate`; the 1-s segment only), which `fn.sample_rate` names."""
    path = Path(path)
    sha, kind = _checked_program(path, "audio encoder")
    meta = _sidecar(path, sha)
    side = path.with_suffix(".json")
    seconds = meta.get("seconds", 1.0)
    if not isinstance(seconds, (int, float)) or not 0 < seconds <= 60:
        raise UserError(f"{side}: seconds must be in (0, 60], got {seconds!r}")
    own = meta.get("sample_rate")
    if own != sample_rate and not (isinstance(own, int) and 1000 <= own <= max(sample_rate, high_rate or 0)
                                   and seconds == 1):
        raise UserError(f"{side}: sample_rate {own!r}; the store's audio is {sample_rate} Hz"
                        + (f" (and up to {high_rate} Hz for 1-s segments)" if high_rate else
                           "; keep the sources' rate with `prepare --audio-rate` for an encoder that listens higher"))
    sample_rate = own
    n = int(round(seconds * sample_rate))
    worker = ProgramWorker(path, "torchscript" if kind == "torchscript" else "export", "cpu",
                           DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s, input_shape=(n,),
                           role="audio encoder", unconfined=unconfined, memory_gib=memory_gib)

    def fn(waveforms: np.ndarray) -> np.ndarray:
        w = np.asarray(waveforms, dtype=np.float32)  # (B, T): the segment, or the store's context window
        if w.shape[1] < n:
            raise UserError(f"{path}: needs {seconds:g} s of audio, the store gives {w.shape[1] / sample_rate:g} s "
                            "(prepare the store with --audio-context-s)")
        start = (w.shape[1] - n) // 2  # the centred `seconds`
        out = worker.call(np.ascontiguousarray(w[:, start:start + n]), np.zeros(len(w), dtype=np.int64))
        out = np.asarray(out, dtype=np.float32).reshape(len(waveforms), -1)
        if not np.isfinite(out).all():
            raise UserError(f"{path}: NaN or infinite audio embeddings")
        return out

    fn.worker = worker
    fn.sample_rate = sample_rate  # the rate its waveforms are given at (`Store.audio_at`)
    fn.wants_context = seconds > 1.0  # longer than the segment: the store's context window, centred
    fn.samples = n
    return fn, {"name": str(meta.get("name") or path.name), "sha256": sha, "sample_rate": sample_rate,
                "seconds": float(seconds), "samples": n, "confinement": worker.confinement}


def cached_real_features(store, rows, extractor: Extractor) -> np.ndarray:
    """(len(rows), D) features of the store's real frames `rows`, cached by (store hash, rows,
    extractor hash) in the s2i-bench cache folder (written atomically)."""
    rows = np.asarray(rows, dtype=np.int64)
    # the recipe too: one checkpoint read with two resizes gives two sets of features
    recipe = json.dumps(extractor.recipe, sort_keys=True) if extractor.recipe else ""
    key = hashlib.sha256(f"{store.store_hash}|{extractor.sha256}|{extractor.name}|{recipe}|".encode()
                         + rows.tobytes()).hexdigest()[:24]
    root = Path(os.environ.get("S2I_BENCH_CACHE") or Path.home() / ".cache" / "s2i-bench") / "features"
    path = root / f"{key}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.ndim == 2 and cached.shape[0] == len(rows) and np.isfinite(cached).all():
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    out = []
    for i in range(0, len(rows), 256):
        frames = uint8_to_net(np.asarray(store.frames[rows[i:i + 256]]))  # (B, 3, S, S) in [-1, 1]
        out.append(extractor(frames))
    features = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(path, features)
    except OSError:
        pass  # no cache folder: still correct, only slower
    return features
