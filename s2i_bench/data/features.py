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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s2i_bench.data.hires import native_windows

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
    waveforms: np.ndarray | None = None  # (S, sr * segment) float32: each segment's own audio
    context: np.ndarray | None = None  # (S, sr * C) float32: C s centred on the segment (zero outside the clip)
    native: np.ndarray | None = None  # (S, r * segment + 2 m) float32 at the clip's own rate r (`hires`)
    native_margin: int = 0  # m: samples on each side of a native window


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
    seg_first = [round(s * segment_seconds * sr) for s in starts]  # first sample of each segment
    offset = hop // 2 - length // 2  # first sample of frame 0 relative to the segment start: -120
    span = (n_frames - 1) * hop + length  # samples one segment's frames cover: 16240
    # Pad so that every frame lies inside: zeros stand for "outside the clip".
    pad_left = max(0, -(min(seg_first) + offset))
    pad_right = max(0, max(seg_first) + offset + span - wave.numel())
    padded = F.pad(wave, (pad_left, pad_right))
    frames = torch.stack([padded[s0 + offset + pad_left: s0 + offset + pad_left + span].unfold(0, length, hop)
                          for s0 in seg_first])  # (S, F, L): frame i starts at s0 + offset + i * hop
    window = torch.hamming_window(length, periodic=True)  # (L,)
    # rfft with n = n_fft zero-pads each frame at its end, as SPEC section 3 asks.
    spectrum = torch.fft.rfft(frames * window, n=audio.n_fft)  # (S, F, n_fft/2+1) complex
    power = spectrum.real.square() + spectrum.imag.square()  # |X|^2 without the square root
    fb = mel_filterbank(audio) if filterbank is None else filterbank  # (n_fft/2+1, n_mels)
    energies = power @ fb  # (S, F, n_mels)
    log_mel = torch.log(energies.clamp_min(audio.log_floor))
    return log_mel.transpose(1, 2).unsqueeze(1).contiguous()  # (S, 1, n_mels, F)


def waveform_windows(wave: torch.Tensor, centres_s: list[float], seconds: float, sample_rate: int) -> np.ndarray:
    """(S, round(seconds * sr)) float32: the mono audio of `seconds` centred on each time, as the
    features saw it (16 kHz, the clip's timeline; zeros outside the clip)."""
    n = int(round(seconds * sample_rate))
    out = np.zeros((len(centres_s), n), dtype=np.float32)
    samples = wave.numpy()
    for i, c in enumerate(centres_s):
        first = int(round(c * sample_rate)) - n // 2
        lo, hi = max(0, first), min(len(samples), first + n)
        if hi > lo:
            out[i, lo - first:hi - first] = samples[lo:hi]
    return out


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


class _RGB:
    """Frame -> (H, W, 3) uint8 RGB through one reused swscale context: building a new context
    for every frame (what `frame.to_ndarray(format="rgb24")` does) costs ~15x the conversion."""

    def __init__(self):
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        return self.reformatter.reformat(frame, format="rgb24").to_ndarray()


