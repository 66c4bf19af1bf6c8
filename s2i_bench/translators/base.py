"""Any generator as a `Translator`: the one interface that pooling and scoring use.

    translator = load_translator(path, device="cpu", audio_encoder=None, embedding_dim=None)
    images = translator.translate(spectrograms, seeds)
        spectrograms (B, 1, 128, 100) float in [-1, 1] (store.normalise applied)
        seeds        (B,) int64, one per image: the test-time dropout masks of an image are
                     drawn from its own seed, so an image does not depend on its batch or device
        images       (B, 3, 96, 96) float32 in [-1, 1] (smaller outputs are resized to 96)
    translator.info  {"path", "sha256", "kind", "epoch", "embedding_dim", "run"}

`path` may be: our generator checkpoint (`generator-EEEEEE.pt`), a run folder (its latest
checkpoint; `list_checkpoints` gives all), the authors' generator state dict (with
`audio_encoder` = their autoencoder state dict or our autoencoder.pt, and `embedding_dim`), a
TorchScript archive or a `torch.export` program (`.pt2`; both handled by `s2i_bench.translators.programs`).
Files are loaded with `weights_only=True`: a pickle that would run code is refused, naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import sha256_file

OUTPUT_SIZE = 96  # every translator answers with the paper's image size
_CHECKPOINT_NAME = re.compile(r"^generator-(\d+)\.pt$")


class Translator:
    """A function spectrograms, seeds -> images, checked on the way in and out, plus `info`.

    `fn(spectrograms, seeds)` gets float32 spectrograms on `device` and a CPU int64 seed tensor,
    and returns (B, 3, S, S) images; S != 96 is resized. Make one from live modules with
    `Translator.from_modules`, or from any callable (e.g. a TorchScript program) directly.
    """

    def __init__(self, fn: Callable, info: dict[str, Any], device: str = "cpu"):
        self._fn = fn
        self.info = dict(info)
        self.device = device

    @classmethod
    def from_modules(cls, encoder, generator, info: dict[str, Any], device: str | None = None) -> "Translator":
        """Wrap an AudioEncoder and a DenseGenerator (e.g. while training, for in-loop scoring).
        Translation runs both in eval mode (BN running statistics; the generator's dropout stays
        on, seeded per image) and restores their previous mode afterwards."""
        if device is None:
            device = str(next(generator.parameters()).device)

        def fn(spectrograms, seeds):
            was = encoder.training, generator.training
            encoder.eval()
            generator.eval()
            try:
                x = encoder(spectrograms)  # (B, f)
                return generator(x, dropout_seeds=seeds)  # (B, 3, S, S)
            finally:
                encoder.train(was[0])
                generator.train(was[1])

        return cls(fn, info, device)

    def translate(self, spectrograms, seeds):
        import torch

        from s2i_bench.images import resize_net

        spectrograms = torch.as_tensor(spectrograms)
        if spectrograms.ndim != 4 or tuple(spectrograms.shape[1:]) != (1, 128, 100):
            raise UserError(f"translate: spectrograms have shape {tuple(spectrograms.shape)}, expected (B, 1, 128, 100)")
        seeds = torch.as_tensor(np.asarray(seeds) if not isinstance(seeds, torch.Tensor) else seeds)
        if seeds.ndim != 1 or len(seeds) != len(spectrograms):
            raise UserError(f"translate: {len(spectrograms)} spectrograms but seeds of shape {tuple(seeds.shape)}")
        if seeds.dtype != torch.int64:
            seeds = seeds.to(torch.int64)
        spectrograms = spectrograms.to(self.device, torch.float32)
        with torch.no_grad():
            images = self._fn(spectrograms, seeds.cpu())
        if images.ndim != 4 or images.shape[0] != len(spectrograms) or images.shape[1] != 3:
            raise UserError(f"{self.info.get('path')}: generator returned shape {tuple(images.shape)}, "
                            f"expected ({len(spectrograms)}, 3, S, S)")
        images = resize_net(images.float(), OUTPUT_SIZE)
        return images.clamp(-1.0, 1.0)


# -- run folders --------------------------------------------------------------------------------
def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The generator checkpoints of a run folder, sorted by epoch."""
    folder = Path(run_dir) / "checkpoints"
    found = []
    for p in folder.glob("generator-*.pt"):
        m = _CHECKPOINT_NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def checkpoint_epoch(path: str | Path) -> int | None:
    m = _CHECKPOINT_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


