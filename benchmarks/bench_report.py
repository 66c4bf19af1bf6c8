"""Report cost: seconds for `s2i-bench report --figures` over the demo's shape of inputs.

Self-contained: it fabricates, exactly per docs/architecture.md, what the demo gives the report
(a store, N runs of E epochs with log.csv and per-epoch metric records of the `synth` protocol,
a sample sheet, a bundle card) with the fabricators of tests/fakes.py, then times the
report in a fresh process (imports included, as `make demo` pays them) for each format set.

    .venv/bin/python -m benchmarks.bench_report [--runs 3] [--epochs 60] [--repeats 2]

Writes results/benchmarks/bench_report-<date>.json and .md, recording the machine. Numbers taken
on a shared or busy machine are upper bounds: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version, cpu_model

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs (embedding sizes 32, 64, 128, ...)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    # The tests' fakes, imported from the repository root (where every benchmark runs:
    # python -m benchmarks.<name>); tests/fakes.py is their one definition.
    from tests.fakes import make_card, make_fake_store, make_run

    tmp = Path(tempfile.mkdtemp(prefix="bench_report-"))
    store = make_fake_store(tmp / "store", protocol_name="synth", per_class={"train": 8, "val": 4, "test": 8})
    dims = [32 * 2 ** i for i in range(args.runs)]
    runs = [make_run(tmp / "runs", store, d, epochs=args.epochs) for d in dims]
    card = make_card(tmp / "bundle.json")

    cases = [("tables only", []), ("figures png", ["--figures"]),
             ("figures png,pdf,svg", ["--figures", "--format", "png,pdf,svg"])]
    results = []
    for name, extra in cases:
        times, cpu = [], []
        for r in range(args.repeats):
            out = tmp / f"out-{len(results)}-{r}"
            cmd = [sys.executable, "-m", "s2i_bench.cli", "report", *map(str, runs), "--out", str(out),
                   "--data", str(store), "--classifiers", str(card), *extra]
            started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True, env={**os.environ, "S2I_BENCH_QUIET": "1"})
            times.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU seconds of the report process: what a quiet 1-core share would take as wall time
            cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        files = sum(1 for p in (tmp / f"out-{len(results)}-0").rglob("*") if p.is_file())
        results.append({"case": name, "seconds": times, "best_seconds": min(times), "cpu_seconds": cpu,
                        "best_cpu_seconds": min(cpu), "files": files})
        print(f"{name:22s} best {min(times):6.2f} s wall, {min(cpu):6.2f} s CPU over {args.repeats} (files: {files})")

    load = os.getloadavg()
    record = {
        "benchmark": "report", "date": dt.date.today().isoformat(), "code_version": code_version(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1_5_15": load,
                    "python": platform.python_version(), "torch": torch.__version__},
        "inputs": {"protocol": "synth", "runs": args.runs, "epochs": args.epochs, "embedding_dims": dims,
                   "records_per_run": args.epochs, "sample_sheet": True, "store": True, "bundle_card": True},
        "results": results,
        "budget": "the demo's report over 3 runs x 60 epochs: <= 30 s on 2 CPU cores",
        "note": "a fresh process per report (imports included); wall-clock seconds and the process's CPU "
                "seconds (user + system; the report is single-threaded, so on a quiet machine wall ~ CPU)",
    }
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = ROOT / "results" / "benchmarks"
    atomic_write_json(out_dir / f"bench_report-{stamp}.json", record)
    lines = [f"# Report benchmark ({record['date']})", "",
             f"Machine: {record['machine']['cpu']}, {record['machine']['cores']} cores, load average "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; torch {torch.__version__}; code {code_version()}.", "",
             f"Inputs: {args.runs} runs x {args.epochs} epochs of the `synth` protocol (fabricated per the contracts), "
             "a store, a sample sheet, a bundle card. One fresh `s2i-bench report` process per measurement.", "",
             "| case | best wall (s) | best CPU (s) | all wall (s) | files |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['case']} | {r['best_seconds']:.2f} | {r['best_cpu_seconds']:.2f} | "
              f"{', '.join(f'{t:.2f}' for t in r['seconds'])} | {r['files']} |" for r in results]
    lines += ["", "Measured on a shared machine unless the load average above is near 0: re-run on a quiet one."]
    atomic_write_text(out_dir / f"bench_report-{stamp}.md", "\n".join(lines) + "\n")
    print(f"written {out_dir / f'bench_report-{stamp}.md'}")


if __name__ == "__main__":
    main()
