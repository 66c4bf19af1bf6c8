"""`s2i-bench demo` (what `make demo` runs): the paper's whole study on the embedded synthetic world.

    synth -> prepare (video-disjoint) -> train-baseline at every embedding size of the protocol
    (one checkpoint per epoch) -> pool from >= num_models checkpoints -> label --judge ->
    train-classifiers -> score every run (every epoch: the series and its summary) -> report

Each step is the same function its command calls, so the demo is also the end-to-end test of the
commands fitting together. A step skips itself when its outputs exist and its key (protocol,
parameters, the keys of the steps it reads, a hash of the code) is unchanged; `--force` redoes
all. Working data (videos, store, runs, pool, bundle) goes to `--out` (ignored by git); the
report goes to `--report` (committed as results/demo/).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from s2i_bench.defaults import Work
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json
from s2i_bench.publish import own_file
from s2i_bench.runs import RECORDS, RunFolder
from s2i_bench.stats import wilson_interval
from s2i_bench.provenance import code_version, library_versions, machine_info, now_iso
from s2i_bench.report import REPORT_KIND
from s2i_bench.steps import StepRunner, code_hash, step_key



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
    import torch

    from s2i_bench.data.store import open_store
    from s2i_bench.protocol import load_protocol

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
    from s2i_bench.report import build_report

    report_index = report_dir / "index.md"
    runner.run("report", step_key(step="report", up=k_score, code=code_hash()), [report_index],
               lambda: build_report([*run_dirs, work.references], out=report_dir, figures=True, store=work.store,
                                    bundle=work.bundle, formats=["png"]))
    total = time.perf_counter() - started
    headline = _headline(run_dirs, p.scoring.split)
    comparison = _size_comparison(report_dir)
    references = _reference_headline(work.references)
    provenance = _provenance(p, headline, open_store(work.store).store_hash, threads=_threads_per_job(len(run_dirs)),
                             references=references, comparison=comparison)
    _write_provenance(report_dir, provenance)
    _write_timings(work.root / "timings.json", runner, total)
    _say("")
    _say(f"demo finished in {total / 60:.1f} min; report: {report_index}")
    for line in _format_headline(headline, references, comparison):
        _say(line)
    if reference is not None:
        for line in compare_with_reference(provenance, Path(reference)):
            _say(line)
    return report_index


def _data_and_training(runner: StepRunner, p, work: Work, run_dirs: list[Path], workers: int) -> str:
    """Steps 1-3: the world, the store, one translator per embedding size. Returns the key."""
    from s2i_bench.data.prepare import prepare_store
    from s2i_bench.synth import write_world

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
    from s2i_bench.informativity.classifiers import train_classifiers
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool

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
    import concurrent.futures as cf
    import multiprocessing as mp
    import os

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
    import os

    import torch

    cores = os.cpu_count() or 1
    if cores == 1:
        return torch.get_num_threads()
    return max(1, cores // num_jobs)


def _worker_init(threads: int) -> None:
    import os

    import torch

    os.environ["S2I_BENCH_QUIET"] = "1"  # one progress line per job from the parent instead
    torch.set_num_threads(threads)


TRAINING_SEEDS = 2  # seeds per embedding size: protocol's training.seed, +1, ...
DEMO_METRICS = ("informativity", "fid", "kid", "prdc", "iis")  # on the test sounds, every epoch


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
    from s2i_bench.protocol import protocol_from_dict
    from s2i_bench.training import train_baseline

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: the step's key changed or --force
    train_baseline(store_dir, run_dir, protocol=protocol_from_dict(protocol), embedding_dim=f, seed=seed, save_every=1)


def _score_runs(run_dirs: list[Path], store_dir: Path, bundle: Path) -> None:
    _parallel(_score_one, [(store_dir, run, bundle) for run in run_dirs], "scored")


def _score_one(store_dir: Path, run_dir: Path, bundle: Path) -> None:
    """Every checkpoint of a run through the one scoring loop: one record per epoch, and sample
    sheets of the first and the last epoch (Figs. 15/16, the learning check)."""
    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring.score import score_checkpoints

    store = open_store(store_dir)
    p = store.protocol
    run = RunFolder(run_dir)
    with run.lock():
        if run.records_path.exists():  # a fresh series: the step's key changed or --force
            run.records_path.unlink()
        for old in run.path.glob("samples-*.npz"):
            old.unlink()
        bun = load_bundle(bundle)
        score_checkpoints(run, store, bun, protocol=p, split=p.scoring.split, seed=p.scoring.seed,
                          samples=1, batch_size=p.scoring.batch_size, sheets="first-last", metrics=DEMO_METRICS)
        if p.scoring.selection_split:  # the sounds epochs and windows are chosen on
            score_checkpoints(run, store, bun, protocol=p, split=p.scoring.selection_split, seed=p.scoring.seed,
                              samples=1, batch_size=p.scoring.batch_size, sheets="none")


def _score_references(store_dir: Path, bundle: Path, out: Path) -> None:
    """Every reference translator on the test sounds, one record each in `out` (made afresh)."""
    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring import records
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators.reference import NAMES, load_reference

    store, bun = open_store(store_dir), load_bundle(bundle)
    p = store.protocol
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()  # our own file: a fresh set when the step's key changed
    for name in NAMES:
        record = score_translator(load_reference(name, store), store, bun, protocol=p, split=p.scoring.split,
                                  seed=p.scoring.seed, samples=1, batch_size=p.scoring.batch_size,
                                  sample_sheet=out.parent / f"samples-reference-{name}.npz", metrics=DEMO_METRICS)
        records.append(out, record)


def _reference_headline(path: Path) -> list[dict]:
    """The reference translators' judge's truth (with its Wilson interval) and estimates."""
    from s2i_bench.scoring import records

    if not path.is_file():
        return []
    rows = []
    for r in records.read(path):
        n = sum(c.get("n_images") or 0 for c in r["classes"].values())
        true = (r.get("mean_all_classes") or r["mean"]).get("true_share")
        rows.append({"reference": (r.get("generator") or {}).get("name"), "n_images": n, "true_share": true,
                     "true_ci": list(wilson_interval(int(round(true * n)), n)) if true is not None and n else None,
                     "raw_share": r["mean"].get("raw_share"), "corrected_share": r["mean"].get("corrected_share"),
                     "class_match_rate": r["mean"].get("class_match_rate")})
    return rows


def _headline(run_dirs: list[Path], split: str = "test") -> list[dict]:
    """First vs last epoch of each run: the judge's true share (mean over classes) with a 95%
    Wilson interval over the scored images, and the classifiers' raw and corrected estimates."""
    rows = []
    for run in run_dirs:
        path = run / RECORDS
        if not path.is_file():
            continue
        from s2i_bench.scoring import records

        scored = [r for r in records.read(path) if r.get("split") == split]  # not the selection (val) records
        recs = [r for _, r in sorted(records.last_per_epoch(scored).items())]
        if not recs:
            continue
        row = {"run": f"{run.parent.name}/{run.name}" if run.name.startswith("seed-") else run.name,
               "embedding_dim": recs[-1]["generator"].get("embedding_dim"),
               "train_seed": RunFolder(run).read_options().get("seed") if (run / "options.json").is_file() else None}
        for tag, r in (("first", recs[0]), ("last", recs[-1])):
            # the judge sees every class, with or without a classifier
            n = sum(c.get("n_images") or 0 for c in r["classes"].values())
            true = (r.get("mean_all_classes") or r["mean"]).get("true_share")
            row[tag] = {
                "epoch": r["epoch"], "n_images": n, "true_share": true,
                "true_ci": (list(wilson_interval(int(round(true * n)), n)) if true is not None and n else None),
                "raw_share": r["mean"].get("raw_share"), "corrected_share": r["mean"].get("corrected_share"),
                "corrected_ci": r["mean"].get("corrected_ci"), "class_match_rate": r["mean"].get("class_match_rate"),
            }
        rows.append(row)
    return rows


