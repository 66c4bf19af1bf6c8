"""Scoring: collect -> compute -> record, the one function that `score`, the training loop and
the demo share (SPEC section 6).

    record = score_translator(translator, store, bundle, protocol=protocol, split="test", seed=0)
    records.append(run.records_path, record)
    score_checkpoints(run, store, bundle, ...)    # every checkpoint of a run that lacks a record

Per class, a record gives:

    raw share          share of a class's images its informativity classifier calls informative
    corrected share    Rogan-Gladen with the classifier's Se, Sp; 95% bootstrap interval over
                       the sounds and the classifier's test set (scoring.metrics)
    class-match rate   share the 5-class real-frame classifier assigns to the sound's class
    true share         synthetic stores only: what the synthetic world's judge says
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench import distributed, synth
from s2i_bench.errors import UserError
from s2i_bench.fileio import check_writable, dig, file_sha256, progress
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.runs import checkpoint_epoch
from s2i_bench.scoring import image_metrics as IM
from s2i_bench.scoring import metrics as M
from s2i_bench.scoring import records, series, shards
from s2i_bench.scoring.attributes import attribute_block, estimate_images
from s2i_bench.scoring.collect import Outcomes, Plan, collect, make_plan
from s2i_bench.scoring.decisions import encode_decisions
from s2i_bench.scoring.features import cached_real_features, domain_extractor
from s2i_bench.scoring.presets import names as preset_names
from s2i_bench.scoring.presets import record_recipe
from s2i_bench.scoring.sheets import sheet_key, sheet_name, write_sheet
from s2i_bench.seeding import item_seed
from s2i_bench.stats import lang_reiczigel_interval
from s2i_bench.translators import load_translator

logger = logging.getLogger(__name__)


# -- compute: the numbers of one translator ---------------------------------------------------------
def _class_result(outcomes: Outcomes, plan: Plan, bundle, key: str, ci: int, spec, seed: int):
    sl = plan.class_slices[key]
    n_sounds, samples = sl.stop - sl.start, plan.samples
    per_sound = outcomes.informative[:, sl].mean(axis=0)  # (n,) share of a sound's K images called informative
    if key in outcomes.scored_keys:
        outcome = bundle.test_outcomes(key)
        labels, preds = outcome if outcome is not None else (None, None)
        res = M.corrected_share(per_sound, labels, preds, sensitivity=bundle.sensitivity(key),
                                specificity=bundle.specificity(key), bootstrap_samples=spec.bootstrap_samples,
                                confidence=spec.confidence, seed=item_seed(seed, f"bootstrap/{key}"),
                                return_replicates=True)
    else:  # no classifier for this class: no informativity estimate
        res = {f: None for f in ("raw_share", "raw_ci", "corrected_share", "corrected_ci", "sensitivity",
                                 "specificity", "_replicates")}
        res["ci_method"] = "no classifier (untrained class)"
    replicates = res.pop("_replicates", None)
    has_match, has_truth = outcomes.predicted is not None, outcomes.truth is not None
    cm = res.get("confusion")
    lr = None
    if cm and res["raw_share"] is not None and n_sounds:
        positives = int(outcomes.informative[:, sl].sum())
        lr = lang_reiczigel_interval(positives, n_sounds * samples, cm["tp"], cm["tp"] + cm["fn"], cm["tn"],
                                     cm["tn"] + cm["fp"], spec.confidence)
    entry = {
        "n_sounds": n_sounds, "n_images": n_sounds * samples,
        "raw_share": res["raw_share"], "raw_ci": res["raw_ci"], "raw_spread": None,
        "corrected_share": res["corrected_share"],
        # the protocol's interval as `corrected_ci`; both kinds recorded
        "corrected_ci": (None if lr is None else list(lr)) if spec.corrected_interval == "lang-reiczigel"
        else res["corrected_ci"],
        "corrected_ci_method": spec.corrected_interval,
        "corrected_ci_bootstrap": res["corrected_ci"], "corrected_ci_lr": None if lr is None else list(lr),
        "ci_method": res["ci_method"],
        "sensitivity": res["sensitivity"], "specificity": res["specificity"],
        "class_match_rate": (M.class_match_rate(outcomes.predicted[:, sl].ravel(), np.full(n_sounds * samples, ci))
                             if has_match and n_sounds else None),
        "true_share": float(outcomes.truth[:, sl].mean()) if has_truth and n_sounds else None,
    }
    if samples > 1 and n_sounds and key in outcomes.scored_keys:
        draws = {"raw_share": outcomes.informative[:, sl].mean(axis=1).tolist()}
        if has_match:
            draws["class_match_rate"] = (outcomes.predicted[:, sl] == ci).mean(axis=1).tolist()
        if has_truth:
            draws["true_share"] = outcomes.truth[:, sl].mean(axis=1).tolist()
        entry["raw_spread"] = float(np.std(draws["raw_share"], ddof=1))
        entry["draws"] = draws
        entry["spread"] = {m: float(np.std(v, ddof=1)) for m, v in draws.items()}
    return entry, replicates


def compute(outcomes: Outcomes, plan: Plan, bundle, protocol, class_keys) -> dict[str, Any]:
    """classes, mean, mean_all_classes and untrained_classes of a record, from the decisions."""
    spec = protocol.metrics
    classes, boot = {}, {}
    for ci, key in enumerate(class_keys):
        classes[key], boot[key] = _class_result(outcomes, plan, bundle, key, ci, spec, plan.seed)
    scored = outcomes.scored_keys

    def mean_of(field: str, keys=scored):
        vals = [classes[k][field] for k in keys]
        return None if any(v is None for v in vals) else float(np.mean(vals))

    # Means over the classes that have a classifier (all of them, normally), so raw, corrected and
    # true shares average the same classes; `mean_all_classes` adds what exists for every class.
    # (A class-match-only bundle scores no class: its means are over every class.)
    averaged = scored or tuple(class_keys)
    mean = {f: mean_of(f, averaged) for f in ("raw_share", "corrected_share", "class_match_rate", "true_share")}
    mean["classes"] = list(averaged)
    mean["corrected_ci"] = None
    if mean["corrected_share"] is not None and all(boot[k] is not None for k in scored):
        mean["corrected_ci"] = M.mean_interval([boot[k] for k in scored], spec.confidence)
    return {"classes": classes, "mean": mean,
            "mean_all_classes": {f: mean_of(f, class_keys) for f in ("class_match_rate", "true_share")},
            "untrained_classes": [k for k in class_keys if k not in scored]}


# -- record -----------------------------------------------------------------------------------------
def make_record(*, info: dict, numbers: dict, plan: Plan, protocol, store, bundle, run, epoch, d_update,
                has_class_match: bool, native_size, translator_inputs, decisions: dict | None = None) -> dict[str, Any]:
    """The record layout of docs/architecture.md ("Metric records")."""
    bundle_path = Path(getattr(bundle, "path", "")) if getattr(bundle, "path", None) else None
    card = getattr(bundle, "card", {}) or {}
    core = ("path", "sha256", "kind", "epoch", "embedding_dim", "run")
    translator = {k: info.get(k) for k in core} | {k: v for k, v in info.items() if k not in core}
    translator.setdefault("inputs", list(translator_inputs))
    translator.setdefault("native_size", list(native_size) if native_size else None)
    return {
        "kind": records.KIND, "format_version": records.FORMAT_VERSION,
        "translator": translator,
        "run": run if run is not None else info.get("run"),
        "epoch": None if epoch is None else int(epoch),
        "d_update": None if d_update is None else bool(d_update),
        "protocol": protocol.ref(), "store": store.ref(), "split": plan.split, "seed": int(plan.seed),
        "samples": int(plan.samples),
        "classifiers": {
            "path": str(bundle_path) if bundle_path else None,
            "sha256": file_sha256(bundle_path) if bundle_path and bundle_path.is_file() else None,
            "source": getattr(bundle, "source", None), "protocol": card.get("protocol"),
            "store_hash": dig(card, "store", "hash"), "class_match": has_class_match,
        },
        "bootstrap": {"replicates": protocol.metrics.bootstrap_samples, "confidence": protocol.metrics.confidence,
                      "seed": f"item_seed({int(plan.seed)}, 'bootstrap/<class key>')",
                      "resamples": "scored sounds (with their K images) and the classifier's test set"},
        **numbers,
        "num_sounds": int(len(plan.indices)), "sample_sheet": None,
        "decisions": decisions,
        "code_version": code_version(), "created": now_iso(), "seconds": None,
    }


def score_translator(translator, store, bundle, *, protocol, split: str = "test", seed: int = 0, samples: int = 1,
                     batch_size: int = 256, device="cpu", epoch: int | None = None, d_update: bool | None = None,
                     run: str | None = None, generator_info: dict | None = None,
                     sample_sheet: str | Path | None = None, only_rows=None, metrics=None, extractor=None,
                     ais=None, attributes: bool = False) -> records.Record:
    """Score one translator on the `split` sounds of `store` with the classifiers of `bundle`;
    returns its record (the caller appends it with `records.append`).

    epoch, d_update, run: what the record says about where the translator comes from (the
        training loop passes them); d_update defaults to epoch % d_every_epochs == 0.
    sample_sheet: where to save the images of 8 fixed sounds of each class (scoring.sheets).
    only_rows: score only these store rows of the split (a folder of images with some missing).
    metrics: beyond informativity, any of fid, kid, prdc, iis (features by `extractor`, default the
        bundle's domain extractor) and ais (`ais` = (image encoder, audio encoder, their refs)).
    attributes: the attribute scores (synthetic stores only; `scoring.attributes`) as the
        record's `attributes`: the images' tone and size estimated while they are judged.
    """
    started = time.perf_counter()
    if samples < 1:
        raise UserError(f"samples must be >= 1, got {samples}")
    class_keys = tuple(protocol.class_keys)
    info = dict(getattr(translator, "info", {}) or {}) | dict(generator_info or {})
    plan = make_plan(store, class_keys, split, seed, samples, only_rows=only_rows)
    if len(plan.indices) == 0:
        raise UserError(f"{store.path}: no {split} sounds to score")
    judge = synth.judge if store.synthetic else None  # the synthetic world's ground truth
    if attributes and not store.synthetic:
        raise UserError(f"--attributes: {store.path} is not a store of the synthetic world (the attribute scores "
                        "need its scenes: `s2i-bench synth`, then `prepare`)")
    which = IM.check_metrics(metrics)
    needs_features = bool(IM.needing(which, "features"))
    if needs_features and extractor is None:
        extractor = domain_extractor(bundle)
    if IM.needing(which, "text") and getattr(extractor, "text", None) is None:
        raise UserError(f"--metrics {','.join(IM.needing(which, 'text'))}: the class prompts need a CLIP text tower: "
                        f"score with --feature-preset {' or '.join(p for p in preset_names() if 'clip' in p)}")
    wants_ais = bool(IM.needing(which, "embeddings"))
    if wants_ais and ais is None:
        raise UserError("--metrics ais needs an audio and an image encoder of your own (--ais-audio, --ais-image)")
    # a CLIP preset is also AIS's image encoder: its features are the image embeddings, computed once
    shared = wants_ais and needs_features and ais[0] is extractor
    outcomes = collect(translator, store, bundle, plan, device=device, batch_size=batch_size, judge=judge,
                       keep_sheet=sample_sheet is not None, image_size=protocol.image.size,
                       where=str(info.get("path") or "translator"), extractor=extractor if needs_features else None,
                       image_encoder=ais[0] if wants_ais and not shared else None,
                       audio_encoder=ais[1] if wants_ais else None,
                       attribute_estimator=estimate_images if attributes else None)
    if shared:
        outcomes.image_embeddings = outcomes.features
    numbers = compute(outcomes, plan, bundle, protocol, class_keys)
    info |= dict(getattr(translator, "after_info", lambda: {})())  # what only translating showed
    if epoch is None:
        epoch = info.get("epoch")
    if d_update is None and epoch is not None:
        d_update = int(epoch) % protocol.training.d_every_epochs == 0
    record = make_record(info=info, numbers=numbers, plan=plan, protocol=protocol, store=store, bundle=bundle,
                         run=run, epoch=epoch, d_update=d_update, has_class_match=outcomes.predicted is not None,
                         native_size=outcomes.native_size,
                         translator_inputs=getattr(translator, "inputs", ("log_mel",)), decisions=None)
    if len(which) > 1:
        record["image_metrics"], per_iis = image_metrics(outcomes, plan, store, extractor, which, protocol, plan.seed,
                                                         ais[2] if ais is not None else None)
    else:
        per_iis = None
    record["decisions"] = _decisions(outcomes, plan, per_iis)
    record["metrics"] = list(which)
    if attributes:
        record["attributes"] = attribute_block(outcomes.attributes, plan, store, translator, protocol, device=device,
                                               batch_size=batch_size)
    if sample_sheet is not None and outcomes.sheet_images:
        record["sample_sheet"] = str(write_sheet(sample_sheet, plan, outcomes.sheet_images, store, class_keys))
    record["seconds"] = round(time.perf_counter() - started, 4)
    return records.Record(record)


def _decisions(outcomes: Outcomes, plan: Plan, iis=None) -> dict:
    """The per-image decisions (and probabilities), for paired comparisons and audits."""
    matched = None
    if outcomes.predicted is not None:
        matched = outcomes.predicted == plan.class_index[None, :]  # (K, N)
    return encode_decisions(plan.segment_ids, outcomes.informative, outcomes.truth, matched, iis,
                            probability=outcomes.probability)


def image_metrics(outcomes: Outcomes, plan: Plan, store, extractor, which, protocol, seed: int, ais_ref=None):
    """(the record's `image_metrics`, per-image IIS (K, N) or None): every image-set metric of
    `which` (the registry's, `scoring.image_metrics`) of the plan's images against the real frames
    of the same sounds, with bootstrap intervals over one shared set of resamples."""
    k, n = plan.samples, len(plan.indices)
    spec = protocol.metrics
    metric_seed = item_seed(seed, "image-metrics")
    real = fake = own_real = None
    out: dict[str, Any] = {}
    pairs: list = []
    if outcomes.features is not None:
        real = cached_real_features(store, plan.indices, extractor).astype(np.float64)  # (N, D): the sounds' frames
        fake = outcomes.features.reshape(k * n, -1).astype(np.float64)  # (K*N, D), draw-major like the tile below
        own_real = np.tile(real, (k, 1))  # (K*N, D): each image's own segment's frame
        out = {"n_real": int(len(real)), "n_generated": int(len(fake)), "dims": int(real.shape[1])}
        rng = np.random.default_rng(metric_seed)
        pairs = [(rng.integers(0, len(real), len(real)), rng.integers(0, len(fake), len(fake)))
                 for _ in range(spec.image_metrics_bootstrap)]
    text = None  # (C, D) the class prompts in the features' space (CLIP presets)
    if outcomes.features is not None and getattr(extractor, "text", None) is not None and IM.needing(which, "text"):
        text = np.asarray(extractor.text(list(protocol.class_names)), dtype=np.float64)
    inputs = IM.MetricInputs(real=real, fake=fake, own_real=own_real, pairs=pairs, samples=k, sounds=n,
                             seed=metric_seed, base_seed=seed, replicates=spec.image_metrics_bootstrap,
                             confidence=spec.confidence, audio=outcomes.audio,
                             image_embeddings=outcomes.image_embeddings, audio_ref=ais_ref,
                             class_index=plan.class_index, text=text)
    usable = [m for m in which if outcomes.features is not None or "features" not in IM.get(m).needs]
    entries, per_image = IM.compute_all(usable, inputs)
    out |= entries
    if outcomes.features is not None:
        out["extractor"] = extractor.ref()
        out["real_reference"] = f"the real centre frames of the {n} scored {plan.split} sounds"
    if outcomes.features is not None or outcomes.audio is not None:  # what every number above was computed on
        out["recipe"] = record_recipe(extractor if outcomes.features is not None else None,
                                      image_size=protocol.image.size, audio_ref=ais_ref)
    return out, per_image.get("iis")


# -- every checkpoint of a run --------------------------------------------------------------------
def score_checkpoints(run, store, bundle, *, protocol, split: str, seed: int, samples: int, batch_size: int,
                      device="cpu", out: Path | None = None, sheets: str = "last", translator_options=None,
                      only_missing: bool = True, metrics=None, extractor=None,
                      ais=None, attributes: bool | str = False,
                      metrics_every: int = 1) -> tuple[list[records.Record], list[Path]]:
    """Score the checkpoints of `run` (a RunFolder) that have no record in `out` (default: the
    run's records file) for these classifiers, store, split, seed and samples; append one record
    each. `sheets`: which checkpoints save a sample sheet: "last", "first-last" or "none".
    `attributes`: the attribute scores for every checkpoint (True) or the last one ("last").
    `metrics_every`: the metrics beyond informativity only every this many epochs (and at the
    first and last checkpoint); the others get informativity alone.
    Returns (the matching records, old and new, one per epoch; the checkpoints scored now)."""
    out = Path(out) if out is not None else run.records_path
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise UserError(f"{run.path}: no checkpoints to score (checkpoints/generator-EEEEEE.pt)")
    shard = distributed.current(device)  # under torchrun: this rank's share (scoring.shards)
    if shard is not None:
        device = shard.device(device)
        if shard.rank == 0:
            shards.merge_partials(out)  # an interrupted sharded run's records first
        shard.barrier()
    key = dict(classifiers_sha256=file_sha256(Path(bundle.path)), store_hash=store.store_hash, split=split,
               seed=seed, samples=samples)
    check_writable(out, "score")  # before the work, not after it
    # the file this run appends to: never read (or written) through a link
    existing = series.select(records.read(out, follow_links=False), **key) if out.is_file() or out.is_symlink() else []
    last_epoch = checkpoint_epoch(checkpoints[-1])
    if not isinstance(metrics_every, int) or metrics_every < 1:
        raise UserError(f"metrics_every {metrics_every!r}: a whole number of epochs >= 1")

    def with_attributes(epoch) -> bool:
        return attributes is True or (attributes == "last" and epoch == last_epoch)

    def metrics_at(epoch):  # the metrics this epoch's record gets
        ends = epoch in (checkpoint_epoch(checkpoints[0]), last_epoch)
        return metrics if ends or epoch % metrics_every == 0 else None

    # a record counts as done only when it has every metric asked for now
    complete = [r for r in existing if set(IM.check_metrics(metrics_at(r.epoch))) <= set(r.metrics)
                and (r.attributes or not with_attributes(r.epoch))]
    done = set(series.last_per_epoch(complete)) if only_missing else set()

    todo = [p for p in checkpoints if checkpoint_epoch(p) not in done]
    with_sheet = {"last": {checkpoints[-1]}, "first-last": {checkpoints[0], checkpoints[-1]}, "none": set()}[sheets]
    new = []
    target, mine = out, todo
    if shard is not None:
        mine, target = shard.mine(todo), shards.partial_path(out, shard.rank)
        if shard.rank == 0 and len(todo) < shard.world:
            logger.info(f"score: {len(todo)} checkpoint(s) to score on {shard.world} ranks: "
                        f"{shard.world - len(todo)} rank(s) have nothing to do")
    for path in progress(mine, desc=f"score {run.name}", unit="ckpt"):
        translator = load_translator(path, device=device, **(translator_options or {}))
        epoch = translator.info.get("epoch")
        if epoch is None:
            epoch = checkpoint_epoch(path)
        sheet_id = sheet_key(translator.info, store_hash=store.store_hash, split=split, seed=seed)
        sheet = (run.sample_sheet_path(epoch, sheet_id) if out.parent == run.path else
                 out.parent / sheet_name({**translator.info, "run": translator.info.get("run") or run.name}, sheet_id)
                 ) if path in with_sheet else None
        record = score_translator(translator, store, bundle, protocol=protocol, split=split, seed=seed,
                                  samples=samples, batch_size=batch_size, device=device, run=run.name,
                                  epoch=epoch, sample_sheet=sheet, metrics=metrics_at(checkpoint_epoch(path)),
                                  extractor=extractor, ais=ais, attributes=with_attributes(checkpoint_epoch(path)))
        records.append(target, record)
        new.append(record)
    if shard is not None:
        shard.barrier()
        if shard.rank == 0:
            shards.merge_partials(out)
        shard.barrier()
        new = [r for r in series.select(records.read(out), **key) if r.epoch in {checkpoint_epoch(p) for p in todo}]
    scored = list(series.last_per_epoch(existing + new).values())
    return sorted(scored, key=lambda r: r.epoch), todo
