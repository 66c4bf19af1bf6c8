"""How many images do FID and KID need? Their bias with the sample size, in the domain features.

Two disjoint random samples of N real training frames of the demo's store come from the same
distribution, so their true FID and KID are 0; what is measured is the sample-size bias (mean
over repeats) and its spread. FID's bias falls like c / N; KID is unbiased. The N at which FID's bias falls below
1% of the FID between the real frames of two classes (what drawing the wrong class costs)
is where a record stops warning (`image_metrics.FID_STABLE_IMAGES`).

    .venv/bin/python -m benchmarks.check_image_metrics [--work demo-work] [--repeats 20]

Writes results/benchmarks/check_image_metrics-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import warnings
from pathlib import Path

import numpy as np

from benchmarks.results import machine, write
from s2i_bench.provenance import code_version

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

SIZES = (25, 50, 100, 200, 400)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "demo-work")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring import image_metrics as IM
    from s2i_bench.scoring.features import cached_real_features, domain_extractor

    torch.set_num_threads(1)
    started = dt.datetime.now()
    store = open_store(args.work / "store")
    extractor = domain_extractor(load_bundle(args.work / "classifiers" / "bundle.pt"))
    train = store.split_indices("train")
    feats = cached_real_features(store, train, extractor)  # (N, 32)
    classes = store.class_index[train]
    rng = np.random.default_rng(0)
    curve = {}
    for n in SIZES:
        if 2 * n > len(train):
            break
        fids, kids = [], []
        for _ in range(args.repeats):
            perm = rng.permutation(len(train))
            a, b = feats[perm[:n]], feats[perm[n:2 * n]]
            fids.append(IM.fid(a, b))
            kids.append(IM.kid(a, b, subsets=20, subset_size=n // 2)[0])
        curve[n] = {"fid_mean": float(np.mean(fids)), "fid_sd": float(np.std(fids, ddof=1)),
                    "kid_mean": float(np.mean(kids)), "kid_sd": float(np.std(kids, ddof=1))}
    # FID between two classes' real frames: the size of a difference that matters
    between = []
    for ci in range(len(store.protocol.class_keys)):
        a, b = feats[classes == ci], feats[classes == (ci + 1) % len(store.protocol.class_keys)]
        between.append(IM.fid(a, b))
    scale = float(np.mean(between))
    ns = np.array(list(curve))
    fid_bias = np.array([curve[n]["fid_mean"] for n in ns])
    c = float(np.sum(fid_bias * (1 / ns)) / np.sum((1 / ns) ** 2))  # least squares of bias = c / N
    stable = int(np.ceil(c / (0.01 * scale)))
    result = {"check": "image_metrics", "date": started.isoformat(timespec="seconds"),
              "machine": machine(),
              "code_version": code_version(), "extractor": extractor.ref(), "repeats": args.repeats,
              "same_distribution": {str(k): v for k, v in curve.items()}, "fid_between_classes_mean": scale,
              "fid_bias_c_over_n": c, "stable_images": stable}
    md = [f"# FID and KID against the sample size, {result['date']}", "",
          f"Domain features ({extractor.name}); two disjoint samples of N real training frames of the demo's store "
          f"(the same distribution: true FID = KID = 0), {args.repeats} repeats.", "",
          "| N | FID mean ± SD | KID mean ± SD (×1000) |", "| --- | --- | --- |"]
    for n, v in curve.items():
        md.append(f"| {n} | {v['fid_mean']:.3f} ± {v['fid_sd']:.3f} | {1000 * v['kid_mean']:.2f} ± "
                  f"{1000 * v['kid_sd']:.2f} |")
    md += ["", f"FID bias ≈ {c:.1f} / N. FID between the real frames of two classes: {scale:.2f} on average; the bias "
               f"falls below 1% of that from N = {stable} images: below it a record warns and points to KID.", ""]
    write("check_image_metrics", started, result, md, args.out)


if __name__ == "__main__":
    main()
