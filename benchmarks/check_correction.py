"""Does the corrected share's interval contain the truth? Two checks on the synthetic world.

1. Controlled (`--store` only): a "translator" whose informativity is known by construction
   and measured by the judge. For each test sound it returns the sound's real frame degraded
   by a strength s (blur, a pull towards grey, noise), drawn from the image's own seed: with
   probability p_c a light degradation (mostly judged informative), else a heavy one. Five
   informativity CNNs (the paper's architecture and recipe, `s2i_bench.classifiers.fit_classifier`)
   are trained on such images of train/val frames labelled by the judge, and tested on a held-out
   part of the protocol's size (so Se and Sp carry real uncertainty). Then `score_translator`
   scores the test sounds under R scoring seeds; for every (class, seed) we check whether the
   95% interval of the corrected share contains the judge's true share of the same images,
   and whether the raw share's interval does (it should not, when the classifier errs).

2. Real runs (`--runs RUN... --classifiers BUNDLE`): the last checkpoint of each run scored
   once; raw, corrected and true shares side by side, and whether each interval holds the truth.

    .venv/bin/python -m benchmarks.check_correction --store STORE [--seeds 20] [--runs RUN ... --classifiers B]

Writes results/benchmarks/check_correction-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import code_version

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

# Share of lightly degraded images per class in the controlled translator (the "true"
# informativity it aims at; the judge's verdict on the actual images is the truth scored).
TARGET_SHARE = {"baby_cry": 0.10, "dog": 0.05, "rail_transport": 0.20, "fireworks": 0.30, "water_flowing": 0.15}


def degrade(frames_uint8: np.ndarray, strength: np.ndarray, noise_seeds: np.ndarray) -> np.ndarray:
    """(N, 96, 96, 3) uint8 frames, strengths (N,) in [0, 1] -> degraded uint8 images: blurred by
    down/up-sampling, pulled towards grey and noised, all growing with the strength."""
    out = np.empty_like(frames_uint8)
    for i, (frame, s, seed) in enumerate(zip(frames_uint8, strength, noise_seeds)):
        x = torch.from_numpy(np.array(frame, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0  # (1, 3, 96, 96)
        side = max(3, int(round(96 * (1 - 0.95 * s))))
        x = F.interpolate(F.interpolate(x, size=(side, side), mode="area"), size=(96, 96), mode="bilinear",
                          align_corners=False)
        x = (1 - 0.8 * s) * x + 0.8 * s * 0.5
        g = torch.Generator().manual_seed(int(seed))
        x = x + (0.25 * s) * torch.randn(x.shape, generator=g)
        out[i] = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return out


class DegradingTranslator:
    """Spectrogram -> its sound's real frame, degraded; the degradation is drawn from the image
    seed (per image, batch-independent). The sound is found from its spectrogram."""

    def __init__(self, store, target: dict[str, float]):
        from s2i_bench.data.store import normalise_log_mel

        rows = store.split_indices("test")
        spec = normalise_log_mel(torch.from_numpy(np.asarray(store.spectrograms[rows], dtype=np.float32)),
                                 store.normalisation)
        self.lookup = {self._key(s): r for s, r in zip(spec, rows)}
        self.store, self.target = store, target
        self.info = {"path": "degrading-translator (controlled)", "sha256": "-", "kind": "controlled",
                     "epoch": None, "embedding_dim": None, "run": None}

    @staticmethod
    def _key(spec: torch.Tensor) -> str:
        return hashlib.sha1(spec.to(torch.float16).cpu().numpy().tobytes()).hexdigest()

    def translate(self, batch):
        from s2i_bench.images import uint8_to_net

        spectrograms, seeds = batch.log_mel, batch.seeds.cpu()
        rows = np.array([self.lookup[self._key(s)] for s in spectrograms])
        classes = self.store.manifest["class"].to_numpy()[rows]
        strength = np.empty(len(rows))
        for i, (seed, cls) in enumerate(zip(seeds.tolist(), classes)):
            rng = np.random.default_rng(int(seed))
            light = rng.random() < self.target[cls]
            strength[i] = rng.uniform(0.0, 0.35) if light else rng.uniform(0.45, 1.0)
        images = degrade(np.asarray(self.store.frames[rows]), strength, seeds.numpy() + 1)
        return uint8_to_net(images)  # (B, 3, 96, 96) in [-1, 1]


def train_bundle(store, protocol, seed: int, tmp: Path):
    """Five informativity CNNs on degraded train/val frames labelled by the judge (balanced,
    train / val / test sizes of the protocol), as a `Bundle`."""
    from s2i_bench.informativity.bundle import Bundle, InformativityCNN
    from s2i_bench.informativity.classifiers import _predict_log_probs, fit_classifier
    from s2i_bench.synth import judge

    spec = protocol.classifiers
    rng = np.random.default_rng(seed)
    models, outcomes, card = {}, {}, {"protocol": protocol.ref(), "store": {"hash": store.store_hash}, "classes": {}}
    rows_all = np.concatenate([store.split_indices("train"), store.split_indices("val")])
    classes = store.manifest["class"].to_numpy()
    per_label = spec.informative_per_class
    for ci, key in enumerate(protocol.class_keys):
        rows = rows_all[classes[rows_all] == key]
        pick = rng.choice(rows, size=6 * per_label, replace=True)
        strength = rng.uniform(0, 1, size=len(pick))
        images = degrade(np.asarray(store.frames[np.sort(pick)]), strength, rng.integers(0, 2**31, len(pick)))
        labels = judge(images, key).astype(int)
        pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        n = min(len(pos), len(neg), per_label)
        take = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
        rng.shuffle(take)
        n_test = round(len(take) * spec.test_per_class / (spec.test_per_class + spec.train_per_class))
        test, rest = take[:n_test], take[n_test:]
        n_val = round(len(rest) * spec.val_fraction)
        val, train = rest[:n_val], rest[n_val:]
        model = InformativityCNN(2, spec.dropout, spec.fc_dropout)
        fit = fit_classifier(model, images[train], labels[train], images[val], labels[val], epochs=spec.epochs,
                             batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum,
                             weight_decay=spec.weight_decay, seed=seed + ci, desc=f"classifier {key}")
        model.load_state_dict(fit.state_dict)
        model.eval()
        pred = _predict_log_probs(model, images[test], "cpu").argmax(1).numpy()
        outcomes[key] = (labels[test].astype(np.int64), pred.astype(np.int64))
        se = float((pred[labels[test] == 1] == 1).mean())
        sp = float((pred[labels[test] == 0] == 0).mean())
        card["classes"][key] = {"sensitivity": se, "specificity": sp, "n_test": int(len(test)),
                                "n_train": int(len(train)), "n_per_label": int(n)}
        models[key] = model
        print(f"  {key}: {n} + {n} images, test {len(test)}: Se {se:.2f} Sp {sp:.2f}", file=sys.stderr)
    path = tmp / "controlled-bundle.pt"
    path.write_bytes(b"controlled experiment: classifiers held in memory")
    return Bundle(path=path, card=card, class_keys=protocol.class_keys, source="controlled", device="cpu",
                  _informative=models, _class_match=None, _outcomes=outcomes), card


def covered(ci, truth) -> bool | None:
    return None if ci is None or truth is None else bool(ci[0] - 1e-12 <= truth <= ci[1] + 1e-12)


def controlled(store_path: Path, seeds: int, tmp: Path) -> dict:
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.data.store import open_store

    store = open_store(store_path)
    if not store.synthetic:
        raise SystemExit(f"{store_path}: not a store of the synthetic world (no judge)")
    protocol = store.protocol
    bundle, card = train_bundle(store, protocol, seed=0, tmp=tmp)
    translator = DegradingTranslator(store, TARGET_SHARE)
    rows = []
    for seed in range(seeds):
        record = score_translator(translator, store, bundle, protocol=protocol, seed=seed)
        for key, c in ((k, record.cls(k)) for k in record.class_keys):
            rows.append({"seed": seed, "class": key, "n_images": c["n_images"], "raw_share": c["raw_share"],
                         "raw_ci": c["raw_ci"], "corrected_share": c["corrected_share"],
                         "corrected_ci": c["corrected_ci"], "true_share": c["true_share"],
                         "corrected_covers": covered(c["corrected_ci"], c["true_share"]),
                         "raw_covers": covered(c["raw_ci"], c["true_share"])})
    by_seed: dict[int, int] = {}
    for r in rows:
        by_seed[r["seed"]] = by_seed.get(r["seed"], 0) + bool(r["corrected_covers"])
    # How many of the five classes are covered under one scoring seed -> in how many seeds.
    classes_covered = {str(k): sum(v == k for v in by_seed.values()) for k in range(len(protocol.class_keys) + 1)}
    cov = [r["corrected_covers"] for r in rows if r["corrected_covers"] is not None]
    raw_cov = [r["raw_covers"] for r in rows if r["raw_covers"] is not None]
    per_class = {}
    for key in protocol.class_keys:
        mine = [r for r in rows if r["class"] == key]
        per_class[key] = {
            "target_share": TARGET_SHARE[key],
            "mean_true_share": float(np.mean([r["true_share"] for r in mine])),
            "mean_raw_share": float(np.mean([r["raw_share"] for r in mine])),
            "mean_corrected_share": float(np.mean([r["corrected_share"] for r in mine
                                                   if r["corrected_share"] is not None])),
            "corrected_coverage": float(np.mean([r["corrected_covers"] for r in mine
                                                 if r["corrected_covers"] is not None])),
            "raw_coverage": float(np.mean([r["raw_covers"] for r in mine])),
            "sensitivity": card["classes"][key]["sensitivity"], "specificity": card["classes"][key]["specificity"],
            "classifier_test_images": card["classes"][key]["n_test"],
        }
    return {"store": str(store_path), "store_hash": store.store_hash, "protocol": protocol.ref(), "seeds": seeds,
            "test_sounds_per_class": rows[0]["n_images"] if rows else 0,
            "corrected_coverage": float(np.mean(cov)) if cov else None,
            "raw_coverage": float(np.mean(raw_cov)) if raw_cov else None,
            "classes_covered_per_seed": classes_covered, "per_class": per_class, "rows": rows}


def real_runs(runs: list[Path], store_path: Path, bundle_path: Path) -> list[dict]:
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.runs import RunFolder
    from s2i_bench.translators import load_translator
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.data.store import open_store

    store = open_store(store_path)
    bundle = load_bundle(bundle_path)
    out = []
    for run in runs:
        last = RunFolder(run).checkpoints()[-1]
        record = score_translator(load_translator(last), store, bundle, protocol=store.protocol)
        for key, c in ((k, record.cls(k)) for k in record.class_keys):
            out.append({"run": run.name, "checkpoint": last.name, "class": key, "raw_share": c["raw_share"],
                        "corrected_share": c["corrected_share"], "corrected_ci": c["corrected_ci"],
                        "true_share": c["true_share"], "class_match_rate": c["class_match_rate"],
                        "corrected_covers": covered(c["corrected_ci"], c["true_share"])})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="a store of the synthetic world")
    ap.add_argument("--seeds", type=int, default=20, help="scoring seeds in the controlled check")
    ap.add_argument("--runs", type=Path, nargs="*", default=[])
    ap.add_argument("--classifiers", type=Path, default=None, help="bundle for --runs")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args()
    import tempfile

    torch.set_num_threads(1)  # small tensors; a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        result = {"check": "check_correction", "code_version": code_version(),
                  "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform()},
                  "controlled": controlled(args.store, args.seeds, Path(tmp))}
    if args.runs:
        if args.classifiers is None:
            raise SystemExit("--runs needs --classifiers")
        result["runs"] = real_runs(args.runs, args.store, args.classifiers)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"check_correction-{stamp}.json", result)
    c = result["controlled"]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"# check_correction ({stamp})", "",
             f"Controlled translator on {c['store']} ({c['test_sounds_per_class']} test sounds per class), "
             f"{c['seeds']} scoring seeds; classifiers trained on judge-labelled degraded frames.", "",
             f"The corrected share's 95% interval contains the judge's truth in **{pct(c['corrected_coverage'])}** "
             f"of (class, seed) cases; the raw share's interval in {pct(c['raw_coverage'])}. Classes (of "
             f"{len(c['per_class'])}) whose corrected interval holds the truth, per scoring seed -> number of seeds: "
             + ", ".join(f"{k}: {v}" for k, v in c["classes_covered_per_seed"].items() if v) + ".", "",
             "All seeds share one set of classifiers (one test set), so the cases are not independent; "
             "Rogan-Gladen assumes the classifier's Se and Sp hold on the scored images (a shift between the "
             "classifier's test images and the generator's biases the point estimate).", "",
             "| class | target | true (mean) | raw (mean) | corrected (mean) | Se | Sp "
             "| corrected CI covers | raw CI covers |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, v in c["per_class"].items():
        lines.append(f"| {key} | {pct(v['target_share'])} | {pct(v['mean_true_share'])} | {pct(v['mean_raw_share'])} | "
                     f"{pct(v['mean_corrected_share'])} | {v['sensitivity']:.2f} | {v['specificity']:.2f} | "
                     f"{pct(v['corrected_coverage'])} | {pct(v['raw_coverage'])} |")
    if result.get("runs"):
        lines += ["", "Real runs (last checkpoint):", "",
                  "| run | class | raw | corrected [95% CI] | true | class-match | covers |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in result["runs"]:
            ci = r["corrected_ci"]
            lines.append(f"| {r['run']} | {r['class']} | {pct(r['raw_share'])} | {pct(r['corrected_share'])}"
                         f"{f' [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]' if ci else ''} | {pct(r['true_share'])} | "
                         f"{pct(r['class_match_rate'])} | {r['corrected_covers']} |")
    atomic_write_text(args.out / f"check_correction-{stamp}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
