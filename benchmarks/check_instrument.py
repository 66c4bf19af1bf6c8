"""The instrument itself: do other training recipes of the informativity classifiers bias the raw
share less, are their probabilities calibrated, and do probabilities lower the variance an audit
(prediction-powered inference) pays?

On the synthetic world (the demo's, scaled down by --videos-per-class, or a store and runs given)
one pool of translator images is labelled by the judge; the five classifiers are trained on it
with four recipes (`[classifiers]` real_frames_per_class and augment):

    paper            the paper's recipe (the vegas5/synth default)
    real-frames      N real training frames of each class join the informative examples
    augment          flip, crop and jitter of every training batch
    real+augment     both

Each bundle scores the same systems on the test sounds: the four reference translators
(real-frame, retrieval, class-prototype, random-frame) and checkpoints of the training runs. Per
recipe: the raw share's bias (raw - the judge's truth) on real frames and on the translators, the
share estimated by the mean probability instead, the classifiers' ECE on their test images and on
the scored images against the judge, and the residual variance var(Y - f) per class and system
with Y the judge's verdict and f the decision or the probability (an audit's interval shrinks
with it), also at PPI++'s best weight, var(Y) (1 - corr(Y, f)^2).

    .venv/bin/python -m benchmarks.check_instrument --demo demo-work     # after `make demo`: its world and runs
    .venv/bin/python -m benchmarks.check_instrument                      # makes a world and two runs in --work

Writes results/benchmarks/instrument.json and instrument.md. Steps whose output exists in --work
are not redone (delete the folder for a fresh world).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import datetime as dt
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.results import machine

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

RUNS = ((32, 0), (64, 0))  # (embedding size, seed) of the translators trained when no --runs are given
SCORED_EPOCHS = (9, 19, 29, 39)  # checkpoints of each run scored as systems (the last one if fewer)
REFERENCES = ("real-frame", "retrieval", "class-prototype", "random-frame")


def recipes(real_frames: int) -> dict[str, dict]:
    return {"paper": {}, "real-frames": {"real_frames_per_class": real_frames},
            "augment": {"augment": "flip-crop-jitter"},
            "real+augment": {"real_frames_per_class": real_frames, "augment": "flip-crop-jitter"}}


# -- steps (each skipped when its output exists) ---------------------------------------------------------------
def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _in_processes(fn, jobs: list[tuple]) -> None:
    """`fn(*job)` for every job, one single-threaded process per core (small convolutions use
    threads poorly; see s2i_bench.demo.pipeline)."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        for job in jobs:
            fn(*job)
        return
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        for done in cf.as_completed([pool.submit(fn, *job) for job in jobs]):
            done.result()


def _worker_init() -> None:
    import torch

    os.environ["S2I_BENCH_QUIET"] = "1"
    torch.set_num_threads(1)


def _train_run(store: Path, run: Path, protocol: dict, dim: int, seed: int) -> None:
    from s2i_bench.protocol import protocol_from_dict
    from s2i_bench.training import train_baseline

    _quiet(train_baseline, store, run, protocol=protocol_from_dict(protocol), embedding_dim=dim, seed=seed,
           save_every=1)


def _train_bundle(pool: Path, out: Path, store: Path, recipe: dict) -> None:
    from s2i_bench.informativity.classifiers import train_classifiers

    _quiet(train_classifiers, pool, out, store=store, seed=0, class_match_epochs=0, overwrite=True, recipe=recipe)


def make_world(work: Path, protocol: str, videos_per_class: int | None, seconds: dict) -> tuple[Path, list[Path]]:
    """The store and the translator runs (made in `work` unless they exist)."""
    from s2i_bench.data.prepare import prepare_store
    from s2i_bench.protocol import load_protocol
    from s2i_bench.runs import RunFolder
    from s2i_bench.synth import write_world

    p = load_protocol(protocol)
    if videos_per_class is not None and videos_per_class != p.synth.videos_per_class:
        p = dataclasses.replace(p, synth=dataclasses.replace(p.synth, videos_per_class=videos_per_class))
    store = work / "store"
    if not (store / "store.json").is_file():
        t0 = time.perf_counter()
        _quiet(write_world, work / "videos", p, overwrite=True)
        _quiet(prepare_store, work / "videos", store, p, workers=os.cpu_count() or 1, overwrite=True)
        seconds["world"] = round(time.perf_counter() - t0, 1)
    runs = [work / "runs" / f"f{dim}-s{seed}" for dim, seed in RUNS]
    todo = [(store, run, p.to_dict(), dim, seed) for run, (dim, seed) in zip(runs, RUNS)
            if not RunFolder(run).checkpoint_path(p.training.epochs - 1).is_file()]
    if todo:
        t0 = time.perf_counter()
        for job in todo:
            if job[1].exists():
                shutil.rmtree(job[1])  # our own unfinished run
        _in_processes(_train_run, todo)
        seconds["translators"] = round(time.perf_counter() - t0, 1)
    return store, runs


