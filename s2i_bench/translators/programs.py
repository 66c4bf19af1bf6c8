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
2. Loading and running happen in a child process, confined by the operating system before the
   program file is opened (`confine`: Landlock lets it read the program and a private temporary
   folder and write only that folder, no TCP; a network namespace; limits on memory, CPU time
   and file size; `info["confinement"]` records what the kernel gave). Without Landlock the
   program is refused unless `--unconfined`. The child's stdout and stderr (the program's
   `print`, torch's warnings) go to a file in its private folder, never to the user's terminal
   or the parent's stdout; only the protocol pipe carries answers. There, every graph the
   program can run is checked against the operator allowlist of `opcheck` before it runs once;
   a refused operator (a file read or write, a custom op) is named and nothing runs.
3. Time limits: starting the child (interpreter, imports, runtime initialisation, confinement)
   may take `START_TIMEOUT_S`; loading, checking and probing the program, and then every call,
   `timeout_s` (default 120 s; `--program-timeout SECONDS`, finite and positive, or `inf` for
   no limit). A program that does not answer is killed and named. Ctrl-C kills it at once (the
   TorchScript interpreter would not return to Python to notice).
4. The program's own error message is passed on, not only TorchScript's "operation failed".

Randomness. Scoring needs outputs that depend on (sound, seed) only. A one-input program is
probed when loaded: the same input under two global torch seeds. Equal outputs: it is
deterministic and runs in batches; different: it draws from torch's global generator (dropout
left on, say) and runs one image at a time with that generator seeded from the image's seed.
`info["calls"]` records which.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.translators import confine, program_archives
from s2i_bench.translators.base import Translator

SPECTROGRAM_SHAPE = (1, 128, 100)
DEFAULT_TIMEOUT_S = 120.0  # per call, and for loading + checking + probing; --program-timeout
# The fixed allowance before the program is touched: a fresh interpreter, the torch import, CUDA
# initialisation and the confinement (nothing of the program runs then; slow disks and CUDA
# take tens of seconds). The program's own time starts after it, under `timeout_s`.
START_TIMEOUT_S = 300.0
OUTPUT_NAME = "output.txt"  # the child's stdout and stderr, in its private folder
logger = logging.getLogger("s2i_bench")


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
           role: str = "translator", *, private_dir: str, timeout_s: float = DEFAULT_TIMEOUT_S,
           unconfined: bool = False, memory_bytes: float | None = None, die_with_parent: bool = False) -> None:
    """The child process: confine, load, check, probe, then answer `call` requests until `close`.

    Order matters: the network namespace needs a process with one thread (the parent starts it
    with a single-threaded BLAS); everything the runtime needs is imported and initialised
    before the Landlock domain is in place (the project and library folders are not readable
    after it); torch's thread pool starts after it (Landlock covers the threads started later);
    the program file is opened only then. The first message says the process is ready and what
    confines it; the parent's clock for the program (`timeout_s`) starts there."""
    network = None if unconfined else confine.isolate_network()
    if die_with_parent:  # started by the parent's main thread: its end is the parent's end
        confine.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it kills this process on Ctrl-C
    _child_output(private_dir)
    os.environ.update({"S2I_BENCH_QUIET": "1", "TMPDIR": private_dir,
                       "TORCHINDUCTOR_CACHE_DIR": os.path.join(private_dir, "inductor"),
                       "TRITON_CACHE_DIR": os.path.join(private_dir, "triton"),
                       "CUDA_CACHE_PATH": os.path.join(private_dir, "cuda")})
    if not any(os.environ.get(k) for k in ("LOGNAME", "USER", "LNAME", "USERNAME")):
        with contextlib.suppress(Exception):  # torch asks for the user name late; /etc/passwd is closed then
            import getpass

            os.environ["USER"] = getpass.getuser()
    import torch
    import torch.export
    import torch.jit

    from s2i_bench.safeload import weights_only_unpickling  # noqa: F401 (imported while the project is readable)
    from s2i_bench.translators import opcheck  # noqa: F401

    try:
        if kind == "export":  # what torch.export.load imports first (the rest loads from the library folders)
            import torch.export._unlift
            import torch.export.pt2_archive._package
        torch.backends.cpu.get_cpu_capability()  # cpuinfo reads /proc/cpuinfo and /sys once, now
        dev = torch.device(device)
        if dev.type == "cuda":  # the context, cuBLAS and cuDNN, before the device files are closed
            x = torch.ones(1, 1, 8, 8, device=dev)
            (x[0, 0] @ x[0, 0]).sum().item()
            torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3, device=dev)).sum().item()
            torch.cuda.synchronize(dev)
        report = {"unconfined": True} if unconfined else confine.apply(
            program=path, private_dir=private_dir, device=device, timeout_s=timeout_s, memory_bytes=memory_bytes,
            network=network, kind=kind)
    except (confine.ConfinementError, OSError, ValueError) as e:
        _send(conn, {"error": f"{path}: refused: its process could not be confined ({e}); it was not loaded "
                              f"(--unconfined runs it without confinement)"})
        return
    except Exception as e:
        _send(conn, {"error": f"{path}: cannot start the program's process on {device} ({_short(e)})"})
        return
    torch.set_num_threads(max(1, threads))  # the pool's threads start inside the domain
    _send(conn, {"ok": True, "stage": "ready", "confinement": report})
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
                            f"({program_error(e)}{_memory_hint(e, report)})") from None
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
        if not unconfined:
            confine.extend_cpu(timeout_s)  # this call's share of CPU time, on top of what was used
        try:
            out = runner.translate(x, seeds).detach()
        except UserError as e:
            _send(conn, {"error": f"{path}: {e}"})
            continue
        except Exception as e:
            _send(conn, {"error": f"{path}: the program failed on input {tuple(x.shape)} "
                                  f"({program_error(e)}{_memory_hint(e, report)})"})
            continue
        if out.dtype == torch.bfloat16:
            out = out.float()
        _send(conn, {"ok": True}, (out.cpu().numpy(),))


