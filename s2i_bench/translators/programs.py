"""Translators given as programs: TorchScript files and `torch.export` programs (`.pt2`).

A program lets anyone score any architecture without shipping Python code. It maps normalised
spectrograms (B, 1, 128, 100) in [-1, 1] to images (the contract of `translators.base`: uint8
(B, H, W, 3) or float (B, 3, H, W) in [-1, 1], any size). Two calling conventions:

    program(spectrograms)          -> images   see "randomness" below
    program(spectrograms, seeds)   -> images   seeds (B,) int64: the program draws its own
                                               per-image randomness from them

A program is a stranger's file, so it stays data until it is known to be pure computation:

1. Before loading, in this process, by parsing, never by loading (`s2i_bench.archive`): the
   zip itself is read strictly (duplicate or case-colliding names, encryption, compression
   other than deflate, headers that disagree, overlapping entries, zip bombs: refused), so that
   torch's zip reader sees the same members as the checks. A TorchScript archive whose code
   does not parse as Python, or defines or names `__setstate__` (code TorchScript runs while
   the file loads), or refers to a TorchBind class, is refused. A `.pt2` may hold only what
   `torch.export.save` writes (no pickled weights or constants, no AOTInductor libraries), and
   its JSON is walked against torch's schema with a grammar for every string: symbolic sizes
   (which torch hands to sympy's `eval`) must parse as the expressions torch writes, names
   (which torch pastes into code it runs) must be identifiers, and `guards_code` (which torch
   execs) must be empty. So a refusal here, and an operator refused below, means that nothing of
   the program ran.
2. Loading and running happen in a child process. There, every graph the program can run is
   checked against the operator allowlist of `opcheck` before it runs once; a refused operator
   (a file read or write, a custom op) is named and nothing runs.
3. Every call has a time limit (`timeout_s`, default 120 s per batch; `--program-timeout` raises
   it): a program that does not answer is killed and named. Ctrl-C kills it at once (the
   TorchScript interpreter would not return to Python to notice).
4. The program's own error message is passed on, not only TorchScript's "operation failed".

Randomness. Scoring needs outputs that depend on (sound, seed) only. A one-input program is
probed when loaded: the same input under two global torch seeds. Equal outputs: it is
deterministic and runs in batches; different: it draws from torch's global generator (dropout
left on, say) and runs one image at a time with that generator seeded from the image's seed.
`info["calls"]` records which.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.translators import program_archives
from s2i_bench.translators.base import Translator

SPECTROGRAM_SHAPE = (1, 128, 100)
DEFAULT_TIMEOUT_S = 120.0
START_TIMEOUT_S = 300.0  # process start, torch import, load, graph check and the probe


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def program_error(e: BaseException) -> str:
    """The program's own message: TorchScript puts it on the last line, after its traceback."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line):
            return line[:300]
    return f"{type(e).__name__}: {lines[-1][:300]}"


# -- the child process ------------------------------------------------------------------------------
def _send(conn, header: dict, arrays: tuple = ()) -> None:
    """A JSON header and raw array bytes: nothing is pickled across the process boundary."""
    meta = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    conn.send_bytes(json.dumps({**header, "arrays": meta}).encode())
    for a in arrays:
        conn.send_bytes(np.ascontiguousarray(a).tobytes())


def _recv(conn) -> tuple[dict, list[np.ndarray]]:
    header = json.loads(conn.recv_bytes().decode())
    arrays = []
    for meta in header.get("arrays", []):
        dtype = np.dtype(meta["dtype"])
        if dtype.hasobject:
            raise ValueError("object arrays are not accepted")
        arrays.append(np.frombuffer(conn.recv_bytes(), dtype=dtype).reshape(meta["shape"]))
    return header, arrays


def _load_checked(path: Path, kind: str, device):
    """(callable, number of inputs, static batch size or None): loaded, every graph checked."""
    import torch

    from s2i_bench.safeload import weights_only_unpickling
    from s2i_bench.translators import opcheck

    if kind == "torchscript":
        try:
            program = torch.jit.load(str(path), map_location=device)
        except Exception as e:
            raise UserError(f"{path}: cannot load as a TorchScript program ({_short(e)})") from None
        refused = opcheck.refused_operators(opcheck.script_operators(program))
        if refused:
            raise UserError(f"{path}: refused: the program uses operator(s) outside the allowlist of pure tensor "
                            f"computation: {', '.join(refused[:8])}{' ...' if len(refused) > 8 else ''}; it was "
                            f"not run")
        program.eval()  # batch norm on running statistics: outputs must not depend on the batch
        try:
            num_inputs = len(program.forward.schema.arguments) - 1  # minus self
        except (AttributeError, RuntimeError):
            num_inputs = 1
        return program, num_inputs, None
    try:
        with weights_only_unpickling():
            exported = torch.export.load(str(path))
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except Exception as e:
        raise UserError(f"{path}: cannot load as a torch.export program ({_short(e)})") from None
    refused = opcheck.refused_operators(opcheck.export_operators(exported))
    if refused:
        raise UserError(f"{path}: refused: the program uses operator(s) outside the allowlist of pure tensor "
                        f"computation: {', '.join(refused[:8])}{' ...' if len(refused) > 8 else ''}; it was not run")
    user_inputs = list(exported.graph_signature.user_inputs)
    static_batch = _static_batch(exported, user_inputs[0]) if user_inputs else None
    return exported.module().to(device), len(user_inputs), static_batch


