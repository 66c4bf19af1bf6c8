"""Test helpers (not part of the installed package): small clips written with PyAV (a known
sound and frames that say their own index, or a seeded "scene"). The fake store and the other
fakes live in fakes.py.

Used by the tests and by the benchmarks (run as `python -m benchmarks.<name>` from the
repository root, they import `tests.helpers`): `bench_prepare` writes VEGAS-like clips
(640x360 H.264 at 30 fps, 44.1 kHz stereo AAC).

`write_clip` returns the audio exactly as a lossless codec will decode it (int16 codecs round
the samples), so a test can compare decoded features with a reference computed from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def frame_level(index: int) -> int:
    """Grey level that frame `index` is painted with (steps of 20, so H.264 cannot blur two
    neighbouring frames into each other)."""
    return 20 + (20 * index) % 220


def tone(seconds: float, sample_rate: int, channels: int = 1, freq_hz: float = 440.0, amplitude: float = 0.5,
         noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """(channels, n) float32: a sine plus a little seeded noise (so no Mel band is silent);
    channel c is scaled by 1 / (c + 1) so that the mono mix is not any single channel."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    base = amplitude * np.sin(2 * np.pi * freq_hz * t)
    out = np.stack([base / (c + 1) + noise * rng.standard_normal(n) for c in range(channels)])
    return np.clip(out, -1, 1).astype(np.float32)


def write_clip(path: str | Path, *, audio: np.ndarray | None, sample_rate: int = 16000, seconds: float = 2.0,
               width: int = 64, height: int = 48, fps: float = 10, video_codec: str = "libx264",
               audio_codec: str = "flac", pix_fmt: str = "yuv420p", video: bool = True,
               frame_painter=None, video_options: dict | None = None) -> np.ndarray | None:
    """Write a clip; returns the audio as a lossless decoder gives it back, (channels, n) float32.

    audio: (channels, n) float in [-1, 1], or None for a clip without an audio stream.
    frame_painter(index) -> (height, width, 3) uint8; default: a flat grey `frame_level(index)`
    with a white square in the top-left corner (so centre crops are checkable).
    video_options: encoder options, e.g. {"preset": "veryfast"} for libx264.
    """
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    v_stream = a_stream = None
    if video:
        v_stream = container.add_stream(video_codec, rate=Fraction(fps).limit_denominator(1001))
        v_stream.width, v_stream.height, v_stream.pix_fmt = width, height, pix_fmt
        if video_options:
            v_stream.options = dict(video_options)
    decoded = None
    if audio is not None:
        channels = audio.shape[0]
        layout = {1: "mono", 2: "stereo", 3: "2.1", 6: "5.1"}[channels]
        a_stream = container.add_stream(audio_codec, rate=sample_rate)
        a_stream.layout = layout
        fmt = a_stream.codec_context.codec.audio_formats[0].name
        a_stream.format = fmt
        if fmt.startswith("s16"):
            ints = np.round(np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16)  # (C, n)
            decoded = ints.astype(np.float32) / 32768.0
        elif fmt.startswith("s32"):
            ints = np.round(np.clip(audio.astype(np.float64), -1, 1 - 2 ** -31) * 2 ** 31).astype(np.int32)
            decoded = (ints.astype(np.float64) / 2 ** 31).astype(np.float32)
        else:
            ints = audio.astype(np.float32)
            decoded = ints
        planar = fmt.endswith("p")

    def paint(i):
        if frame_painter is not None:
            return frame_painter(i)
        img = np.full((height, width, 3), frame_level(i), np.uint8)
        img[: max(1, height // 4), : max(1, width // 4)] = 255
        return img

    n_video = int(round(seconds * fps)) if video else 0
    for i in range(n_video):
        frame = av.VideoFrame.from_ndarray(paint(i), format="rgb24")
        frame.pts = i  # in the encoder's time base, 1 / fps
        for packet in v_stream.encode(frame):
            container.mux(packet)
    if a_stream is not None:
        n = ints.shape[1]
        step = a_stream.codec_context.frame_size or 1024
        for start in range(0, n, step):
            chunk = ints[:, start:start + step]
            array = chunk if planar else chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=fmt, layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in a_stream.encode(frame):
                container.mux(packet)
        for packet in a_stream.encode(None):
            container.mux(packet)
    if v_stream is not None:
        for packet in v_stream.encode(None):
            container.mux(packet)
    container.close()
    return decoded


# -- little "scenes": a textured frame and a modulated tone, both fixed by a seed -------------
def scene_painter(seed: int, width: int = 64, height: int = 48):
    """frame_painter for `write_clip`: three coloured sinusoidal gratings that drift slowly, so
    every seed gives a different picture (distinct perceptual hashes) and frames move a little."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    gratings = [(rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi), rng.uniform(30, 90))
                for _ in range(3)]
    base = rng.uniform(60, 190, size=3)

    def paint(index: int) -> np.ndarray:
        img = np.zeros((height, width, 3))
        for c, (fx, fy, phase, amp) in enumerate(gratings):
            img[..., c] = base[c] + amp * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase + 0.05 * index)
        return np.clip(img, 0, 255).astype(np.uint8)

    return paint


def scene_sound(seed: int, seconds: float, sample_rate: int = 16000, channels: int = 1) -> np.ndarray:
    """(channels, n) float32: a tone (200-3000 Hz) with a slow tremolo and seeded noise."""
    rng = np.random.default_rng(seed + 1_000_003)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0, rate, noise = rng.uniform(200, 3000), rng.uniform(1, 6), rng.uniform(0.005, 0.05)
    x = 0.4 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * rate * t))
    out = np.stack([x + noise * rng.standard_normal(n) for _ in range(channels)])
    return np.clip(out, -1, 1).astype(np.float32)


def write_scene_clip(path: str | Path, seed: int, seconds: float, *, audio_codec: str = "flac",
                     sample_rate: int = 16000, channels: int = 1, width: int = 64, height: int = 48,
                     fps: float = 10, video_codec: str = "libx264", video_options: dict | None = None) -> None:
    """A clip of scene `seed`; the same seed written with another codec is a "re-upload"."""
    write_clip(path, audio=scene_sound(seed, seconds, sample_rate, channels), sample_rate=sample_rate,
               seconds=seconds, width=width, height=height, fps=fps, audio_codec=audio_codec,
               video_codec=video_codec, frame_painter=scene_painter(seed, width, height),
               video_options=video_options)
