"""How much does the metric depend on which classifiers were trained? The demo's chain (pool ->
judge labels -> five classifiers) repeated with other pool and classifier seeds on the same
checkpoints, and the last checkpoint of every run scored with each classifier set: raw and
corrected shares beside the judge's truth, which does not change between seeds.

    .venv/bin/python -m benchmarks.check_classifier_variance [--work demo-work] [--seeds 0 1 2 3 4 5]

Seed 0 repeats the demo's own classifiers (the demo uses pool seed 0 and classifier seed 0), so
its row must equal the demo's last-epoch numbers. Each seed runs in its own single-threaded
process, two at a time on 2 cores (about 3.5 CPU minutes per seed for `synth`). Writes
results/benchmarks/check_classifier_variance-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version, machine_info

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")


def one_seed(work: Path, scratch: Path, seed: int) -> dict:
    """Pool, labels and classifiers with `seed`; the last checkpoint of every run scored."""
    import contextlib
    import io

    import torch

    torch.set_num_threads(1)
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.informativity.classifiers import train_classifiers
    from s2i_bench.demo.pipeline import pool_checkpoints
    from s2i_bench.runs import RunFolder
    from s2i_bench.translators import load_translator
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.data.store import open_store

    store = open_store(work / "store")
    p = store.protocol
    from s2i_bench.defaults import Work
    from s2i_bench.demo.pipeline import demo_run_dirs

    runs = demo_run_dirs(Work(work), p)
    pool_dir, bundle_path = scratch / f"pool-{seed}", scratch / f"classifiers-{seed}.pt"
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the per-class lines of 6 seeds would interleave
        build_pool(pool_checkpoints(runs, p.classifiers.num_models), work / "store", pool_dir, seed=seed,
                   overwrite=True)
        label_pool(pool_dir, use_judge=True)
        train_classifiers(pool_dir, bundle_path, store=work / "store", seed=seed, overwrite=True)
    bundle = load_bundle(bundle_path)
    out = {"seed": seed, "classifiers": {}, "runs": {}}
    for key, entry in bundle.card["classes"].items():
        out["classifiers"][key] = {"accuracy": entry.get("test_accuracy"), "sensitivity": entry.get("sensitivity"),
                                   "specificity": entry.get("specificity"), "n_test": entry.get("n_test")}
    for run in runs:
        ckpt = RunFolder(run).checkpoints()[-1]
        translator = load_translator(ckpt)
        rec = score_translator(translator, store, bundle, protocol=p, split=p.scoring.split, seed=p.scoring.seed,
                               samples=1, batch_size=p.scoring.batch_size, run=f"{run.parent.name}/{run.name}")
        classes = {c: {k: rec.cls(c).get(k) for k in ("raw_share", "corrected_share", "corrected_ci", "true_share")}
                   for c in rec.class_keys}
        m = rec.mean_result()
        out["runs"][f"{run.parent.name}/{run.name}"] = {"epoch": rec.epoch, "classes": classes,
                                 "mean": {k: m.get(k) for k in ("raw_share", "corrected_share", "corrected_ci",
                                                                 "true_share")}}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def covers(entry: dict) -> bool | None:
    ci = entry.get("corrected_ci")
    if ci is None or entry.get("true_share") is None:
        return None
    return ci[0] <= entry["true_share"] <= ci[1]


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "demo-work", help="the demo's work folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    if not (args.work / "store" / "store.json").is_file():
        sys.exit(f"error: {args.work} holds no demo store; run `make demo` first")

    machine = machine_info()
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
            futures = [ex.submit(one_seed, args.work, Path(tmp), s) for s in args.seeds]
            for f in cf.as_completed(futures):
                r = f.result()
                print(f"seed {r['seed']}: done in {r['seconds']} s", flush=True)
                results.append(r)
    results.sort(key=lambda r: r["seed"])

    runs = list(results[0]["runs"])
    summary = {}
    for run in runs:
        # a mean is null when a class has no classifier or no usable correction (Se + Sp <= 1)
        raw = [x for r in results if (x := r["runs"][run]["mean"]["raw_share"]) is not None]
        cor = [x for r in results if (x := r["runs"][run]["mean"]["corrected_share"]) is not None]
        cls_cov = [covers(e) for r in results for e in r["runs"][run]["classes"].values()]
        summary[run] = {"true_share": results[0]["runs"][run]["mean"]["true_share"],
                        "raw_min": min(raw, default=None), "raw_max": max(raw, default=None),
                        "corrected_min": min(cor, default=None), "corrected_max": max(cor, default=None),
                        "seeds_without_corrected_mean": len(results) - len(cor),
                        "mean_ci_covers": sum(bool(covers(r["runs"][run]["mean"])) for r in results),
                        "class_ci_covers": sum(c is True for c in cls_cov),
                        "class_cases": sum(c is not None for c in cls_cov)}
    now = dt.datetime.now(dt.timezone.utc)
    record = {"kind": "check_classifier_variance", "created": now.replace(microsecond=0).isoformat(),
              "work": str(args.work), "seeds": args.seeds, "machine": machine, "code_version": code_version(),
              "seconds": round(time.perf_counter() - started, 1), "summary": summary, "results": results}
    stamp = now.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"check_classifier_variance-{stamp}.json", record)

    lines = [f"# check_classifier_variance ({record['created']})", "",
             f"The demo's checkpoints ({args.work}), {len(results)} pool + classifier seeds, the last "
             f"checkpoint of each run scored on the test sounds with each classifier set. Code "
             f"{record['code_version']}; {machine['cpu_count']} cores, {machine['cpu_model']}; "
             f"{record['seconds']:.0f} s.", "",
             "| run | judge's truth | raw mean, min–max | corrected mean, min–max "
             "| seeds whose mean CI holds the truth | (class, seed) CIs holding the truth |",
             "| --- | --- | --- | --- | --- | --- |"]
    for run, s in summary.items():
        missing = f" ({s['seeds_without_corrected_mean']} seeds without)" if s["seeds_without_corrected_mean"] else ""
        lines.append(f"| {run} | {pct(s['true_share'])} | {pct(s['raw_min'])}–{pct(s['raw_max'])} | "
                     f"{pct(s['corrected_min'])}–{pct(s['corrected_max'])}{missing} | "
                     f"{s['mean_ci_covers']} of {len(results)} | "
                     f"{s['class_ci_covers']} of {s['class_cases']} |")
    lines += ["", "Per seed (mean of the classes: raw / corrected [95% CI]; classifier accuracies):", "",
              "| seed | " + " | ".join(runs) + " | classifier accuracy (Se, Sp) |",
              "| --- | " + " | ".join("---" for _ in runs) + " | --- |"]
    for r in results:
        cells = []
        for run in runs:
            m = r["runs"][run]["mean"]
            ci = m["corrected_ci"] or [None, None]
            cells.append(f"{pct(m['raw_share'])} / {pct(m['corrected_share'])} [{pct(ci[0])}, {pct(ci[1])}]")
        acc = ", ".join(f"{k.split('_')[0]} {pct(v['accuracy'])} ({pct(v['sensitivity'])}, {pct(v['specificity'])})"
                        for k, v in r["classifiers"].items())
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {acc} |")
    lines += ["", "The judge's truth is the same for every seed (same images: the scoring seed is fixed); "
              "only the classifiers change. Seed 0 is the demo's own classifier set."]
    atomic_write_text(args.out / f"check_classifier_variance-{stamp}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
