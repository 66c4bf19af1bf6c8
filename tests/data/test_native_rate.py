"""Audio at the encoder's rate: `prepare --audio-rate native|R` keeps each segment's source audio
beside the 16 kHz copy, `export-sounds --sample-rate R` writes it, and what lies above 8 kHz
(which the 16 kHz copy cannot hold) survives both."""

from __future__ import annotations

import json
import wave

import numpy as np
import pandas as pd
import pytest

from fakes import run_cli
from helpers import scene_painter, write_clip
from s2i_bench.data.export import sound_ids
from s2i_bench.data.hires import native_windows, parse_audio_rate, resample_int16, to_store_rate
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol

PROTOCOL = load_protocol("tiny")
HIGH_HZ = 12_000.0  # above the 16 kHz copy's 8 kHz Nyquist frequency
SECONDS = 2.0


def low_hz(index: int) -> float:
    return 300.0 + 170.0 * index  # each clip its own low tone (distinct clips for the near-duplicate audit)


def _audio(rate: int, index: int) -> np.ndarray:
    """(1, n): a 12 kHz tone and the clip's low tone, a little seeded noise."""
    t = np.arange(int(SECONDS * rate)) / rate
    rng = np.random.default_rng(index)
    x = (0.25 + 0.01 * index) * np.sin(2 * np.pi * HIGH_HZ * t) + 0.2 * np.sin(2 * np.pi * low_hz(index) * t)
    return (x + 0.002 * rng.standard_normal(len(t)))[None].astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One lossless (PCM) clip per class and split, 48 kHz except the first (44.1 kHz), and a
    manifest: {csv, decoded: {file name: (rate, index, (1, n) float32 as decoded)}}."""
    root = tmp_path_factory.mktemp("native-rate")
    rows, decoded = [], {}
    for ci, key in enumerate(PROTOCOL.class_keys):
        for si, split in enumerate(("train", "val", "test")):
            index = 3 * ci + si
            rate = 44_100 if index == 0 else 48_000
            path = root / key / f"clip{index:02d}xxxx.mkv"  # an 11-character video id
            decoded[path.name] = (rate, index, write_clip(path, audio=_audio(rate, index), sample_rate=rate,
                                                          seconds=SECONDS, audio_codec="pcm_s16le", fps=10,
                                                          frame_painter=scene_painter(index)))
            rows.append({"path": f"{key}/{path.name}", "class": key, "split": split})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return {"csv": root / "manifest.csv", "decoded": decoded}


@pytest.fixture(scope="module")
def native_store(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("native-store") / "store"
    run_cli("prepare", clips["csv"], "--out", out, "--protocol", "tiny", "--audio-rate", "native").ok()
    return out


def _band_share(x: np.ndarray, rate: int, centre: float, width: float = 200.0) -> float:
    """Share of the signal's energy within `width` Hz of `centre` (a Hann-windowed spectrum)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    return float(spectrum[np.abs(freqs - centre) < width].sum() / spectrum.sum())


def test_native_copy_keeps_the_content_above_8_khz(native_store, clips):
    store = open_store(native_store)
    assert store.format_version == 4 and store.hires_rate == 48_000  # the highest native rate
    hr = store.features["waveforms_hr"]
    assert hr["native_rates"] == {"44100": 1, "48000": 14} and hr["samples"] == 48_000
    assert store.hires.shape == (len(store), 48_000) and store.hires.dtype == np.int16
    for row in range(len(store)):
        _, index, _ = clips["decoded"][store.manifest["source"].iloc[row].split("/")[-1]]
        high = store.hires[row].astype(np.float64)
        low = store.waveforms[row].astype(np.float64)
        # the 12 kHz tone holds more than half the energy of the high-rate copy, none of the 16 kHz one
        assert 0.5 < _band_share(high, 48_000, HIGH_HZ) < 0.8, row
        assert _band_share(high, 48_000, low_hz(index)) > 0.2
        assert _band_share(low, 16_000, low_hz(index)) > 0.95  # 16 kHz: only the low tone is left


