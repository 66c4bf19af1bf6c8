"""Audio at an encoder's rate: each segment's source audio kept beside the 16 kHz copy.

The store's 16 kHz audio is band-limited to 8 kHz; the encoders the field scores with listen
higher (CLAP at 48 kHz, AudioCLIP and SonicDiffusion's Wav2CLIP at 44.1 kHz). With
`prepare --audio-rate native` (or a chosen rate such as 44100 or 48000) the store also keeps

    waveforms_hr.npy   (N, R * segment) int16: each segment's own second at rate R, mono (mean
                       of channels), on the clip's timeline like the 16 kHz copy

R is the chosen rate, or with `native` the sources' own rate (the highest of them when they
differ: no clip is down-sampled; clips recorded lower are resampled up, which adds nothing
above their own Nyquist frequency, and store.json lists the native rates).

How: the decoding worker cuts each segment's window from the clip's mono audio at its native
rate with MARGIN_S more on both sides (`native_windows`, cached per video); once every clip's
rate is known, `to_store_rate` resamples each window to R (torchaudio's windowed sinc) and drops
the margins, so the window's edges are resampled from real neighbouring samples, not zeros.
The first sample is aligned to the 16 kHz copy's to within half a sample at R (exactly when
the margin is a whole number of samples at both rates, as for 44.1 <-> 48 kHz).
`export-sounds --sample-rate R` writes it (`resample_int16` for a lower rate than stored).
"""

from __future__ import annotations

import math

import numpy as np

from s2i_bench.errors import UserError

NATIVE = "native"
MARGIN_S = 0.01  # resampled context on each side of a window (the sinc kernel spans a few samples)
MIN_RATE, MAX_RATE = 8000, 192_000
MAX_REDUCED_RATE = 4800  # as features.MAX_REDUCED_RATE: torchaudio's kernel grows with the reduced rates
SCALE = 32767  # int16 = round(clip(x, -1, 1) * 32767), the store's waveform encoding


def parse_audio_rate(value) -> int | str | None:
    """`--audio-rate`: None or "" (no high-rate copy), "native", or a rate in Hz (8000..192000)."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text == NATIVE:
        return NATIVE
    try:
        rate = int(text)
    except ValueError:
        rate = None
    if rate is None or not MIN_RATE <= rate <= MAX_RATE:
        raise UserError(f"--audio-rate {value!r}: give native or a sample rate in Hz from {MIN_RATE} to {MAX_RATE} "
                        f"(e.g. 44100 or 48000)")
    return rate


def margin_samples(rate: int) -> int:
    return int(math.ceil(MARGIN_S * rate))


def native_windows(chunks: list[np.ndarray], audio_t0: float, rate: int, starts: list[int],
                   segment_s: float) -> tuple[np.ndarray, int]:
    """(windows (S, round(segment * rate) + 2 m) float32, m): the mono audio of each segment at the
    clip's own rate with m margin samples on both sides, sample 0 at t = 0 (audio that starts
    late is preceded by zeros, audio before t = 0 dropped), zeros outside the clip.
    chunks: the decoded frames, (channels, n) float32 each, as `features` decodes them."""
    wave = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)  # (T,) at `rate`
    shift = round(audio_t0 * rate)
    wave = np.pad(wave, (shift, 0)) if shift > 0 else wave[-shift:]
    m = margin_samples(rate)
    n = int(round(segment_s * rate))
    out = np.zeros((len(starts), n + 2 * m), dtype=np.float32)
    for i, k in enumerate(starts):
        centre = k * segment_s + segment_s / 2
        first = int(round(centre * rate)) - n // 2 - m  # as features.waveform_windows, m earlier
        lo, hi = max(0, first), min(len(wave), first + n + 2 * m)
        if hi > lo:
            out[i, lo - first:hi - first] = wave[lo:hi]
    return out, m


def store_rate(mode, native_rates) -> int:
    """The rate of `waveforms_hr.npy`: the chosen one, or the highest native rate."""
    if mode == NATIVE:
        rates = [int(r) for r in native_rates]
        if not rates:
            raise UserError("--audio-rate native: no clip's audio rate is known")
        return max(rates)
    return int(mode)


def resamplable(from_rate: int, to_rate: int) -> bool:
    g = math.gcd(int(from_rate), int(to_rate))
    return from_rate // g <= MAX_REDUCED_RATE and to_rate // g <= MAX_REDUCED_RATE


def _resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 (..., T) -> (..., T') with torchaudio's default windowed-sinc resampler."""
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(from_rate),
                       int(to_rate)).numpy()


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * SCALE).astype(np.int16)


def to_store_rate(windows: np.ndarray, native_rate: int, margin: int, rate: int, segment_s: float,
                  where: str) -> np.ndarray:
    """(S, n + 2 m) int16 windows at `native_rate` -> (S, round(segment * rate)) int16 at `rate`."""
    n_out = int(round(segment_s * rate))
    n_in = windows.shape[1] - 2 * margin
    if n_in != int(round(segment_s * native_rate)) or margin < 0:
        raise UserError(f"{where}: cached native audio of width {windows.shape[1]} does not fit {native_rate} Hz; "
                        f"delete the .work folder and rerun")
    if native_rate == rate:
        return np.ascontiguousarray(windows[:, margin:margin + n_out])
    if not resamplable(native_rate, rate):
        raise UserError(f"{where}: its audio at {native_rate} Hz cannot be resampled to {rate} Hz (no small ratio); "
                        f"choose another --audio-rate, or leave the clip out")
    x = _resample(windows.astype(np.float32) / SCALE, native_rate, rate)  # (S, ~ (n + 2m) * rate / native)
    offset = int(round(margin * rate / native_rate))  # the margin, in samples at the new rate
    return to_int16(x[:, offset:offset + n_out])


def resample_int16(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """int16 (..., T) at `from_rate` -> int16 (..., round(T * to_rate / from_rate)) at `to_rate`."""
    if from_rate == to_rate:
        return np.asarray(wave, dtype=np.int16)
    if not resamplable(from_rate, to_rate):
        raise UserError(f"audio at {from_rate} Hz cannot be resampled to {to_rate} Hz (no small ratio); choose "
                        f"another --sample-rate")
    out = _resample(np.asarray(wave, dtype=np.float32) / SCALE, from_rate, to_rate)
    n = int(round(np.shape(wave)[-1] * to_rate / from_rate))
    return to_int16(out[..., :n])


def audio_at(copies: dict[int, np.ndarray], rows, rate: int, where: str) -> np.ndarray:
    """(len(rows), rate * segment) int16: the rows' audio at `rate`, from the store's copies
    ({rate: (N, T) int16}): exact where one is at that rate, else resampled down from the lowest
    copy above it; refused when every copy is below it (that content was never kept)."""
    rows = np.asarray(rows)
    if rate in copies:
        return np.asarray(copies[rate][rows], dtype=np.int16)
    higher = sorted(r for r in copies if r > rate)
    if not higher:
        kept = ", ".join(f"{r} Hz" for r in sorted(copies))
        raise UserError(f"{where}: keeps audio at {kept}, not {rate} Hz; rebuild it with "
                        f"`s2i-bench prepare ... --audio-rate {rate}` to keep the sources' audio up to that rate")
    return resample_int16(np.asarray(copies[higher[0]][rows]), higher[0], rate)
