"""The steps of the study (`run_demo`): the world, the store, the translators, the pool, the
labels, the classifiers, the scores and the report, each skipped when its key is unchanged."""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from s2i_bench.data.prepare import prepare_store
from s2i_bench.data.store import open_store
from s2i_bench.defaults import Work
from s2i_bench.demo.headline import (compare_with_reference, format_headline, read_audited, read_headline,
                                     read_references, read_size_comparison, study_provenance, write_provenance)
from s2i_bench.demo.reference import write_timings
from s2i_bench.demo.steps import StepRunner, code_hash, step_key
from s2i_bench.errors import UserError
from s2i_bench.informativity.bundle import load_bundle
from s2i_bench.informativity.classifiers import train_classifiers
from s2i_bench.informativity.labels import label_pool
from s2i_bench.informativity.pool import build_pool
from s2i_bench.protocol import load_protocol, protocol_from_dict
from s2i_bench.provenance import code_version
from s2i_bench.report import build_report
from s2i_bench.scoring.audit.draw import draw_audit
from s2i_bench.scoring.audit.estimate import estimate_audit
from s2i_bench.scoring.audit.labelling import label_with_judge
from s2i_bench.runs import RunFolder
from s2i_bench.scoring import records
from s2i_bench.scoring.score import score_checkpoints, score_translator
from s2i_bench.synth import write_world
from s2i_bench.training import train_baseline
from s2i_bench.translators.reference import NAMES, load_reference


def _say(msg: str) -> None:
    print(msg, flush=True)


def pool_checkpoints(run_dirs: list[Path], num_models: int, late_fraction: float = 0.3) -> list[Path]:
    """At least `num_models` checkpoints (the paper's 17 translator models), the same number
    from every run, evenly spaced over the last `late_fraction` of each run's epochs, the last
    epoch included. The paper screened its 17 models for quality before labelling; here early
    checkpoints would add nothing: every model gives the same number of images to both labels,
    so a model that draws nothing informative contributes no image at all."""
    per_run = math.ceil(num_models / len(run_dirs))
    chosen: list[Path] = []
    for run in run_dirs:
        ckpts = RunFolder(run).checkpoints()
        if len(ckpts) < per_run:
            raise UserError(f"{run}: {len(ckpts)} checkpoints, the pool needs {per_run} from each run")
        late = ckpts[-max(per_run, math.ceil(late_fraction * len(ckpts))):]
        picks = np.round(np.linspace(len(late) - 1, 0, per_run)).astype(int)
        chosen += [late[i] for i in sorted(set(picks.tolist()))]
    return chosen


def run_demo(out: Path = Path("demo-work"), report_dir: Path | None = None, protocol=None,
             force: bool = False, workers: int = 1, reference: Path | None = None) -> Path:
    """The whole study into `out` (the report into `report_dir`, default `out/report`); when
    `reference` holds a committed study (results/demo/demo.json), its headline is compared
    with this one's and every difference is printed with what the numbers depend on."""
    p = load_protocol(protocol or "synth")
    # Every step here runs small convolutions, which gain little from a second thread, while two
    # busy threads on cores that something else also uses slow each other down tens of times
    # over (measured: 0.2 s -> 14 s per classifier epoch). One thread per process; the training
    # and scoring steps use one process per core instead.
    torch.set_num_threads(1)
    work = Work(Path(out))
    report_dir = work.root / "report" if report_dir is None else Path(report_dir)
    work.root.mkdir(parents=True, exist_ok=True)
    runner = StepRunner(work.root, force=force, log=_say)
    started = time.perf_counter()
    _say(f"s2i-bench demo: protocol {p.name} {p.version} ({p.fingerprint}), code {code_version()}, "
         f"working folder {work.root}, report {report_dir}")
    run_dirs = demo_run_dirs(work, p)
    k_train = _data_and_training(runner, p, work, run_dirs, workers)
    k_score = _classifiers_and_scores(runner, p, work, run_dirs, k_train)
    # 8. The label audit: AUDIT_PER_CLASS images per class of each run's last checkpoint and of
    #    each reference translator, labelled by the judge, combined with the classifiers (PPI).
    k_audit = step_key(step="audit", per_class=AUDIT_PER_CLASS, up=k_score, code=code_hash())
    runner.run("audit", k_audit, [work.audit / "records.jsonl"], lambda: _audit(run_dirs, work, p))

    report_index = report_dir / "index.md"
    runner.run("report", step_key(step="report", up=k_audit, code=code_hash()), [report_index],
               lambda: build_report([*run_dirs, work.references], out=report_dir, figures=True, store=work.store,
                                    bundle=work.bundle, formats=["png"], audits=[work.audit]))
    total = time.perf_counter() - started
    headline = read_headline(run_dirs, p.scoring.split)
    comparison = read_size_comparison(report_dir)
    references = read_references(work.references)
    audited = read_audited(work.audit)
    provenance = study_provenance(p, headline, open_store(work.store).store_hash,
                                  threads=_threads_per_job(len(run_dirs)), references=references,
                                  comparison=comparison, audited=audited)
    write_provenance(report_dir, provenance)
    write_timings(work.root / "timings.json", runner, total)
    _say("")
    _say(f"demo finished in {total / 60:.1f} min; report: {report_index}")
    for line in format_headline(headline, references, comparison, audited):
        _say(line)
    if reference is not None:
        for line in compare_with_reference(provenance, Path(reference)):
            _say(line)
    return report_index