def test_native_rate_rows_are_the_source_samples_and_aligned_with_the_16_khz_copy(native_store, clips):
    store = open_store(native_store)
    man = store.manifest
    for row in range(len(store)):
        name = man["source"].iloc[row].split("/")[-1]
        rate, _, decoded = clips["decoded"][name]
        k = int(man["start_s"].iloc[row])
        if rate == 48_000:  # at its own rate: the decoded samples themselves (int16 at 32767 full scale)
            want = np.round(decoded[0, k * rate:(k + 1) * rate] * 32767)
            assert np.abs(store.hires[row] - want).max() <= 1
        # the high-rate copy brought down to 16 kHz is the 16 kHz copy (interior: a 1-s window alone
        # has edges), at lag 0
        down = resample_int16(store.hires[row], 48_000, 16_000).astype(np.float64)
        ref = store.waveforms[row].astype(np.float64)
        inner = slice(400, 15_600)
        assert np.abs(down[inner] - ref[inner]).max() < 0.01 * 32767, (row, rate)
        lags = [np.dot(np.roll(down, s)[inner], ref[inner]) for s in range(-3, 4)]
        assert int(np.argmax(lags)) == 3


def test_export_writes_the_encoders_rate(native_store, tmp_path):
    store = open_store(native_store)
    test = store.split_indices("test")
    ids = dict(zip(sound_ids(store, test), test))
    for rate in (48_000, 44_100):
        out = tmp_path / f"sounds-{rate}"
        run_cli("export-sounds", "--data", native_store, "--out", out, "--sample-rate", rate).ok()
        meta = json.loads((out / "export.json").read_text())
        assert meta["sample_rate"] == rate and "waveforms_hr.npy (48000 Hz)" in meta["audio_from"]
        for _, r in pd.read_csv(out / "manifest.csv").iterrows():
            with wave.open(str(out / r["file"])) as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (rate, 1, 2)
                samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            assert len(samples) == rate
            if rate == 48_000:
                np.testing.assert_array_equal(samples, store.hires[ids[r["segment_id"]]])
            assert _band_share(samples.astype(np.float64), rate, HIGH_HZ) > 0.5
    # the default is still the 16 kHz copy; a rate above any kept one is refused before any work
    run_cli("export-sounds", "--data", native_store, "--out", tmp_path / "default").ok()
    with wave.open(str(next((tmp_path / "default" / "sounds").iterdir()))) as w:
        assert w.getframerate() == 16_000
    run_cli("export-sounds", "--data", native_store, "--out", tmp_path / "x", "--sample-rate", 96_000).refused(
        "96000 Hz", "--audio-rate 96000")
    assert not (tmp_path / "x").exists()
    run_cli("export-sounds", "--data", native_store, "--out", tmp_path / "y", "--sample-rate", 48_000,
            "--audio-context-s", 1).refused("16000 Hz")


def test_a_chosen_rate_resamples_and_keeps_the_tone(clips, tmp_path):
    out = tmp_path / "store44"
    run_cli("prepare", clips["csv"], "--out", out, "--protocol", "tiny", "--audio-rate", "44100").ok()
    store = open_store(out)
    assert store.hires_rate == 44_100 and store.hires.shape[1] == 44_100
    assert all(_band_share(store.hires[r].astype(np.float64), 44_100, HIGH_HZ) > 0.5 for r in range(len(store)))
    # the 16 kHz arrays do not depend on the option
    plain = tmp_path / "plain"
    run_cli("prepare", clips["csv"], "--out", plain, "--protocol", "tiny").ok()
    other = open_store(plain)
    assert other.format_version == 3 and other.hires is None and not (plain / "waveforms_hr.npy").exists()
    np.testing.assert_array_equal(np.asarray(other.waveforms), np.asarray(store.waveforms))
    np.testing.assert_array_equal(np.asarray(other.spectrograms), np.asarray(store.spectrograms))
    with pytest.raises(UserError, match="--audio-rate 48000"):
        other.audio_at([0], 48_000)


