"""Loading files from strangers as data, never as code.

Every checkpoint, bundle and state dict goes through `load_weights_only` (torch's unpickler
restricted to tensors and plain containers): a pickle that would run code is refused, naming
the file. Programs (TorchScript, `torch.export`) are told apart by their archive layout
(`archive_kind`), before anything in them is unpickled, and go to `s2i_bench.translators.programs`,
which checks their graphs before running them. Every zip is first read by the strict reader of
`s2i_bench.archive` (duplicate or case-colliding names, encryption, unknown compression, headers
that disagree, overlapping entries, sizes past the limits: refused), so that torch's own zip
reader and s2i-bench's see the same members, and no zip bomb is expanded.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

from s2i_bench.archive import NotAZip, open_zip, starts_like_zip
from s2i_bench.errors import UserError


def archive_kind(path: str | Path) -> str | None:
    """"torchscript", "export", "torch-save" (a `torch.save` zip) or None (not a zip archive, or
    one cut short), from the archive's file list alone: nothing is unpickled. A zip the strict
    reader refuses (`s2i_bench.archive`) raises its UserError."""
    path = Path(path)
    try:
        if not path.is_file() or not starts_like_zip(path):
            return None
        with open_zip(path) as z:
            names = [n.lower() for n in z.names]  # torch finds names without regard to case
    except NotAZip:
        return None
    if any(n.endswith("/archive_format") or ("/models/" in n and n.endswith(".json")) for n in names):
        return "export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    return "torch-save"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _pickle_reason(e: BaseException) -> str:
    """What torch's weights-only unpickler tripped over (the object it refused), without its
    advice to load the file with code execution allowed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return f"it refers to {m.group(1)}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln
             and not ln.startswith("Check the documentation")]
    return (lines[0] if lines else "an object the weights-only unpickler does not build")[:200]


def load_weights_only(path: str | Path, what: str = "file") -> Any:
    """`torch.load(path, weights_only=True)`, every failure a UserError naming the file: a pickle
    that would run code is refused (never executed); empty, cut and foreign files say so."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise UserError(f"{path}: empty file (0 bytes), not a {what}")
    # torch.save writes a zip (magic PK\x03\x04) or, in the legacy format, a pickle (\x80 + protocol).
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        raise UserError(f"{path}: not a torch file (it starts with neither a zip nor a pickle header), "
                        f"so it cannot be a {what}")
    if head.startswith(b"PK"):  # a zip: checked whole, compressed members expanded (capped), before torch
        try:
            with open_zip(path) as z:
                z.check_compressed()
        except NotAZip as e:
            raise UserError(f"{path}: cannot read as a torch {what}: the file is cut or corrupt ({e.reason})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: refused: not loadable with weights_only=True: it holds Python objects other "
                        f"than tensors and plain containers, which could run code when loaded, and s2i-bench "
                        f"never runs them ({_pickle_reason(e)}); save a state_dict of tensors instead") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError,
            IndexError, TypeError, MemoryError) as e:
        raise UserError(f"{path}: cannot read as a torch {what}: the file is cut or corrupt "
                        f"({type(e).__name__}: {_first_line(e)})") from None


def check_state_dict(state: Any, source: str, what: str) -> dict:
    """A state dict is a mapping of names to tensors, all finite."""
    import torch

    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{source}: {what} is not a state dict (a mapping of names to tensors)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: {what} entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{source}: {what} entry {key!r} holds NaN or infinite values")
    return state


def load_state_into(model, state: dict, source: str, what: str):
    """Strict load of a checked state dict into `model`, with a message naming the file and the
    first bad key. A model built on the meta device takes the tensors as they are (assign); a
    real one is copied into, so that an optimiser holding its parameters keeps training them."""
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
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


@contextlib.contextmanager
def weights_only_unpickling() -> Iterator[None]:
    """Within: every `torch.load` is weights_only=True and TorchScript object unpickling is off,
    whatever a caller inside torch asked for (`torch.export.load` would otherwise unpickle an
    archive's pickled weights, constants and sample inputs with code execution allowed)."""
    import torch

    real_load, real_pickle_obj = torch.load, torch._C._pickle_load_obj

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse_obj(*args, **kwargs):
        raise UserError("refused: the program contains a pickled custom object")

    torch.load, torch._C._pickle_load_obj = safe_load, refuse_obj
    try:
        yield
    finally:
        torch.load, torch._C._pickle_load_obj = real_load, real_pickle_obj
