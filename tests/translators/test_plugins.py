"""Any S2I system scored: local plugins (waveform in, any image size), reference translators,
sounds exported and images scored from a folder, and the bad answers of each."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fakes import FLOAT_64x48, WAVEFORM_128, make_fake_store, run_cli, write_bundle
from s2i_bench.data.export import sound_ids
from s2i_bench.data.store import open_store
from s2i_bench.protocol import load_protocol

PROTOCOL = load_protocol("tiny")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_bundle(tmp_path_factory.mktemp("plugin-bundle") / "bundle.pt", PROTOCOL)


def score(spec, store, bundle, out, *extra):
    return run_cli("score", spec, "--data", store, "--classifiers", bundle, "--out", out, "--json", *extra)


def refused(res, *needles):
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text
    return text


# -- local plugins ------------------------------------------------------------------------------
def test_waveform_plugin_with_128_uint8_images(fake_store, bundle, tmp_path):
    plugin = tmp_path / "listener.py"
    plugin.write_text(WAVEFORM_128)
    res = score(f"{plugin}:make", fake_store, bundle, tmp_path / "r.jsonl")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert set(record["classes"]) == set(PROTOCOL.class_keys)
    assert all(c["n_images"] == 6 and c["raw_share"] is not None for c in record["classes"].values())
    g = record["translator"]
    assert g["kind"] == "plugin" and g["name"] == "waveform-128" and g["version"] == "0.3"
    assert g["inputs"] == ["waveform"] and g["native_size"] == [128, 128]
    import hashlib

    assert g["sha256"] == hashlib.sha256(plugin.read_bytes()).hexdigest()
    # the sheet keeps the native size
    from s2i_bench.scoring.sheets import read_sheet

    sheet = read_sheet(tmp_path / Path(record["sample_sheet"]).name)
    assert sheet["images"].shape[1:] == (128, 128, 3)


def test_module_plugin_with_64x48_float_images(fake_store, bundle, tmp_path, monkeypatch):
    (tmp_path / "painter_mod.py").write_text(FLOAT_64x48)
    monkeypatch.chdir(tmp_path)
    res = score("painter_mod:build", fake_store, bundle, tmp_path / "r.jsonl", "--translator", "painter_mod:build")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert set(record["classes"]) == set(PROTOCOL.class_keys)
    g = record["translator"]
    assert g["native_size"] == [48, 64] and g["inputs"] == ["waveform", "log_mel"] and not g["inputs_declared"]
    # the same plugin twice: the same numbers (its randomness comes from the seeds)
    again = json.loads(score("painter_mod:build", fake_store, bundle, tmp_path / "r2.jsonl").stdout)
    assert again["classes"] == record["classes"]


BAD = {
    "syntax": ("def make(:\n", "importing", "SyntaxError"),
    "no-factory": ("def mak(protocol, device):\n    pass\n", "did you mean 'mak'"),
    "factory-raises": ("def make(protocol, device):\n    raise RuntimeError('weights missing')\n", "weights missing"),
    "no-translate": ("def make(protocol, device):\n    return 3\n", "no translate(batch)"),
    "batch-size": ("import torch\nclass T:\n    def translate(self, b):\n        return torch.zeros(1, 3, 8, 8)\n"
                   "def make(p, d):\n    return T()\n", "shape (1, 3, 8, 8)"),
    "dtype": ("import torch\nclass T:\n    def translate(self, b):\n"
              "        return torch.zeros(len(b), 3, 8, 8, dtype=torch.int64)\n"
              "def make(p, d):\n    return T()\n", "torch.int64"),
    "nan": ("import torch\nclass T:\n    def translate(self, b):\n"
            "        x = torch.zeros(len(b), 3, 8, 8)\n        x[0] = float('nan')\n"
            "        return x\ndef make(p, d):\n    return T()\n", "NaN"),
    "range": ("import torch\nclass T:\n    def translate(self, b):\n        return torch.full((len(b), 3, 8, 8), 5.0)\n"
              "def make(p, d):\n    return T()\n", "[5, 5]"),
    "raises": ("class T:\n    def translate(self, b):\n        raise ValueError('bad input')\n"
               "def make(p, d):\n    return T()\n", "failed on", "bad input"),
    "exits": ("import sys\nclass T:\n    def translate(self, b):\n        sys.exit(3)\n"
              "def make(p, d):\n    return T()\n", "SystemExit"),
    "inputs": ("class T:\n    inputs = ('class',)\n    def translate(self, b):\n        pass\n"
               "def make(p, d):\n    return T()\n", "unknown inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_plugin_is_one_line_naming_it(case, fake_store, bundle, tmp_path):
    code, *needles = BAD[case]
    plugin = tmp_path / f"bad_{case.replace('-', '_')}.py"
    plugin.write_text(code)
    refused(score(f"{plugin}:make", fake_store, bundle, tmp_path / "r.jsonl"), f"{plugin}:make", *needles)
    assert not (tmp_path / "r.jsonl").exists()


def test_missing_module_and_file_are_one_line(fake_store, bundle, tmp_path):
    refused(score("no_such_module_xyz:make", fake_store, bundle, tmp_path / "r.jsonl"), "no module named")
    refused(score(f"{tmp_path}/absent.py:make", fake_store, bundle, tmp_path / "r.jsonl"), "not found")


def test_a_store_without_audio_is_refused_for_a_waveform_plugin(bundle, tmp_path):
    old = make_fake_store(tmp_path / "old", waveforms=False)
    assert open_store(old).format_version == 2 and not open_store(old).has_waveforms
    plugin = tmp_path / "listener.py"
    plugin.write_text(WAVEFORM_128)
    refused(score(f"{plugin}:make", old, bundle, tmp_path / "r.jsonl"), "keeps no audio", str(old), "s2i-bench prepare")
    # a log-Mel translator still scores on it
    res = score("reference:retrieval", old, bundle, tmp_path / "r.jsonl")
    assert res.exit_code == 0, res.output


# -- reference translators ------------------------------------------------------------------------
def test_reference_translators(fake_store, bundle, tmp_path):
    from s2i_bench.translators import batch_for_rows, translate_checked
    from s2i_bench.translators.reference import NAMES, load_reference

    store = open_store(fake_store)
    test, train = store.split_indices("test"), store.split_indices("train")
    seeds = np.arange(len(test), dtype=np.int64)
    batch = batch_for_rows(store, test, seeds, "cpu", inputs=("log_mel",))
    out = {}
    for name in NAMES:
        t = load_reference(f"reference:{name}", store)
        native, _ = translate_checked(t, batch, size=96, rows=test)
        out[name] = ((native + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert t.info["kind"] == "reference" and t.info["built_from"]["store"] == store.store_hash
    np.testing.assert_array_equal(out["real-frame"], store.frames[test])
    train_frames = {store.frames[r].tobytes() for r in train}
    for name in ("retrieval", "random-frame"):  # training frames only, never a test frame
        assert all(img.tobytes() in train_frames for img in out[name])
    # retrieval finds a training sound of the same class here (classes differ in their bands)
    cls = store.class_index
    nearest = [next(r for r in train if store.frames[r].tobytes() == img.tobytes()) for img in out["retrieval"]]
    assert np.mean(cls[nearest] == cls[test]) > 0.9
    proto = load_reference("reference:class-prototype", store)
    assert proto.info["built_from"]["sound_classifier"]["train_accuracy"] > 0.9
    # random-frame: the image depends on its seed only
    again = load_reference("reference:random-frame", store)
    first, _ = translate_checked(again, batch, size=96, rows=test)
    np.testing.assert_array_equal(((first + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
                                  out["random-frame"])
    res = score("reference:retreival", fake_store, bundle, tmp_path / "r.jsonl")
    refused(res, "did you mean reference:retrieval")


def test_plugins_never_get_rows():
    from s2i_bench.translators import Batch, Translator, translate_checked

    seen = []
    t = Translator(lambda b: seen.append(vars(b)) or torch.zeros(len(b), 3, 4, 4), {"path": "x"})
    translate_checked(t, Batch(log_mel=torch.zeros(2, 1, 128, 100), seeds=torch.zeros(2, dtype=torch.int64)),
                      size=96, rows=np.array([3, 4]))
    assert set(seen[0]) == {"log_mel", "seeds", "waveform", "sample_rate", "waveform_context", "draw"}


# -- export-sounds, then a folder of images ---------------------------------------------------------
@pytest.fixture()
def exported(fake_store, tmp_path):
    res = run_cli("export-sounds", "--data", fake_store, "--out", tmp_path / "sounds", "--samples", "2")
    assert res.exit_code == 0, res.output
    return tmp_path / "sounds"


def test_export_sounds_writes_wavs_and_a_classless_manifest(exported, fake_store):
    store = open_store(fake_store)
    manifest = pd.read_csv(exported / "manifest.csv")
    test = store.split_indices("test")
    assert len(manifest) == len(test) and list(manifest.columns) == ["segment_id", "file", "context_file",
                                                                     "seed_0", "seed_1"]
    assert manifest["segment_id"].is_monotonic_increasing  # sorted by opaque id, not by class
    text = (exported / "manifest.csv").read_text()
    assert not any(k in text for k in PROTOCOL.class_keys)
    ids = dict(zip(sound_ids(store, test), test))
    for _, row in manifest.head(5).iterrows():
        with wave.open(str(exported / row["file"])) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        np.testing.assert_array_equal(samples, store.waveforms[ids[row["segment_id"]]])
    meta = json.loads((exported / "export.json").read_text())
    assert meta["store"]["hash"] == store.store_hash and meta["samples"] == 2
    # not over a folder of the user's
    (exported.parent / "mine").mkdir()
    (exported.parent / "mine" / "notes.txt").write_text("keep")
    refused(run_cli("export-sounds", "--data", fake_store, "--out", exported.parent / "mine"), "not empty")
    assert (exported.parent / "mine" / "notes.txt").read_text() == "keep"


def _write_real_frames(store, folder: Path, draws=(None,), fmt="png", skip=0):
    """The test segments' own frames as images named by the export's ids (a 'system' that
    answers with the real frame)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    test = store.split_indices("test")
    for i, (sid, r) in enumerate(zip(sound_ids(store, test), test)):
        if i < skip:
            continue
        for k in draws:
            name = sid if k is None else f"{sid}_{k}"
            Image.fromarray(np.asarray(store.frames[r])).save(folder / f"{name}.{fmt}")
    return folder


