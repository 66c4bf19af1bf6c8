"""Translators: the contract any sound-to-image system meets, and how files become translators.

    from s2i_bench.translators import Batch, Translator, load_translator, register, Plugin, Loader

- `base`: the contract (`Batch` in, images out), its checks and the one resize policy;
- `registry`: loaders registered by plugins (entry-point group `s2i_bench.translators`), tried
  by file format; the reference translator plugs in there like any third-party package;
- `programs`: TorchScript and torch.export programs, inspected against an operator allowlist
  before they run.
"""

from __future__ import annotations

from pathlib import Path

from s2i_bench.errors import UserError
from s2i_bench.translators.base import (Batch, StoreTranslator, Translator, batch_for_rows, check_inputs,
                                        checked_images, to_protocol_size, translate_checked)
from s2i_bench.translators.registry import Loader, Plugin, plugins, register, trainer, unregister

__all__ = ["Batch", "Loader", "Plugin", "StoreTranslator", "Translator", "batch_for_rows", "check_inputs",
           "checked_images", "load_translator", "plugins", "register", "to_protocol_size", "trainer",
           "translate_checked", "unregister"]


def load_translator(path: str | Path, device: str = "cpu", **options) -> Translator:
    """Any translator file as a `Translator`; a run folder gives its latest checkpoint.
    `options` go to the plugin's loader (e.g. `audio_encoder`, `embedding_dim` for the
    reference translator's authors' state dicts)."""
    from s2i_bench.runs import RunFolder
    from s2i_bench.translators.registry import load_file

    path = Path(path)
    if path.is_dir():
        checkpoints = RunFolder(path).checkpoints()
        if not checkpoints:
            raise UserError(f"{path}: a folder without checkpoints/generator-*.pt (not a finished run folder)")
        return load_translator(checkpoints[-1], device=device, **options)
    try:
        exists = path.is_file()
    except OSError as e:  # a symlink loop
        raise UserError(f"{path}: cannot open ({e.strerror or e})") from None
    if not exists:
        raise UserError(f"{path}: translator not found")
    return load_file(path, device=device, options=options)
