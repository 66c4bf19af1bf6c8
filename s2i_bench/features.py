"""Log-Mel and centre-frame extraction, exactly as SPEC section 3 says.

One video file in, its 1-s segments out:

    clip = extract_clip(path, protocol)
    clip.starts        # [0, 1, 2, ...]          segment k covers [k, k+1) s
    clip.spectrograms  # (S, 1, 128, 100) float32 natural-log Mel energies
    clip.frames        # (S, 96, 96, 3) uint8    frame nearest k + 0.5 s, centre square, resized

Decoding is one pass through the file with PyAV: every audio packet is decoded (the log-Mel
needs all of it), every video packet is decoded (inter-frame prediction needs it) but only the
frame nearest each segment centre is converted to RGB, cropped and resized; that conversion is
where the cost of video lies. A file that cannot give segments raises `ClipError` with a
one-line reason, which `prepare` writes to `skipped.csv`.

Time: t = 0 is the container's presentation origin (the timestamps as decoded). Audio samples
before t = 0 are dropped; audio that starts late is preceded by zeros.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# torchaudio's windowed-sinc kernel has shape (new_rate/g, orig_rate/g + width) where g is the
# gcd of the rates; a coprime odd rate (e.g. 44101 Hz) would need gigabytes. Such rates are
# refused with a reason rather than approximated.
MAX_REDUCED_RATE = 4800


class ClipError(Exception):
    """A file that gives no segments: the message is the reason written to skipped.csv."""


@dataclass
class ClipFeatures:
    starts: list[int]                # segment start in seconds (k), increasing
    spectrograms: np.ndarray         # (S, 1, n_mels, frames_per_segment) float32 log values
    frames: np.ndarray               # (S, size, size, 3) uint8
    audio_seconds: float             # where the audio ends on the clip's timeline
    video_seconds: float             # where the video ends (last frame time + frame duration)
    info: dict = field(default_factory=dict)  # codec, rates, sizes (for skipped.csv / debugging)


# -- audio ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def mel_filterbank(audio) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) HTK triangles at the FFT bin frequencies, no area normalisation.
    Cached per audio spec (a frozen dataclass); treat the tensor as read-only."""
    import torchaudio.functional as AF

    return AF.melscale_fbanks(audio.n_fft // 2 + 1, audio.f_min, audio.f_max, audio.n_mels,
                              audio.sample_rate, norm=None, mel_scale="htk")


def log_mel_segments(wave: torch.Tensor, starts: list[int], audio, segment_seconds: float = 1.0,
                     filterbank: torch.Tensor | None = None) -> torch.Tensor:
    """Log-Mel of the 1-s segments starting at `starts` seconds.

    wave: (T,) float mono samples at `audio.sample_rate`, sample 0 at t = 0.
    Returns (S, 1, n_mels, frames_per_segment) float32.

    Frame i of the segment at `start` is centred at start + hop/2 + i * hop, so it spans
    [start + i*hop + hop/2 - L/2, ... + L) samples: with L = 400 and hop = 160 that is
    start + 10i - 7.5 ms to start + 10i + 17.5 ms. Samples outside the clip are zero.
    """
    sr, hop, length = audio.sample_rate, audio.hop_length, audio.frame_length
    n_frames = audio.frames_per_segment
    if not starts:
        return torch.zeros(0, 1, audio.n_mels, n_frames)
    wave = wave.to(torch.float32)
    seg_first = torch.tensor([round(s * segment_seconds * sr) for s in starts], dtype=torch.int64)  # (S,)
    offset = hop // 2 - length // 2  # first sample of frame 0 relative to the segment start: -120
    frame_first = seg_first[:, None] + offset + hop * torch.arange(n_frames)[None, :]  # (S, F)
    index = frame_first[:, :, None] + torch.arange(length)[None, None, :]  # (S, F, L)
    # Pad so that every index is valid: zeros stand for "outside the clip".
    pad_left = max(0, -int(index.min()))
    pad_right = max(0, int(index.max()) + 1 - wave.numel())
    padded = F.pad(wave, (pad_left, pad_right))
    frames = padded[index + pad_left]  # (S, F, L)
    window = torch.hamming_window(length, periodic=True)  # (L,)
    # rfft with n = n_fft zero-pads each frame at its end, as SPEC section 3 asks.
    power = torch.fft.rfft(frames * window, n=audio.n_fft).abs().square()  # (S, F, n_fft/2+1)
    fb = mel_filterbank(audio) if filterbank is None else filterbank  # (n_fft/2+1, n_mels)
    energies = power @ fb  # (S, F, n_mels)
    log_mel = torch.log(energies.clamp_min(audio.log_floor))
    return log_mel.transpose(1, 2).unsqueeze(1).contiguous()  # (S, 1, n_mels, F)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """(T,) -> (T',) with torchaudio's default windowed-sinc resampler."""
    import torchaudio.functional as AF

    if orig_rate == new_rate:
        return wave
    g = math.gcd(int(orig_rate), int(new_rate))
    if orig_rate // g > MAX_REDUCED_RATE or new_rate // g > MAX_REDUCED_RATE:
        raise ClipError(f"audio sample rate {orig_rate} Hz is not supported (no small ratio to {new_rate} Hz)")
    return AF.resample(wave, int(orig_rate), int(new_rate))


