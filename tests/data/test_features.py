"""Features (SPEC section 3) against an independent numpy computation, plus decoding of every
container the protocol lists, framing, nearest-frame choice, centre crop and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import frame_level, tone, write_clip
from s2i_bench.data.features import (ClipError, _NearestFrames, centre_square, extract_clip, log_mel_segments,
                                mel_filterbank, resample)
from s2i_bench.protocol import load_protocol

PROTO = load_protocol("tiny")
AUDIO = PROTO.audio




# -- the independent reference: SPEC section 3 written out in float64 numpy, loop by loop ------
def _htk_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _htk_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def numpy_filterbank(sr=16000, n_fft=1024, n_mels=128, f_min=0.0, f_max=8000.0) -> np.ndarray:
    """(n_fft/2+1, n_mels): triangle m rises from edge m to peak m+1 and falls to edge m+2,
    edges equally spaced on the HTK Mel scale, evaluated at the FFT bin frequencies, height 1."""
    bin_hz = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = _htk_hz(np.linspace(_htk_mel(f_min), _htk_mel(f_max), n_mels + 2))
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for b, f in enumerate(bin_hz):
            if lo < f <= mid:
                fb[b, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                fb[b, m] = (hi - f) / (hi - mid)
    return fb


def numpy_log_mel(mono16k: np.ndarray, start_s: int) -> np.ndarray:
    """(128, 100): frame i is the 400 samples centred at start + 5 ms + 10 i ms (zeros outside
    the signal), periodic Hamming window, 1024-point FFT of the frame padded at its end,
    |X|^2, HTK triangles, natural log floored at 1e-10."""
    sr = 16000
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic: divide by N, not N-1
    fb = numpy_filterbank()
    out = np.zeros((128, 100))
    for i in range(100):
        centre_s = start_s + 0.005 + 0.010 * i
        first = int(round(centre_s * sr)) - 200  # 400 samples centred on the centre time
        frame = np.zeros(400)
        for j in range(400):
            if 0 <= first + j < len(mono16k):
                frame[j] = mono16k[first + j]
        padded = np.concatenate([frame * window, np.zeros(1024 - 400)])
        power = np.abs(np.fft.rfft(padded)) ** 2
        out[:, i] = np.log(np.maximum(power @ fb, 1e-10))
    return out


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flac_clip(tmp_path_factory):
    """A lossless clip: 16 kHz stereo FLAC in .mkv, 3.25 s, tone + noise; returns (path, samples)."""
    path = tmp_path_factory.mktemp("clips") / "flacclip001.mkv"
    samples = write_clip(path, audio=tone(3.25, 16000, channels=2, freq_hz=440.0, seed=1), sample_rate=16000,
                         seconds=3.25, fps=10, audio_codec="flac")
    return path, samples


def test_filterbank_matches_numpy_and_no_filter_is_empty():
    fb = mel_filterbank(AUDIO).double().numpy()
    ref = numpy_filterbank()
    assert fb.shape == (513, 128)
    np.testing.assert_allclose(fb, ref, rtol=0, atol=5e-5)  # torchaudio computes in float32
    assert (fb.sum(axis=0) > 0).all(), "a Mel filter is all zero"


def test_log_mel_of_lossless_clip_matches_numpy_reference(flac_clip):
    path, samples = flac_clip
    clip = extract_clip(path, PROTO)
    assert clip.starts == [0, 1, 2]  # 3.25 s: the partial 4th second is not a segment
    mono = samples.astype(np.float64).mean(axis=0)
    reference = np.stack([numpy_log_mel(mono, k) for k in clip.starts])[:, None]  # (3, 1, 128, 100)
    stored = clip.spectrograms.astype(np.float16).astype(np.float64)  # what the store keeps
    relative = np.abs(stored - reference) / np.abs(reference)
    assert relative.max() <= 1e-3, f"max relative error {relative.max():.2e}"
    # float32 before storage is much closer still
    rel32 = np.abs(clip.spectrograms - reference) / np.abs(reference)
    assert np.median(rel32) < 1e-5


def test_aac_mp4_is_close_to_reference(tmp_path):
    """AAC is lossy: the spectrogram is close to the reference where the sound has energy."""
    audio = tone(2.0, 16000, channels=1, freq_hz=1000.0, amplitude=0.5, noise=0.02, seed=2)
    write_clip(tmp_path / "aacclip0001.mp4", audio=audio, sample_rate=16000, seconds=2.0, audio_codec="aac")
    clip = extract_clip(tmp_path / "aacclip0001.mp4", PROTO)
    assert clip.starts == [0, 1]
    reference = numpy_log_mel(audio[0].astype(np.float64), 1)
    got = clip.spectrograms[1, 0]
    loud = reference > np.percentile(reference, 50)
    assert np.abs(got - reference)[loud].mean() < 0.5  # natural-log units: under 2.2 dB on average
    assert np.argmax(got.mean(axis=1)) == np.argmax(reference.mean(axis=1))  # the tone's band


@pytest.mark.parametrize("name,audio_codec,video_codec,rate,channels,size", [
    ("mkvclip0001.mkv", "flac", "libx264", 44100, 2, (64, 48)),
    ("webmclip001.webm", "libopus", "libvpx", 48000, 1, (64, 48)),
    ("movclip0001.mov", "pcm_s16le", "libx264", 22050, 1, (48, 64)),
    ("aviclip0001.avi", "pcm_s16le", "mpeg4", 11025, 2, (80, 48)),
    ("mp4clip0001.mp4", "aac", "libx264", 44100, 6, (64, 48)),
    ("oddclip0001.mkv", "flac", "libx264", 32000, 3, (63, 47)),
])
def test_containers_rates_channels_and_sizes(tmp_path, name, audio_codec, video_codec, rate, channels, size):
    width, height = size
    path = tmp_path / name
    write_clip(path, audio=tone(3.0, rate, channels=channels, freq_hz=440.0), sample_rate=rate, seconds=3.0,
               width=width, height=height, fps=10, audio_codec=audio_codec, video_codec=video_codec,
               pix_fmt="yuv444p" if width % 2 else "yuv420p")
    clip = extract_clip(path, PROTO)
    assert clip.starts == [0, 1, 2]
    assert clip.spectrograms.shape == (3, 1, 128, 100) and clip.spectrograms.dtype == np.float32
    assert clip.frames.shape == (3, 96, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.info["sample_rate"] == rate and clip.info["channels"] == channels
    # the frame nearest k + 0.5 s is frame 10k + 5 at 10 fps: its grey level says so
    grey = np.median(clip.frames[:, 48:, 48:, :].reshape(3, -1), axis=1)
    np.testing.assert_allclose(grey, [frame_level(10 * k + 5) for k in range(3)], atol=4)
    # the 440 Hz tone lands in the Mel band whose triangle peaks nearest 440 Hz
    band = int(np.argmax(numpy_filterbank()[int(round(440 / 16000 * 1024))]))
    assert abs(int(np.argmax(clip.spectrograms[1, 0].mean(axis=1))) - band) <= 1


def test_framing_context_and_zeros_beyond_clip():
    """Impulses at known samples land in exactly the frames SPEC section 3 says."""
    wave = torch.zeros(3 * 16000)
    wave[17000] = 1.0  # t = 1.0625 s: frames i of segment 1 with 160 i - 120 <= 1000 < 160 i + 280
    wave[15990] = 1.0  # last 10 ms of segment 0: also context of segment 1's frame 0
    spec = log_mel_segments(wave, [0, 1, 2], AUDIO)[:, 0]  # (3, 128, 100)
    floor = math.log(AUDIO.log_floor)
    hit = (spec > floor + 1).any(dim=1)  # (3, 100): frames with energy
    assert hit[1].nonzero().flatten().tolist() == [0, 5, 6, 7]
    assert hit[0].nonzero().flatten().tolist() == [99]  # frame 99 spans [15720, 16120)
    assert not hit[2].any()
    # beyond the clip: a segment starting after the end is all floor (zeros in, floor out)
    assert torch.all(log_mel_segments(wave, [5], AUDIO) == floor)


class _FakeFrame:
    def __init__(self, level):
        self.level, self.height, self.width = level, 4, 4

    def to_ndarray(self, format):
        return np.full((4, 4, 3), self.level, np.uint8)


def test_nearest_frame_choice_irregular_times():
    times = [0.0, 0.3, 0.45, 0.58, 0.9, 1.2, 1.56, 1.8]
    picker = _NearestFrames(1.0, 0.5, size=2)
    picker.to_rgb = lambda frame: frame.to_ndarray(format="rgb24")  # fake frames: no swscale
    for i, t in enumerate(times):
        picker.push(t, _FakeFrame(10 * i))
    picker.finish(up_to_k=3)
    # 0.5 -> 0.45 (index 2); 1.5 -> 1.56 (index 6); 2.5 -> after the last frame: 1.8 (index 7)
    assert [int(picker.chosen[k][0, 0, 0]) for k in range(3)] == [20, 60, 70]


def test_centre_square_crop_is_centred():
    rgb = np.zeros((40, 120, 3), np.uint8)
    rgb[:, :40] = 50
    rgb[:, 40:80] = 150
    rgb[:, 80:] = 250
    out = centre_square(rgb, 96)
    assert out.shape == (96, 96, 3)
    assert np.all(out == 150)
    wide = np.full((400, 200, 3), 7, np.uint8)
    assert np.all(centre_square(wide, 96) == 7)


def test_resampled_clip_equals_torchaudio_on_decoded_samples(tmp_path):
    samples = write_clip(tmp_path / "rateclip001.mkv", audio=tone(2.0, 44100, channels=2, seed=3),
                         sample_rate=44100, seconds=2.0, audio_codec="flac")
    clip = extract_clip(tmp_path / "rateclip001.mkv", PROTO)
    import torchaudio.functional as AF

    mono = torch.from_numpy(samples.mean(axis=0))
    expected = log_mel_segments(AF.resample(mono, 44100, 16000), [0, 1], AUDIO).numpy()
    np.testing.assert_allclose(clip.spectrograms, expected, rtol=1e-4, atol=1e-4)


def test_resample_refuses_coprime_rate():
    with pytest.raises(ClipError, match="not supported"):
        resample(torch.zeros(100), 44101, 16000)


def test_bad_inputs_raise_clip_error_with_reason(tmp_path):
    (tmp_path / "garbage0001.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ClipError, match="cannot open|decode error|no "):
        extract_clip(tmp_path / "garbage0001.mp4", PROTO)
    write_clip(tmp_path / "silentclip1.mp4", audio=None, seconds=2.0)
    with pytest.raises(ClipError, match="no audio stream"):
        extract_clip(tmp_path / "silentclip1.mp4", PROTO)
    write_clip(tmp_path / "blindclip01.mkv", audio=tone(2.0, 16000), video=False)
    with pytest.raises(ClipError, match="no video stream"):
        extract_clip(tmp_path / "blindclip01.mkv", PROTO)
    write_clip(tmp_path / "shortclip01.mkv", audio=tone(0.6, 16000), seconds=0.6)
    with pytest.raises(ClipError, match="no complete"):
        extract_clip(tmp_path / "shortclip01.mkv", PROTO)
    good = tmp_path / "truncated01.mp4"
    write_clip(good, audio=tone(2.0, 16000), seconds=2.0, audio_codec="aac")
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ClipError):
        extract_clip(good, PROTO)


@pytest.mark.parametrize("name,video_codec,options", [
    ("bframes0001.mp4", "libx264", {"preset": "veryfast", "bframes": "3", "b-pyramid": "normal"}),
    ("vp8clip0001.webm", "libvpx", None),
])
def test_selective_decoding_equals_decoding_every_frame(tmp_path, name, video_codec, options):
    """Skipping unreferenced frames changes nothing in the frames we keep (B-frames, pyramid)."""
    from helpers import write_scene_clip

    path = tmp_path / name
    write_scene_clip(path, seed=4, seconds=4.0, audio_codec="libopus" if name.endswith(".webm") else "aac",
                     sample_rate=48000, width=96, height=64, fps=25, video_codec=video_codec, video_options=options)
    fast = extract_clip(path, PROTO)
    full = extract_clip(path, PROTO, skip_frames=False)
    assert fast.info["selective_decoding"] and not full.info["selective_decoding"]
    assert fast.starts == full.starts == [0, 1, 2, 3]
    np.testing.assert_array_equal(fast.frames, full.frames)
    np.testing.assert_array_equal(fast.spectrograms, full.spectrograms)
