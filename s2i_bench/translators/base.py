"""The translator contract: what any sound-to-image system gets and must answer.

    batch = Batch(log_mel, seeds, waveform, sample_rate=16000, waveform_context=None, draw=0)
        log_mel      (B, 1, 128, 100) float32 in [-1, 1] (the store's normalisation), on the device
        seeds        (B,) int64, one per image: a stochastic system draws its randomness from them,
                     so an image depends on (sound, seed) only, never on its batch or device
        waveform     (B, 16000) float32 in [-1, 1] at `sample_rate`: the segment's own second, the
                     audio its log-Mel was computed from (None when the store keeps no audio)
        waveform_context  (B, C * 16000) float32: the C s centred on the segment, zeros outside
                     the clip (stores prepared with --audio-context-s C; else None)
        draw         which of the K images per sound this batch is (0 .. K-1)
        never the class, the video or the segment id
    images = translator.translate(batch)
        uint8 (B, H, W, 3), or float (B, 3, H, W) in [-1, 1]; any H, W
    translator.info   {"path", "sha256", "kind", "epoch", "embedding_dim", "run", ...}

`checked_images` enforces the answer on every batch (batch size, dtype, finite, range) and
`to_protocol_size` applies the one resize policy: centre crop to a square, then an antialiased
bilinear resize to the protocol's image size (what the classifiers and the judge see; sample
sheets keep the native size). Pooling and scoring both go through `translate_checked`.

`StoreTranslator` is the toolkit's own kind that also gets the batch's store rows (which carry the
class): the reference translators and folders of images scored after the fact. Plugins never
get rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from s2i_bench.fileio import dig
from s2i_bench.errors import UserError

OUTPUT_TOLERANCE = 1e-3  # TanH outputs may overshoot [-1, 1] by rounding; more is a broken translator
INFO_KEYS = ("path", "sha256", "kind", "epoch", "embedding_dim", "run")


@dataclass
class Batch:
    """B sounds as a translator sees them (see the module docstring)."""

    log_mel: Any  # torch.Tensor (B, 1, 128, 100) float32 in [-1, 1]
    seeds: Any  # torch.Tensor (B,) int64
    waveform: Any = None  # torch.Tensor (B, T) float32, or None
    sample_rate: int = 16000
    waveform_context: Any = None  # torch.Tensor (B, C * sr) float32, or None
    draw: int = 0

    def __len__(self) -> int:
        return int(self.log_mel.shape[0])


class Translator:
    """`fn(batch) -> images` with its `info`, on `device`. `inputs` names what it reads from the
    batch ("log_mel", "waveform"), so a store without audio can be refused before any work."""

    def __init__(self, fn: Callable[[Batch], Any], info: dict[str, Any], device: str = "cpu",
                 inputs: tuple[str, ...] = ("log_mel",)):
        self._fn = fn
        self.info = {k: None for k in INFO_KEYS} | dict(info)
        self.device = device
        self.inputs = tuple(inputs)

    def translate(self, batch: Batch):
        return self._fn(batch)


class StoreTranslator(Translator):
    """The toolkit's own translators that read the store: `translate_rows(batch, rows)` gets the
    store rows of the batch's sounds too. Only code of the toolkit subclasses this."""

    def __init__(self, info: dict[str, Any], device: str = "cpu", inputs: tuple[str, ...] = ()):
        super().__init__(self._no_rows, info, device=device, inputs=inputs)

    def _no_rows(self, batch: Batch):
        raise UserError(f"{self.info.get('path')}: needs the store rows of its sounds "
                        "(score it with `s2i-bench score`)")

    def translate_rows(self, batch: Batch, rows):
        raise NotImplementedError


def batch_for_rows(store, rows, seeds, device, *, inputs=("log_mel",), draw: int = 0) -> Batch:
    """The Batch of store rows `rows` (B,) with per-image `seeds` (B,) int64: the log-Mel in the
    store's normalisation, and the audio the translator declares it reads (loading audio for a
    translator that ignores it would double the data read per batch)."""
    import numpy as np
    import torch

    rows = np.asarray(rows)
    log_mel = torch.from_numpy(np.ascontiguousarray(store.spectrograms[rows], dtype=np.float32))  # (B, 1, 128, 100)
    log_mel = store.normalise(log_mel.to(device))  # network input in [-1, 1]
    waveform = context = None
    if "waveform" in inputs and store.has_waveforms:
        waveform = torch.from_numpy(store.waveforms_of(rows)).to(device)  # (B, 16000)
    if "waveform_context" in inputs and store.context is not None:
        context = torch.from_numpy(store.context_of(rows)).to(device)  # (B, C * 16000)
    return Batch(log_mel=log_mel, seeds=torch.from_numpy(np.asarray(seeds, dtype=np.int64)).to(device),
                 waveform=waveform, sample_rate=store.sample_rate, waveform_context=context, draw=int(draw))