def _data_and_training(runner: StepRunner, p, work: Work, run_dirs: list[Path], workers: int) -> str:
    """Steps 1-3: the world, the store, one translator per embedding size. Returns the key."""
    code = code_hash()
    # 1. The synthetic world as real .mp4 files.
    k_synth = step_key(step="synth", protocol=p.fingerprint, code=code)
    runner.run("synth", k_synth, [work.videos / "scenes.json"], lambda: write_world(work.videos, p, overwrite=True))
    # 2. The segment store with the video-disjoint split (and its leakage audit).
    k_prepare = step_key(step="prepare", up=k_synth, code=code)
    runner.run("prepare", k_prepare, [work.store / "store.json"],
               lambda: prepare_store(work.videos, work.store, p, workers=workers, overwrite=True))
    # 3. One translator per embedding size, a checkpoint after every epoch (the series). The runs
    #    are independent, so they train side by side, one process per core.
    k_train = step_key(step="train", dims=list(p.training.embedding_dims), up=k_prepare, code=code)
    last = [RunFolder(r).checkpoint_path(p.training.epochs - 1) for r in run_dirs]
    runner.run("train", k_train, last, lambda: _train_runs(work.store, run_dirs, p))
    return k_train


def _classifiers_and_scores(runner: StepRunner, p, work: Work, run_dirs: list[Path], k_train: str) -> str:
    """Steps 4-7: pool from >= 17 checkpoints, judge labels, the five classifiers and the
    class-match one, then every epoch of every run scored. Returns the key."""
    code = code_hash()
    k_pool = step_key(step="pool", up=k_train, code=code)
    runner.run("pool", k_pool, [work.pool / "pool.json"],
               lambda: build_pool(pool_checkpoints(run_dirs, p.classifiers.num_models), work.store, work.pool,
                                  seed=0, overwrite=True))
    k_label = step_key(step="label", up=k_pool, code=code)
    runner.run("label", k_label, [work.pool / "sets.csv"], lambda: label_pool(work.pool, use_judge=True))
    k_classifiers = step_key(step="train-classifiers", up=k_label, code=code)
    runner.run("train-classifiers", k_classifiers, [work.bundle, work.bundle.with_suffix(".json")],
               lambda: train_classifiers(work.pool, work.bundle, store=work.store, seed=0, overwrite=True))
    # Every epoch of every run on the test sounds (the series), with sample sheets of the first
    # and the last epoch for Figs. 15/16 and the learning check.
    k_score = step_key(step="score", up=[k_classifiers, k_train], code=code)
    runner.run("score", k_score, [RunFolder(r).records_path for r in run_dirs],
               lambda: _score_runs(run_dirs, work.store, work.bundle))
    # The reference translators put the scale in place: real frames (the ceiling), retrieval,
    # class prototypes, random frames (chance).
    k_refs = step_key(step="references", up=k_classifiers, code=code)
    runner.run("references", k_refs, [work.references],
               lambda: _score_references(work.store, work.bundle, work.references))
    return step_key(step="scores", up=[k_score, k_refs])


def _parallel(fn, jobs: list[tuple], what: str) -> None:
    """Run `fn(*job)` for every job, each in its own process (with its share of the threads).

    Small convolutions use threads poorly and two busy threads on two shared cores slow each
    other down many times over, so independent jobs in single-threaded processes are the
    fastest way through on a small CPU machine.
    """
    # Every job in its own single-threaded process, even with more jobs than cores: the OS
    # time-slices single-threaded processes well (3 runs on 2 cores: 1.5x one run's time, not
    # 2x as in two rounds), while it is the threads of one process that fight for cores.
    workers = len(jobs) if (os.cpu_count() or 1) > 1 else 1
    threads = _threads_per_job(len(jobs))
    if workers == 1:
        for job in jobs:
            fn(*job)
        return
    started = time.perf_counter()
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *job): job for job in jobs}
        for done in cf.as_completed(futures):
            done.result()  # re-raises a worker's error here
            done_path = Path(futures[done][1])
            _say(f"  {what} {done_path.parent.name}/{done_path.name}: done at {time.perf_counter() - started:.0f} s")