def make_pool(work: Path, store: Path, runs: list[Path], controlled: int, seconds: dict) -> Path:
    """The pool of the runs' late checkpoints (as the demo picks them) and `controlled` degraded
    real-frame programs (benchmarks.check_classifiers), labelled by the judge."""
    from benchmarks.check_classifiers import write_programs
    from s2i_bench.data.store import open_store
    from s2i_bench.demo.pipeline import pool_checkpoints
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool

    pool = work / "pool"
    if not (pool / "sets.csv").is_file():
        t0 = time.perf_counter()
        opened = open_store(store)
        models = pool_checkpoints(runs, opened.protocol.classifiers.num_models) if runs else []
        models += write_programs(opened, work / "controlled", controlled) if controlled else []
        _quiet(build_pool, models, store, pool, seed=0, overwrite=True)
        _quiet(label_pool, pool, use_judge=True)
        seconds["pool"] = round(time.perf_counter() - t0, 1)
    return pool


def make_bundles(work: Path, pool: Path, store: Path, recipe_set: dict, seconds: dict) -> dict[str, Path]:
    bundles = {name: work / "bundles" / f"{name}.pt" for name in recipe_set}
    todo = [(pool, bundles[n], store, r) for n, r in recipe_set.items()
            if not bundles[n].with_suffix(".json").is_file()]
    if todo:
        bundles[next(iter(bundles))].parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        _in_processes(_train_bundle, todo)
        seconds["classifiers"] = round(time.perf_counter() - t0, 1)
    return bundles


def systems(store, runs: list[Path]) -> dict[str, object]:
    """name -> a translator: the references and the scored checkpoints of every run."""
    from s2i_bench.runs import RunFolder, checkpoint_epoch
    from s2i_bench.translators import load_translator
    from s2i_bench.translators.reference import load_reference

    out = {f"reference:{n}": load_reference(n, store) for n in REFERENCES}
    for run in runs:
        ckpts = {checkpoint_epoch(c): c for c in RunFolder(run).checkpoints()}
        # the demo's runs are runs/f32/seed-0, runs/f64/seed-0, ...: the folder above names them apart
        name = f"{run.parent.name}-{run.name}" if run.name.startswith("seed-") else run.name
        for epoch in sorted({e for e in SCORED_EPOCHS if e in ckpts} or {max(ckpts)}):
            out[f"{name}@{epoch}"] = load_translator(ckpts[epoch])
    return out


# -- the numbers ------------------------------------------------------------------------------------------------
def residual(y: np.ndarray, f: np.ndarray) -> dict:
    """var(Y - f) (the classical PPI's term) and var(Y) (1 - corr(Y, f)^2) (PPI++ at its best
    weight), both with ddof 1."""
    y, f = y.astype(np.float64), f.astype(np.float64)
    plain = float(np.var(y - f, ddof=1)) if len(y) > 1 else None
    vy, vf = np.var(y, ddof=1), np.var(f, ddof=1)
    if len(y) < 2:
        best = None
    elif vf <= 0 or vy <= 0:
        best = float(vy)
    else:
        best = float(vy - np.cov(y, f, ddof=1)[0, 1] ** 2 / vf)
    return {"plain": plain, "best_weight": best}


def cell(y: np.ndarray, d: np.ndarray, p: np.ndarray) -> dict:
    """One (system, class): the shares and the residual variances (y, d, p: (n,) per image)."""
    truth = float(y.mean())
    return {"n": int(len(y)), "truth": truth, "raw": float(d.mean()), "probability_mean": float(p.mean()),
            "bias_raw": float(d.mean()) - truth, "bias_probability": float(p.mean()) - truth,
            "var_truth": float(np.var(y.astype(np.float64), ddof=1)) if len(y) > 1 else None,
            "var_decision": residual(y, d), "var_probability": residual(y, p)}


