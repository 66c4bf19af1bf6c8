"""Cost of the informativity-classifier steps on a protocol: `pool` + `label` + `train-classifiers`.

Self-contained: it writes a store of the protocol's size class (the tests' fake store,
tests/fakes.py: no videos), saves `--models` random-weight checkpoints of the protocol's
translator profile, and times
- pool:   build_pool over all checkpoints (translation with test-time dropout, hashing, writing);
- label:  label_pool from a CSV of random 0/1 labels (balanced sets, parts);
- train:  train_classifiers (five binary CNNs for the protocol's epochs, the fingerprint
          probes, and the class-match CNN on the store's real-frame splits).
What the weights learn does not change the time, so random data is enough.

    .venv/bin/python -m benchmarks.bench_classifiers [--protocol synth] [--models 17] [--device cpu]

Writes results/benchmarks/bench_classifiers-<device>-<date>.json and .md, recording the machine.
Numbers taken on a shared or busy machine are upper bounds: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
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



def make_store(path: Path, protocol, per_class: dict[str, int], seed: int = 0):
    """A store of `per_class` segments per class and split, each its own video: the tests' fake
    store, without audio."""
    # The tests' fakes, imported from the repository root (where every benchmark runs:
    # python -m benchmarks.<name>); tests/fakes.py is their one definition.
    from tests.fakes import make_fake_store

    return make_fake_store(path, protocol, per_class=per_class, seed=seed,
                           videos_per_class=max(per_class.values()), waveforms=False)


def make_checkpoints(folder: Path, protocol, store, n: int) -> list[Path]:
    from s2i_translator.checkpoint import make_checkpoint, save_checkpoint
    from s2i_translator.models import AudioEncoder, DenseGenerator

    f = protocol.training.embedding_dim
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        ckpt = make_checkpoint(epoch=i, embedding_dim=f, spec=protocol.model, protocol_ref=protocol.ref(),
                               store_ref=store.ref(), normalisation=store.normalisation,
                               encoder=AudioEncoder(f, protocol.model), generator=DenseGenerator(f, protocol.model),
                               run="bench")
        paths.append(save_checkpoint(folder / "checkpoints" / f"generator-{i:06d}.pt", ckpt))
    return paths


def timed(fn):
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="synth")
    ap.add_argument("--models", type=int, default=17)
    ap.add_argument("--device", default="cpu")
    # segments per class and split of the synth store (40 videos of 3-10 s per class)
    ap.add_argument("--train", type=int, default=210)
    ap.add_argument("--val", type=int, default=24)
    ap.add_argument("--test", type=int, default=29)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    load_start = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)

    from s2i_bench.informativity.classifiers import train_class_match, train_classifiers
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool, open_pool
    from s2i_bench.data.store import open_store

    protocol = load_protocol(args.protocol)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = open_store(make_store(tmp / "store", protocol, {"train": args.train, "val": args.val,
                                                                  "test": args.test}))
        models = make_checkpoints(tmp / "run", protocol, store, args.models)
        t_pool = timed(lambda: build_pool([tmp / "run"], store.path, tmp / "pool", device=args.device))
        pool = open_pool(tmp / "pool")
        rng = np.random.default_rng(0)
        lines = ["image_id,label"] + [f"{i},{int(v)}" for i, v in zip(pool.table["image_id"],
                                                                       rng.integers(0, 2, len(pool.table)))]
        (tmp / "labels.csv").write_text("\n".join(lines) + "\n")
        t_label = timed(lambda: label_pool(tmp / "pool", csv_path=tmp / "labels.csv"))
        t_train_binary = timed(lambda: train_classifiers(tmp / "pool", tmp / "bundle.pt", device=args.device,
                                                         class_match_epochs=0))
        t_class_match = timed(lambda: train_class_match(store, epochs=protocol.classifiers.class_match_epochs,
                                                        seed=0, device=args.device, spec=protocol.classifiers))
        t_train_all = t_train_binary + t_class_match
        n_images = len(pool.table)
        del models

    spec = protocol.classifiers
    now = dt.datetime.now()
    result = {
        "benchmark": "classifiers", "protocol": protocol.ref(), "device": args.device,
        "models": args.models, "store_segments_per_class": {"train": args.train, "val": args.val, "test": args.test},
        "pool_images": n_images, "classifier_epochs": spec.epochs, "class_match_epochs": spec.class_match_epochs,
        "seconds": {"pool": round(t_pool, 2), "label": round(t_label, 2),
                    "train_binary_and_probes": round(t_train_binary, 2),
                    "train_class_match": round(t_class_match, 2),
                    "total": round(t_pool + t_label + t_train_all, 2)},
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "code_version": code_version(), "date": now.isoformat(timespec="seconds"),
    }
    out = ROOT / "results" / "benchmarks"
    stem = f"bench_classifiers-{args.device}-{now:%Y%m%d-%H%M%S}"
    atomic_write_json(out / f"{stem}.json", result)
    s = result["seconds"]
    md = [f"# bench_classifiers ({protocol.name}, {args.device}, {now:%Y-%m-%d %H:%M})", "",
          f"Machine: {result['machine']['cores']} cores, {result['machine']['cpu']}, torch {torch.__version__}, "
          f"load average {load_start[0]:.1f} at the start, {result['machine']['load_average_end'][0]:.1f} at the end "
          f"(a busy machine inflates every number).",
          "", f"{args.models} random-weight `{protocol.model.profile}` checkpoints, {n_images} pool images, "
          f"{spec.epochs} classifier epochs, {spec.class_match_epochs} class-match epochs.", "",
          "| step | seconds |", "| --- | ---: |",
          f"| pool | {s['pool']} |", f"| label (CSV) | {s['label']} |",
          f"| train: five binary CNNs + fingerprint probes | {s['train_binary_and_probes']} |",
          f"| train: class-match CNN | {s['train_class_match']} |", f"| **total** | **{s['total']}** |", ""]
    atomic_write_text(out / f"{stem}.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
