"""Scoring: the one function that turns (generator, store, classifiers) into an informativity
record, used by `s2i-bench score` and by the training loop alike (SPEC section 6).

    record = score_translator(translator, store, bundle, protocol=protocol, split="test", seed=0)
    append_jsonl(run_dir / "metric-informativity.jsonl", record)

For every sound of the split, K images (K = `samples`; test-time dropout on, drawn from the
per-image seed `item_seeds(seed, segment_ids, draw=k)`, so nothing depends on the batch size or
the device order) are translated in batches on the device and classified in batches:

    raw share          share of a class's images its informativity classifier calls informative
    corrected share    Rogan-Gladen with the classifier's Se, Sp; 95% bootstrap interval over
                       the sounds and the classifier's test set (s2i_bench.scoring.metrics)
    class-match rate   share the 5-class real-frame classifier assigns to the sound's class
    true share         synthetic stores only: what the synthetic world's judge says

The record layout is the "Metric records" section of docs/architecture.md.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.scoring import metrics as M
from s2i_bench.errors import UserError
from s2i_bench.fileio import append_jsonl, atomic_write_bytes, progress, read_jsonl, sha256_file, to_jsonable
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.seeding import item_seed, item_seeds

RECORDS_NAME = "metric-informativity.jsonl"
OUTPUT_TOLERANCE = 1e-3  # TanH outputs may overshoot [-1, 1] by rounding; more is a broken generator
SHEET_PER_CLASS = 8  # fixed test sounds per class saved for the report's Figs. 15/16


# -- the plan: which sounds, in which order, with which seeds ----------------------------------
@dataclass(frozen=True)
class _Plan:
    indices: np.ndarray  # (N,) store rows, grouped by class, manifest order within a class
    class_index: np.ndarray  # (N,) protocol class index of each row
    segment_ids: np.ndarray  # (N,) str
    seeds: np.ndarray  # (K, N) int64: seed of draw k for sound n
    class_slices: dict[str, slice]  # class key -> its positions in `indices`
    sheet: np.ndarray  # positions (into `indices`) of the sample-sheet sounds


_PLANS: dict[tuple, _Plan] = {}


def _plan(store, class_keys, split: str, seed: int, samples: int) -> _Plan:
    """Cached per (store, split, seed, samples): the training loop scores every epoch."""
    key = (str(store.path), store.store_hash, tuple(class_keys), split, seed, samples)
    if key in _PLANS:
        return _PLANS[key]
    rows = store.split_indices(split)
    store_classes = store.manifest["class"].to_numpy()[rows]
    videos = store.manifest["video_id"].to_numpy()[rows]
    parts, slices, sheet, start = [], {}, [], 0
    for ci, key_c in enumerate(class_keys):
        in_class = store_classes == key_c
        mine = rows[in_class]  # manifest order
        parts.append(mine)
        slices[key_c] = slice(start, start + len(mine))
        sheet.extend(start + p for p in _sheet_positions(videos[in_class], SHEET_PER_CLASS))
        start += len(mine)
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    class_index = np.concatenate([np.full(len(p), ci) for ci, p in enumerate(parts)]) if parts else indices
    segment_ids = store.segment_ids[indices]
    seeds = np.stack([item_seeds(seed, segment_ids, draw=k) for k in range(samples)])
    plan = _Plan(indices=indices, class_index=class_index.astype(np.int64), segment_ids=segment_ids,
                 seeds=seeds, class_slices=slices, sheet=np.array(sheet, dtype=np.int64))
    if len(_PLANS) > 16:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def _sheet_positions(videos: np.ndarray, count: int) -> list[int]:
    """The sample-sheet sounds of a class: the first segment of each video in manifest order,
    then second segments and so on, so the sheet shows as many scenes as it can, and any leading
    part of it (Fig. 16 shows the first four) as many as that part can."""
    order, seen = [], {}
    for pos, video in enumerate(videos):
        order.append((seen.get(video, 0), pos))
        seen[video] = seen.get(video, 0) + 1
    return [pos for _, pos in sorted(order)[:count]]


_BUNDLE_HASHES: dict[tuple, str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a file, cached on (path, size, mtime): the loop hashes the bundle every epoch."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _BUNDLE_HASHES:
        _BUNDLE_HASHES[key] = sha256_file(path)
    return _BUNDLE_HASHES[key]


def check_images(images, where: str):
    """Refuse generator outputs that are not (B, 3, 96, 96), finite and in [-1, 1] (within a
    small tolerance); return them clamped to [-1, 1]."""
    import torch

    if not isinstance(images, torch.Tensor):
        raise UserError(f"{where}: the generator returned {type(images).__name__}, not an image tensor")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, 96, 96):
        raise UserError(f"{where}: the generator returned images of shape {tuple(images.shape)}, "
                        f"expected (B, 3, 96, 96)")
    if not images.is_floating_point():
        raise UserError(f"{where}: the generator returned {images.dtype} images, expected float in [-1, 1]")
    # One pass on the hot path: NaN propagates into aminmax and infinity is out of range.
    low, high = (float(v) for v in torch.aminmax(images))
    if math.isnan(low) or math.isnan(high) or math.isinf(low) or math.isinf(high):
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise UserError(f"{where}: the generator returned NaN or infinite values in {bad} of {images.shape[0]} images")
    if low < -1 - OUTPUT_TOLERANCE or high > 1 + OUTPUT_TOLERANCE:
        raise UserError(f"{where}: the generator returned values in [{low:.4g}, {high:.4g}], "
                        f"expected [-1, 1] (TanH outputs)")
    images = images.float()
    return images.clamp(-1.0, 1.0) if low < -1 or high > 1 else images


# -- the scoring function ------------------------------------------------------------------------
def score_translator(translator, store, bundle, *, protocol, split: str = "test", seed: int = 0, samples: int = 1,
                     batch_size: int = 256, device="cpu", epoch: int | None = None, d_update: bool | None = None,
                     run: str | None = None, generator_info: dict | None = None,
                     sample_sheet: str | Path | None = None) -> dict[str, Any]:
    """Score one generator on the `split` sounds of `store` with the classifiers of `bundle`.

    translator: `.translate(spectrograms (B,1,128,100) in [-1,1], seeds (B,) int64) -> (B,3,96,96)`
        and `.info` (path, sha256, kind, epoch, embedding_dim, run).
    epoch, d_update, run: what the record says about where the generator comes from (the
        training loop passes them); d_update defaults to epoch % d_every_epochs == 0.
    sample_sheet: where to save the images of 8 fixed sounds of each class (draw 0; the first
        segment of each video first, see `_sheet_positions`) with their segment ids and real
        frames (.npz, for Figs. 15/16).
    Returns the record (a plain dict); the caller appends it with `append_jsonl`.
    """
    import torch

    from s2i_bench.images import net_to_uint8

    started = time.perf_counter()
    if samples < 1:
        raise UserError(f"samples must be >= 1, got {samples}")
    class_keys = tuple(protocol.class_keys)
    # A class whose labels could not make a balanced set has no classifier (the bundle card lists
    # it under `untrained`): its images are still made, judged and class-matched, but it has no
    # informativity estimate, and the means over classes say which classes they cover.
    scored_keys = tuple(k for k in class_keys if k in tuple(bundle.class_keys))
    if not scored_keys:
        raise UserError(f"{getattr(bundle, 'path', 'classifiers')}: no classifier for any class of "
                        f"protocol {protocol.name!r} ({', '.join(class_keys)})")
    info = dict(getattr(translator, "info", {}) or {})
    info.update(generator_info or {})
    where = str(info.get("path") or "generator")
    plan = _plan(store, class_keys, split, seed, samples)
    n = len(plan.indices)
    if n == 0:
        raise UserError(f"{store.path}: no {split} sounds to score")
    judge = None
    if store.synthetic:
        from s2i_bench.synth import judge  # the synthetic world's ground truth

    dev = torch.device(device)
    informative = np.zeros((samples, n), dtype=bool)
    predicted = np.full((samples, n), -1, dtype=np.int64)
    truth = np.zeros((samples, n), dtype=bool)
    has_class_match = True
    sheet_images: dict[int, np.ndarray] = {}
    sheet_set = set(plan.sheet.tolist())
    normalisation = store.meta["normalisation"]
    from s2i_bench.data.store import normalise_log_mel

    with torch.inference_mode():
        for k in range(samples):
            for ci, key in enumerate(class_keys):
                sl = plan.class_slices[key]
                for start in range(sl.start, sl.stop, batch_size):
                    stop = min(start + batch_size, sl.stop)
                    rows = plan.indices[start:stop]
                    # (B, 1, 128, 100) log-Mel -> network input in [-1, 1]
                    spec = torch.from_numpy(np.ascontiguousarray(store.spectrograms[rows], dtype=np.float32))
                    spec = normalise_log_mel(spec.to(dev), normalisation)
                    seeds = torch.from_numpy(plan.seeds[k, start:stop]).to(dev)
                    images = check_images(translator.translate(spec, seeds), where)  # (B, 3, 96, 96)
                    if key in scored_keys:
                        informative[k, start:stop] = np.asarray(bundle.predict_informative(images, key), dtype=bool)
                    cls = bundle.predict_class(images) if has_class_match else None
                    if cls is None:
                        has_class_match = False
                    else:
                        predicted[k, start:stop] = np.asarray(cls, dtype=np.int64)
                    need_uint8 = judge is not None or (k == 0 and sample_sheet is not None
                                                       and any(p in sheet_set for p in range(start, stop)))
                    if need_uint8:
                        images_uint8 = net_to_uint8(images)  # (B, 96, 96, 3)
                        if judge is not None:
                            truth[k, start:stop] = np.asarray(judge(images_uint8, key), dtype=bool)
                        if k == 0 and sample_sheet is not None:
                            for p in range(start, stop):
                                if p in sheet_set:
                                    sheet_images[p] = images_uint8[p - start]

    # -- numbers ---------------------------------------------------------------------------------
    spec_m = protocol.metrics
    classes: dict[str, Any] = {}
    boot_means: dict[str, np.ndarray | None] = {}
    for ci, key in enumerate(class_keys):
        sl = plan.class_slices[key]
        n_sounds = sl.stop - sl.start
        per_sound = informative[:, sl].mean(axis=0)  # (n,) share of a sound's K images called informative
        if key in scored_keys:
            outcomes = bundle.test_outcomes(key)
            labels, preds = outcomes if outcomes is not None else (None, None)
            boot_seed = item_seed(seed, f"bootstrap/{key}")
            res = M.corrected_share(per_sound, labels, preds, sensitivity=bundle.sensitivity(key),
                                    specificity=bundle.specificity(key), bootstrap_samples=spec_m.bootstrap_samples,
                                    confidence=spec_m.confidence, seed=boot_seed, return_replicates=True)
        else:  # no classifier for this class: no informativity estimate
            res = {f: None for f in ("raw_share", "raw_ci", "corrected_share", "corrected_ci", "sensitivity",
                                     "specificity", "_replicates")}
            res["ci_method"] = "no classifier (untrained class)"
        boot_means[key] = res.pop("_replicates", None)
        entry = {
            "n_sounds": n_sounds,
            "n_images": n_sounds * samples,
            "raw_share": res["raw_share"],
            "raw_ci": res["raw_ci"],
            "raw_spread": None,
            "corrected_share": res["corrected_share"],
            "corrected_ci": res["corrected_ci"],
            "ci_method": res["ci_method"],
            "sensitivity": res["sensitivity"],
            "specificity": res["specificity"],
            "class_match_rate": (M.class_match_rate(predicted[:, sl].ravel(), np.full(n_sounds * samples, ci))
                                 if has_class_match and n_sounds else None),
            "true_share": float(truth[:, sl].mean()) if judge is not None and n_sounds else None,
        }
        if samples > 1 and n_sounds and key in scored_keys:
            draws = {"raw_share": informative[:, sl].mean(axis=1).tolist()}
            if has_class_match:
                draws["class_match_rate"] = (predicted[:, sl] == ci).mean(axis=1).tolist()
            if judge is not None:
                draws["true_share"] = truth[:, sl].mean(axis=1).tolist()
            entry["raw_spread"] = float(np.std(draws["raw_share"], ddof=1))
            entry["draws"] = draws
            entry["spread"] = {m: float(np.std(v, ddof=1)) for m, v in draws.items()}
        classes[key] = entry

    def mean_of(field: str, keys=scored_keys):
        vals = [classes[k][field] for k in keys]
        return None if any(v is None for v in vals) else float(np.mean(vals))

    # Means over the classes that have a classifier (all of them, normally), so raw, corrected and
    # true shares average the same classes; `mean_all_classes` adds what exists for every class.
    mean = {f: mean_of(f) for f in ("raw_share", "corrected_share", "class_match_rate", "true_share")}
    mean["classes"] = list(scored_keys)
    mean_all = {f: mean_of(f, class_keys) for f in ("class_match_rate", "true_share")}
    # The classes' bootstraps are independent (other sounds, other classifiers): the mean of their
    # replicates, replicate by replicate, is a bootstrap of the mean.
    mean["corrected_ci"] = None
    if mean["corrected_share"] is not None and all(boot_means[k] is not None for k in scored_keys):
        reps = np.stack([boot_means[k] for k in scored_keys]).mean(axis=0)  # (B,), NaN where any class had none
        reps = reps[~np.isnan(reps)]
        if reps.size:
            alpha = (1 - spec_m.confidence) / 2
            mean["corrected_ci"] = [float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha))]
    if epoch is None:
        epoch = info.get("epoch")
    if d_update is None and epoch is not None:
        d_update = int(epoch) % protocol.training.d_every_epochs == 0
    bundle_path = Path(getattr(bundle, "path", "")) if getattr(bundle, "path", None) else None
    card = getattr(bundle, "card", {}) or {}
    record = {
        "kind": "informativity",
        "generator": {k: info.get(k) for k in ("path", "sha256", "kind", "epoch", "embedding_dim", "run")}
                     | {k: v for k, v in info.items() if k not in ("path", "sha256", "kind", "epoch", "embedding_dim", "run")},
        "run": run if run is not None else info.get("run"),
        "epoch": None if epoch is None else int(epoch),
        "d_update": None if d_update is None else bool(d_update),
        "protocol": protocol.ref(),
        "store": store.ref(),
        "split": split,
        "seed": int(seed),
        "samples": int(samples),
        "classifiers": {
            "path": str(bundle_path) if bundle_path else None,
            "sha256": _file_sha256(bundle_path) if bundle_path and bundle_path.is_file() else None,
            "source": getattr(bundle, "source", None),
            "protocol": card.get("protocol"),
            "store_hash": (card.get("store") or {}).get("hash"),
            "class_match": has_class_match,
        },
        "bootstrap": {"replicates": spec_m.bootstrap_samples, "confidence": spec_m.confidence,
                      "seed": f"item_seed({int(seed)}, 'bootstrap/<class key>')",
                      "resamples": "scored sounds (with their K images) and the classifier's test set"},
        "classes": classes,
        "mean": mean,
        "mean_all_classes": mean_all,
        "untrained_classes": [k for k in class_keys if k not in scored_keys],
        "num_sounds": n,
        "sample_sheet": None,
        "code_version": code_version(),
        "created": now_iso(),
        "seconds": None,
    }
    if sample_sheet is not None and sheet_images:
        record["sample_sheet"] = str(_write_sheet(sample_sheet, plan, sheet_images, store, class_keys))
    record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def _write_sheet(path, plan: _Plan, sheet_images: dict[int, np.ndarray], store, class_keys) -> Path:
    """Images of the fixed test sounds (draw 0) beside their real frames, as one .npz."""
    path = Path(path)
    positions = [int(p) for p in plan.sheet if int(p) in sheet_images]
    rows = plan.indices[positions]
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        images=np.stack([sheet_images[p] for p in positions]),  # (M, 96, 96, 3) uint8
        frames=np.ascontiguousarray(store.frames[rows]),  # (M, S, S, 3) uint8, the real centre frames
        segment_ids=np.array(plan.segment_ids[positions], dtype=str),
        class_keys=np.array([class_keys[i] for i in plan.class_index[positions]], dtype=str),
        seeds=plan.seeds[0, positions],
    )
    atomic_write_bytes(path, buf.getvalue())
    return path


# -- reading records back ------------------------------------------------------------------------
def matching_records(records, *, classifiers_sha256: str | None, store_hash: str, split: str, seed: int,
                     samples: int) -> list[dict]:
    """The records produced with these classifiers on this store, split, seed and samples."""
    out = []
    for r in records:
        if r.get("kind") != "informativity":
            continue
        if ((r.get("classifiers") or {}).get("sha256") == classifiers_sha256
                and (r.get("store") or {}).get("hash") == store_hash and r.get("split") == split
                and r.get("seed") == seed and r.get("samples") == samples):
            out.append(r)
    return out


def run_d_update_epochs(run_dir: Path) -> list[int] | None:
    """The D-update epochs from a run's log.csv (`d_updated` column), or None without one."""
    import pandas as pd

    log = Path(run_dir) / "log.csv"
    if not log.is_file():
        return None
    try:
        df = pd.read_csv(log)
    except (OSError, ValueError) as e:
        raise UserError(f"{log}: cannot read ({e})") from None
    if "epoch" not in df.columns or "d_updated" not in df.columns:
        return None
    return df.loc[df["d_updated"].astype(bool), "epoch"].astype(int).tolist()