def _threads_per_job(num_jobs: int) -> int:
    """Torch threads of each training / scoring process: the cores shared among the jobs (the
    numbers are bit-exact for a given CPU and this thread count)."""
    cores = os.cpu_count() or 1
    if cores == 1:
        return torch.get_num_threads()
    return max(1, cores // num_jobs)


def _worker_init(threads: int) -> None:
    os.environ["S2I_BENCH_QUIET"] = "1"  # one progress line per job from the parent instead
    torch.set_num_threads(threads)


TRAINING_SEEDS = 2  # seeds per embedding size: protocol's training.seed, +1, ...
AUDIT_PER_CLASS = 10  # labelled images per class and audited system (the judge labels them)
DEMO_METRICS = ("informativity", "fid", "kid", "prdc", "iis")  # on the test sounds
# the image metrics every 5th epoch (and the first and last): their bootstrap is most of the
# scoring time, and 9 of 40 epochs draw their series and their correlation with the truth
IMAGE_METRICS_EVERY = 5


def _seeds(p) -> list[int]:
    return [p.training.seed + i for i in range(TRAINING_SEEDS)]


def demo_run_dirs(work: Work, p) -> list[Path]:
    """Every embedding size trained with TRAINING_SEEDS seeds: runs/f<F>/seed-<S>/ (a group of
    seeds, so that the report and the headline can say which differences between sizes are real)."""
    return [work.runs / f"f{f}" / f"seed-{s}" for f in p.training.embedding_dims for s in _seeds(p)]


def _train_runs(store_dir: Path, run_dirs: list[Path], p) -> None:
    jobs = [(store_dir, run, p.to_dict(), f, s) for run, (f, s) in
            zip(run_dirs, [(f, s) for f in p.training.embedding_dims for s in _seeds(p)])]
    _parallel(_train_one, jobs, "trained")


def _train_one(store_dir: Path, run_dir: Path, protocol: dict, f: int, seed: int) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: the step's key changed or --force
    train_baseline(store_dir, run_dir, protocol=protocol_from_dict(protocol), embedding_dim=f, seed=seed, save_every=1)


def _score_runs(run_dirs: list[Path], store_dir: Path, bundle: Path) -> None:
    _parallel(_score_one, [(store_dir, run, bundle) for run in run_dirs], "scored")


def _score_one(store_dir: Path, run_dir: Path, bundle: Path) -> None:
    """Every checkpoint of a run through the one scoring loop: one record per epoch, sample sheets
    of the first and the last epoch (Figs. 15/16, the learning check), and the attribute scores of
    the last."""
    store = open_store(store_dir)
    p = store.protocol
    run = RunFolder(run_dir)
    with run.lock():
        if run.records_path.exists():  # a fresh series: the step's key changed or --force
            run.records_path.unlink()
        for old in run.path.glob("samples-*.npz"):
            old.unlink()
        bun = load_bundle(bundle)
        # the reported split (with its sample sheets), then where epochs and windows are chosen
        for i, split in enumerate(p.scoring.scored_splits):
            score_checkpoints(run, store, bun, protocol=p, split=split, seed=p.scoring.seed, samples=1,
                              batch_size=p.scoring.batch_size, sheets="first-last" if i == 0 else "none",
                              metrics=DEMO_METRICS if i == 0 else None, attributes="last" if i == 0 else False,
                              metrics_every=IMAGE_METRICS_EVERY)


def _score_references(store_dir: Path, bundle: Path, out: Path) -> None:
    """Every reference translator on the test sounds, one record each in `out` (made afresh)."""
    store, bun = open_store(store_dir), load_bundle(bundle)
    p = store.protocol
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()  # our own file: a fresh set when the step's key changed
    for name in NAMES:
        record = score_translator(load_reference(name, store), store, bun, protocol=p, split=p.scoring.split,
                                  seed=p.scoring.seed, samples=1, batch_size=p.scoring.batch_size,
                                  sample_sheet=out.parent / f"samples-reference-{name}.npz", metrics=DEMO_METRICS,
                                  attributes=True)
        records.append(out, record)


def _audit(run_dirs: list[Path], work: Work, p) -> None:
    """Draw the audit (each run's last scored checkpoint, every reference translator), label it with
    the judge, and write the audited records (`label-audit draw`, `label --judge`, `estimate`)."""
    draw_audit([*run_dirs, work.references], work.audit, store=work.store, classifiers=work.bundle,
               per_class=AUDIT_PER_CLASS, seed=p.scoring.seed, overwrite=True)
    label_with_judge(work.audit)
    estimate_audit(work.audit)
