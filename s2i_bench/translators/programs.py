"""Generators given as programs: TorchScript files and `torch.export` programs (`.pt2`).

A program lets anyone score any architecture without shipping Python code: it maps normalised
spectrograms (B, 1, 128, 100) in [-1, 1] to images (B, 3, 96, 96) in [-1, 1]. Two calling
conventions are accepted:

    program(spectrograms)          -> images   run as given; see "randomness" below
    program(spectrograms, seeds)   -> images   seeds: (B,) int64, one per image; the program
                                               draws its own per-image randomness from them

Randomness. Scoring needs outputs that depend on (sound, seed) only, never on the batch. A
one-input program is probed once when loaded: the same input is run under two global torch
seeds. If the outputs agree, the program is deterministic and runs in batches; if not, it
draws from torch's global generator (e.g. dropout left on) and is then run one image at a
time, with the global generator seeded from that image's seed: slower, but batch-independent
and reproducible. `info["calls"]` records which.

Safety. TorchScript is loaded with `torch.jit.load`, whose unpickler builds only tensors and
TorchScript objects. `torch.export.load` is NOT safe on its own: an archive may declare pickled
weights or constants, which torch unpickles with `weights_only=False` (arbitrary code). We read
the archive's configuration first and refuse any pickled entry, then load with `torch.load`
forced to `weights_only=True` as a second guard.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.errors import UserError

SPECTROGRAM_SHAPE = (1, 128, 100)
IMAGE_SHAPE = (3, 96, 96)


def program_kind(path: str | Path) -> str | None:
    """"torchscript", "export" or None, from the archive's file list (nothing is unpickled)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/archive_format") or "/models/" in n and n.endswith(".json") for n in names):
        return "export"
    if any("/code/" in n and n.endswith(".py") for n in names) and any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return None


class ProgramTranslator:
    """A program behind the `Translator` interface: `.translate(spectrograms, seeds)`, `.info`."""

    def __init__(self, program, *, path: Path, kind: str, num_inputs: int, static_batch: int | None,
                 device, sha256: str):
        self.program = program
        self.path = path
        self.kind = kind
        self.num_inputs = num_inputs
        self.static_batch = static_batch  # export programs traced without a dynamic batch size
        self.device = device
        self.stochastic: bool | None = None  # one-input programs: set by the probe
        self.info: dict[str, Any] = {"path": str(path), "sha256": sha256, "kind": kind, "epoch": None,
                                     "embedding_dim": None, "run": None}

    # -- calling --------------------------------------------------------------------------------
    def _call(self, x, seeds):
        """One program call on a batch whose size the program accepts."""
        import torch

        args = (x, seeds) if self.num_inputs == 2 else (x,)
        try:
            out = self.program(*args)
        except Exception as e:  # a program raising on our input is the program's fault: name it
            raise UserError(f"{self.path}: the program failed on input {tuple(x.shape)} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise UserError(f"{self.path}: the program must return one image tensor, got {type(out).__name__}")
        return out

    def _call_any_batch(self, x, seeds):
        """Chunk to a static batch size (padding the last chunk by repeating its last item)."""
        import torch

        b = self.static_batch
        if b is None or x.shape[0] == b:
            return self._call(x, seeds)
        outs = []
        for start in range(0, x.shape[0], b):
            xs, ss = x[start:start + b], seeds[start:start + b]
            n = xs.shape[0]
            if n < b:
                pad = b - n
                xs = torch.cat([xs, xs[-1:].expand(pad, *xs.shape[1:])])
                ss = torch.cat([ss, ss[-1:].expand(pad)])
            outs.append(self._call(xs, ss)[:n])
        return torch.cat(outs)

    def translate(self, spectrograms, seeds):
        """(B, 1, 128, 100) float in [-1, 1] on the device, seeds (B,) int64 -> (B, 3, 96, 96)."""
        import torch

        seeds = torch.as_tensor(np.asarray(seeds, dtype=np.int64) if not isinstance(seeds, torch.Tensor) else seeds)
        seeds = seeds.to(device=spectrograms.device, dtype=torch.int64)
        with torch.inference_mode():
            if self.num_inputs == 2 or not self.stochastic:
                return self._call_any_batch(spectrograms, seeds)
            # Stochastic one-input program: one image at a time, the global generator seeded
            # per image, so the output depends on (sound, seed) only.
            devices = [spectrograms.device] if spectrograms.device.type == "cuda" else []
            outs = []
            with torch.random.fork_rng(devices=devices):
                for i in range(spectrograms.shape[0]):
                    torch.manual_seed(int(seeds[i]) & ((1 << 63) - 1))
                    outs.append(self._call_any_batch(spectrograms[i:i + 1], seeds[i:i + 1]))
            return torch.cat(outs)

    def probe(self) -> None:
        """Check the program once on random input: output shape, and whether it is stochastic."""
        import torch

        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(2, *SPECTROGRAM_SHAPE, generator=gen) * 2 - 1).to(self.device)
        seeds = torch.tensor([1, 2], dtype=torch.int64, device=self.device)
        self.stochastic = False
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(1)
            a = self._call_any_batch(x, seeds)
            torch.manual_seed(2)
            b = self._call_any_batch(x, seeds)
        if tuple(a.shape) != (2, *IMAGE_SHAPE):
            raise UserError(f"{self.path}: the program maps (2, 1, 128, 100) spectrograms to {tuple(a.shape)}, "
                            f"expected (2, 3, 96, 96) images")
        if self.num_inputs == 1:
            self.stochastic = not torch.equal(a, b)
        self.info["inputs"] = ["spectrograms", "seeds"][: self.num_inputs]
        self.info["calls"] = ("batched, seeds passed to the program" if self.num_inputs == 2 else
                              "per image, global generator seeded per image" if self.stochastic else
                              "batched (deterministic program)")