def test_a_folder_of_images_scores_like_the_translator_it_holds(exported, fake_store, bundle, tmp_path):
    store = open_store(fake_store)
    images = _write_real_frames(store, tmp_path / "images")
    (images / "README.txt").write_text("made by my system")  # not an image: left alone
    res = score(images, fake_store, bundle, tmp_path / "folder.jsonl")
    assert res.exit_code == 0, res.output
    folder_record = json.loads(res.stdout)
    ref = json.loads(score("reference:real-frame", fake_store, bundle, tmp_path / "ref.jsonl").stdout)
    for key in PROTOCOL.class_keys:  # lossless PNG of the real frames = the real-frame reference
        assert folder_record["classes"][key]["raw_share"] == ref["classes"][key]["raw_share"]
    g = folder_record["translator"]
    assert (g["kind"] == "image-folder" and g["lossy"] is False
            and g["formats"] == {"png": len(store.split_indices("test"))})
    assert g["native_sizes"] == {"96x96": len(store.split_indices("test"))} and g["ignored_files"] == 1
    assert len(g["sha256"]) == 64 and g["missing"] is None


def test_folder_missing_unknown_and_lossy_images(fake_store, bundle, tmp_path):
    store = open_store(fake_store)
    n = len(store.split_indices("test"))
    images = _write_real_frames(store, tmp_path / "images", skip=2)
    refused(score(images, fake_store, bundle, tmp_path / "r.jsonl"), "2 of 30 test sounds lack", "--allow-missing")
    res = score(images, fake_store, bundle, tmp_path / "r.jsonl", "--allow-missing")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["translator"]["missing"]["count"] == 2 and record["num_sounds"] == n - 2
    (images / "s0123456789abcdef.png").write_bytes((images / next(p.name for p in images.glob("*.png"))).read_bytes())
    refused(score(images, fake_store, bundle, tmp_path / "r.jsonl", "--allow-missing"), "answer no sound")
    jpeg = _write_real_frames(store, tmp_path / "jpeg", fmt="jpg")
    record = json.loads(score(jpeg, fake_store, bundle, tmp_path / "j.jsonl").stdout)
    assert record["translator"]["lossy"] is True and "JPEG" in record["translator"]["note"]
    broken = _write_real_frames(store, tmp_path / "broken")
    next(broken.glob("*.png")).write_bytes(b"not a png")
    refused(score(broken, fake_store, bundle, tmp_path / "b.jsonl"), "not a readable PNG/JPEG")


