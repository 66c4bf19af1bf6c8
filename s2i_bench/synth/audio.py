"""Sounds of the synthetic world: a scene -> stereo samples.

    render_audio(scene, sample_rate=22050, channels=2) -> (channels, n) float32 in [-1, 1]

The sound carries the scene's `tone` (pitch or band centre, `attributes.tone_hz`) and `size`
(RMS level of the mono mix, `attributes.loudness_db`); event times (cries, barks, explosions,
clacks) come from `scenes.events`, the same ones the picture animates. Every noise is drawn
from the scene's seed, so the same scene gives the same samples. The channels differ only by a
linear pan (left = (1 - pan) m, right = (1 + pan) m) so their mean, the down-mix SPEC section 3
prescribes, is exactly the mono sound m whatever the pan.
"""

from __future__ import annotations

import math

import numpy as np

from s2i_bench.synth.scenes import envelope, events, scene_rng

BACKGROUND = 0.03  # room / wind noise under every sound, relative to its RMS: no digital silence


def _fast_len(n: int) -> int:
    """The smallest power of two >= n: FFTs of awkward lengths (large prime factors) are slow."""
    return 1 << max(0, int(n - 1).bit_length())


def _band_gain(m: int, sr: int, centre: float, octaves: float) -> np.ndarray:
    f = np.fft.rfftfreq(m, 1.0 / sr)
    return np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / centre) / octaves) ** 2)


