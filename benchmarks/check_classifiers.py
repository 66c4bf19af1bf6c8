"""Acceptance check of the informativity classifiers on the synthetic world: pool -> label
--judge -> train-classifiers, through the real commands, with accuracy, Se and Sp per class
beside the paper's accuracies.

The pool is made of
- the checkpoints of the given run folders (`--runs`; every checkpoint is one model), and
- `--controlled N` "controlled" translators (default 17): TorchScript programs that return the
  sound's real frame (the nearest remembered validation sound) degraded by blur, a pull towards
  grey and noise. Per image (from its seed) the degradation is light with probability 0.35,
  else heavy; every model has its own degradation profile (its fingerprint). The judge decides
  what is informative. They stand in for translators that are sometimes informative, which the
  small-profile demo translators are not yet (the judge finds none of their images informative).

    .venv/bin/python -m benchmarks.check_classifiers --store STORE [--runs RUN ...] [--controlled 17]

Writes results/benchmarks/check_classifiers-<date>.json and .md (with step timings and the
machine). Timings on a busy machine are upper bounds: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version, cpu_model

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

PAPER_ACCURACY = {"baby_cry": 0.80, "dog": 0.80, "rail_transport": 0.84, "fireworks": 0.82, "water_flowing": 0.815}
LIGHT_SHARE = 0.35


class DegradingProgram(torch.nn.Module):
    """(B, 1, 128, 100) spectrograms, (B,) seeds -> (B, 3, 96, 96): the nearest remembered
    sound's frame, degraded lightly (share LIGHT_SHARE of the seeds) or heavily. Randomness is a
    hash of the seed, so an image depends on (sound, seed) only."""

    def __init__(self, spectrograms: torch.Tensor, frames: torch.Tensor, light: float, heavy: float,
                 noise: float, grey: float):
        super().__init__()
        self.register_buffer("spectrograms", spectrograms.flatten(1))  # (M, 12800)
        self.register_buffer("frames", frames)  # (M, 3, 96, 96) in [-1, 1]
        self.light, self.heavy, self.noise, self.grey = light, heavy, noise, grey
        self.light_share = LIGHT_SHARE

    def forward(self, spectrograms: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(spectrograms.flatten(1), self.spectrograms).argmin(1)
        x = self.frames[nearest]  # (B, 3, 96, 96)
        u = torch.frac((seeds % 1000003).double() * 0.6180339887498949)  # (B,) in [0, 1)
        strength = torch.where(u < self.light_share, torch.full_like(u, self.light),
                               torch.full_like(u, self.heavy)).float()
        out = []
        for i in range(x.shape[0]):
            s = float(strength[i])
            side = max(3, int(96 * (1.0 - 0.9 * s)))
            y = torch.nn.functional.interpolate(x[i:i + 1], size=[side, side], mode="area")
            y = torch.nn.functional.interpolate(y, size=[96, 96], mode="bilinear", align_corners=False)
            y = (1.0 - self.grey * s) * y
            idx = torch.arange(3 * 96 * 96, dtype=torch.float64).view(1, 3, 96, 96)
            hashed = torch.frac(torch.sin(idx * 12.9898 + float(seeds[i] % 100003) * 78.233) * 43758.5453)
            y = y + self.noise * s * (hashed.float() * 2.0 - 1.0)
            out.append(y.clamp(-1.0, 1.0))
        return torch.cat(out)



def write_programs(store, folder: Path, n: int) -> list[Path]:
    from s2i_bench.images import uint8_to_net

    folder.mkdir(parents=True, exist_ok=True)
    val = store.split_indices("val")
    specs = torch.from_numpy(store.normalise(np.asarray(store.spectrograms[val], dtype=np.float32)))
    frames = uint8_to_net(np.asarray(store.frames[val]))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        program = DegradingProgram(specs, frames, light=float(rng.uniform(0.05, 0.3)),
                                   heavy=float(rng.uniform(0.6, 0.95)), noise=float(rng.uniform(0.05, 0.3)),
                                   grey=float(rng.uniform(0.3, 0.8)))
        path = folder / f"controlled{i:02d}.pt"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(program).save(str(path))
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="a store made from the synthetic world")
    ap.add_argument("--runs", type=Path, nargs="*", default=[], help="run folders (every checkpoint is a model)")
    ap.add_argument("--controlled", type=int, default=17, help="controlled translators to add (0: none)")
    ap.add_argument("--work", type=Path, default=None, help="keep the pool and bundle here (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load_start = os.getloadavg()

    import pandas as pd

    from s2i_bench.informativity.classifiers import train_classifiers
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool
    from s2i_bench.data.store import open_store

    store = open_store(args.store)
    if not store.synthetic:
        raise SystemExit(f"{args.store}: not a store of the synthetic world (the judge labels the pool)")
    protocol = store.protocol
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        programs = write_programs(store, work / "controlled", args.controlled) if args.controlled else []
        seconds, log = {}, io.StringIO()

        def step(name, fn):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(log):
                out = fn()
            seconds[name] = round(time.perf_counter() - t0, 2)
            return out

        step("pool", lambda: build_pool([*args.runs, *programs], store.path, work / "pool", seed=args.seed,
                                        overwrite=True))
        labels_error = None
        try:
            step("label", lambda: label_pool(work / "pool", use_judge=True, seed=args.seed))
        except UserError as e:
            labels_error = str(e)
        pool_meta = json.loads((work / "pool" / "pool.json").read_text())
        labels = pd.read_csv(work / "pool" / "labels.csv") if (work / "pool" / "labels.csv").exists() else None
        card = None
        if labels_error is None:
            step("train", lambda: train_classifiers(work / "pool", work / "bundle.pt", seed=args.seed, overwrite=True))
            card = json.loads((work / "bundle.json").read_text())

    informative_by_source = {}
    if labels is not None:
        kind = {m["model_id"]: ("controlled" if "controlled" in m["path"] else "checkpoint")
                for m in pool_meta["models"]}
        labels["source"] = labels["model_id"].map(kind)
        for src, g in labels.groupby("source"):
            informative_by_source[src] = {"images": int(len(g)), "informative": int(g["label"].sum())}
    elif labels_error:
        informative_by_source = {"note": labels_error}

    now = dt.datetime.now()
    result = {
        "check": "classifiers", "protocol": protocol.ref(), "store": store.ref(),
        "models": {"checkpoints": sum(1 for m in pool_meta["models"] if "controlled" not in m["path"]),
                   "controlled": len(programs)},
        "pool": {"images": pool_meta["num_images"], "hash": pool_meta["pool_hash"],
                 "shortfall": len(pool_meta["shortfall"])},
        "judge_informative": informative_by_source, "label_error": labels_error,
        "classes": None if card is None else {
            k: {key: c[key] for key in ("test_accuracy", "accuracy_ci", "sensitivity", "specificity", "confusion",
                                        "n_train", "n_val", "n_test", "epoch_chosen", "shortfall")}
            | {"paper_accuracy": PAPER_ACCURACY.get(k), "fingerprint_warning": c["fingerprint_probe"]["warning"],
               "fingerprint_accuracy": c["fingerprint_probe"]["accuracy"], "models_used": len(c["counts_per_model"])}
            for k, c in card["classes"].items()},
        "untrained": None if card is None else card.get("untrained"),
        "class_match": None if card is None else card["class_match"],
        "seconds": seconds,
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "load_average_start": load_start,
                    "load_average_end": os.getloadavg()},
        "seed": args.seed, "code_version": code_version(), "date": now.isoformat(timespec="seconds"),
    }
    out = ROOT / "results" / "benchmarks"
    stem = f"check_classifiers-{now:%Y%m%d-%H%M%S}"
    atomic_write_json(out / f"{stem}.json", result)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    md = [f"# check_classifiers ({protocol.name}, {now:%Y-%m-%d %H:%M})", "",
          f"Pool: {result['models']['checkpoints']} translator checkpoints + {len(programs)} controlled translators, "
          f"{pool_meta['num_images']} images. Judge verdicts by source: {informative_by_source}.", ""]
    if card is None:
        md += [f"Labelling failed: {labels_error}", ""]
    else:
        md += ["| class | accuracy [95% CI] | Se | Sp | n_test | epoch | models | paper accuracy |",
               "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k, c in result["classes"].items():
            ci = c["accuracy_ci"]
            md.append(f"| {k} | {pct(c['test_accuracy'])} [{pct(ci[0])}, {pct(ci[1])}] | {pct(c['sensitivity'])} | "
                      f"{pct(c['specificity'])} | {c['n_test']} | {c['epoch_chosen']} | {c['models_used']} | "
                      f"{pct(c['paper_accuracy'])} |")
        for k, reason in (card.get("untrained") or {}).items():
            md.append(f"| {k} | no classifier: {reason} | | | | | | {pct(PAPER_ACCURACY.get(k))} |")
        md += ["", f"Class-match classifier (real frames): test accuracy {pct(card['class_match']['test_accuracy'])} "
               f"on {card['class_match']['n_test']} frames.", ""]
    md += [f"Seconds: {seconds} ({os.cpu_count()} cores, {cpu_model()}, torch {torch.__version__}, load average "
           f"{load_start[0]:.1f} at the start, {result['machine']['load_average_end'][0]:.1f} at the end; "
           f"a busy machine inflates them).", ""]
    atomic_write_text(out / f"{stem}.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