def _size_comparison(report_dir: Path) -> list[dict]:
    """The report's comparison of embedding sizes (report_dir/comparison.json): for each pair, the
    difference in the mean's judge's truth and raw share at the last epoch, interval, adjusted p."""
    path = report_dir / "comparison.json"
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    keep = ("a", "b", "measure", "difference", "ci", "p_value", "p_adjusted", "significant", "mde", "test")
    return [{k: r.get(k) for k in keep} for r in result.get("pairs", [])
            if r.get("class") == "mean" and r.get("measure") in ("true", "raw")]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _format_headline(rows: list[dict], references: list[dict] = (), comparison: list[dict] = ()) -> list[str]:
    lines = ["judge's true informativity (mean of the 5 classes, test sounds), first vs last epoch:"]
    for r in rows:
        a, b = r["first"], r["last"]
        lines.append(
            f"  {r['run']:>6}: epoch {a['epoch']:>3} {_pct(a['true_share'])} "
            f"[{_pct(a['true_ci'][0])}, {_pct(a['true_ci'][1])}]  ->  epoch {b['epoch']:>3} "
            f"{_pct(b['true_share'])} [{_pct(b['true_ci'][0])}, {_pct(b['true_ci'][1])}]; "
            f"classifiers: raw {_pct(b['raw_share'])}, corrected {_pct(b['corrected_share'])}, "
            f"class match {_pct(b['class_match_rate'])}")
    if comparison:
        lines.append("embedding sizes compared at the last epoch (mean of the classes; both seeds of each size; "
                     "Holm-adjusted p; * = significant at 5%):")
    for c in comparison:
        ci = c.get("ci") or [None, None]
        lines.append(f"  {c['a']:>5} - {c['b']:<5} {c['measure']:>5}: {100 * c['difference']:+.1f} pp "
                     f"[{'-' if ci[0] is None else f'{100 * ci[0]:+.1f}'}, {'-' if ci[1] is None else f'{100 * ci[1]:+.1f}'}]"
                     f", p = {c['p_adjusted']:.3f}{' *' if c['significant'] else ''}")
    if references:
        lines.append("reference translators (the scale), judge's truth and the classifiers' estimates:")
    for r in references:
        ci = r["true_ci"] or [None, None]
        lines.append(f"  {r['reference']:>15}: {_pct(r['true_share'])} [{_pct(ci[0])}, {_pct(ci[1])}]; classifiers: "
                     f"raw {_pct(r['raw_share'])}, corrected {_pct(r['corrected_share'])}, "
                     f"class match {_pct(r['class_match_rate'])}")
    return lines