class _NearestFrames:
    """Streams decoded video frames (in presentation order) and keeps, for every target time
    T_k = k * segment + offset, the frame nearest to it (ties: the earlier frame). Only the
    chosen frames are converted to RGB."""

    def __init__(self, segment_s: float, offset_s: float, size: int):
        self.segment, self.offset, self.size = segment_s, offset_s, size
        self.to_rgb = _RGB()
        self.chosen: dict[int, np.ndarray] = {}
        self.next_k = 0
        self.prev = None  # (time, frame)
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.count = 0
        self.times: list[float] = []
        self.shape: tuple[int, int] | None = None

    def _take(self, k: int, frame) -> None:
        self.chosen[k] = centre_square(self.to_rgb(frame), self.size)

    def push(self, t: float, frame) -> None:
        if self.first_time is None:
            self.first_time = t
            self.shape = (frame.height, frame.width)
        self.count += 1
        self.times.append(t)
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
def extract_clip(path: str | Path, protocol, *, skip_frames: bool = True, audio_context_s: float = 0.0,
                 keep_native: bool = False) -> ClipFeatures:
    """Decode one video file and return the features of every covered 1-s segment.

    Segment k is kept when audio and video both cover [k, k+1) s up to
    `protocol.data.coverage_tolerance_s` (encoders round a clip's end to their frame size: AAC
    to 1024 samples); the uncovered audio, at most that much, is zero. A segment whose nearest
    frame lies farther from its centre than half the clip's frame interval (plus 10 ms)
    (a variable-frame-rate clip with a hole) is left out, and `info["dropped_segments"]` says so.

    Video is decoded selectively: the container's packet timestamps say which frame is nearest
    each segment centre before anything is decoded; then frames nobody references (B-frames)
    are skipped by the decoder unless they are one of those, and decoding stops after the last
    one. The result is the same as decoding every frame (`skip_frames=False`, also the fallback
    when a stream has no packet timestamps), only cheaper.
    """
    import av

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
        chunks, audio_t0, audio_rate, video_packets = _demux(container, a_stream, v_stream)  # 1. one pass
        wave, audio_start, audio_end = _mono_wave(chunks, audio_t0, audio_rate, protocol.audio)  # 2. the sound
        clip = _segments_of(wave, audio_start, audio_end, audio_rate, len(chunks[0]) if chunks else 0,
                            video_packets, a_stream, v_stream, protocol, skip_frames)  # 3. the segments
        # 4. the audio each segment's features came from (16 kHz mono), and a longer context
        seg = float(protocol.data.segment_seconds)
        sr = protocol.audio.sample_rate
        clip.waveforms = waveform_windows(wave, [k * seg + seg / 2 for k in clip.starts], seg, sr)
        if audio_context_s > 0:
            clip.context = waveform_windows(wave, [k * seg + seg / 2 for k in clip.starts], audio_context_s, sr)
        if keep_native:  # 5. the same seconds at the clip's own rate (`prepare --audio-rate`)
            clip.native, clip.native_margin = native_windows(chunks, audio_t0, audio_rate, clip.starts, seg)
        return clip
    finally:
        container.close()


def _demux(container, a_stream, v_stream):
    """Decode the audio, keep the video packets for later: (chunks, t0, rate, video packets)."""
    import av

    chunks: list[np.ndarray] = []
    audio_t0: float | None = None
    audio_rate: int | None = None
    video_packets = []
    try:
        for packet in container.demux(a_stream, v_stream):
            if packet.stream.type == "video":
                if packet.size:
                    video_packets.append(packet)
                continue
            for frame in packet.decode():
                if audio_t0 is None:
                    audio_t0 = float(frame.time) if frame.time is not None else 0.0
                    audio_rate = int(frame.sample_rate)
                elif int(frame.sample_rate) != audio_rate:
                    raise ClipError(f"audio sample rate changes mid-stream ({audio_rate} -> {frame.sample_rate} Hz)")
                data = _audio_to_float(frame)  # (C, n)
                if chunks and data.shape[0] != chunks[0].shape[0]:
                    raise ClipError(f"audio channel count changes mid-stream ({chunks[0].shape[0]} -> {data.shape[0]})")
                chunks.append(data)
    except av.FFmpegError as e:
        raise ClipError(f"decode error: {_short(e)}") from None
    if audio_t0 is None or not chunks:
        raise ClipError("audio stream has no decodable samples")
    if not video_packets:
        raise ClipError("video stream has no packets")
    return chunks, audio_t0, audio_rate, video_packets


def _mono_wave(chunks, audio_t0: float, audio_rate: int, audio_spec):
    """The audio on the clip's timeline (sample 0 at t = 0), mono (mean of channels), at the
    protocol's rate: (wave (T,), audio start s, audio end s)."""
    wave = torch.from_numpy(np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32))  # (T,)
    if not torch.isfinite(wave).all():
        raise ClipError("audio contains NaN or infinite samples")
    wave = resample(wave, audio_rate, audio_spec.sample_rate)
    sr = audio_spec.sample_rate
    shift = round(audio_t0 * sr)
    wave = F.pad(wave, (shift, 0)) if shift > 0 else wave[-shift:]
    return wave, max(0.0, audio_t0), wave.numel() / sr