def _child_output(private_dir: str) -> None:
    """File descriptors 1 and 2 into a file of the private folder: the program's `print`, Python
    prints while loading and torch's C++ warnings never reach the user's terminal or the parent's
    stdout (`score --json`). The protocol pipe is a separate descriptor."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(os.path.join(private_dir, OUTPUT_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _memory_hint(e: BaseException, report: dict) -> str:
    memory = ((report or {}).get("limits") or {}).get("memory")
    if isinstance(memory, int) and ("allocate" in str(e) or isinstance(e, MemoryError)):
        return f"; its memory limit is {memory / confine.GiB:.3g} GiB: --program-memory GIB raises it"
    return ""


_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")


def printable(text: str) -> str:
    """A stranger's text made safe for one line of a terminal: escape sequences and control
    characters (newlines included) removed."""
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", _CSI.sub("", text))).strip()


def checked_timeout(value) -> float:
    """A program time limit in seconds: finite and positive, or inf (no limit)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if math.isnan(seconds) or seconds <= 0:
        raise UserError(f"--program-timeout must be a positive number of seconds, or inf for no limit; got {value!r}")
    return seconds


def checked_memory(gib) -> float | None:
    """The program's memory limit in bytes (None: the default of `confine`; inf: no limit)."""
    if gib is None:
        return None
    try:
        value = float(gib)
    except (TypeError, ValueError):
        value = math.nan
    if math.isnan(value) or value <= 0:
        raise UserError(f"--program-memory must be a positive number of GiB, or inf for no limit; got {gib!r}")
    return value if math.isinf(value) else int(value * confine.GiB)


