"""Helpers for the pool / label / classifier tests: a fake translator file format and a labeller.

The fake translator stands in for a real checkpoint in the fast unit tests (the end-to-end test
uses the real chain). It is loaded through a plugin registered in the translator registry, as a
third-party package would register one. Each fake model is a small `.pt` dict; its output is a flat colour set by
the sound's loudness and the model's `shade` (its "fingerprint"), and, for about half of the
seeds, a bright square in the centre: the "informative" object that `square_labels` detects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class FakeTranslator:
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
               lambda path, obj, device="cpu", options=None: FakeTranslator(Path(path), obj), "a test fake"),))
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
