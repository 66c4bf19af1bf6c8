"""Every benchmark and acceptance check, one after the other (`make bench`).

    .venv/bin/python -m benchmarks.run_all [--work demo-work] [--only bench_train check_correction ...]

The `bench_*` scripts make their own data. The `check_*` scripts that need a store, translator
runs and a classifier bundle read them from the demo's work folder (`make demo` first); without
it they are skipped with a message, never silently. Each script writes its dated .json and .md
into results/benchmarks/ with the machine it ran on. They run one at a time because they time
themselves: two at once on 2 cores would inflate each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"


def plan(work: Path) -> list[tuple[str, list[str] | None, str]]:
    """(name, arguments or None when it cannot run, why not)."""
    store = work / "store"
    # run folders: runs/<name>/ or, for groups of seeds, runs/<name>/seed-<S>/
    runs = sorted({p.parent for pattern in ("*/options.json", "*/*/options.json")
                   for p in (work / "runs").glob(pattern)}) if (work / "runs").is_dir() else []
    bundle = work / "classifiers"
    has_store = (store / "store.json").is_file()
    missing = f"needs the demo's store in {work} (run `make demo` first)"
    return [
        ("check_synth_world", [], ""),
        ("bench_synth", [], ""),
        ("bench_prepare", [], ""),
        ("bench_prepare_memory", ["--sizes", "80", "320"], ""),
        ("bench_train", [], ""),
        ("bench_score", [], ""),
        ("bench_classifiers", [], ""),
        ("bench_report", [], ""),
        ("extractor_cost", [], ""),
        ("check_correction",
         ["--store", str(store)] + (["--runs", *map(str, runs), "--classifiers", str(bundle / "bundle.pt")]
                                    if runs and (bundle / "bundle.pt").is_file() else [])
         if has_store else None, missing),
        ("check_classifier_variance", ["--work", str(work)] if has_store and runs else None, missing),
        ("check_classifiers", ["--store", str(store), "--runs", *map(str, runs)] if has_store else None, missing),
        ("check_intervals", ["--work", str(work)] if has_store and runs else None, missing),
        ("check_compare", ["--work", str(work)] if has_store and runs else None, missing),
        ("check_audit", ["--work", str(work), "--samples", "10"] if has_store and runs else None, missing),
        ("gpu_check", [] if _has_cuda() else None,
         "needs a CUDA device (python3 -m benchmarks.gpu_check on the GPU machine)"),
    ]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "demo-work", help="the demo's work folder")
    ap.add_argument("--only", nargs="+", default=None, help="run only these scripts (names without .py)")
    args = ap.parse_args()

    steps = plan(args.work)
    names = [name for name, _, _ in steps]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        sys.exit(f"error: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")

    summary = []
    for name, arguments, why in steps:
        if args.only and name not in args.only:
            continue
        if arguments is None:
            print(f"== {name}: skipped, {why}", flush=True)
            summary.append((name, "skipped", 0.0))
            continue
        print(f"== {name} {' '.join(arguments)}", flush=True)
        t0 = time.perf_counter()
        # as modules from the repository root: the installed package, and tests.helpers for fakes
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *arguments], cwd=ROOT)
        seconds = time.perf_counter() - t0
        summary.append((name, "ok" if rc == 0 else f"failed (exit {rc})", seconds))
    print("\n".join(f"{name:20s} {state:18s} {seconds:7.1f} s" for name, state, seconds in summary))
    if any(state.startswith("failed") for _, state, _ in summary):
        sys.exit(1)


if __name__ == "__main__":
    main()
