"""Scoring throughput: sounds per second of `score_translator` (translate + classify + judge +
bootstrap), per protocol profile and device.

Self-contained: it writes a store (the tests' fake store, tests/fakes.py: no videos), builds
the reference translator of the protocol's profile and a classifier bundle with random weights
(throughput does not depend on what the weights learned), and times `score_translator` after
one warm-up call. With the synthetic world's judge importable, the store is marked synthetic so
the judge is timed too.

    .venv/bin/python -m benchmarks.bench_score [--device cpu|cuda] [--sounds-per-class N] [--repeats R]

Writes results/benchmarks/bench_score-<date>.json and .md, recording the machine. Numbers taken
on a shared or busy machine are upper bounds on the time: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version, cpu_model
from s2i_bench.protocol import load_protocol

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")



def make_store(path: Path, protocol, per_class: int, seed: int = 0):
    """A store with `per_class` test sounds per class (and a few train sounds for the
    normalisation range), each sound its own video: the tests' fake store, without audio."""
    # The tests' fakes, imported from the repository root (where every benchmark runs:
    # python -m benchmarks.<name>); tests/fakes.py is their one definition.
    from tests.fakes import make_fake_store

    synthetic = {"seed": 0, "version": "benchmark", "scenes_sha256": "-"} if _judge_available() else None
    return make_fake_store(path, protocol, per_class={"train": 2, "test": per_class}, seed=seed,
                           videos_per_class=max(per_class, 2), synthetic_world=synthetic, waveforms=False)


def _judge_available() -> bool:
    try:
        from s2i_bench.synth import judge  # noqa: F401
    except ImportError:
        return False
    return True


def make_translator(protocol, device):
    from s2i_translator.models import AudioEncoder, DenseGenerator
    from s2i_translator.checkpoint import translator_from_modules

    f = protocol.training.embedding_dim
    torch.manual_seed(0)
    encoder = AudioEncoder(f, protocol.model).to(device).eval()
    generator = DenseGenerator(f, protocol.model).to(device).eval()
    info = {"path": f"random-{protocol.model.profile}-f{f}", "sha256": "-", "kind": "benchmark", "epoch": None,
            "embedding_dim": f, "run": None}
    return translator_from_modules(encoder, generator, info, str(device))


def make_bundle(path: Path, protocol, device):
    from s2i_bench.informativity.bundle import Bundle, InformativityCNN

    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    spec = protocol.classifiers
    informative = {k: InformativityCNN(2, spec.dropout, spec.fc_dropout).to(device).eval() for k in protocol.class_keys}
    class_match = InformativityCNN(len(protocol.class_keys), spec.dropout, spec.fc_dropout).to(device).eval()
    n_test = 2 * spec.test_per_class
    outcomes = {}
    for k in protocol.class_keys:
        labels = np.r_[np.ones(n_test // 2), np.zeros(n_test - n_test // 2)].astype(np.int64)
        preds = np.where(rng.random(n_test) < 0.8, labels, 1 - labels)
        outcomes[k] = (labels, preds)
    path.write_bytes(b"benchmark bundle (random weights)")
    card = {"protocol": protocol.ref(), "store": {"hash": "-"},
            "classes": {k: {"sensitivity": 0.8, "specificity": 0.8} for k in protocol.class_keys}}
    return Bundle(path=path, card=card, class_keys=protocol.class_keys, source="benchmark", device=device,
                  _informative=informative, _class_match=class_match, _outcomes=outcomes)


def bench(protocol_name: str, per_class: int, device: str, repeats: int, tmp: Path) -> dict:
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.data.store import open_store

    protocol = load_protocol(protocol_name)
    store = open_store(make_store(tmp / f"store-{protocol_name}", protocol, per_class))
    translator = make_translator(protocol, device)
    bundle = make_bundle(tmp / f"bundle-{protocol_name}.pt", protocol, device)
    kwargs = dict(protocol=protocol, split="test", seed=0, samples=1, batch_size=protocol.scoring.batch_size,
                  device=device)
    score_translator(translator, store, bundle, **kwargs)  # warm-up (allocations, plan cache)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        record = score_translator(translator, store, bundle, **kwargs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # Parts: the translator alone, to see where the time goes.
    from s2i_bench.data.store import normalise_log_mel

    rows = store.split_indices("test")
    spec = normalise_log_mel(torch.from_numpy(np.asarray(store.spectrograms[rows], dtype=np.float32)).to(device),
                             store.normalisation)
    seeds = torch.arange(len(rows), dtype=torch.int64)
    from s2i_bench.translators import Batch

    b = protocol.scoring.batch_size
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(rows), b):
            translator.translate(Batch(log_mel=spec[start:start + b], seeds=seeds[start:start + b]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    translate_s = time.perf_counter() - t0
    n = record.num_sounds
    best = min(times)
    return {"protocol": protocol_name, "profile": protocol.model.profile, "device": device,
            "embedding_dim": protocol.training.embedding_dim, "sounds": n, "repeats": repeats,
            "seconds": times, "seconds_best": best, "sounds_per_second": n / best,
            "translate_only_seconds": translate_s, "judge_timed": store.synthetic,
            "bootstrap_replicates": protocol.metrics.bootstrap_samples}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synth-per-class", type=int, default=30, help="test sounds per class, synth protocol (demo: ~30)")
    ap.add_argument("--paper-per-class", type=int, default=20,
                    help="test sounds per class, vegas5 (paper) profile; the full split is 1365")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: all cores; use 1 on a shared, busy machine)")
    ap.add_argument("--skip-paper", action="store_true", help="only the synth (small) profile")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results.append(bench("synth", args.synth_per_class, args.device, args.repeats, tmp))
        if not args.skip_paper:
            results.append(bench("vegas5", args.paper_per_class, args.device, max(1, args.repeats - 1), tmp))
    machine = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu_model": cpu_model(),
               "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report = {"benchmark": "bench_score", "created": stamp, "code_version": code_version(), "machine": machine,
              "results": results,
              "note": "random weights; throughput of score_translator after a warm-up call. A busy or shared "
                      "machine inflates the times: re-run on a quiet one."}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"bench_score-{args.device.replace(':', '')}-{stamp}"
    atomic_write_json(args.out / f"{tag}.json", report)
    lines = [f"# bench_score ({stamp})", "",
             f"Machine: {machine['cpu_model']}, {machine['cpu_count']} cores, torch {machine['torch']}, "
             f"device {args.device}{' (' + machine['cuda'] + ')' if machine['cuda'] and args.device != 'cpu' else ''}, "
             f"{machine['torch_threads']} torch thread(s), "
             f"load average {machine['load_average']}; code {report['code_version']}.", "",
             "| protocol | profile | sounds | best s / call | sounds/s | translate only (s) | judge "
             "| full test split (6,825) est. s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['protocol']} | {r['profile']} | {r['sounds']} | {r['seconds_best']:.3f} | "
                     f"{r['sounds_per_second']:.0f} | {r['translate_only_seconds']:.3f} | "
                     f"{'yes' if r['judge_timed'] else 'no'} | {6825 / r['sounds_per_second']:.0f} |")
    lines += ["", report["note"], ""]
    atomic_write_text(args.out / f"{tag}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