def summarise_records(records, protocol, *, d_update_epochs=None) -> dict[str, Any]:
    """The paper's series metrics of a run's records, for the raw share (the paper's I(t)) and,
    where every record has them, the corrected and the true share."""
    out: dict[str, Any] = {}
    keys = protocol.class_keys
    for measure in ("raw_share", "corrected_share", "true_share", "class_match_rate"):
        df = M.series_from_records(records, keys, measure=measure, d_update_epochs=d_update_epochs,
                                   d_every_epochs=protocol.training.d_every_epochs)
        if df.empty or df[list(keys)].isna().all().all():
            continue
        summary, _ = M.summarise_frame(df, keys, protocol.metrics)
        out[measure] = summary
    return out


# -- `s2i-bench score` -------------------------------------------------------------------------
def score_command(generator, *, store, bundle, split=None, seed=None, samples=None, audio_encoder=None,
                  embedding_dim=None, device="cpu", records=None, as_json=False) -> dict[str, Any]:
    """Score a generator file, or every checkpoint of a run folder (or reuse its in-loop records)."""
    from s2i_bench.informativity.classifiers import load_bundle
    from s2i_bench.data.store import open_store

    generator = Path(generator)
    st = open_store(store)
    protocol = st.protocol
    split = split or protocol.scoring.split
    seed = protocol.scoring.seed if seed is None else seed
    samples = samples or protocol.scoring.samples
    batch_size = protocol.scoring.batch_size
    device = _check_device(device)
    bun = load_bundle(bundle, device=device)
    _check_classes(protocol, bun)
    if st.leaky:
        print(f"warning: {st.path}: split policy {st.split_policy!r} is leaky; scores on it overstate what a "
              f"generator does on unseen videos", file=sys.stderr)

    kwargs = dict(protocol=protocol, split=split, seed=seed, samples=samples, batch_size=batch_size, device=device)
    if generator.is_dir():
        result = _score_run(generator, st, bun, records=records, kwargs=kwargs)
        if as_json:
            print(json.dumps(to_jsonable(result), indent=2))
        else:
            print(format_run(result, protocol))
        return result

    from s2i_bench.translators.base import load_translator

    translator = load_translator(generator, device=device, audio_encoder=audio_encoder, embedding_dim=embedding_dim)
    out = Path(records) if records else generator.parent / RECORDS_NAME
    # The images of the fixed test sounds go beside the records (Figs. 15/16 of the report).
    record = score_translator(translator, st, bun, sample_sheet=out.parent / f"samples-{generator.stem}.npz", **kwargs)
    append_jsonl(out, record)
    if as_json:
        print(json.dumps(to_jsonable(record), indent=2))
    else:
        print(format_record(record, protocol))
        print(f"record appended to {out}")
    return record


