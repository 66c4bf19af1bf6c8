"""The tests' shared fakes, each defined once (not part of the installed package): stand-ins for
the artefacts s2i-bench reads (a store, a classifier bundle, translators and plugins, run folders
and a bundle card, the authors' state dicts) and the helper that runs a command as a user does.

Tests in every folder under tests/ import it as `fakes` (pytest puts tests/, the folder of
conftest.py, on sys.path); the benchmarks import it as `tests.fakes` (they run as
`python -m benchmarks.<name>` from the repository root). No test file is imported by another
(tests/test_architecture.py checks it): what two test files share lives here, or in conftest.py
when it is a fixture.

Importing it needs neither PyAV nor tqdm (the GPU machine has neither): heavier imports wait
inside the functions that need them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch


# -- a store -----------------------------------------------------------------------------------------------
def make_fake_store(path: Path, protocol_name: str = "tiny", per_class: dict[str, int] | None = None,
                    seed: int = 0, videos_per_class: int = 4, split_policy: str = "video",
                    synthetic_world: dict | None = None, waveforms: bool = True,
                    hires_rate: int | None = None) -> Path:
    """A small store written with `write_store`, without decoding any video.

    Spectrograms and frames carry the class (a per-class offset / colour) plus noise, so models
    can learn something; video ids are unique per (class, video) and never cross splits. It is
    meant for tests of training, pooling and scoring that do not need `prepare`. Waveforms (a
    class tone plus noise, from their own generator so the other arrays do not change) make it
    a format-3 store; `waveforms=False` writes a format-2 store without audio; `hires_rate` adds the
    same seconds at that rate (`waveforms_hr.npy`, as `prepare --audio-rate`). `protocol_name`
    may also be a protocol already loaded.
    """
    import pandas as pd

    from s2i_bench.protocol import load_protocol
    from s2i_bench.data.store_write import write_store

    proto = load_protocol(protocol_name) if isinstance(protocol_name, (str, Path)) else protocol_name
    per_class = per_class or {"train": 12, "val": 6, "test": 6}
    rng = np.random.default_rng(seed)
    rows, specs, frames = [], [], []
    n_mels, n_frames, side = proto.audio.n_mels, proto.audio.frames_per_segment, proto.image.size
    for ci, key in enumerate(proto.class_keys):
        colour = np.array([(60 * ci) % 255, (120 + 40 * ci) % 255, (200 - 35 * ci) % 255], dtype=np.float32)
        for split, n in per_class.items():
            for k in range(n):
                video = f"{key[:4]}{split[:2]}{k % videos_per_class:05d}".ljust(11, "x")[:11]
                rows.append(dict(segment_id=f"{video}_{key}_{k:04d}", video_id=video, **{"class": key},
                                 class_index=ci, split=split, start_s=float(k), source=f"{key}/{video}.mp4",
                                 group=video))
                spec = rng.normal(-8.0 + ci, 1.0, size=(1, n_mels, n_frames))
                spec[0, 10 * ci: 10 * ci + 10] += 4.0
                specs.append(spec)
                img = colour + rng.normal(0, 20, size=(side, side, 3))
                frames.append(np.clip(img, 0, 255).astype(np.uint8))
    manifest = pd.DataFrame(rows)
    spectrograms = np.stack(specs).astype(np.float16)
    frames_arr = np.stack(frames)
    train = spectrograms[manifest["split"].to_numpy() == "train"].astype(np.float32)
    meta = {
        "protocol": proto.ref(),
        "protocol_full": proto.to_dict(),
        "features": {"audio": proto.to_dict()["audio"], "image": proto.to_dict()["image"]},
        "normalisation": {"low": float(np.percentile(train, 0.1)), "high": float(np.percentile(train, 99.9)),
                          "fitted_on": "train", "method": "percentiles 0.1 / 99.9 of training log-Mel values"},
        "split": {"policy": split_policy, "seed": seed,
                  "ratios": [proto.split.train, proto.split.val, proto.split.test],
                  "balance": proto.split.balance, "leaky": split_policy == "random"},
        "sources": [],
        "synthetic_world": synthetic_world,
    }
    waves = hires = None
    if waveforms:
        wave_rng = np.random.default_rng(seed + 7919)
        ci = manifest["class_index"].to_numpy()
        copies = []
        for sr in (proto.audio.sample_rate, hires_rate):
            if sr is None:
                continue
            t = np.arange(int(round(proto.data.segment_seconds * sr))) / sr
            tone = 0.3 * np.sin(2 * np.pi * 220.0 * (ci[:, None] + 1) * t[None, :])  # (N, sr * segment)
            wave = tone + wave_rng.normal(0, 0.05, size=tone.shape)
            copies.append(np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16))
        waves, hires = copies[0], (copies[1] if hires_rate else None)
    if hires is not None:
        meta["features"]["waveforms_hr"] = {"file": "waveforms_hr.npy", "dtype": "int16", "scale": 32767,
                                            "sample_rate": int(hires_rate), "samples": hires.shape[1]}
    return write_store(path, manifest, spectrograms, frames_arr, meta, waveforms=waves, hires=hires)


# -- classifier bundles: a file in the real format, and an object in memory ----------------------------------
def write_bundle(path: Path, protocol, seed: int = 0) -> Path:
    """A classifier bundle in the real format (random weights; a fixed test confusion)."""
    from s2i_bench.informativity.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, InformativityCNN

    torch.manual_seed(seed)
    spec = protocol.classifiers
    labels = torch.tensor([1] * 10 + [0] * 10)
    preds = torch.tensor([1] * 8 + [0] * 2 + [1] * 3 + [0] * 7)  # Se 0.8, Sp 0.7
    entries = {k: {"state_dict": InformativityCNN(2, spec.dropout, spec.fc_dropout).state_dict(),
                   "test_labels": labels, "test_predictions": preds} for k in protocol.class_keys}
    card = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "protocol": protocol.ref(),
            "store": {"hash": "test"}, "source": "trained",
            "classes": {k: {"sensitivity": 0.8, "specificity": 0.7} for k in protocol.class_keys}}
    torch.save({"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "source": "trained",
                "class_keys": list(protocol.class_keys),
                "architecture": {"dropout": list(spec.dropout), "fc_dropout": spec.fc_dropout, "image_size": 96},
                "informativity": entries,
                "class_match": {"num_classes": len(protocol.class_keys),
                                "state_dict": InformativityCNN(len(protocol.class_keys), spec.dropout,
                                                               spec.fc_dropout).state_dict()},
                "card": card}, path)
    return path


class FakeBundle:
    """A loaded classifier bundle (what `load_bundle` returns) stood in for in memory, for tests of
    scoring that need fixed, known answers rather than trained weights.

    informative: the rule that calls an image informative for a class,
        "red"  - the first pixel's red channel above a per-class threshold (-0.6 + 0.3 x the
                 class's index), so the classes' shares differ;
        "mean" - the image's mean above 0 (a translator's level sets its share).
    class_match: True - the class is the argmax of a fixed projection of the first pixel's colour;
        False - the bundle has no class-match CNN (None).
    outcomes: True - a fixed test confusion for every class (20 + 20 images, Se 0.8, Sp 0.85);
        False - the classifiers' quality is unknown (None).
    The file at `path` is written when missing, so that its hash can be taken. `seen` lists
    (class key, number of images) of every informativity call.
    """

    def __init__(self, path: Path, *, informative: str = "red", class_match: bool = True, outcomes: bool = True,
                 protocol=None):
        from s2i_bench.protocol import load_protocol

        if informative not in ("red", "mean"):
            raise ValueError(f"informative: 'red' or 'mean', not {informative!r}")
        protocol = protocol or load_protocol("tiny")
        self.path = Path(path)
        if not self.path.exists():
            self.path.write_bytes(b"fake bundle")
        self.class_keys = protocol.class_keys
        self.card = {"protocol": protocol.ref(), "store": {"hash": "x"}}
        self.source = "trained"
        self.informative, self.class_match, self.outcomes = informative, class_match, outcomes
        self.thresholds = {k: -0.6 + 0.3 * i for i, k in enumerate(self.class_keys)}
        self.seen = []

    def predict_informative(self, images, class_key):
        self.seen.append((class_key, images.shape[0]))
        if self.informative == "mean":
            return (images.mean(dim=(1, 2, 3)) > 0).cpu().numpy()
        return (images[:, 0, 0, 0] > self.thresholds[class_key]).cpu().numpy()

    def predict_class(self, images):
        if not self.class_match:
            return None
        colour = images[:, :, 0, 0]  # (N, 3)
        proj = torch.tensor([[1.0, 0, 0, -1, 0.5], [0, 1.0, 0, -1, -0.5], [0, 0, 1.0, 1, 0.2]])
        return (colour @ proj).argmax(1).cpu().numpy()

    def test_outcomes(self, class_key):
        if not self.outcomes:
            return None
        labels = np.r_[np.ones(20), np.zeros(20)].astype(int)
        preds = np.r_[np.ones(16), np.zeros(4), np.ones(3), np.zeros(17)].astype(int)  # Se 0.8, Sp 0.85
        return labels, preds

    def sensitivity(self, class_key):
        return 0.8 if self.outcomes else None

    def specificity(self, class_key):
        return 0.85 if self.outcomes else None


# -- translators: local plugins (source files), a fake translator file format, a hostile pickle ------------
WAVEFORM_128 = '''
import torch

class Listener:
    name = "waveform-128"
    version = "0.3"
    inputs = ("waveform",)

    def translate(self, batch):
        assert batch.log_mel is not None and batch.waveform.shape[1] == batch.sample_rate
        # loudness and zero crossings of the waveform -> a flat colour, 128 x 128, uint8
        w = batch.waveform
        loud = w.abs().mean(1)
        zc = (w[:, 1:] * w[:, :-1] < 0).float().mean(1)
        r = (loud * 600).clamp(0, 255)
        g = (zc * 900).clamp(0, 255)
        b = (128 + 0 * loud)
        colour = torch.stack([r, g, b], 1).to(torch.uint8)  # (B, 3)
        return colour[:, None, None, :].expand(len(w), 128, 128, 3).contiguous()

def make(protocol, device):
    assert protocol.name == "tiny" and device == "cpu"
    return Listener()
'''

FLOAT_64x48 = '''
import torch

class Painter:
    def translate(self, batch):
        g = torch.Generator().manual_seed(int(batch.seeds[0]))
        level = torch.tanh(batch.log_mel.mean(dim=(1, 2, 3)))  # (B,)
        noise = 0.1 * torch.rand(len(level), 3, 48, 64, generator=g)
        return (level[:, None, None, None] * 0.8 + noise - 0.05).clamp(-1, 1)  # (B, 3, 48, 64) float

def build(protocol, device):
    return Painter()
'''


class ShadedTranslator:
    """The translator of a fake translator file (`write_fake_models`), for the pool / label /
    classifier tests; the end-to-end test uses the real chain. Loaded through a plugin registered
    in the translator registry (`install_fake_generators`), as a third-party package would
    register one. Its output is a flat colour set by the sound's loudness and the model's `shade`
    (its "fingerprint"), and, for about half of the seeds, a bright square in the centre: the
    "informative" object that `square_labels` detects."""

    def __init__(self, path: Path, d: dict):
        self.shade = float(d["shade"])
        self.info = {"path": str(path), "sha256": "", "kind": "fake", "epoch": int(d["epoch"]),
                     "embedding_dim": 4, "run": str(d["run"])}
        self.inputs = ("log_mel",)

    def translate(self, batch) -> torch.Tensor:
        spectrograms, seeds = batch.log_mel, batch.seeds
        assert spectrograms.ndim == 4 and spectrograms.shape[1:] == (1, 128, 100)
        assert spectrograms.min() >= -1 and spectrograms.max() <= 1
        out = []
        for spec, seed in zip(spectrograms, seeds.tolist()):
            g = torch.Generator().manual_seed(int(seed))  # per-image: independent of batching
            img = torch.full((3, 96, 96), float(spec.mean()) * 0.3 + self.shade)
            img = img + 0.1 * torch.randn(3, 96, 96, generator=g)
            if torch.rand(1, generator=g).item() < 0.5:
                img[:, 32:64, 32:64] += 0.8
            out.append(img.clamp(-1, 1))
        return torch.stack(out)  # (B, 3, 96, 96)


def write_fake_models(folder: Path, n: int) -> list[Path]:
    """`n` fake translator files laid out as checkpoints of the run folder `folder`."""
    paths = []
    for i in range(n):
        p = folder / "checkpoints" / f"generator-{10 * i:06d}.pt"
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"fake_translator": True, "shade": -0.4 + 0.15 * i, "epoch": 10 * i, "run": "fakerun"}, p)
        paths.append(p)
    return paths


def install_fake_generators(monkeypatch) -> None:
    """Register a translator plugin that loads the fake files, through the registry a real
    translator package uses (undone when the test ends)."""
    from s2i_bench.translators import Loader, Plugin, registry

    plugin = Plugin(name="fake-translators", loaders=(
        Loader("fake", lambda path, obj: isinstance(obj, dict) and obj.get("fake_translator") is True,
               lambda path, obj, device="cpu", options=None: ShadedTranslator(Path(path), obj), "a test fake"),))
    registry.plugins()  # the installed ones first
    monkeypatch.setitem(registry._REGISTRY.plugins, plugin.name, plugin)


def square_labels(images: np.ndarray) -> np.ndarray:
    """1 where the centre square is clearly brighter than the border (the fake 'object')."""
    x = images.astype(np.float32).mean(axis=3)  # (N, 96, 96)
    centre = x[:, 36:60, 36:60].mean(axis=(1, 2))
    border = np.concatenate([x[:, :20].reshape(len(x), -1), x[:, -20:].reshape(len(x), -1)], axis=1).mean(axis=1)
    return (centre - border > 40).astype(int)


def write_label_csv(path: Path, image_ids, labels, annotator: str | None = None) -> Path:
    lines = ["image_id,label" + (",annotator" if annotator else "")]
    for i, lab in zip(image_ids, labels):
        lines.append(f"{i},{int(lab)}" + (f",{annotator}" if annotator else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


class EvilPickle:
    """Unpickled, it runs `touch marker`: a translator or bundle file that would run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- the authors' state dicts ------------------------------------------------------------------------------