def _provenance(p, headline: list[dict], store_hash: str, threads: int, references: list[dict] = (),
                comparison: list[dict] = ()) -> dict:
    """demo.json: what the study is and what its numbers depend on. No time, no load, nothing
    that differs between two runs of the same code on the same machine."""
    from s2i_bench.provenance import numeric_environment

    return {
        "command": "s2i-bench demo",
        "protocol": p.ref(),
        "seeds": {"synth": p.synth.seed, "split": p.split.seed, "training": p.training.seed,
                  "pool": 0, "classifiers": 0, "scoring": p.scoring.seed},
        "code_version": code_version(),
        "code_hash": code_hash(),
        "store_hash": store_hash,
        # Training and scoring are bit-exact for a fixed CPU and thread count; on a CPU with other
        # vector instructions, or with other library versions, the last bits and then the
        # trained weights differ (see the README).
        "depends_on": numeric_environment(threads),
        "headline": headline,
        "references": list(references),
        "size_comparison": list(comparison),
    }


def _write_provenance(report_dir: Path, provenance: dict) -> None:
    """demo.json beside the report, rewritten only when its content changed."""
    from s2i_bench.fileio import to_jsonable

    path = report_dir / "demo.json"
    text = json.dumps(to_jsonable(provenance), indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        from s2i_bench.fileio import atomic_write_text

        atomic_write_text(path, text)
    own_file(report_dir, path, REPORT_KIND)  # the report owns the rest of the folder by its manifest


def _write_timings(path: Path, runner: StepRunner, total: float) -> None:
    """How long the steps took, on which machine (load average included): beside the working
    data, not in the report, since no two runs take the same time."""
    previous = json.loads(path.read_text()) if path.is_file() else {}
    steps = dict(previous.get("step_seconds", {}))
    steps.update({k: round(v, 1) for k, v in runner.timings.items() if v > 0})
    atomic_write_json(path, {"finished": now_iso(), "seconds_this_run": round(total, 1), "step_seconds": steps,
                             "machine": machine_info(), "libraries": library_versions()})


HEADLINE_FIELDS = ("true_share", "raw_share", "corrected_share", "class_match_rate")


def _differences(mine: dict, theirs: dict) -> list[str]:
    """One line per headline number that differs, keyed by (what, epoch)."""
    diffs = []
    for key in sorted(set(mine) | set(theirs), key=lambda k: (k[0], -1 if k[1] is None else k[1])):
        a, b = mine.get(key), theirs.get(key)
        what = key[0] if key[1] is None else f"{key[0]} (epoch {key[1]})"
        if a is None or b is None:
            diffs.append(f"  {what}: only in {'this run' if b is None else 'the reference'}")
            continue
        for field in HEADLINE_FIELDS:
            if a.get(field) != b.get(field):
                diffs.append(f"  {what}: {field} {_pct(a.get(field))} here, {_pct(b.get(field))} in the reference")
    return diffs


def compare_with_reference(provenance: dict, reference: Path) -> list[str]:
    """Lines saying whether this study's headline equals the committed one, and if not, which
    numbers differ and what the two runs' numeric environments differ in (the likely cause)."""
    ref_file = reference / "demo.json"
    if not ref_file.is_file():
        return [f"(no committed reference at {ref_file} to compare with)"]
    try:
        ref = json.loads(ref_file.read_text())
    except (OSError, ValueError) as e:
        return [f"warning: {ref_file}: cannot read ({e})"]
    mine = {(f"{r['run']} {tag}", r[tag].get("epoch")): r[tag] for r in provenance["headline"] for tag in ("first", "last")}
    theirs = {(f"{r['run']} {tag}", r[tag].get("epoch")): r[tag] for r in ref.get("headline", [])
              for tag in ("first", "last") if tag in r}
    mine |= {(f"reference {r.get('reference')}", None): r for r in provenance.get("references", [])}
    theirs |= {(f"reference {r.get('reference')}", None): r for r in ref.get("references", [])}
    diffs = _differences(mine, theirs)
    if not diffs:
        return [f"headline identical to the committed reference {ref_file}"]
    lines = [f"headline differs from the committed reference {ref_file} in {len(diffs)} number(s):"] + diffs[:20]
    if len(diffs) > 20:
        lines.append(f"  ... and {len(diffs) - 20} more")
    causes = []
    here = provenance.get("depends_on", {})
    # a reference written before demo.json recorded `depends_on` has the CPU under `machine`
    there = ref.get("depends_on") or {"cpu_model": (ref.get("machine") or {}).get("cpu_model"),
                                      "libraries": ref.get("libraries")}
    for field in ("cpu_model", "cpu_simd_flags", "torch_cpu_capability", "torch_threads_per_process", "libraries"):
        if field in there and there[field] is not None and here.get(field) != there[field]:
            causes.append(f"  {field}: {here.get(field)!r} here, {there[field]!r} there")
        elif there.get(field) is None:
            causes.append(f"  {field}: {here.get(field)!r} here, not recorded there")
    for field in ("protocol", "code_hash", "store_hash"):
        if provenance.get(field) != ref.get(field):
            causes.append(f"  {field}: {provenance.get(field)!r} here, {ref.get(field)!r} there")
    if causes:
        lines.append("the two runs differ in what the numbers depend on (training is bit-exact only for the same "
                     "CPU instruction set, thread count and library versions):")
        lines += causes
    else:
        lines.append("same CPU, threads, libraries, code and store: this should not happen; please report it")
    lines.append("(the committed reference changes only with `s2i-bench demo --update-reference`)")
    return lines


def update_reference(report_dir: Path, reference: Path) -> None:
    """Copy a finished demo report over the committed reference (results/demo). Only files the
    reference's own manifest lists, and unchanged, are replaced or removed."""
    from s2i_bench.publish import publish_folder

    report_dir, reference = Path(report_dir), Path(reference)
    if not (report_dir / "demo.json").is_file() or not (report_dir / "index.md").is_file():
        raise UserError(f"{report_dir}: no finished demo report (run `s2i-bench demo` first)")
    publish_folder(report_dir, reference, REPORT_KIND, move=False, what="`s2i-bench demo`")
    print(f"reference {reference} updated from {report_dir}")
