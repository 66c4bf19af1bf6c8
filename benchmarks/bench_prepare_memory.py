"""Peak memory of `prepare` against the number of videos: it must stay flat (streaming ingest).

Writes the synthetic world at two sizes 4x apart (default 12 and 48 videos per class), runs
`prepare_store` on each in a fresh process (one decoding worker, so everything is in that
process) and records two peaks:

- anonymous memory (RssAnon, sampled every 20 ms): what the process itself holds, the memory
  that must fit;
- the resident set (VmHWM): also counts the pages of the memory-mapped arrays that the kernel
  keeps cached while memory is plentiful (file-backed and reclaimable).

    .venv/bin/python -m benchmarks.bench_prepare_memory [--sizes 12 48]

Writes results/benchmarks/bench_prepare_memory-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.results import machine, write


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(world: str, out: str) -> None:
    """In the fresh process: prepare, sampling memory; print one JSON line."""
    os.environ["S2I_BENCH_QUIET"] = "1"
    peak = {"anon": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["anon"] = max(peak["anon"], _status_kb("RssAnon"))
            time.sleep(0.02)

    import torch

    from s2i_bench.data.prepare import prepare_store
    from s2i_bench.protocol import load_protocol

    torch.set_num_threads(1)
    base = _status_kb("RssAnon")
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    started = time.perf_counter()
    prepare_store(world, out, load_protocol("synth"), workers=1)
    seconds = time.perf_counter() - started
    stop.set()
    t.join()
    from s2i_bench.data.store import open_store

    n = len(open_store(out, verify=False))
    print(json.dumps({"peak_anon_mb": peak["anon"] / 1024, "anon_before_mb": base / 1024,
                      "peak_rss_mb": _status_kb("VmHWM") / 1024, "segments_in_store": n,
                      "segments_before_balance": open_store(out, verify=False).split_info["segments_before_balance"],
                      "seconds": round(seconds, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[12, 48], help="videos per class")
    ap.add_argument("--child", nargs=2, metavar=("WORLD", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from s2i_bench.protocol import load_protocol
    from s2i_bench.synth import write_world

    started = dt.datetime.now()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_memory-"))
    rows = []
    try:
        for per_class in args.sizes:
            world = tmp / f"world-{per_class}"
            print(f"writing {per_class} videos per class ...", file=sys.stderr)
            write_world(world, load_protocol("synth"), videos_per_class=per_class)
            done = subprocess.run([sys.executable, "-m", "benchmarks.bench_prepare_memory", "--child", str(world),
                                   str(tmp / f"store-{per_class}")], capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["videos"] = 5 * per_class
            rows.append(row)
            shutil.rmtree(world, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = rows
    result = {"benchmark": "prepare_memory", "date": started.isoformat(timespec="seconds"), "machine": machine(),
              "runs": rows, "videos_ratio": large["videos"] / small["videos"],
              "peak_anon_ratio": large["peak_anon_mb"] / small["peak_anon_mb"],
              "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"], "aim_ratio": 1.2}
    md = [f"# prepare: peak memory against the number of videos, {result['date']}", "",
          f"Synthetic world, one decoding worker, {machine()['cpu_model']}.", "",
          "| videos | segments | peak anonymous memory (MB) | peak resident set (MB) | seconds |",
          "| --- | --- | --- | --- | --- |"]
    for r in rows:
        md.append(f"| {r['videos']} | {r['segments_before_balance']} | {r['peak_anon_mb']:.0f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['seconds']} |")
    md += ["", f"{result['videos_ratio']:.0f}x the videos: anonymous memory x{result['peak_anon_ratio']:.2f}, resident "
               f"set x{result['peak_rss_ratio']:.2f} (aim: at most x1.2). The resident set also counts cached pages of "
               "the memory-mapped arrays, which the kernel reclaims under pressure.", ""]
    write("bench_prepare_memory", started, result, md,
          args.out or Path(__file__).resolve().parent.parent / "results" / "benchmarks")


if __name__ == "__main__":
    main()
