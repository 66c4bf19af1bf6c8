"""Our checkpoint formats: plain dicts of tensors and JSON-like values, loadable with
`torch.load(..., weights_only=True)` (docs/architecture.md, "Run folder").

    generator-EEEEEE.pt   {"format": "s2i-translator-checkpoint", "format_version": 1, "epoch",
                           "embedding_dim", "model" (ModelSpec as dict), "protocol", "store",
                           "normalisation", "encoder", "generator", "code_version", "run"}
    autoencoder.pt        {"format": "s2i-autoencoder", "format_version": 1, "embedding_dim",
                           "model", "protocol", "store", "normalisation", "autoencoder",
                           "epochs", "loss", "seed", "code_version"}

Only what translation needs is in a generator checkpoint (the encoder, not the decoder; no
discriminator, no optimiser), so a run can keep one per epoch. Everything resume needs is in
`resume.pt` (train.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_torch_save
from s2i_bench.protocol import ModelSpec
from s2i_bench.provenance import code_version
from s2i_bench.runs import MAX_EPOCH
from s2i_bench.safeload import load_state_into, load_weights_only
from s2i_bench.translators import Translator
from s2i_translator.models import AudioAutoencoder, AudioEncoder, DenseGenerator

NAME = "s2i-translator"  # the plugin's name, recorded with every translator it loads
CHECKPOINT_FORMAT = "s2i-translator-checkpoint"
AUTOENCODER_FORMAT = "s2i-autoencoder"
FORMAT_VERSION = 1


# -- ModelSpec <-> dict -----------------------------------------------------------------------
def model_spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def _tuplify(value):
    if isinstance(value, (list, tuple)):
        return tuple(_tuplify(v) for v in value)
    return value


def model_spec_from_dict(d: Any, source: str) -> ModelSpec:
    """Rebuild a recorded ModelSpec; fields added later take the paper's defaults."""
    if not isinstance(d, dict):
        raise UserError(f"{source}: 'model' is not a table of model sizes")
    valid = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise UserError(f"{source}: unknown model field {unknown[0]!r} (written by a newer s2i-bench?)")
    try:
        return ModelSpec(**{k: _tuplify(v) for k, v in d.items()})
    except TypeError as e:
        raise UserError(f"{source}: incomplete model spec ({e})") from None


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict (unwrapping DDP / torch.compile)."""
    module = unwrap(module)
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or getattr(module, "_orig_mod")
    return module


# -- generator checkpoints --------------------------------------------------------------------
def make_checkpoint(*, epoch: int, embedding_dim: int, spec: ModelSpec, protocol_ref: dict, store_ref: dict,
                    normalisation: dict, encoder: torch.nn.Module, generator: torch.nn.Module,
                    run: str) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "embedding_dim": int(embedding_dim),
        "model": model_spec_to_dict(spec),
        "protocol": dict(protocol_ref),
        "store": {k: v for k, v in store_ref.items() if isinstance(v, (str, int, float, bool, dict, type(None)))},
        "normalisation": {"low": float(normalisation["low"]), "high": float(normalisation["high"])},
        "encoder": cpu_state(encoder),
        "generator": cpu_state(generator),
        "code_version": code_version(),
        "run": run,
    }


def save_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    path = Path(path)
    atomic_torch_save(path, checkpoint)
    return path


def read_checkpoint(path: str | Path, obj: Any | None = None) -> dict[str, Any]:
    """Load and check one of our generator checkpoints (the dict, weights not yet in models)."""
    path = Path(path)
    ckpt = load_weights_only(path, "checkpoint") if obj is None else obj
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not an s2i-translator checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {ckpt.get('format_version')} is not supported "
                        f"(this s2i-bench reads version {FORMAT_VERSION})")
    for key in ("epoch", "embedding_dim", "model", "encoder", "generator", "normalisation"):
        if key not in ckpt:
            raise UserError(f"{path}: checkpoint is missing {key!r}")
    epoch = ckpt["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCH:
        raise UserError(f"{path}: checkpoint epoch {epoch!r} is not a whole number in 0..{MAX_EPOCH}")
    if not isinstance(ckpt["embedding_dim"], int) or ckpt["embedding_dim"] <= 0 or ckpt["embedding_dim"] % 4:
        raise UserError(f"{path}: embedding_dim {ckpt['embedding_dim']!r} is not a positive multiple of 4")
    return ckpt


def build_translator_modules(ckpt: dict, source: str):
    """(encoder, generator, spec) from a checked checkpoint dict, weights loaded and validated."""
    spec = model_spec_from_dict(ckpt["model"], source)
    f = ckpt["embedding_dim"]
    with torch.device("meta"):  # no init work: every tensor comes from the file
        encoder, generator = AudioEncoder(f, spec), DenseGenerator(f, spec)
    load_state_into(encoder, ckpt["encoder"], source, "encoder")
    load_state_into(generator, ckpt["generator"], source, "generator")
    return encoder, generator, spec


# -- autoencoder ------------------------------------------------------------------------------
def make_autoencoder_checkpoint(*, autoencoder, embedding_dim: int, spec: ModelSpec, protocol_ref: dict,
                                store_ref: dict, normalisation: dict, epochs: int, loss: float,
                                seed: int) -> dict[str, Any]:
    return {
        "format": AUTOENCODER_FORMAT,
        "format_version": FORMAT_VERSION,
        "embedding_dim": int(embedding_dim),
        "model": model_spec_to_dict(spec),
        "protocol": dict(protocol_ref),
        "store": {k: v for k, v in store_ref.items() if isinstance(v, (str, int, float, bool, dict, type(None)))},
        "normalisation": {"low": float(normalisation["low"]), "high": float(normalisation["high"])},
        "autoencoder": cpu_state(autoencoder),
        "epochs": int(epochs),
        "loss": float(loss),
        "seed": int(seed),
        "code_version": code_version(),
    }


def read_autoencoder(path: str | Path, obj: Any | None = None):
    """(autoencoder module, checkpoint dict) from our autoencoder.pt."""
    path = Path(path)
    ckpt = load_weights_only(path, "autoencoder") if obj is None else obj
    if not isinstance(ckpt, dict) or ckpt.get("format") != AUTOENCODER_FORMAT:
        raise UserError(f"{path}: not an s2i-bench autoencoder checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: autoencoder format version {ckpt.get('format_version')} is not supported")
    spec = model_spec_from_dict(ckpt.get("model"), str(path))
    with torch.device("meta"):
        model = AudioAutoencoder(int(ckpt["embedding_dim"]), spec)
    load_state_into(model, ckpt["autoencoder"], str(path), "autoencoder")
    return model, ckpt


# -- as a translator --------------------------------------------------------------------------
def translator_from_modules(encoder, generator, info: dict[str, Any], device: str | None = None) -> Translator:
    """An AudioEncoder and a DenseGenerator as a Translator (also for in-loop scoring while they
    train). Translation runs both in eval mode (BN running statistics; the generator's dropout
    stays on, its masks drawn from each image's seed) and restores their modes afterwards."""
    if device is None:
        device = str(next(generator.parameters()).device)

    def fn(batch):
        was = encoder.training, generator.training
        encoder.eval()
        generator.eval()
        try:
            x = encoder(batch.log_mel.to(device))  # (B, f)
            return generator(x, dropout_seeds=batch.seeds.cpu())  # (B, 3, S, S) in [-1, 1]
        finally:
            encoder.train(was[0])
            generator.train(was[1])

    return Translator(fn, {"plugin": NAME, **info}, device, inputs=("log_mel",))