def _audio_to_float(frame) -> np.ndarray:
    """One decoded PyAV audio frame -> (channels, samples) float32 in [-1, 1]."""
    array = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:  # packed: (1, samples * channels), interleaved
        array = array.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name in ("flt", "dbl"):
        return array.astype(np.float32, copy=False)
    if name == "s16":
        return array.astype(np.float32) / 32768.0
    if name == "s32":
        return (array.astype(np.float64) / 2147483648.0).astype(np.float32)
    if name == "s64":
        return (array.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    if name == "u8":
        return (array.astype(np.float32) - 128.0) / 128.0
    raise ClipError(f"audio sample format {frame.format.name!r} is not supported")


# -- video ------------------------------------------------------------------------------------
def centre_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: centre crop to side min(H, W), then an
    antialiased bilinear resize (antialiasing matters: frames shrink by 4-8x)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(rgb[top:top + side, left:left + side]))
    x = square.permute(2, 0, 1)[None].float()  # (1, 3, side, side)
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class _NearestFrames:
    """Streams decoded video frames (in presentation order) and keeps, for every target time
    T_k = k * segment + offset, the frame nearest to it (ties: the earlier frame). Only the
    chosen frames are converted to RGB."""

    def __init__(self, segment_s: float, offset_s: float, size: int):
        self.segment, self.offset, self.size = segment_s, offset_s, size
        self.chosen: dict[int, np.ndarray] = {}
        self.next_k = 0
        self.prev = None  # (time, frame)
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.count = 0
        self.shape: tuple[int, int] | None = None

    def _take(self, k: int, frame) -> None:
        self.chosen[k] = centre_square(frame.to_ndarray(format="rgb24"), self.size)

    def push(self, t: float, frame) -> None:
        if self.first_time is None:
            self.first_time = t
            self.shape = (frame.height, frame.width)
        self.count += 1
        self.last_time = t
        # Every target now behind this frame is decided: the previous frame or this one.
        while self.next_k * self.segment + self.offset < t:
            target = self.next_k * self.segment + self.offset
            if self.prev is not None and abs(self.prev[0] - target) <= abs(t - target):
                self._take(self.next_k, self.prev[1])
            else:
                self._take(self.next_k, frame)
            self.next_k += 1
        self.prev = (t, frame)

    def finish(self, up_to_k: int) -> None:
        """Targets at or after the last frame's time: the last frame is the nearest."""
        if self.prev is None:
            return
        while self.next_k < up_to_k:
            self._take(self.next_k, self.prev[1])
            self.next_k += 1