def _band_noise(rng: np.random.Generator, n: int, sr: int, centre: float, octaves: float) -> np.ndarray:
    """White noise shaped by a Gaussian band in log-frequency (std `octaves`), unit RMS."""
    # white noise has independent complex Gaussian Fourier coefficients: draw them directly,
    # shape them, and cut a longer (power-of-two) stretch down to n: still stationary noise
    m = _fast_len(n)
    k = m // 2 + 1
    spectrum = (rng.standard_normal(k) + 1j * rng.standard_normal(k)) * _band_gain(m, sr, centre, octaves)
    out = np.fft.irfft(spectrum, m)[:n]
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _filter_band(x: np.ndarray, sr: int, centre: float, octaves: float) -> np.ndarray:
    """Zero-phase band filter (Gaussian in log-frequency) by FFT, zero-padded: no wrap-around."""
    m = _fast_len(len(x) + sr // 10)
    return np.fft.irfft(np.fft.rfft(x, m) * _band_gain(m, sr, centre, octaves), m)[: len(x)]


def _harmonics(f0: np.ndarray, sr: int, weights) -> np.ndarray:
    """Sum of harmonics k * f0(t) with amplitudes weights(k); harmonics above 0.45 sr dropped."""
    phase = 2.0 * math.pi * np.cumsum(f0) / sr
    unit = np.exp(1j * phase)  # harmonic k is the imaginary part of unit ** k: one sine, then products
    power = unit.copy()
    out = np.zeros_like(f0)
    top = float(f0.max())
    for k in range(1, 24):
        if k * top > 0.45 * sr:
            break
        out += weights(k) * power.imag
        power *= unit
    return out


def _cry(scene, t, sr, rng):
    f0_mean = scene["attributes"]["tone_hz"]
    env = envelope(scene, t)
    # within each breath the pitch rises and falls a little; vibrato on top
    contour = np.ones_like(t)
    for start, end in events(scene):
        inside = (t >= start) & (t < end)
        contour[inside] = 1.0 + 0.06 * np.sin(math.pi * (t[inside] - start) / (end - start))
    vib_rate = rng.uniform(5.0, 7.0)
    f0 = f0_mean * contour * (1.0 + 0.025 * np.sin(2 * math.pi * vib_rate * t))

    def formant(k):
        return k**-0.7 * (1.0 + 1.5 * math.exp(-(((k * f0_mean) - 1200.0) / 500.0) ** 2))

    voice = _harmonics(f0, sr, formant)
    breath = 0.15 * _band_noise(rng, len(t), sr, 2500.0, 1.0)
    return env * (voice / np.sqrt(np.mean(voice**2) + 1e-12) + breath)


def _barks(scene, t, sr, rng):
    f0_mean = scene["attributes"]["tone_hz"]
    env = envelope(scene, t)
    glide = np.ones_like(t)
    for start, end in events(scene):
        inside = (t >= start) & (t < end + 0.1)
        glide[inside] = 1.15 - 0.3 * np.clip((t[inside] - start) / (end - start), 0, 1)
    voice = _harmonics(f0_mean * glide, sr, lambda k: k**-0.8)
    voice /= np.sqrt(np.mean(voice**2) + 1e-12)
    rasp = 0.5 * _band_noise(rng, len(t), sr, 2.5 * f0_mean, 0.6)
    return env * (voice + rasp)


def _rail(scene, t, sr, rng):
    n = len(t)
    rumble = _band_noise(rng, n, sr, scene["attributes"]["tone_hz"], 0.45)
    rumble *= 1.0 + 0.15 * np.sin(2 * math.pi * rng.uniform(0.3, 0.8) * t)
    clicks = np.zeros(n)
    for start, _ in events(scene):
        i = int(round(start * sr))
        if 0 <= i < n:
            clicks[i] += 1.0
    # each clack: a sharp decaying burst
    tail = np.arange(int(0.02 * sr)) / sr
    burst = rng.standard_normal(len(tail)) * np.exp(-tail / 0.004)
    clacks = np.convolve(clicks, burst)[:n]
    return rumble + 2.0 * clacks / (np.sqrt(np.mean(burst**2)) * math.sqrt(sr * 0.004) + 1e-12)


def _fireworks(scene, t, sr, rng):
    n = len(t)
    env = envelope(scene, t)  # explosion envelopes
    boom = _band_noise(rng, n, sr, 90.0, 0.8) * env**1.5
    # crackle: sparse clicks, dense right after each explosion, thin in between, band-passed
    rate = 60.0 + 900.0 * env
    clicks = (rng.uniform(size=n) < rate / sr) * rng.standard_normal(n)
    crackle = _filter_band(clicks, sr, scene["attributes"]["tone_hz"], 0.35)
    crackle /= np.sqrt(np.mean(crackle**2)) + 1e-12
    return 1.2 * boom + crackle


def _water(scene, t, sr, rng):
    n = len(t)
    centre = scene["attributes"]["tone_hz"]
    flow = _band_noise(rng, n, sr, centre, 0.5) + 0.35 * _band_noise(rng, n, sr, 2.0 * centre, 0.4)
    g = scene["nuisance"]["gurgle_rate"]
    am = 1.0 + 0.35 * np.sin(2 * math.pi * g * t + rng.uniform(0, 6.3)) + 0.2 * np.sin(2 * math.pi * 1.7 * g * t)
    return flow * am


_SOUND = {"baby_cry": _cry, "dog": _barks, "rail_transport": _rail, "fireworks": _fireworks,
          "water_flowing": _water}


def render_audio(scene: dict, sample_rate: int = 22050, channels: int = 2, duration: float | None = None) -> np.ndarray:
    """The scene's sound, (channels, n) float32 in [-1, 1], n = round(duration * sample_rate)."""
    duration = float(scene["duration_s"]) if duration is None else float(duration)
    n = int(round(duration * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    rng = scene_rng(scene, 2)
    mono = _SOUND[scene["class"]](scene, t, sample_rate, rng)
    mono = mono / (np.sqrt(np.mean(mono**2)) + 1e-12)
    mono = mono + BACKGROUND * _band_noise(rng, n, sample_rate, 400.0, 2.0)
    mono *= 10.0 ** (scene["attributes"]["loudness_db"] / 20.0) / np.sqrt(np.mean(mono**2))
    if channels == 1:
        out = mono[None]
    elif channels == 2:
        pan = float(scene["nuisance"].get("pan", 0.0))
        out = np.stack([(1.0 - pan) * mono, (1.0 + pan) * mono])
    else:
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    return np.clip(out, -1.0, 1.0).astype(np.float32)
