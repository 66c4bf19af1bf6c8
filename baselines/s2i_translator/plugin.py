"""The reference translator plugs into s2i-bench like any third-party package would: through
the entry point `s2i_bench.translators` (pyproject.toml) naming `PLUGIN`.

Two loaders (our generator checkpoints; the authors' generator state dicts, which need their
audio encoder) and the trainer that `s2i-bench train-baseline` runs (`train.train`).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from s2i_bench.errors import UserError
from s2i_bench.fileio import sha256_file
from s2i_bench.runs import run_of_checkpoint
from s2i_bench.safeload import load_weights_only
from s2i_bench.translators import Loader, Plugin, Translator
from s2i_translator.authors import (
    load_authors_encoder,
    load_authors_generator,
    looks_like_authors_generator,
    unwrap_state_dict,
)
from s2i_translator.checkpoint import (
    AUTOENCODER_FORMAT,
    CHECKPOINT_FORMAT,
    NAME,
    build_translator_modules,
    read_autoencoder,
    read_checkpoint,
    translator_from_modules,
)
from s2i_translator.train import train


# -- our checkpoints ------------------------------------------------------------------------------
def _is_checkpoint(path: Path, obj: Any) -> bool:
    if isinstance(obj, dict) and obj.get("format") == AUTOENCODER_FORMAT:
        raise UserError(f"{path}: an autoencoder, not a generator (pass it as --audio-encoder)")
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _load_checkpoint(path: Path, obj: Any, *, device: str = "cpu", options: dict | None = None) -> Translator:
    ckpt = read_checkpoint(path, obj)
    encoder, generator, _ = build_translator_modules(ckpt, str(path))
    run = ckpt.get("run") or run_of_checkpoint(path)
    info = {"path": str(path), "sha256": sha256_file(path), "kind": "checkpoint", "epoch": int(ckpt["epoch"]),
            "embedding_dim": int(ckpt["embedding_dim"]), "run": str(run)}
    return translator_from_modules(encoder.to(device).eval(), generator.to(device).eval(), info, device)


# -- the authors' state dicts -----------------------------------------------------------------------
def _is_authors_generator(path: Path, obj: Any) -> bool:
    if not isinstance(obj, dict) or not obj:
        return False
    try:
        return looks_like_authors_generator(unwrap_state_dict(obj, str(path)))
    except UserError:  # not a state dict at all: not the authors' generator
        return False


def _load_authors(path: Path, obj: Any, *, device: str = "cpu", options: dict | None = None) -> Translator:
    options = options or {}
    audio_encoder, embedding_dim = options.get("audio_encoder"), options.get("embedding_dim")
    if audio_encoder is None:
        raise UserError(f"{path}: the authors' generator state dict needs --audio-encoder (their autoencoder "
                        f"state dict or our autoencoder.pt) and --embedding-dim")
    generator = load_authors_generator(obj, embedding_dim, str(path))
    f = generator.embedding_dim
    ae_path = Path(audio_encoder)
    ae_obj = load_weights_only(ae_path, "audio encoder")
    if isinstance(ae_obj, dict) and ae_obj.get("format") == AUTOENCODER_FORMAT:
        autoencoder, _ = read_autoencoder(ae_path, ae_obj)
        encoder = autoencoder.encoder
    else:
        encoder = load_authors_encoder(ae_obj, f, str(ae_path))
    if encoder.embedding_dim != f:
        raise UserError(f"{ae_path}: audio encoder gives embeddings of size {encoder.embedding_dim}, "
                        f"the generator {path} takes {f}")
    info = {"path": str(path), "sha256": sha256_file(path), "kind": "authors", "epoch": None,
            "embedding_dim": f, "run": path.stem}
    return translator_from_modules(encoder.to(device).eval(), generator.to(device).eval(), info, device)


def _version() -> str | None:
    try:
        return importlib.metadata.version("s2i-bench")
    except importlib.metadata.PackageNotFoundError:
        return None


PLUGIN = Plugin(
    name=NAME,
    loaders=(
        Loader("checkpoint", _is_checkpoint, _load_checkpoint,
               "our generator checkpoint (checkpoints/generator-EEEEEE.pt)"),
        Loader("authors", _is_authors_generator, _load_authors,
               "the authors' generator state dict (with --audio-encoder, --embedding-dim)"),
    ),
    trainer=train,
    version=_version(),
    options=("audio_encoder", "embedding_dim"),
)
