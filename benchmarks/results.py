"""Where the benchmarks and checks write: results/benchmarks/<name>-<date>.{json,md}, with the
machine each ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "benchmarks"


def machine() -> dict:
    from s2i_bench.provenance import cpu_model

    return {"cores": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform()}


def write(name: str, started: dt.datetime, result: dict, md: list[str], out: Path = OUT) -> Path:
    """`result` as JSON and `md` as Markdown, atomically; prints the Markdown. Returns the stem."""
    from s2i_bench.fileio import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-{started:%Y%m%d-%H%M%S}"
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md))
    print("\n".join(md))
    print(f"wrote {stem}.json and .md", file=sys.stderr)
    return stem
