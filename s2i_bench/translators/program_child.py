"""The child process that runs a stranger's program (`programs`: the parent side, and the module
docstring of what is checked where).

`serve` is the target the parent starts with `multiprocessing` spawn: it confines the process
(`confine`), loads the program, checks every graph against the operator allowlist (`opcheck`),
probes it, then answers `call` requests on the protocol pipe (`program_pipe`) until `close`.
Everything the child imports, it imports before it confines itself: afterwards the project and
library folders are unreadable.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import sys
from pathlib import Path

import s2i_bench.translators.confine as confine
import s2i_bench.translators.opcheck as opcheck
from s2i_bench.fileio import dig
from s2i_bench.errors import UserError
from s2i_bench.safeload import weights_only_unpickling
from s2i_bench.translators.program_pipe import (DEFAULT_TIMEOUT_S, OUTPUT_NAME, SPECTROGRAM_SHAPE, recv, send,
                                                short_error)


def program_error(e: BaseException) -> str:
    """The program's own message: TorchScript puts it on the last line, after its traceback."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line):
            return line[:300]
    return f"{type(e).__name__}: {lines[-1][:300]}"


def _load_checked(path: Path, kind: str, device):
    """(callable, number of inputs, static batch size or None): loaded, every graph checked."""
    import torch

    if kind == "torchscript":
        try:
            program = torch.jit.load(str(path), map_location=device)
        except Exception as e:
            raise UserError(f"{path}: cannot load as a TorchScript program ({short_error(e)})") from None
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
        raise UserError(f"{path}: cannot load as a torch.export program ({short_error(e)})") from None
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


def serve(conn, path: str, kind: str, device: str, threads: int, input_shape=SPECTROGRAM_SHAPE,
          role: str = "translator", *, private_dir: str, timeout_s: float = DEFAULT_TIMEOUT_S,
          unconfined: bool = False, memory_bytes: float | None = None, die_with_parent: bool = False) -> None:
    """The child process: confine, load, check, probe, then answer `call` requests until `close`.

    Order matters: the network namespace needs a process with one thread (the parent starts it
    with a single-threaded BLAS); everything the runtime needs is imported and initialised
    before the Landlock domain is in place (the project and library folders are not readable
    after it); torch's thread pool starts after it (Landlock covers the threads started later);
    the program file is opened only then. The first message says the process is ready and what
    confines it; the parent's clock for the program (`timeout_s`) starts there."""
    network = _prepare_process(private_dir, unconfined, die_with_parent)
    started = _start_runtime(conn, path, kind, device, threads, private_dir=private_dir, timeout_s=timeout_s,
                             unconfined=unconfined, memory_bytes=memory_bytes, network=network)
    if started is None:
        return
    dev, report = started
    runner = _load_and_probe(conn, path, kind, dev, input_shape, role, report)
    if runner is None:
        return
    _answer_calls(conn, runner, path, dev, timeout_s, unconfined, report)


def _prepare_process(private_dir: str, unconfined: bool, die_with_parent: bool):
    """The network namespace (while the process has one thread), the parent's lifetime, Ctrl-C
    left to the parent, the output file and the environment: before anything is imported."""
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
            os.environ["USER"] = getpass.getuser()
    return network


def _start_runtime(conn, path: str, kind: str, device: str, threads: int, *, private_dir: str, timeout_s: float,
                   unconfined: bool, memory_bytes: float | None, network):
    """Import and initialise torch (and CUDA), then confine the process and start torch's thread
    pool inside the domain; says "ready" to the parent. (device, confinement report), or None
    when the parent was sent the error."""
    import torch
    import torch.export
    import torch.jit

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
        send(conn, {"error": f"{path}: refused: its process could not be confined ({e}); it was not loaded "
                             f"(--unconfined runs it without confinement)"})
        return None
    except Exception as e:
        send(conn, {"error": f"{path}: cannot start the program's process on {device} ({short_error(e)})"})
        return None
    torch.set_num_threads(max(1, threads))  # the pool's threads start inside the domain
    send(conn, {"ok": True, "stage": "ready", "confinement": report})
    return dev, report


def _load_and_probe(conn, path: str, kind: str, dev, input_shape, role: str, report: dict):
    """Load the program, check its graphs and its inputs, probe it; tell the parent. The runner,
    or None when the parent was sent the error."""
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
        send(conn, {"error": str(e)})
        return None
    except Exception as e:
        send(conn, {"error": f"{path}: cannot load the program ({short_error(e)})"})
        return None
    send(conn, {"ok": True, "num_inputs": num_inputs, "calls": calls, "static_batch": static_batch})
    return runner


def _answer_calls(conn, runner: _Runner, path: str, dev, timeout_s: float, unconfined: bool, report: dict) -> None:
    """Answer `call` requests until `close` (or the pipe closes)."""
    import torch

    while True:
        try:
            header, arrays = recv(conn)
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
            send(conn, {"error": f"{path}: {e}"})
            continue
        except Exception as e:
            send(conn, {"error": f"{path}: the program failed on input {tuple(x.shape)} "
                                 f"({program_error(e)}{_memory_hint(e, report)})"})
            continue
        if out.dtype == torch.bfloat16:
            out = out.float()
        send(conn, {"ok": True}, (out.cpu().numpy(),))


def _child_output(private_dir: str) -> None:
    """File descriptors 1 and 2 into a file of the private folder: the program's `print`, Python
    prints while loading and torch's C++ warnings never reach the user's terminal or the parent's
    stdout (`score --json`). The protocol pipe is a separate descriptor."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(os.path.join(private_dir, OUTPUT_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _memory_hint(e: BaseException, report: dict) -> str:
    memory = dig(report, "limits", "memory")
    if isinstance(memory, int) and ("allocate" in str(e) or isinstance(e, MemoryError)):
        return f"; its memory limit is {memory / confine.GiB:.3g} GiB: --program-memory GIB raises it"
    return ""