def _check_device(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available")
    return device


def _check_classes(protocol, bundle) -> None:
    missing = [k for k in protocol.class_keys if k not in bundle.class_keys]
    if missing and set(missing) <= set((getattr(bundle, "card", {}) or {}).get("untrained", {})):
        print(f"warning: {bundle.path}: no classifier for {', '.join(missing)} (too few labelled images, see the "
              f"card's `untrained`); those classes get no informativity estimate", file=sys.stderr)
        return
    if missing:
        raise UserError(f"{bundle.path}: classifiers for {sorted(bundle.class_keys)} do not cover the store's "
                        f"classes {list(protocol.class_keys)}")


def _score_run(run_dir: Path, store, bundle, *, records, kwargs) -> dict[str, Any]:
    """Every checkpoint of a run, or its in-loop records when they match the classifiers, the store,
    split, seed and samples; then the paper's series summary."""
    from s2i_bench.translators.base import list_checkpoints, load_translator

    protocol = kwargs["protocol"]
    bundle_sha = _file_sha256(Path(bundle.path))
    match = dict(classifiers_sha256=bundle_sha, store_hash=store.store_hash, split=kwargs["split"],
                 seed=kwargs["seed"], samples=kwargs["samples"])
    in_loop = run_dir / RECORDS_NAME
    out = Path(records) if records else in_loop
    found = matching_records(read_jsonl(in_loop), **match) if in_loop.is_file() else []
    found = [r for r in found if r.get("epoch") is not None]
    if found:
        source = f"in-loop records ({in_loop})"
        scored = found
    else:
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            raise UserError(f"{run_dir}: no checkpoints and no matching {RECORDS_NAME} to score")
        source = f"{len(checkpoints)} checkpoints"
        scored = []
        for path in progress(checkpoints, desc="score checkpoints", unit="ckpt"):
            translator = load_translator(path, device=kwargs["device"])
            # Sample sheet of the last checkpoint only (Figs. 15/16 show the trained generator).
            sheet = out.parent / f"samples-{path.stem}.npz" if path == checkpoints[-1] else None
            record = score_translator(translator, store, bundle, run=run_dir.name, sample_sheet=sheet, **kwargs)
            append_jsonl(out, record)
            scored.append(record)
    d_epochs = run_d_update_epochs(run_dir)
    summary = summarise_records(scored, protocol, d_update_epochs=d_epochs)
    return {"kind": "informativity-series", "run": str(run_dir), "source": source,
            "records_path": str(out if not found else in_loop), "num_records": len(scored),
            "d_update_from": "log.csv" if d_epochs is not None else "records",
            "protocol": protocol.ref(), "store": store.ref(), **{k: match[k] for k in ("split", "seed", "samples")},
            "classifiers": {"path": str(bundle.path), "sha256": bundle_sha},
            "summary": summary, "records": scored}


# -- text output ---------------------------------------------------------------------------------
def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_record(record: dict[str, Any], protocol) -> str:
    g, s = record["generator"], record["store"]
    names = dict(zip(protocol.class_keys, protocol.class_names))
    lines = [
        f"generator  {g.get('path')} ({g.get('kind')}, sha256 {str(g.get('sha256'))[:12]}, "
        f"epoch {'-' if record['epoch'] is None else record['epoch']})",
        f"protocol   {record['protocol']['name']} {record['protocol']['version']} ({record['protocol']['fingerprint']})",
        f"store      {s['path']} (hash {s['hash']}, split policy {s['split_policy']}{', LEAKY' if s.get('leaky') else ''})",
        f"scored     split {record['split']}, seed {record['seed']}, {record['samples']} image(s) per sound, "
        f"{record['num_sounds']} sounds, {record['seconds']} s",
        "",
    ]
    spread = record["samples"] > 1
    header = (f"{'class':<16} {'images':>6} {'raw':>7} {'corrected [95% CI]':>24} {'class-match':>11} {'true':>7}"
              + (f" {'raw spread':>10}" if spread else ""))
    lines += [header, "-" * len(header)]
    for key, c in record["classes"].items():
        ci = c.get("corrected_ci")
        corr = _pct(c["corrected_share"]) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
        line = (f"{names.get(key, key):<16} {c['n_images']:>6} {_pct(c['raw_share']):>7} {corr:>24} "
                f"{_pct(c['class_match_rate']):>11} {_pct(c['true_share']):>7}")
        if spread:
            rs = "-" if c["raw_spread"] is None else f"{100 * c['raw_spread']:.1f} pp"
            line += f" {rs:>10}"
        lines.append(line)
    m = record["mean"]
    lines.append(f"{'mean':<16} {'':>6} {_pct(m['raw_share']):>7} {_pct(m['corrected_share']):>24} "
                 f"{_pct(m['class_match_rate']):>11} {_pct(m['true_share']):>7}")
    return "\n".join(lines)


def format_run(result: dict[str, Any], protocol) -> str:
    lines = [f"run {result['run']}: {result['num_records']} scored epochs from {result['source']}; "
             f"D-update epochs from {result['d_update_from']}",
             f"store {result['store']['hash']} (split policy {result['store']['split_policy']}), split "
             f"{result['split']}, seed {result['seed']}, {result['samples']} image(s) per sound", ""]
    titles = {"raw_share": "Informativity (raw classifier share, the paper's I(t))",
              "corrected_share": "Corrected share (Rogan-Gladen)", "true_share": "True share (synthetic judge)",
              "class_match_rate": "Class-match rate"}
    for measure, summary in result["summary"].items():
        lines.append(f"== {titles[measure]}")
        lines.append(M.format_summary(summary, dict(zip(protocol.class_keys, protocol.class_names))))
        lines.append("")
    return "\n".join(lines)