def checked_images(images, batch_size: int, where: str):
    """The translator's answer as (B, 3, H, W) float32 in [-1, 1], or a UserError naming `where`
    and what it returned: a tensor, B images for B sounds, uint8 (B, H, W, 3) or floating
    (B, 3, H, W) in [-1, 1] (within a rounding tolerance), finite."""
    import torch

    if isinstance(images, (tuple, list)) and len(images) == 1:
        images = images[0]
    if not isinstance(images, torch.Tensor):
        raise UserError(f"{where}: the translator returned {type(images).__name__}, not an image tensor")
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[0] != batch_size:
        raise UserError(f"{where}: the translator returned shape {shape} for {batch_size} sounds; expected "
                        f"{batch_size} images, uint8 ({batch_size}, H, W, 3) or float ({batch_size}, 3, H, W)")
    if images.dtype == torch.uint8:
        if shape[3] != 3:
            raise UserError(f"{where}: the translator returned uint8 images of shape {shape}; expected "
                            f"({batch_size}, H, W, 3)")
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if not images.is_floating_point():
        raise UserError(f"{where}: the translator returned {images.dtype} images; expected float in [-1, 1] "
                        f"(B, 3, H, W) or uint8 (B, H, W, 3)")
    if shape[1] != 3 or shape[2] < 1 or shape[3] < 1:
        raise UserError(f"{where}: the translator returned float images of shape {shape}; expected "
                        f"({batch_size}, 3, H, W)")
    low, high = (float(v) for v in torch.aminmax(images.detach().float()))  # NaN propagates, inf is out of range
    if any(math.isnan(v) or math.isinf(v) for v in (low, high)):
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise UserError(f"{where}: the translator returned NaN or infinite values in {bad} of {batch_size} images")
    if low < -1 - OUTPUT_TOLERANCE or high > 1 + OUTPUT_TOLERANCE:
        raise UserError(f"{where}: the translator returned values in [{low:.4g}, {high:.4g}]; expected [-1, 1] "
                        f"(float) or uint8")
    images = images.float()
    return images.clamp(-1.0, 1.0) if low < -1 or high > 1 else images


def to_protocol_size(images, size: int):
    """(B, 3, H, W) -> (B, 3, size, size): centre crop to a square (side min(H, W)), then bilinear
    resize, antialiased when shrinking (the policy `prepare` applies to video frames)."""
    import torch.nn.functional as F

    h, w = images.shape[-2:]
    side = min(h, w)
    if h != w:
        top, left = (h - side) // 2, (w - side) // 2
        images = images[..., top:top + side, left:left + side]
    if side == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)


def translate_checked(translator, batch: Batch, *, size: int, where: str | None = None, rows=None):
    """One batch through a translator, its answer checked: (native (B, 3, H, W), at the
    protocol's size (B, 3, size, size)), float32 in [-1, 1]. `rows` (the batch's store rows) go
    to the toolkit's own `StoreTranslator`s only."""
    import torch

    where = where or str(dig(getattr(translator, "info", None), "path") or "translator")
    with torch.inference_mode():
        try:
            if isinstance(translator, StoreTranslator):
                raw = translator.translate_rows(batch, rows)
            else:
                raw = translator.translate(batch)
        except UserError:
            raise
        except (Exception, SystemExit) as e:  # a stranger's code failing on our input is its fault: say what it said
            raise UserError(f"{where}: the translator failed on {len(batch)} sounds "
                            f"({type(e).__name__}: {_first_line(e)})") from None
        native = checked_images(raw, len(batch), where)
        return native, to_protocol_size(native, size).clamp(-1.0, 1.0)  # resampling may overshoot by an ulp


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else "no message"


def check_inputs(translator, store) -> None:
    """A translator that listens to the waveform needs a store that keeps audio (and the context
    window, for one that listens longer)."""
    needs = tuple(getattr(translator, "inputs", ("log_mel",)))
    where = dig(getattr(translator, "info", None), "path") or "the translator"
    if "waveform" in needs and not store.has_waveforms:
        raise UserError(f"{where} takes the waveform, but {store.path} keeps no audio (a store of format version "
                        f"{store.format_version}); rebuild it with {store.rebuild_hint()} "
                        f"(this s2i-bench stores 16 kHz waveforms)")
    if "waveform_context" in needs and store.context is None:
        raise UserError(f"{where} takes a context window of audio, but {store.path} was prepared without one; "
                        f"rebuild it with {store.rebuild_hint('--audio-context-s C')} (C seconds, e.g. 10)")