def _authors_conv(sd, name, cin, cout, k, transposed, bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    sd[f"{name}.weight"] = torch.randn((cin, cout, kh, kw) if transposed else (cout, cin, kh, kw)) * 0.01
    if bias:
        sd[f"{name}.bias"] = torch.randn(cout) * 0.01
    sd[f"{name}_bn.weight"] = torch.rand(cout) + 0.5
    sd[f"{name}_bn.bias"] = torch.randn(cout) * 0.1
    sd[f"{name}_bn.running_mean"] = torch.randn(cout) * 0.1
    sd[f"{name}_bn.running_var"] = torch.rand(cout) + 0.5
    sd[f"{name}_bn.num_batches_tracked"] = torch.tensor(7)


def authors_generator_state(f):
    """The authors' generator names and shapes, written from SPEC section 4 (not from our model)."""
    sd = {}
    _authors_conv(sd, "transition0", f, 512, 2, True)
    blocks = [(512, 512, 512), (512, 416, 352), (304, 256, 224), (192, 176, 160), (144, 128, 112), (96, 80, 64)]
    kernels = [3, 3, 4, 4, 4, 4]
    cin = 512
    for b, (c1, c2, c3) in enumerate(blocks):
        _authors_conv(sd, f"convT{3 * b + 1}", cin, c1, 3, True)
        _authors_conv(sd, f"convT{3 * b + 2}", c1, c2, 3, True)
        _authors_conv(sd, f"convT{3 * b + 3}", c1 + c2, c3, 3, True)
        out = 3 if b == 5 else c3
        _authors_conv(sd, f"transition{b + 1}", c1 + c2 + c3, out, kernels[b], True)
        cin = out
    return sd


def authors_autoencoder_state(f):
    sd = {}
    widths = [1, 80, 176, 192, 224, 272, 304, 352, 416, 512, 512, 512, 512, f]
    kernels = [(7, 5), (5, 3), (5, 3), (5, 3), (5, 3)] + [(3, 3)] * 8
    for i in range(13):
        _authors_conv(sd, f"conv{i + 1}", widths[i], widths[i + 1], kernels[i], False)
    dec = [f, 512, 512, 512, 512, 416, 352, 304, 272, 224, 192, 176, 80, 1]
    dkernels = [(3, 3)] * 8 + [(5, 3)] * 3 + [(5, 4), (8, 6)]
    for i in range(13):
        _authors_conv(sd, f"convT{i + 1}", dec[i], dec[i + 1], dkernels[i], True)
    return sd


def authors_discriminator_state(f):
    """The authors' discriminator (no conv biases); its judge sees the image features and f / 4."""
    sd = {}
    widths = [3, 96, 192, 192, 208, 224, 240, 256, 256, 256, 256, 256, 256]
    for i in range(12):
        _authors_conv(sd, f"conv{i + 1}", widths[i], widths[i + 1], 5 if i == 0 else 3, False, bias=False)
    _authors_conv(sd, "conv13", 256 + f // 4, 1, 2, False, bias=False)
    return sd


# -- what `report` reads: run folders and a bundle card, fabricated per docs/architecture.md --------------
REPORT_PROTOCOL = "synth"  # window 10-60, 10-epoch moving average, D every 5 epochs, skip 2, fill 5
REPORT_EPOCHS = 60


def true_series(dim: int, class_index: int, epochs: int, seed: int) -> np.ndarray:
    """A per-epoch informativity series with the paper's artefact: a jump right after each D update."""
    rng = np.random.default_rng(seed * 1000 + dim + class_index)
    t = np.arange(epochs)
    base = 0.04 + 0.03 * class_index + (0.1 if dim == 64 else 0.06) * (1 - np.exp(-t / 15))
    values = base + rng.normal(0, 0.01, size=epochs)
    bumped = (t % 5 == 0) | (t % 5 == 1)
    values[bumped] += 0.15  # the classifiers fooled after a D update: the replacement removes it
    return np.round(np.clip(values, 0, 1) * 30) / 30  # shares of 30 images are k / 30, as scoring writes them


def make_run(root: Path, store: Path, dim: int, policy: str = "video", epochs: int = REPORT_EPOCHS, seed: int = 0,
             samples: bool = True, name: str | None = None) -> Path:
    import pandas as pd

    from s2i_bench.protocol import load_protocol

    proto = load_protocol(REPORT_PROTOCOL)
    run = root / (name or f"f{dim}")
    run.mkdir(parents=True)
    meta = json.loads((store / "store.json").read_text())
    store_ref = {"path": str(store), "hash": meta["store_hash"], "split_policy": policy, "leaky": policy == "random"}
    (run / "options.json").write_text(json.dumps({
        "protocol": proto.ref(), "protocol_full": proto.to_dict(), "profile": "small", "embedding_dim": dim,
        "seed": seed, "store": store_ref, "code_version": "test", "command": ["train-baseline"]}))
    rng = np.random.default_rng(dim)
    t = np.arange(epochs)
    pixel = 0.3 * np.exp(-t / (10 + dim / 16)) + 0.1 + rng.normal(0, 0.005, epochs)
    pd.DataFrame({"epoch": t, "d_updated": (t % 5 == 0).astype(int), "pixel_loss": pixel, "adv_loss": 0.5,
                  "adv_loss_ma": 0.5, "d_loss": 0.4, "seconds": 1.0}).to_csv(run / "log.csv", index=False)
    series = {k: true_series(dim, i, epochs, seed) for i, k in enumerate(proto.class_keys)}
    lines = []
    for e in range(epochs):
        classes = {}
        for k in proto.class_keys:
            raw = float(series[k][e])
            corrected = float(np.clip(1.2 * raw - 0.03, 0, 1))
            classes[k] = {"n_images": 30, "raw_share": raw, "raw_spread": None, "corrected_share": corrected,
                          "corrected_ci": [max(0.0, corrected - 0.06), min(1.0, corrected + 0.06)],
                          "class_match_rate": round(min(1.0, 0.35 + raw) * 30) / 30,
                          "true_share": round(0.8 * raw * 30) / 30}
        mean = {m: float(np.mean([classes[k][m] for k in proto.class_keys]))
                for m in ("raw_share", "corrected_share", "class_match_rate", "true_share")}
        lines.append(json.dumps({
            "kind": "informativity",
            "generator": {"path": str(run / "checkpoints" / f"generator-{e:06d}.pt"), "sha256": f"{e:064x}",
                          "kind": "checkpoint", "epoch": e, "embedding_dim": dim, "run": run.name},
            "run": run.name, "epoch": e, "d_update": e % 5 == 0, "protocol": proto.ref(), "store": store_ref,
            "split": "test", "seed": 0, "samples": 1, "classifiers": {"path": "bundle.pt", "sha256": "ab" * 32},
            "classes": classes, "mean": mean, "code_version": "test", "created": f"2025-01-01T00:00:{e % 60:02d}"}))
    if samples:
        # A sample sheet as `s2i_bench.scoring.score` writes it, named by the last record's
        # `sample_sheet`. f32's has no real frames (Fig. 16 then takes them from the store); the
        # others carry the frames.
        manifest = pd.read_csv(store / "manifest.csv")
        test = manifest[manifest["split"] == "test"]
        idx = test["class_index"].to_numpy()
        img_rng = np.random.default_rng(dim + 7)
        images = np.clip(40 * idx[:, None, None, None] + 30 + img_rng.normal(0, 25, size=(len(idx), 96, 96, 3)),
                         0, 255).astype(np.uint8)
        arrays = dict(images=images, segment_ids=test["segment_id"].to_numpy().astype(str),
                      class_keys=test["class"].to_numpy().astype(str), seeds=np.arange(len(idx), dtype=np.int64))
        if dim == 32:
            sheet = run / f"samples-e{epochs - 1:06d}.npz"
            np.savez_compressed(sheet, **arrays)
        else:
            frames = np.load(store / "frames.npy")[test.index.to_numpy()]
            sheet = run / "sheets" / f"test-e{epochs - 1:06d}.npz"
            sheet.parent.mkdir()
            np.savez_compressed(sheet, frames=frames, **arrays)
        last = json.loads(lines[-1])
        last["sample_sheet"] = str(sheet) if dim != 32 else sheet.name  # relative: found beside the records
        lines[-1] = json.dumps(last)
    (run / "metric-informativity.jsonl").write_text("\n".join(lines) + "\n")
    return run


def make_card(path: Path) -> Path:
    from s2i_bench.protocol import load_protocol

    proto = load_protocol(REPORT_PROTOCOL)
    classes = {}
    for i, (k, n) in enumerate(zip(proto.class_keys, proto.class_names)):
        tp, fn, tn, fp = 16 + i, 4 - i // 2, 17, 3 + i // 2
        classes[k] = {"name": n, "test_accuracy": (tp + tn) / 40, "accuracy_ci": [0.6, 0.9],
                      "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
                      "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp}, "n_train": 140, "n_val": 20,
                      "n_test": 40, "epoch_chosen": 30 + i,
                      "counts_per_model": {"m1": {"informative": 10, "non_informative": 10}},
                      "fingerprint_probe": {"accuracy": 0.1, "chance": 0.06, "warning": i == 1}}
    card = {"format": "s2i-bench-classifiers", "format_version": 1, "protocol": proto.ref(), "pool_hash": "cafe" * 4,
            "store": {"hash": "x"}, "source": "trained", "classes": classes,
            "class_match": {"test_accuracy": 0.97, "n_test": 500}, "seed": 0, "code_version": "test",
            "created": "2025-01-01T00:00:00"}
    path.write_text(json.dumps(card))
    return path


# -- a command run as a user runs it -----------------------------------------------------------------------
# The fault tests (tests/faults/, the catalogue of bad inputs and hostile files tried against
# s2i-bench, ../shared/faults/catalogue-4deea07.md, rebuilt with the same primitives) state their
# catalogue case (`# 1.34`) and check three things: the exit code (2 = a clean refusal, one line,
# no traceback), the message names the file at fault, and nothing was damaged or created that
# should not be (`touched`).
def run_cli(*args) -> "CliResult":
    """`s2i-bench ARGS...` in this process; the result's output is stdout + stderr."""
    from click.testing import CliRunner

    from s2i_bench.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return CliResult(result)


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.output = result.output
        self.exception = result.exception
        self.stdout = result.stdout

    def refused(self, *needles: str) -> "CliResult":
        """A clean refusal: exit 2, one error line, each needle in it, no traceback."""
        assert self.exit_code == 2, f"exit {self.exit_code}: {self.output[-1500:]} {self.exception!r}"
        errors = [ln for ln in self.output.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, self.output[-1500:]
        assert "Traceback" not in self.output, self.output[-1500:]
        for needle in needles:
            assert needle in errors[0], f"{needle!r} not in: {errors[0]}"
        return self

    def ok(self) -> "CliResult":
        assert self.exit_code == 0, f"exit {self.exit_code}: {self.output[-2000:]} {self.exception!r}"
        return self


def touched(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to compare before/after)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# -- scored systems, as `score` writes them (format 4 records with decisions), for the leaderboard --------------
def make_scored_system(root: Path, name: str, level: float, *, protocol_name: str = "tiny", n_sounds: int = 20,
                       samples: int = 1, epochs: int = 2, seed: int = 0, store_hash: str = "5" * 16,
                       bundle_sha: str = "b" * 64, feature_space: str | None = "f" * 64, split: str = "test",
                       sheet: bool = True) -> Path:
    """A run folder `root/name` whose records (one per epoch, checksummed by `records.extend`)
    say what per-image decisions drawn with informative share about `level` give: every share is
    k / n of its images, every mean that of its classes. Systems made with the same `n_sounds`
    were scored on the same sounds (their decisions pair image by image). With `feature_space`,
    FID, KID and IIS (with per-image ranks) computed on that extractor; a sample sheet beside the
    records, named by the last one."""
    import hashlib

    from s2i_bench.protocol import load_protocol
    from s2i_bench.scoring import records
    from s2i_bench.scoring.decisions import encode_decisions

    proto = load_protocol(protocol_name)
    run = root / name
    run.mkdir(parents=True)
    keys = list(proto.class_keys)
    ids = [f"seg{c}_{i:03d}_{k}" for c, k in enumerate(keys) for i in range(n_sounds)]
    store = {"path": str(root / "store"), "hash": store_hash, "split_policy": "video", "leaky": False,
             "protocol": proto.ref()}
    (run / "options.json").write_text(json.dumps({
        "protocol": proto.ref(), "protocol_full": proto.to_dict(), "embedding_dim": 16, "seed": seed, "store": store,
        "code_version": "test", "libraries": {"python": "3"}, "command_line": ["train-baseline"]}))
    recs = []
    for e in range(epochs):
        rng = np.random.default_rng([seed, e, int(1000 * level), len(name)])
        shape = (samples, len(ids))
        p = np.repeat([min(1.0, level + 0.05 * c) for c in range(len(keys))], n_sounds)
        informative, truth = rng.random(shape) < p, rng.random(shape) < 0.9 * p
        matched, iis = rng.random(shape) < 0.8, rng.integers(0, 41, size=shape) / 40 * level
        iis = np.round(iis * 40) / 40
        classes = {}
        for c, k in enumerate(keys):
            sl = slice(c * n_sounds, (c + 1) * n_sounds)
            raw = float(informative[:, sl].mean())
            corrected = float(np.clip(1.1 * raw - 0.02, 0, 1))
            classes[k] = {"n_sounds": n_sounds, "n_images": n_sounds * samples, "raw_share": raw,
                          "raw_ci": [max(0.0, raw - 0.2), min(1.0, raw + 0.2)], "corrected_share": corrected,
                          "corrected_ci": [max(0.0, corrected - 0.2), min(1.0, corrected + 0.2)],
                          "class_match_rate": float(matched[:, sl].mean()), "true_share": float(truth[:, sl].mean())}
        mean = {m: float(np.mean([classes[k][m] for k in keys]))
                for m in ("raw_share", "corrected_share", "class_match_rate", "true_share")}
        mean.update(classes=keys, corrected_ci=[max(0.0, mean["corrected_share"] - 0.1),
                                                min(1.0, mean["corrected_share"] + 0.1)])
        image_metrics = {}
        if feature_space is not None:
            fid, kid = 100 * (1 - level) + e, 0.1 * (1 - level)
            image_metrics = {"fid": {"value": fid, "ci": [fid - 8, fid + 8]},
                             "kid": {"value": kid, "ci": [kid - 0.01, kid + 0.01]},
                             "iis": {"value": float(iis.mean()), "ci": [float(iis.mean()) - 0.05,
                                                                        float(iis.mean()) + 0.05]},
                             "extractor": {"name": "fake features", "sha256": feature_space}}
        recs.append({
            "kind": "informativity", "format_version": 4,
            "translator": {"path": str(run / "checkpoints" / f"generator-{e:06d}.pt"), "sha256": f"{e:064x}",
                           "kind": "checkpoint", "epoch": e, "embedding_dim": 16, "run": name},
            "run": name, "epoch": e, "d_update": e % 5 == 0, "protocol": proto.ref(), "store": store, "split": split,
            "seed": 0, "samples": samples,
            "classifiers": {"path": str(root / "bundle.pt"), "sha256": bundle_sha, "source": "trained",
                            "protocol": proto.ref(), "store_hash": store_hash, "class_match": True},
            "classes": classes, "mean": mean, "mean_all_classes": {"class_match_rate": mean["class_match_rate"],
                                                                  "true_share": mean["true_share"]},
            "untrained_classes": [], "num_sounds": len(ids), "sample_sheet": None,
            "metrics": ["informativity"] + (["fid", "kid", "iis"] if feature_space else []),
            "image_metrics": image_metrics,
            "decisions": encode_decisions(ids, informative, truth, matched, iis if feature_space else None),
            "code_version": "test", "created": f"2025-01-01T00:00:0{e % 10}", "seconds": 1.0})
    if sheet:
        name_ = f"samples-epoch-{epochs - 1:06d}-{hashlib.sha256(name.encode()).hexdigest()[:12]}.npz"
        rng = np.random.default_rng(seed)
        np.savez_compressed(run / name_, images=rng.integers(0, 256, size=(len(keys), 32, 32, 3), dtype=np.uint8),
                            segment_ids=np.array(ids[::n_sounds]), class_keys=np.array(keys),
                            seeds=np.arange(len(keys), dtype=np.int64))
        recs[-1]["sample_sheet"] = name_
    records.extend(run / "metric-informativity.jsonl", recs)
    return run


# -- headless Chromium (Debian's chromium + chromium-driver, through Selenium: no browser download) ----------
CHROMIUM = os.environ.get("S2I_BENCH_CHROMIUM") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("S2I_BENCH_CHROMEDRIVER") or "/usr/bin/chromedriver"
INSTALL_BROWSER = "apt-get install -y chromium chromium-driver (and pip install selenium)"


def need_browser() -> None:
    """Skip without Chromium and Selenium, saying what to install; in CI (`CI` set) fail instead."""
    import shutil

    import pytest

    chromium = shutil.which("chromium") or CHROMIUM
    driver = shutil.which("chromedriver") or CHROMEDRIVER
    if Path(chromium).exists() and Path(driver).exists():
        try:
            import selenium  # noqa: F401
            return
        except ImportError:
            pass
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need Chromium and Selenium: {INSTALL_BROWSER}")
    pytest.skip(f"needs Chromium and Selenium: {INSTALL_BROWSER}")


def headless_chromium(width: int = 1200, height: int = 760):
    """A headless Chromium driven by Selenium, its console log kept (CSP reports land there)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