def _segments_of(wave, audio_start: float, audio_end: float, audio_rate: int, channels: int, video_packets,
                 a_stream, v_stream, protocol, skip_frames: bool) -> ClipFeatures:
    """The video timeline (from packet timestamps when every packet has one), the covered
    segments, the frame nearest each segment centre, and the spectrograms."""
    audio_spec, image_spec = protocol.audio, protocol.image
    seg = float(protocol.data.segment_seconds)
    tol = protocol.data.coverage_tolerance_s
    fps = float(v_stream.average_rate) if v_stream.average_rate else None
    times = _packet_times(video_packets) if skip_frames else None
    picker = None
    if times is None:
        picker = _decode_every_frame(video_packets, v_stream, seg, image_spec, fps)
        frame_times = picker.times
    else:
        frame_times = sorted(set(times.values()))
    gap = frame_times[-1] - frame_times[-2] if len(frame_times) > 1 else (1.0 / fps if fps else 0.0)
    video_start, video_end = frame_times[0], frame_times[-1] + gap
    # Segment k is kept when both audio and video cover [k*seg, (k+1)*seg), up to `tol`.
    start_cover, end_cover = max(audio_start, video_start), min(audio_end, video_end)
    starts = [k for k in range(int(math.floor(end_cover / seg + 1e-9)) + 1)
              if k * seg >= start_cover - tol and (k + 1) * seg <= end_cover + tol]
    if not starts:
        raise ClipError(f"no complete {seg:g}-s segment (audio {audio_start:.2f}-{audio_end:.2f} s, "
                        f"video {video_start:.2f}-{video_end:.2f} s)")
    starts, dropped = _near_frames_only(starts, frame_times, seg, image_spec.frame_offset_s)
    if not starts:
        raise ClipError(f"no segment has a video frame near its centre (variable frame rate?): {dropped[:3]}")
    wanted = _nearest(frame_times, [k * seg + image_spec.frame_offset_s for k in starts])  # (S,) frame times
    chosen = None
    if picker is None:
        chosen = _decode_selected(video_packets, v_stream, times, wanted, image_spec.size)
        if chosen is None:  # a frame did not come out as its packet said: decode everything
            picker = _decode_every_frame(video_packets, v_stream, seg, image_spec, fps)
    if picker is not None:
        picker.finish(up_to_k=starts[-1] + 1)
        frames = np.stack([picker.chosen[k] for k in starts])
    else:
        frames = np.stack([chosen[t] for t in wanted])
    spectrograms = log_mel_segments(wave, starts, audio_spec, seg).numpy()
    info = {"audio_codec": a_stream.codec_context.name, "sample_rate": audio_rate, "channels": channels,
            "video_codec": v_stream.codec_context.name, "width": v_stream.codec_context.width,
            "height": v_stream.codec_context.height, "video_frames": len(frame_times),
            "selective_decoding": picker is None}
    if dropped:
        info["dropped_segments"] = dropped
    return ClipFeatures(starts=starts, spectrograms=spectrograms, frames=frames,
                        audio_seconds=audio_end, video_seconds=video_end, info=info)


FRAME_TIME_TOLERANCE_S = 0.01  # timestamp jitter allowed beyond half a frame interval


def _near_frames_only(starts: list[int], frame_times: list[float], seg: float, offset: float):
    """(kept starts, dropped [{start_s, centre_s, nearest_frame_s}]): a segment keeps its frame only
    when the nearest one is within half the clip's (median) frame interval plus
    FRAME_TIME_TOLERANCE_S of its centre."""
    if len(frame_times) < 2:
        return starts, []
    limit = 0.5 * float(np.median(np.diff(frame_times))) + FRAME_TIME_TOLERANCE_S
    nearest = _nearest(frame_times, [k * seg + offset for k in starts])
    kept, dropped = [], []
    for k, t in zip(starts, nearest):
        centre = k * seg + offset
        if abs(t - centre) <= limit:
            kept.append(k)
        else:
            dropped.append({"start_s": k * seg, "centre_s": round(centre, 4), "nearest_frame_s": round(float(t), 4)})
    return kept, dropped


