"""Near-duplicate segments of different videos: the same content uploaded under another id.

Two segments are near-duplicates when BOTH
  - the 64-bit perceptual hashes of their centre frames differ in at most
    `split.phash_max_distance` bits, and
  - their spectrogram fingerprints are within a relative distance `split.spectrogram_max_distance`.
Two videos with a near-duplicate segment pair are one group (`prepare` keeps a group in one
split; `audit` reports pairs that cross splits).

Frame hash (a DCT "pHash"): grey (BT.601 luma) -> 32x32 area average -> 2-D DCT-II -> the 8x8
lowest frequencies without the DC row and column -> one bit per coefficient: above their median.
It survives re-encoding, rescaling and brightness changes; it does not survive crops or flips.

Spectrogram fingerprint: the log-Mel below 4 kHz averaged over blocks of bands x 10 frames
(24 x 10; 4 bands per block for 128 bands at 16 kHz), measured from the log floor (so digital
silence is 0 and every value is >= 0). The top of the spectrum is left out because codecs at
low bitrates low-pass it (AAC at 48 kb/s cuts above ~7 kHz): a re-upload differs there by
orders of magnitude while it matches everywhere below. Distance: ||a - b|| / max(||a||, ||b||).
On the synthetic world a re-encode at another size and bitrate is within 0.016 of its original
while distinct scenes whose frame hashes are close stay at 0.026 or more, hence the default
0.02. The price: a gain change of more than about 1.5 dB (0.02) hides a re-upload from the
spectrogram test; both tests must pass, so the frame hash alone never groups two videos.

Segments that carry no identity are left out of the search: flat frames (grey standard deviation
below `MIN_FRAME_STD`: black intros, title cards) and near-silent audio (mean fingerprint below
`MIN_SOUND_LEVEL`). Otherwise every black, silent intro would be a "duplicate" of every other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2i_bench.fileio import progress, release_pages

MIN_FRAME_STD = 3.0      # grey levels (0-255)
MIN_SOUND_LEVEL = 1.0    # mean natural-log units above the floor (1e-10)
HASH_SIDE = 32
POOL_BANDS, POOL_STEPS = 24, 10
FINGERPRINT_MAX_HZ = 4000.0  # bands centred above this are left out (codec low-pass)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m  # orthonormal DCT-II: coefficients = m @ x


def _area_resize(grey: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W) -> (N, side, side): mean over the pixels each output cell covers."""
    import torch
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(torch.from_numpy(grey)[:, None], side)[:, 0].numpy()


def frame_grey(frames: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, S, S) float64 luma."""
    f = np.asarray(frames, dtype=np.float64)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def frame_hashes(frames: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N,) uint64 perceptual hashes."""
    dct = _dct_matrix(HASH_SIDE)
    weights = (np.uint64(1) << np.arange(64, dtype=np.uint64))
    out = np.zeros(len(frames), np.uint64)
    for lo in range(0, len(frames), chunk):
        small = _area_resize(frame_grey(frames[lo:lo + chunk]), HASH_SIDE)  # (n, 32, 32)
        coeffs = dct @ small @ dct.T  # (n, 32, 32)
        low = coeffs[:, 1:9, 1:9].reshape(len(small), 64)  # no DC row/column: brightness-free
        bits = low > np.median(low, axis=1, keepdims=True)
        out[lo:lo + chunk] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
        release_pages(frames)  # a memory-mapped input: read once, not kept resident
    return out


def frame_std(frames: np.ndarray, chunk: int = 512) -> np.ndarray:
    out = np.zeros(len(frames))
    for lo in range(0, len(frames), chunk):
        part = frame_grey(frames[lo:lo + chunk])
        out[lo:lo + len(part)] = part.reshape(len(part), -1).std(axis=1)
        release_pages(frames)
    return out