# -- loading ---------------------------------------------------------------------------------------
def load_program_translator(path: str | Path, device: str = "cpu") -> ProgramTranslator:
    """Load a TorchScript file or a `torch.export` program as a translator, probe it, return it."""
    import torch

    from s2i_bench.fileio import sha256_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: generator program not found")
    kind = program_kind(path)
    dev = torch.device(device)
    if kind == "torchscript":
        try:
            program = torch.jit.load(str(path), map_location=dev)
        except Exception as e:
            raise UserError(f"{path}: cannot load as a TorchScript program ({_first_line(e)})") from None
        program.eval()  # batch norm on running statistics: outputs must not depend on the batch
        try:
            num_inputs = len(program.forward.schema.arguments) - 1  # minus self
        except (AttributeError, RuntimeError):
            num_inputs = 1
        static_batch = None
    elif kind == "export":
        _check_export_archive(path)
        try:
            with _weights_only_unpickling():
                exported = torch.export.load(str(path))
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        except Exception as e:
            raise UserError(f"{path}: cannot load as a torch.export program ({_first_line(e)})") from None
        user_inputs = list(exported.graph_signature.user_inputs)
        num_inputs = len(user_inputs)
        static_batch = _static_batch(exported, user_inputs[0]) if user_inputs else None
        program = exported.module().to(dev)
    else:
        raise UserError(f"{path}: not a TorchScript file or a torch.export program (.pt2)")
    if num_inputs not in (1, 2):
        raise UserError(f"{path}: the program takes {num_inputs} inputs; expected (spectrograms) or "
                        f"(spectrograms, seeds)")
    translator = ProgramTranslator(program, path=path, kind=kind, num_inputs=num_inputs,
                                   static_batch=static_batch, device=dev, sha256=sha256_file(path))
    translator.probe()
    return translator


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _static_batch(exported, input_name: str) -> int | None:
    """The batch size an export program was traced with, or None when it is dynamic."""
    for node in exported.graph.nodes:
        if node.op == "placeholder" and node.name == input_name:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape") and len(val.shape):
                return val.shape[0] if isinstance(val.shape[0], int) else None
    return None


def _check_export_archive(path: Path) -> None:
    """Refuse a `.pt2` whose weights or constants torch would unpickle with weights_only=False."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                base = name.rsplit("/", 1)[-1]
                folder = name.rsplit("/", 2)[-2] if name.count("/") >= 2 else ""
                if folder in ("weights", "constants") and base.endswith(".pt"):
                    raise UserError(f"{path}: refused: legacy pickled {folder} file {name!r} in the program "
                                    f"(re-export it with a current torch.export.save)")
                if base.endswith("_config.json") and folder in ("weights", "constants"):
                    config = json.loads(z.read(name))
                    entries = config.get("config", config) if isinstance(config, dict) else {}
                    for fqn, meta in (entries.items() if isinstance(entries, dict) else []):
                        if isinstance(meta, dict) and meta.get("use_pickle"):
                            raise UserError(f"{path}: refused: {folder} entry {fqn!r} is a pickle, which "
                                            f"torch would load with code execution allowed")
    except UserError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the program archive ({_first_line(e)})") from None


@contextlib.contextmanager
def _weights_only_unpickling():
    """Within: every `torch.load` is weights_only=True and TorchScript object unpickling is off,
    whatever the caller inside torch asked for."""
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
