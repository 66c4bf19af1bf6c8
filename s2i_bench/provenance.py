"""Provenance: which code, libraries and machine produced a result.

`code_version()` is recorded in every result; `numeric_environment()` is what a result's last
bits depend on (CPU instruction set, thread count, library versions); `machine_info()` is what
a benchmark records about the machine it ran on.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from s2i_bench import __version__

# -- provenance -------------------------------------------------------------------------------
CODE_PATHS = ("s2i_bench", "baselines", "protocols", "benchmarks", "pyproject.toml")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus git commit (and '.dirty' when the code differs from that commit) if
    available. Only code counts: a changed README or a result file being rewritten (the demo
    overwrites results/demo/) says nothing about the code that produced a result."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
             *CODE_PATHS],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "torchaudio", "av", "numpy", "pandas", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


SIMD_FLAGS = ("sse2", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
              "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "neon", "asimd",
              "sve")


def cpu_simd_flags() -> list[str]:
    """The vector instruction sets this CPU reports (Linux /proc/cpuinfo): the kernels torch and
    numpy pick depend on them, and with them the last bits of a float result."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in SIMD_FLAGS if f in have]
    except OSError:
        pass
    return []


def numeric_environment(threads: int | None = None) -> dict[str, Any]:
    """What a CPU result's last bits depend on: the same code, seeds and data give the same
    bytes only where all of these agree (training is bit-exact for a fixed CPU and thread count,
    not across instruction sets)."""
    import torch

    return {"cpu_model": cpu_model(), "cpu_simd_flags": cpu_simd_flags(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads_per_process": torch.get_num_threads() if threads is None else int(threads),
            "libraries": library_versions()}


def machine_info() -> dict[str, Any]:
    """What a benchmark result records about the machine it ran on."""
    import torch

    info = {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