def score_all(bundle_path: Path, store, named: dict, seconds: dict) -> dict[str, dict]:
    """Every system scored with one bundle: {system: {class: cell}} and, per class, the pooled
    (y, p) of the translators and of the real frames, for the ECE against the judge."""
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring.collect import make_plan
    from s2i_bench.scoring.score import score_translator

    bundle = load_bundle(bundle_path)
    p = store.protocol
    plan = make_plan(store, p.class_keys, p.scoring.split, p.scoring.seed, 1)
    out, pooled = {}, {}
    t0 = time.perf_counter()
    for name, translator in named.items():
        record = _quiet(score_translator, translator, store, bundle, protocol=p, split=p.scoring.split,
                        seed=p.scoring.seed, samples=1, batch_size=p.scoring.batch_size)
        d = record.decisions()
        out[name] = {}
        for key, sl in plan.class_slices.items():
            y, dec, prob = d["truth"][0, sl], d["informative"][0, sl], d["probability"][0, sl]
            out[name][key] = cell(y, dec, prob)
            group = "real_frames" if name == "reference:real-frame" else \
                "translators" if not name.startswith("reference:") else None
            if group:
                ys, ps = pooled.setdefault(group, {}).setdefault(key, ([], []))
                ys.append(y)
                ps.append(prob)
    seconds[f"score {bundle_path.stem}"] = round(time.perf_counter() - t0, 1)
    return {"systems": out, "pooled": {g: {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in c.items()}
                                       for g, c in pooled.items()}}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(card: dict, scored: dict) -> dict:
    """One recipe's headline numbers (docs/metrics.md, "The instrument")."""
    from s2i_bench.informativity.recipe import reliability

    cls = card["classes"]
    ece_test = {k: card["calibration"]["classes"][k]["ece"] for k in cls}
    sys = scored["systems"]
    translators = [c for name, per in sys.items() if not name.startswith("reference:") for c in per.values()]
    real = sys["reference:real-frame"]
    out = {
        "test_accuracy": {k: c["test_accuracy"] for k, c in cls.items()},
        "sensitivity": {k: c["sensitivity"] for k, c in cls.items()},
        "specificity": {k: c["specificity"] for k, c in cls.items()},
        "ece_test": ece_test, "ece_test_mean": _mean(ece_test.values()),
        "ece_judge": {g: {k: reliability(*yp)["ece"] for k, yp in per.items()} for g, per in scored["pooled"].items()},
        "real_frames": {"raw": _mean(c["raw"] for c in real.values()),
                        "bias_raw": _mean(c["bias_raw"] for c in real.values()),
                        "bias_probability": _mean(c["bias_probability"] for c in real.values())},
        "references": {name: _mean(c["bias_raw"] for c in per.values())
                       for name, per in sys.items() if name.startswith("reference:")},
        "translators": {
            "cells": len(translators),
            "bias_raw": _mean(c["bias_raw"] for c in translators),
            "abs_bias_raw": _mean(abs(c["bias_raw"]) for c in translators),
            "max_abs_bias_raw": max(abs(c["bias_raw"]) for c in translators),
            "bias_probability": _mean(c["bias_probability"] for c in translators),
            "abs_bias_probability": _mean(abs(c["bias_probability"]) for c in translators),
            "var_decision": _mean(c["var_decision"]["plain"] for c in translators),
            "var_probability": _mean(c["var_probability"]["plain"] for c in translators),
            "var_decision_best_weight": _mean(c["var_decision"]["best_weight"] for c in translators),
            "var_probability_best_weight": _mean(c["var_probability"]["best_weight"] for c in translators),
            "var_truth": _mean(c["var_truth"] for c in translators)},
    }
    out["ece_judge_mean"] = {g: _mean(v.values()) for g, v in out["ece_judge"].items()}
    return out


def pct(v, sign: bool = False) -> str:
    return "–" if v is None else (f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}")