def test_folder_with_several_draws(fake_store, bundle, tmp_path):
    store = open_store(fake_store)
    images = _write_real_frames(store, tmp_path / "draws", draws=(0, 1))
    record = json.loads(score(images, fake_store, bundle, tmp_path / "r.jsonl").stdout)
    assert record["samples"] == 2 and record["translator"]["images_used"] == 2 * len(store.split_indices("test"))


# -- examples/: a waveform translator trained by a short script, scored end to end -------------------
@pytest.mark.slow
def test_example_waveform_translator_trains_and_scores(fake_store, bundle, tmp_path, monkeypatch):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    weights = tmp_path / "w.pt"
    done = subprocess.run([sys.executable, str(root / "examples" / "train_waveform_translator.py"), "--data",
                           str(fake_store), "--out", str(weights), "--steps", "40"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "step   39" in done.stdout and weights.is_file()
    monkeypatch.setenv("S2I_EXAMPLE_WEIGHTS", str(weights))
    res = score(f"{root / 'examples' / 'waveform_translator.py'}:make", fake_store, bundle, tmp_path / "r.jsonl")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["translator"]["name"] == "example-waveform-translator"
    assert record["translator"]["native_size"] == [64, 64] and record["translator"]["inputs"] == ["waveform"]
    assert set(record["classes"]) == set(PROTOCOL.class_keys)
    monkeypatch.setenv("S2I_EXAMPLE_WEIGHTS", str(tmp_path / "absent.pt"))
    refused(score(f"{root / 'examples' / 'waveform_translator.py'}:make", fake_store, bundle, tmp_path / "r.jsonl"),
            "no weights at", "train_waveform_translator.py")