def _packet_times(packets) -> dict[int, float] | None:
    """Presentation time of every displayed video packet, keyed by its pts; None when a packet
    has no pts or two share one (then only decoding tells the frame times)."""
    times: dict[int, float] = {}
    for p in packets:
        if p.pts is None or p.time_base is None:
            return None
        if p.is_discard:
            continue  # decoded for reference only, never shown (edit lists)
        if p.pts in times:
            return None
        times[p.pts] = float(p.pts * p.time_base)
    return times or None


def _nearest(times: list[float], targets: list[float]) -> list[float]:
    """For every target, the nearest of the sorted `times` (ties: the earlier one)."""
    t = np.asarray(times)
    out = []
    for target in targets:
        i = int(np.searchsorted(t, target, side="left"))
        if i == 0:
            out.append(times[0])
        elif i == len(t):
            out.append(times[-1])
        else:
            out.append(times[i - 1] if target - t[i - 1] <= t[i] - target else times[i])
    return out


def _decode_selected(packets, stream, times: dict[int, float], wanted: list[float], size: int):
    """Decode so that the frames shown at `wanted` times come out; {time: (size, size, 3)}.

    Non-reference frames are discarded by the decoder (AVDISCARD_NONREF) except the wanted ones:
    nothing depends on them, so every other frame decodes exactly as in a full decode. Returns
    None if a wanted frame does not come out (the caller then decodes everything)."""
    import av

    wanted_set = set(wanted)
    wanted_pts = {pts for pts, t in times.items() if t in wanted_set}
    remaining = set(wanted_pts)
    out: dict[float, np.ndarray] = {}
    cc = stream.codec_context
    to_rgb = _RGB()

    def take(frames):
        for frame in frames:
            if frame.pts in remaining:
                out[times[frame.pts]] = centre_square(to_rgb(frame), size)
                remaining.discard(frame.pts)

    try:
        for packet in packets:
            if not remaining:
                break  # every wanted frame is out: the rest of the clip need not be decoded
            cc.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
            take(cc.decode(packet))
        cc.skip_frame = "DEFAULT"
        if remaining:
            take(cc.decode(None))  # drain the frames the decoder still holds (reordering delay)
    except av.FFmpegError:
        return None
    finally:
        cc.skip_frame = "DEFAULT"
    return out if not remaining else None


def _decode_every_frame(packets, stream, seg: float, image_spec, fps: float | None) -> "_NearestFrames":
    """Decode every video frame from a fresh decoder state; frame times from the frames."""
    import av

    cc = stream.codec_context
    cc.flush_buffers()
    cc.skip_frame = "DEFAULT"
    picker = _NearestFrames(seg, image_spec.frame_offset_s, image_spec.size)

    def push(frames):
        for frame in frames:
            if frame.time is not None and math.isfinite(float(frame.time)):
                t = float(frame.time)
            elif fps:  # no timestamp (some raw/AVI streams, frames flushed at the end): count frames
                t = picker.count / fps
            else:
                raise ClipError("video frames have no timestamps and the stream no frame rate")
            if picker.last_time is not None and t <= picker.last_time:
                continue  # a repeated or out-of-order timestamp: keep the first
            picker.push(t, frame)

    try:
        for packet in packets:
            push(cc.decode(packet))
        push(cc.decode(None))
    except av.FFmpegError as e:
        raise ClipError(f"video decode error: {_short(e)}") from None
    if picker.first_time is None:
        raise ClipError("video stream has no decodable frames")
    return picker


def _short(e: Exception) -> str:
    """An error as one short line, without the file name PyAV appends (skipped.csv has it)."""
    text = getattr(e, "strerror", None) or str(e)
    return " ".join(str(text).split())[:200]