def markdown(result: dict) -> list[str]:
    rs = result["recipes"]
    md = [f"# check_instrument ({result['protocol']['name']}, {result['date']})", "",
          f"One pool ({result['pool']['images']} images of {result['pool']['models']} checkpoints, judge's labels); "
          f"five classifiers per recipe, seed 0; {result['n_translators']} translator checkpoints and the four "
          f"reference translators scored on {result['n_test_sounds']} test sounds (one image each). "
          f"Real frames per class: {result['real_frames_per_class']}.", "",
          "| recipe | test accuracy | ECE (test) | ECE (translators vs judge) | real frames raw (truth 100%) | "
          "translators: bias raw / mean abs | bias of mean probability / mean abs | var(Y-d) | var(Y-p) | "
          "PPI++ best: var d / var p |", "| --- | " + "--- | " * 9]
    for name, r in rs.items():
        s, t = r["summary"], r["summary"]["translators"]
        md.append(f"| {name} | {pct(_mean(s['test_accuracy'].values()))}% | {s['ece_test_mean']:.3f} | "
                  f"{s['ece_judge_mean'].get('translators', float('nan')):.3f} | {pct(s['real_frames']['raw'])}% | "
                  f"{pct(t['bias_raw'], True)} / {pct(t['abs_bias_raw'])} pp | "
                  f"{pct(t['bias_probability'], True)} / {pct(t['abs_bias_probability'])} pp | "
                  f"{t['var_decision']:.4f} | {t['var_probability']:.4f} | "
                  f"{t['var_decision_best_weight']:.4f} / {t['var_probability_best_weight']:.4f} |")
    md += ["", "Bias of the raw share per reference translator (raw - truth, points):", "",
           "| recipe | " + " | ".join(REFERENCES) + " |", "| --- | " + "--- | " * len(REFERENCES)]
    for name, r in rs.items():
        refs = r["summary"]["references"]
        md.append(f"| {name} | " + " | ".join(pct(refs.get(f"reference:{n}"), True) for n in REFERENCES) + " |")
    md += ["", "var(Y - f): mean over (translator checkpoint, class) cells of the sample variance of the judge's "
               "verdict minus the classifier's decision d or probability p, per image: what an audit's interval "
               "pays per labelled image (PPI). PPI++ best: var(Y)(1 - corr(Y, f)^2), at the optimal weight. "
               f"Mean var(Y) of these cells: {rs['paper']['summary']['translators']['var_truth']:.4f}.", ""]
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "demo-work" / "instrument",
                    help="working folder: world, store, runs, pool, bundles (kept; steps found there are reused)")
    ap.add_argument("--demo", type=Path, default=None,
                    help="a finished demo's working folder (demo-work): its store and its runs, the demo's pool")
    ap.add_argument("--store", type=Path, default=None, help="a synthetic-world store to use instead of a new one")
    ap.add_argument("--runs", type=Path, nargs="*", default=None, help="its translator runs (with --store)")
    ap.add_argument("--videos-per-class", type=int, default=None, help="the world's size (default the protocol's)")
    ap.add_argument("--protocol", default="synth", help="of the world made (tiny: a plumbing check in a minute)")
    ap.add_argument("--real-frames", type=int, default=100, help="real_frames_per_class of the real-frame recipes")
    ap.add_argument("--controlled", type=int, default=0,
                    help="degraded real-frame programs added to the pool (check_classifiers'; for --protocol tiny)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    from s2i_bench.data.store import open_store
    from s2i_bench.fileio import atomic_write_json, atomic_write_text
    from s2i_bench.informativity.pool import open_pool
    from s2i_bench.provenance import code_version

    started, t_all, seconds = dt.datetime.now(), time.perf_counter(), {}
    load_start = os.getloadavg()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.demo is not None:
        store_path, runs = args.demo / "store", sorted(args.demo.glob("runs/*/seed-*"))
    elif args.store is not None:
        store_path, runs = args.store, list(args.runs or [])
    else:
        store_path, runs = make_world(args.work, args.protocol, args.videos_per_class, seconds)
    pool = make_pool(args.work, store_path, runs, args.controlled, seconds)
    recipe_set = recipes(args.real_frames)
    bundles = make_bundles(args.work, pool, store_path, recipe_set, seconds)
    store = open_store(store_path)
    if not store.synthetic:
        raise SystemExit(f"{store_path}: not a store of the synthetic world (the judge gives the truth)")
    named = systems(store, runs)
    result_recipes = {}
    for name, path in bundles.items():
        card = json.loads(path.with_suffix(".json").read_text())
        scored = score_all(path, store, named, seconds)
        result_recipes[name] = {"recipe": recipe_set[name], "bundle_sha256": card["bundle_sha256"],
                                "summary": summarise(card, scored), "systems": scored["systems"]}
    seconds["total"] = round(time.perf_counter() - t_all, 1)
    pool_meta = open_pool(pool).meta
    result = {"check": "instrument", "date": started.isoformat(timespec="seconds"), "protocol": store.protocol.ref(),
              "store": store.ref(), "pool": {"images": pool_meta["num_images"], "models": pool_meta["num_models"],
                                             "hash": pool_meta["pool_hash"]},
              "real_frames_per_class": args.real_frames, "n_translators": len(named) - len(REFERENCES),
              "n_test_sounds": int(len(store.split_indices(store.protocol.scoring.split))),
              "recipes": result_recipes, "seconds": seconds,
              "machine": machine() | {"load_average_start": load_start, "load_average_end": os.getloadavg()},
              "code_version": code_version()}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "instrument.json", result)
    md = markdown(result)
    atomic_write_text(args.out / "instrument.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
