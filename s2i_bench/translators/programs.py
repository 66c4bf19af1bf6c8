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
2. Loading and running happen in a child process (`program_child`), confined by the operating
   system before the program file is opened (`confine`: Landlock lets it read the program and a
   private temporary folder and write only that folder, no TCP; a network namespace; limits on
   memory, CPU time and file size; `info["confinement"]` records what the kernel gave). Without
   Landlock the program is refused unless `--unconfined`. The child's stdout and stderr (the
   program's `print`, torch's warnings) go to a file in its private folder, never to the user's
   terminal or the parent's stdout; only the protocol pipe (`program_pipe`) carries answers.
   There, every graph the program can run is checked against the operator allowlist of
   `opcheck` before it runs once; a refused operator (a file read or write, a custom op) is
   named and nothing runs.
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
import logging
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import s2i_bench.translators.confine as confine
import s2i_bench.translators.program_archives as program_archives
import s2i_bench.translators.program_child as program_child
from s2i_bench.errors import UserError
from s2i_bench.fileio import sha256_file
from s2i_bench.safeload import archive_kind
from s2i_bench.translators.base import Translator
from s2i_bench.translators.program_pipe import (DEFAULT_TIMEOUT_S, OUTPUT_NAME, SPECTROGRAM_SHAPE, recv, send,
                                                short_error)

# The fixed allowance before the program is touched: a fresh interpreter, the torch import, CUDA
# initialisation and the confinement (nothing of the program runs then; slow disks and CUDA
# take tens of seconds). The program's own time starts after it, under `timeout_s`.
START_TIMEOUT_S = 300.0
logger = logging.getLogger(__name__)

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
    """The child imports numpy (OpenBLAS starts a thread pool at import) before
    `program_child.serve` runs; a process with threads cannot enter a new user namespace. The
    child does no linear algebra in numpy, so it gets one BLAS thread (torch's own threads are
    set by `serve`)."""
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
        self._process = ctx.Process(target=program_child.serve,
                                    args=(child, str(path), kind, str(device), torch.get_num_threads(),
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
            header, arrays = recv(self._conn)
        except KeyboardInterrupt:
            self.close()
            raise
        except (EOFError, OSError, ValueError) as e:
            self.close()
            raise UserError(f"{self.path}: lost the program's process {doing} ({short_error(e)})") from None
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
        send(self._conn, {"op": "call"}, (x.astype(np.float32, copy=False), seeds.astype(np.int64, copy=False)))
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
                        send(self._conn, {"op": "close"})
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