def test_the_high_rate_copy_is_covered_by_the_store_hash(native_store, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(native_store, copy)
    meta = json.loads((copy / "store.json").read_text())
    meta["features"]["waveforms_hr"]["sample_rate"] = 44_100  # a claim the array does not back
    (copy / "store.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="waveforms_hr.npy|store_hash"):
        open_store(copy)


@pytest.mark.parametrize("value", ["7", "abc", "0", "500000", "48k"])
def test_audio_rate_values_are_checked(value):
    with pytest.raises(UserError, match="--audio-rate"):
        parse_audio_rate(value)
    assert parse_audio_rate("Native") == "native" and parse_audio_rate(" 48000") == 48_000
    assert parse_audio_rate(None) is None


def test_windows_resampled_with_margins_match_a_whole_clip_resampling():
    """A window resampled with its margins equals the same second cut from the whole clip
    resampled at once (what the 16 kHz copy does), up to the sinc's tail."""
    import torch
    import torchaudio.functional as AF

    rate, new = 44_100, 48_000
    x = _audio(rate, 3)  # (1, 2 s)
    windows, m = native_windows([x], 0.0, rate, [0, 1], 1.0)
    assert windows.shape == (2, rate + 2 * m) and m == 441
    got = to_store_rate(np.round(windows * 32767).astype(np.int16), rate, m, new, 1.0, "clip")
    whole = AF.resample(torch.from_numpy(x[0]), rate, new).numpy()
    want = np.round(np.clip(whole, -1, 1) * 32767)
    assert np.abs(got[0, 50:-50] - want[50:new - 50]).max() < 0.005 * 32767
    assert np.abs(got[1, 50:-50] - want[new + 50:2 * new - 50]).max() < 0.005 * 32767


def test_an_ais_audio_encoder_gets_its_own_rate(native_store, tmp_path):
    """A 48 kHz audio encoder (made here, random-free) is fed the store's high-rate copy: a 16 kHz
    batch would be refused by its program (it takes 48,000 samples), and it hears the 12 kHz tone."""
    import torch

    from fakes import FLOAT_64x48, FakeBundle
    from s2i_bench.fileio import sha256_file
    from s2i_bench.scoring.command import _metric_options
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators import Translator

    class HighBand(torch.nn.Module):
        def forward(self, w):  # (B, 48000) -> (B, 2): energy of the first difference (high band) and of w
            d = w[:, 1:] - w[:, :-1]
            return torch.stack([d.square().mean(1), w.square().mean(1)], 1)

    class Colours(torch.nn.Module):
        def forward(self, x):  # (B, 3, 32, 32) -> (B, 2): the audio embedding's size
            return x.mean(dim=(2, 3))[:, :2]

    programs = {}
    for name, module, example, side in (("audio", HighBand(), torch.rand(2, 48_000), {"sample_rate": 48_000,
                                                                                        "seconds": 1}),
                                        ("image", Colours(), torch.rand(2, 3, 32, 32), {"input_size": [32, 32]})):
        path = tmp_path / f"{name}.pt"
        torch.jit.save(torch.jit.trace(module.eval(), example), str(path))
        path.with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(path), **side}))
        programs[name] = path
    store = open_store(native_store)
    protocol = store.protocol
    opts = _metric_options("ais", None, programs["audio"], programs["image"], store, protocol)
    try:
        audio_fn = opts["ais"][1]
        assert audio_fn.sample_rate == 48_000 and opts["ais"][2]["audio"]["sample_rate"] == 48_000
        rows = store.split_indices("test")
        emb = audio_fn(store.audio_at(rows, 48_000).astype(np.float32) / 32767)
        # first-difference energy / energy = 2 (1 - cos(2 pi f / 48000)): 2 for the 12 kHz tone, at most
        # 0.12 for the low tones (< 2.7 kHz); so above 1 only when the 12 kHz tone is there
        assert (emb[:, 0] > 1.0 * emb[:, 1]).all()
        namespace = {}
        exec(FLOAT_64x48, namespace)
        translator = Translator(namespace["Painter"]().translate, {"path": "painter"})
        bundle = FakeBundle(tmp_path / "b.pt", informative="mean", class_match=False)
        record = score_translator(translator, store, bundle, protocol=protocol, split="test", **opts)
        assert record.image_metrics["ais"]["encoders"]["audio"]["sample_rate"] == 48_000
    finally:
        opts["ais"][0].worker.close()
        opts["ais"][1].worker.close()
    programs["audio"].with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(programs["audio"]),
                                                                  "sample_rate": 96_000, "seconds": 1}))
    with pytest.raises(UserError, match="up to 48000 Hz"):
        _metric_options("ais", None, programs["audio"], programs["image"], store, protocol)