def _static_batch(exported, input_name: str) -> int | None:
    """The batch size an export program was traced with, or None when it is dynamic."""
    for node in exported.graph.nodes:
        if node.op == "placeholder" and node.name == input_name:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape") and len(val.shape):
                return val.shape[0] if isinstance(val.shape[0], int) else None
    return None


class _Runner:
    """Inside the child: calls the program by its convention, chunked to a static batch."""

    def __init__(self, program, num_inputs: int, static_batch: int | None, device):
        self.program, self.num_inputs, self.static_batch, self.device = program, num_inputs, static_batch, device
        self.stochastic = False

    def _call(self, x, seeds):
        import torch

        out = self.program(*((x, seeds) if self.num_inputs == 2 else (x,)))
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise UserError(f"the program must return one image tensor, got {type(out).__name__}")
        return out

    def _any_batch(self, x, seeds):
        import torch

        b = self.static_batch
        if b is None or x.shape[0] == b:
            return self._call(x, seeds)
        outs = []
        for start in range(0, x.shape[0], b):
            xs, ss = x[start:start + b], seeds[start:start + b]
            n = xs.shape[0]
            if n < b:  # pad the last chunk by repeating its last item
                xs = torch.cat([xs, xs[-1:].expand(b - n, *xs.shape[1:])])
                ss = torch.cat([ss, ss[-1:].expand(b - n)])
            outs.append(self._call(xs, ss)[:n])
        return torch.cat(outs)

    def translate(self, x, seeds):
        import torch

        with torch.inference_mode():
            if self.num_inputs == 2 or not self.stochastic:
                return self._any_batch(x, seeds)
            devices = [x.device] if x.device.type == "cuda" else []
            outs = []
            with torch.random.fork_rng(devices=devices):
                for i in range(x.shape[0]):
                    torch.manual_seed(int(seeds[i]) & ((1 << 63) - 1))
                    outs.append(self._any_batch(x[i:i + 1], seeds[i:i + 1]))
            return torch.cat(outs)

    def probe(self, input_shape=SPECTROGRAM_SHAPE) -> str:
        """Run once on random input of `input_shape` (per item); a one-input program is
        stochastic when two global seeds give different outputs."""
        import torch

        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(2, *input_shape, generator=gen) * 2 - 1).to(self.device)
        seeds = torch.tensor([1, 2], dtype=torch.int64, device=self.device)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(1)
            a = self._any_batch(x, seeds)
            torch.manual_seed(2)
            b = self._any_batch(x, seeds)
        if self.num_inputs == 1:
            self.stochastic = tuple(a.shape) != tuple(b.shape) or not torch.equal(a, b)
        return ("batched, seeds passed to the program" if self.num_inputs == 2 else
                "per image, global generator seeded per image" if self.stochastic else
                "batched (deterministic program)")


