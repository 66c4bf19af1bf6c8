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
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_torch_save
from s2i_bench.provenance import code_version
from s2i_bench.protocol import ModelSpec

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


# -- loading untrusted files ------------------------------------------------------------------
def is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip with `constants.pkl` and a `code/` folder; torch.save
    zips have neither."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") or n == "constants.pkl" or "/code/" in n for n in names)


def load_weights_only(path: str | Path, what: str = "file") -> Any:
    """`torch.load(path, weights_only=True)` with every failure turned into a UserError naming
    the file; a pickle that would run code is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: refused: not loadable with weights_only=True (it may hold code, "
                        f"which s2i-bench never runs): {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot read as a torch {what}: {first}") from None


def check_state_dict(state: Any, source: str, what: str) -> dict[str, torch.Tensor]:
    """A state dict is a mapping of names to tensors, all finite."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{source}: {what} is not a state dict (a mapping of names to tensors)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: {what} entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{source}: {what} entry {key!r} holds NaN or infinite values")
    return state


def load_state_into(model: torch.nn.Module, state: dict, source: str, what: str) -> torch.nn.Module:
    """Strict load with a message naming the file and the first bad key."""
    check_state_dict(state, source, what)
    own = model.state_dict()
    for key in state:
        if key not in own:
            raise UserError(f"{source}: {what} has unexpected key {key!r}")
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise UserError(f"{source}: {what} key {key!r} has shape {tuple(state[key].shape)}, "
                            f"the model expects {tuple(own[key].shape)}")
    for key in own:
        if key not in state:
            raise UserError(f"{source}: {what} is missing key {key!r}")
    # A model built on the meta device takes the loaded tensors as they are (assign); a real one
    # is copied into, so that an optimiser holding its parameters keeps training them.
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


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
    if not isinstance(ckpt["embedding_dim"], int) or ckpt["embedding_dim"] <= 0 or ckpt["embedding_dim"] % 4:
        raise UserError(f"{path}: embedding_dim {ckpt['embedding_dim']!r} is not a positive multiple of 4")
    return ckpt


def build_translator_modules(ckpt: dict, source: str):
    """(encoder, generator, spec) from a checked checkpoint dict, weights loaded and validated."""
    from s2i_translator.models import AudioEncoder, DenseGenerator

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
    from s2i_translator.models import AudioAutoencoder

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