# -- one clip ---------------------------------------------------------------------------------
def extract_clip(path: str | Path, protocol) -> ClipFeatures:
    """Decode one video file and return the features of every covered 1-s segment.

    Segment k is kept when audio and video both cover [k, k+1) s up to
    `protocol.data.coverage_tolerance_s` (encoders round a clip's end to their frame size: AAC
    to 1024 samples); the uncovered audio, at most that much, is zero."""
    import av

    audio_spec, image_spec = protocol.audio, protocol.image
    seg = float(protocol.data.segment_seconds)
    tol = protocol.data.coverage_tolerance_s
    path = Path(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise ClipError(f"cannot open: {_short(e)}") from None
    try:
        if not container.streams.audio:
            raise ClipError("no audio stream")
        if not container.streams.video:
            raise ClipError("no video stream")
        a_stream, v_stream = container.streams.audio[0], container.streams.video[0]
        # One core per worker: `prepare --workers N` is the parallelism.
        a_stream.codec_context.thread_count = 1
        v_stream.codec_context.thread_count = 1
        chunks: list[np.ndarray] = []
        audio_t0: float | None = None
        audio_rate: int | None = None
        channels = 0
        picker = _NearestFrames(seg, image_spec.frame_offset_s, image_spec.size)
        last_video_gap = None
        fallback_fps = float(v_stream.average_rate) if v_stream.average_rate else None
        try:
            for packet in container.demux(a_stream, v_stream):
                for frame in packet.decode():
                    if packet.stream.type == "audio":
                        if audio_t0 is None:
                            audio_t0 = float(frame.time) if frame.time is not None else 0.0
                            audio_rate = int(frame.sample_rate)
                        elif int(frame.sample_rate) != audio_rate:
                            raise ClipError(f"audio sample rate changes mid-stream ({audio_rate} -> {frame.sample_rate} Hz)")
                        data = _audio_to_float(frame)  # (C, n)
                        channels = max(channels, data.shape[0])
                        chunks.append(data.mean(axis=0))  # mono = mean of channels
                    else:
                        if frame.time is not None:
                            t = float(frame.time)
                        elif fallback_fps:  # no timestamps (some raw/AVI streams): count frames
                            t = picker.count / fallback_fps
                        else:
                            raise ClipError("video frames have no timestamps and the stream no frame rate")
                        if picker.last_time is not None:
                            if t <= picker.last_time:
                                continue  # a repeated or out-of-order timestamp: keep the first
                            last_video_gap = t - picker.last_time
                        picker.push(t, frame)
        except av.FFmpegError as e:
            raise ClipError(f"decode error: {_short(e)}") from None
        if audio_t0 is None or not chunks:
            raise ClipError("audio stream has no decodable samples")
        if picker.first_time is None:
            raise ClipError("video stream has no decodable frames")

        # Audio on the clip's timeline at the protocol's rate.
        wave = torch.from_numpy(np.concatenate(chunks).astype(np.float32, copy=False))  # (T,)
        if not torch.isfinite(wave).all():
            raise ClipError("audio contains NaN or infinite samples")
        wave = resample(wave, audio_rate, audio_spec.sample_rate)
        sr = audio_spec.sample_rate
        shift = round(audio_t0 * sr)
        wave = F.pad(wave, (shift, 0)) if shift > 0 else wave[-shift:]
        audio_start = max(0.0, audio_t0)
        audio_end = wave.numel() / sr  # sample 0 is now t = 0

        frame_duration = last_video_gap or (1.0 / fallback_fps if fallback_fps else 0.0)
        video_start = picker.first_time
        video_end = picker.last_time + frame_duration

        # Segment k is kept when both audio and video cover [k*seg, (k+1)*seg), up to `tol`.
        start_cover = max(audio_start, video_start)
        end_cover = min(audio_end, video_end)
        starts = [k for k in range(int(math.floor(end_cover / seg + 1e-9)) + 1)
                  if k * seg >= start_cover - tol and (k + 1) * seg <= end_cover + tol]
        info = {"audio_codec": a_stream.codec_context.name, "sample_rate": audio_rate, "channels": channels,
                "video_codec": v_stream.codec_context.name, "width": picker.shape[1], "height": picker.shape[0],
                "video_frames": picker.count}
        if not starts:
            raise ClipError(f"no complete {seg:g}-s segment (audio {audio_start:.2f}-{audio_end:.2f} s, "
                            f"video {video_start:.2f}-{video_end:.2f} s)")
        picker.finish(up_to_k=starts[-1] + 1)
        spectrograms = log_mel_segments(wave, starts, audio_spec, seg).numpy()
        frames = np.stack([picker.chosen[k] for k in starts])
        return ClipFeatures(starts=starts, spectrograms=spectrograms, frames=frames,
                            audio_seconds=audio_end, video_seconds=video_end, info=info)
    finally:
        container.close()


def _short(e: Exception) -> str:
    """An error as one short line, without the file name PyAV appends (skipped.csv has it)."""
    text = getattr(e, "strerror", None) or str(e)
    return " ".join(str(text).split())[:200]