def _serve(conn, path: str, kind: str, device: str, threads: int, input_shape=SPECTROGRAM_SHAPE,
           role: str = "translator") -> None:
    """The child process: load, check, probe, then answer `call` requests until `close`."""
    import os
    import signal

    os.environ["S2I_BENCH_QUIET"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it kills this process on Ctrl-C
    import torch

    torch.set_num_threads(max(1, threads))
    dev = torch.device(device)
    try:
        program, num_inputs, static_batch = _load_checked(Path(path), kind, dev)
        if role == "translator" and num_inputs not in (1, 2):
            raise UserError(f"{path}: the program takes {num_inputs} inputs; expected (spectrograms) or "
                            f"(spectrograms, seeds)")
        if role != "translator" and num_inputs != 1:
            raise UserError(f"{path}: a {role} program takes one input (a batch); this one takes {num_inputs}")
        runner = _Runner(program, num_inputs, static_batch, dev)
        try:
            calls = runner.probe(tuple(input_shape))
            if role != "translator" and runner.stochastic:
                raise UserError(f"a {role} must be deterministic (export it in eval mode): two runs on the same "
                                "input gave different outputs")
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        except Exception as e:
            raise UserError(f"{path}: the program failed on a probe batch of 2 spectrograms "
                            f"({program_error(e)})") from None
    except UserError as e:
        _send(conn, {"error": str(e)})
        return
    except Exception as e:
        _send(conn, {"error": f"{path}: cannot load the program ({_short(e)})"})
        return
    _send(conn, {"ok": True, "num_inputs": num_inputs, "calls": calls, "static_batch": static_batch})
    while True:
        try:
            header, arrays = _recv(conn)
        except (EOFError, OSError):
            return
        if header.get("op") != "call":
            return
        x = torch.from_numpy(arrays[0].copy()).to(dev)
        seeds = torch.from_numpy(arrays[1].copy()).to(dev)
        try:
            out = runner.translate(x, seeds).detach()
        except UserError as e:
            _send(conn, {"error": f"{path}: {e}"})
            continue
        except Exception as e:
            _send(conn, {"error": f"{path}: the program failed on input {tuple(x.shape)} ({program_error(e)})"})
            continue
        if out.dtype == torch.bfloat16:
            out = out.float()
        _send(conn, {"ok": True}, (out.cpu().numpy(),))


class ProgramWorker:
    """A program in a child process: every call waits at most `timeout_s`; Ctrl-C or a time-out
    kills the child."""

    def __init__(self, path: Path, kind: str, device: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 input_shape=SPECTROGRAM_SHAPE, role: str = "translator"):
        import multiprocessing as mp

        import torch

        self.path, self.timeout_s = path, float(timeout_s)
        ctx = mp.get_context("spawn")  # a fresh interpreter: nothing of ours is shared with it
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, str(path), kind, str(device), torch.get_num_threads(),
                                                         tuple(input_shape), role),
                                    daemon=True)
        self._process.start()
        child.close()
        header, _ = self._wait(START_TIMEOUT_S, "to load")
        self.num_inputs, self.calls = header["num_inputs"], header["calls"]

    def _wait(self, timeout_s: float, doing: str):
        deadline = time.monotonic() + timeout_s
        try:
            while not self._conn.poll(0.1):
                if not self._process.is_alive():
                    self.close()
                    raise UserError(f"{self.path}: the program's process ended unexpectedly (exit code "
                                    f"{self._process.exitcode}) {doing}")
                if time.monotonic() > deadline:
                    self.close()
                    raise UserError(f"{self.path}: the program took longer than {timeout_s:g} s {doing}; it was "
                                    f"stopped (raise the limit with --program-timeout SECONDS)")
            header, arrays = _recv(self._conn)
        except KeyboardInterrupt:
            self.close()
            raise
        except (EOFError, OSError, ValueError) as e:
            self.close()
            raise UserError(f"{self.path}: lost the program's process {doing} ({_short(e)})") from None
        if "error" in header:
            if doing == "to load":
                self.close()
            raise UserError(header["error"])
        return header, arrays

    def call(self, x: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        if self._process is None:
            raise UserError(f"{self.path}: the program's process was stopped")
        _send(self._conn, {"op": "call"}, (x.astype(np.float32, copy=False), seeds.astype(np.int64, copy=False)))
        _, arrays = self._wait(self.timeout_s, f"for a batch of {len(x)}")
        return arrays[0]

    def close(self) -> None:
        process, self._process = getattr(self, "_process", None), None
        if process is None:
            return
        try:
            if process.is_alive():
                try:
                    _send(self._conn, {"op": "close"})
                except (OSError, ValueError):
                    pass
                process.join(0.5)
            if process.is_alive():
                process.kill()
                process.join(5)
        finally:
            self._conn.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def checked_program(path: Path, role: str) -> tuple[str, str]:
    """(kind, sha256) of a program file that passed the checks made before anything is loaded
    (module docstring, step 1): a strictly read zip, and a TorchScript archive without load-time
    code or a .pt2 with nothing torch would eval, exec or unpickle."""
    from s2i_bench.fileio import sha256_file
    from s2i_bench.safeload import archive_kind

    if not path.is_file():
        raise UserError(f"{path}: {role} program not found")
    kind = archive_kind(path)
    if kind == "torchscript":
        program_archives.check_torchscript_archive(path)
    elif kind == "export":
        program_archives.check_export_archive(path)
    else:
        raise UserError(f"{path}: not a TorchScript file or a torch.export program (.pt2): "
                        f"{'not a zip archive, or cut short' if kind is None else 'a torch.save file'}")
    return kind, sha256_file(path)


def load_program_translator(path: str | Path, device: str = "cpu", timeout_s: float | None = None) -> Translator:
    """A TorchScript file or a torch.export program as a Translator, checked and probed in its
    own process (see the module docstring)."""
    import torch

    path = Path(path)
    kind, sha = checked_program(path, "translator")
    worker = ProgramWorker(path, "torchscript" if kind == "torchscript" else "export", device,
                           DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)

    def fn(batch):
        x = batch.log_mel.detach().to("cpu", torch.float32).numpy()
        out = worker.call(x, batch.seeds.detach().cpu().numpy())
        return torch.from_numpy(out.copy())

    translator = Translator(fn, {"path": str(path), "sha256": sha, "kind": kind,
                                 "inputs": ["spectrograms", "seeds"][:worker.num_inputs], "calls": worker.calls},
                            str(device), inputs=("log_mel",))
    translator.worker = worker  # closed with the translator (and at exit)
    return translator