def fingerprint_bands(audio) -> int:
    """How many of the lowest Mel bands are centred at or below FINGERPRINT_MAX_HZ (HTK scale)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = np.linspace(mel(audio.f_min), mel(audio.f_max), audio.n_mels + 2)
    centres_hz = 700.0 * (10.0 ** (edges[1:-1] / 2595.0) - 1.0)
    return max(POOL_BANDS, int((centres_hz <= FINGERPRINT_MAX_HZ).sum()))


def spectrogram_fingerprints(spectrograms: np.ndarray, audio, chunk: int = 1024) -> np.ndarray:
    """(N, 1, M, F) log values -> (N, 24 * 10) float32 block means below 4 kHz, floor-shifted to >= 0."""
    n, _, m, f = spectrograms.shape
    bands = min(m, fingerprint_bands(audio))
    band_edges = np.linspace(0, bands, POOL_BANDS + 1).round().astype(int)
    step_edges = np.linspace(0, f, POOL_STEPS + 1).round().astype(int)
    out = np.zeros((n, POOL_BANDS * POOL_STEPS), np.float32)
    floor = np.log(audio.log_floor)
    for lo in range(0, n, chunk):
        x = np.asarray(spectrograms[lo:lo + chunk, 0, :bands], dtype=np.float32) - floor  # (n, bands, F)
        x = np.add.reduceat(x, band_edges[:-1], axis=1) / np.diff(band_edges)[None, :, None]
        x = np.add.reduceat(x, step_edges[:-1], axis=2) / np.diff(step_edges)[None, None, :]
        out[lo:lo + chunk] = np.maximum(x, 0).reshape(len(x), -1)
        release_pages(spectrograms)
    return out


def spectrogram_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise relative distance of fingerprints: ||a - b|| / max(||a||, ||b||)."""
    num = np.linalg.norm(a - b, axis=-1)
    den = np.maximum(np.maximum(np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)), 1e-12)
    return num / den


@dataclass
class Fingerprints:
    hashes: np.ndarray        # (N,) uint64
    spectra: np.ndarray       # (N, 240) float32
    usable: np.ndarray        # (N,) bool: carries identity (not a flat frame, not silence)


def fingerprints(spectrograms: np.ndarray, frames: np.ndarray, audio) -> Fingerprints:
    """audio: the protocol's AudioSpec (Mel layout and log floor of the spectrograms)."""
    spectra = spectrogram_fingerprints(spectrograms, audio)
    usable = (frame_std(frames) >= MIN_FRAME_STD) & (spectra.mean(axis=1) >= MIN_SOUND_LEVEL)
    return Fingerprints(frame_hashes(frames), spectra, usable)


CANDIDATES_PER_CHECK = 65_536  # hash-close pairs whose spectrograms are compared at once


def near_duplicate_pairs(fp: Fingerprints, video_codes: np.ndarray, phash_max_distance: int,
                         spectrogram_max_distance: float, block_elements: int = 4_000_000) -> dict[str, np.ndarray]:
    """All segment pairs (i < j) of different videos that are near-duplicates.

    video_codes: (N,) int, one code per video (the same id in two classes is one video).
    Returns {"i", "j", "phash_distance", "spectrogram_distance"} arrays. The hash search is a
    blocked all-pairs XOR + popcount over the upper triangle (quadratic, but about 1e9 pairs per
    second: see benchmarks/bench_prepare.py for the VEGAS-scale figure); only pairs within the
    hash threshold get the spectrogram check.
    """
    n = len(fp.hashes)
    idx = np.flatnonzero(fp.usable)
    hashes, codes = fp.hashes[idx], np.asarray(video_codes)[idx]
    found_i, found_j, found_h, found_s = [], [], [], []

    rows = max(1, block_elements // max(1, len(idx)))
    for lo in progress(range(0, len(idx), rows), desc="near-duplicate search", unit="block"):
        block = hashes[lo:lo + rows]  # (B,)
        rest = hashes[lo:]  # pairs (a, b) with b >= a only: the upper triangle
        dist = np.bitwise_count(block[:, None] ^ rest[None, :])  # (B, n_usable - lo)
        bi, bj = np.nonzero(dist <= phash_max_distance)
        a, b = bi + lo, bj + lo
        keep = (b > a) & (codes[a] != codes[b])
        ci, cj, ch = idx[a[keep]], idx[b[keep]], dist[bi[keep], bj[keep]]
        # the spectrogram check per block, in bounded pieces: hash-close candidates can be many
        # (similar scenes), and gathering both fingerprints of every one at once would grow
        # memory with the square of the segments
        for k in range(0, len(ci), CANDIDATES_PER_CHECK):
            pi, pj = ci[k:k + CANDIDATES_PER_CHECK], cj[k:k + CANDIDATES_PER_CHECK]
            sd = spectrogram_distance(fp.spectra[pi], fp.spectra[pj])
            ok = sd <= spectrogram_max_distance
            found_i.append(pi[ok])
            found_j.append(pj[ok])
            found_h.append(ch[k:k + CANDIDATES_PER_CHECK][ok])
            found_s.append(sd[ok])
    assert n == len(fp.usable)
    if not found_i:
        return {"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "phash_distance": np.zeros(0, np.int64),
                "spectrogram_distance": np.zeros(0)}
    return {"i": np.concatenate(found_i), "j": np.concatenate(found_j),
            "phash_distance": np.concatenate(found_h).astype(np.int64), "spectrogram_distance": np.concatenate(found_s)}


def video_groups(video_ids: list[str], pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Union-find: video id -> group key (the smallest id of its connected component)."""
    parent = {v: v for v in video_ids}

    def find(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {v: find(v) for v in video_ids}