@contextlib.contextmanager
def _single_threaded_blas():
    """The child imports numpy (OpenBLAS starts a thread pool at import) before `_serve` runs;
    a process with threads cannot enter a new user namespace. The child does no linear algebra
    in numpy, so it gets one BLAS thread (torch's own threads are set by `_serve`)."""
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ProgramWorker:
    """A program in a confined child process (see the module docstring): loading and every call
    wait at most `timeout_s` (inf: no limit); Ctrl-C or a time-out kills the child. Without
    Landlock it is refused unless `unconfined`. `confinement` is the child's report."""

    def __init__(self, path: Path, kind: str, device: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 input_shape=SPECTROGRAM_SHAPE, role: str = "translator", *, unconfined: bool = False,
                 memory_gib: float | None = None):
        import multiprocessing as mp

        import torch

        self.path, self._process, self._private = path, None, None
        self.timeout_s = checked_timeout(timeout_s)
        memory_bytes = checked_memory(memory_gib)
        confine.check_available(str(path), unconfined)
        if math.isinf(self.timeout_s):
            logger.warning("%s: runs without a time limit (--program-timeout inf): a program that never answers "
                           "holds the run until Ctrl-C", path)
        self._private = tempfile.mkdtemp(prefix="s2i-bench-program-")  # the child's only writable folder
        ctx = mp.get_context("spawn")  # a fresh interpreter: nothing of ours is shared with it
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, str(path), kind, str(device), torch.get_num_threads(),
                                                         tuple(input_shape), role),
                                    kwargs={"private_dir": self._private, "timeout_s": self.timeout_s,
                                            "unconfined": bool(unconfined), "memory_bytes": memory_bytes,
                                            "die_with_parent": threading.current_thread() is threading.main_thread()},
                                    daemon=True)
        with _single_threaded_blas():
            self._process.start()
        child.close()
        ready, _ = self._wait(START_TIMEOUT_S, "to start", limit="(interpreter, imports, confinement; the "
                                                                 "program was not opened yet)")
        self.confinement = ready.get("confinement")
        header, _ = self._wait(self.timeout_s, "to load")
        self.num_inputs, self.calls = header["num_inputs"], header["calls"]

    def _wait(self, timeout_s: float, doing: str, limit: str = "(raise the limit with --program-timeout SECONDS)"):
        deadline = time.monotonic() + timeout_s
        try:
            while not self._conn.poll(0.1):
                if not self._process.is_alive():
                    why, tail = _exit_reason(self._process.exitcode), self._output_tail()
                    self.close()
                    raise UserError(f"{self.path}: the program's process ended unexpectedly ({why}) {doing}"
                                    + (f"; its last output: {tail!r}" if tail else ""))
                if time.monotonic() > deadline:
                    self.close()
                    raise UserError(f"{self.path}: the program took longer than {timeout_s:g} s {doing}; it was "
                                    f"stopped {limit}")
            header, arrays = _recv(self._conn)
        except KeyboardInterrupt:
            self.close()
            raise
        except (EOFError, OSError, ValueError) as e:
            self.close()
            raise UserError(f"{self.path}: lost the program's process {doing} ({_short(e)})") from None
        if "error" in header:
            if doing in ("to start", "to load"):
                self.close()
            raise UserError(printable(str(header["error"])))
        return header, arrays

    def _output_tail(self, chars: int = 200) -> str:
        """The end of what the child wrote on stdout/stderr, made printable (a crash's last words)."""
        try:
            with open(os.path.join(self._private, OUTPUT_NAME), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4 * chars))
                text = printable(f.read().decode("utf-8", "replace"))
        except (OSError, TypeError):
            return ""
        return text[-chars:]

    def call(self, x: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        if self._process is None:
            raise UserError(f"{self.path}: the program's process was stopped")
        _send(self._conn, {"op": "call"}, (x.astype(np.float32, copy=False), seeds.astype(np.int64, copy=False)))
        _, arrays = self._wait(self.timeout_s, f"for a batch of {len(x)}")
        return arrays[0]

    def close(self) -> None:
        process, self._process = getattr(self, "_process", None), None
        private, self._private = getattr(self, "_private", None), None
        try:
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
        finally:
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _exit_reason(code) -> str:
    reasons = {"SIGXCPU": "stopped by its CPU-time limit", "SIGKILL": "killed, out of memory?",
               "SIGSEGV": "crashed: segmentation fault", "SIGABRT": "aborted",
               "SIGXFSZ": "stopped by its file-size limit"}
    for name, reason in reasons.items():
        if code is not None and code == -getattr(signal, name, 0) != 0:
            return reason
    return f"exit code {code}"


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


def load_program_translator(path: str | Path, device: str = "cpu", timeout_s: float | None = None, *,
                            unconfined: bool = False, memory_gib: float | None = None) -> Translator:
    """A TorchScript file or a torch.export program as a Translator, checked and probed in its
    own confined process (see the module docstring); `info["confinement"]` says what confined it."""
    import torch

    path = Path(path)
    kind, sha = checked_program(path, "translator")
    worker = ProgramWorker(path, "torchscript" if kind == "torchscript" else "export", device,
                           DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s, unconfined=unconfined,
                           memory_gib=memory_gib)

    def fn(batch):
        x = batch.log_mel.detach().to("cpu", torch.float32).numpy()
        out = worker.call(x, batch.seeds.detach().cpu().numpy())
        return torch.from_numpy(out.copy())

    translator = Translator(fn, {"path": str(path), "sha256": sha, "kind": kind,
                                 "inputs": ["spectrograms", "seeds"][:worker.num_inputs], "calls": worker.calls,
                                 "confinement": worker.confinement},
                            str(device), inputs=("log_mel",))
    translator.worker = worker  # closed with the translator (and at exit)
    return translator