# -- loading ------------------------------------------------------------------------------------
def load_translator(path: str | Path, device: str = "cpu", audio_encoder: str | Path | None = None,
                    embedding_dim: int | None = None) -> Translator:
    """Any supported generator file or run folder as a Translator (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        checkpoints = list_checkpoints(path)
        if not checkpoints:
            raise UserError(f"{path}: a folder without checkpoints/generator-*.pt (not a finished run folder)")
        return load_translator(checkpoints[-1], device=device)
    if not path.is_file():
        raise UserError(f"{path}: generator not found")

    from s2i_translator.checkpoint import is_torchscript_archive, load_weights_only

    if path.suffix == ".pt2" or is_torchscript_archive(path):
        from s2i_bench.translators.programs import load_program_translator  # lazy: torch.export machinery

        return load_program_translator(path, device)

    obj = load_weights_only(path, "generator")
    if isinstance(obj, dict) and obj.get("format") == "s2i-translator-checkpoint":
        return _from_checkpoint(path, obj, device)
    if isinstance(obj, dict) and obj.get("format") == "s2i-autoencoder":
        raise UserError(f"{path}: an autoencoder, not a generator (pass it as --audio-encoder)")

    from s2i_translator.authors import looks_like_authors_generator, unwrap_state_dict

    if isinstance(obj, dict) and obj and looks_like_authors_generator(unwrap_state_dict(obj, str(path))):
        return _from_authors(path, obj, device, audio_encoder, embedding_dim)
    raise UserError(f"{path}: not a recognised generator (our checkpoint, a run folder, the authors' "
                    f"generator state dict, a TorchScript archive or a .pt2 program)")


def _from_checkpoint(path: Path, obj: dict, device: str) -> Translator:
    from s2i_translator.checkpoint import build_translator_modules, read_checkpoint

    ckpt = read_checkpoint(path, obj)
    encoder, generator, _ = build_translator_modules(ckpt, str(path))
    run = ckpt.get("run") or (path.parent.parent.name if path.parent.name == "checkpoints" else path.stem)
    info = {"path": str(path), "sha256": sha256_file(path), "kind": "checkpoint", "epoch": int(ckpt["epoch"]),
            "embedding_dim": int(ckpt["embedding_dim"]), "run": run}
    return Translator.from_modules(encoder.to(device).eval(), generator.to(device).eval(), info, device)


def _from_authors(path: Path, obj: dict, device: str, audio_encoder, embedding_dim) -> Translator:
    from s2i_translator.authors import load_authors_encoder, load_authors_generator
    from s2i_translator.checkpoint import load_weights_only, read_autoencoder

    if audio_encoder is None:
        raise UserError(f"{path}: the authors' generator state dict needs --audio-encoder (their autoencoder "
                        f"state dict or our autoencoder.pt) and --embedding-dim")
    generator = load_authors_generator(obj, embedding_dim, str(path))
    f = generator.embedding_dim
    ae_path = Path(audio_encoder)
    ae_obj = load_weights_only(ae_path, "audio encoder")
    if isinstance(ae_obj, dict) and ae_obj.get("format") == "s2i-autoencoder":
        autoencoder, _ = read_autoencoder(ae_path, ae_obj)
        encoder = autoencoder.encoder
    else:
        encoder = load_authors_encoder(ae_obj, f, str(ae_path))
    if encoder.embedding_dim != f:
        raise UserError(f"{ae_path}: audio encoder gives embeddings of size {encoder.embedding_dim}, "
                        f"the generator {path} takes {f}")
    info = {"path": str(path), "sha256": sha256_file(path), "kind": "authors", "epoch": None,
            "embedding_dim": f, "run": path.stem}
    return Translator.from_modules(encoder.to(device).eval(), generator.to(device).eval(), info, device)
