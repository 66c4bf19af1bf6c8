"""Attribute scores on the synthetic world: does the picture follow the sound within a class?

    block = attribute_block(estimates, plan, store, translator, protocol, device=..., batch_size=...)
        the record's `attributes` (`score --attributes`: `score_translator(..., attributes=True)`
        estimates every image's attributes while it is judged, `scoring.collect`)
    block = attribute_scores(translator, store, protocol, split=..., seed=..., samples=1)
        the same without classifiers (translates the split's sounds itself): the demo, benchmarks

Every dimension is scored on its own (docs/metrics.md, "Attribute scores"):

  tone     per class, Spearman's rank correlation over the class's scored videos between a
           video's tone (its latent tone: the pitch or band centre, from the world's scenes.json)
           and the mean tone its images show (`synth.attributes.estimate`: the hue of the class's
           tone region; the mean over the video's sounds and draws), with a percentile bootstrap
           over the videos. The video is the unit: its sounds share its attributes, so they are
           not independent, and per-image pairs with tied attributes bias rho and its bootstrap
           down (measured: 0 of 200 intervals held a true 0.997; by video 35-89%). Images whose
           estimates are all equal (a class prototype) have no rank correlation: they count 0, in
           the point estimate and in every replicate alike, and the entry says so. The dimension's
           one number is the unweighted mean of its classes, its interval the classes'
           independent replicates averaged replicate by replicate.
  size     the same for loudness -> object size.
  mixture_louder, mixture_both
           two-source probes (`synth.mixtures`): the share of images the judge calls a picture of
           the louder source, and the share that passes the judge's distance and layout tests for
           both sources (its "nearer than every other class" test cannot hold for two classes at
           once); Wilson intervals; the single-source probes, rendered the same way, as a control.
  out_of_protocol
           silence, white noise and a class the protocol does not know (a siren): the share of
           images the judge calls informative of any class. Lower is better.
"""

from __future__ import annotations

import numpy as np
import torch

from s2i_bench.data.features import log_mel_segments, resample, waveform_windows
from s2i_bench.errors import UserError
from s2i_bench.images import net_to_uint8
from s2i_bench.scoring.collect import Plan, batches_of, make_plan
from s2i_bench.seeding import item_seed, item_seeds
from s2i_bench.stats import wilson_interval
from s2i_bench.synth import judge, judge_details
from s2i_bench.synth.attributes import ESTIMATORS, estimate, estimator_id, scene_attributes
from s2i_bench.synth.judge import LAYOUT_MIN
from s2i_bench.synth.mixtures import (MIX_LEVELS_DB, OUT_OF_PROTOCOL, PROBE_SECONDS, PROBE_SEGMENT_S, PROBE_VERSION,
                                     probe_audio, probe_picture, probe_set)
from s2i_bench.translators import Batch, StoreTranslator, translate_checked
from s2i_bench.translators.reference import ReferenceTranslator

BLOCK_VERSION = 1
CORRELATIONS = ("tone", "size")
LABELS = {"tone": "tone -> hue (pitch or band centre -> colour of the tone region)",
          "size": "loudness -> object size",
          "mixture_louder": "two sources: the image shows the louder one",
          "mixture_both": "two sources: the image shows both",
          "out_of_protocol": "silence, white noise, an unknown class: the image is informative of some class"}
CONSTANT_NOTE = "the images' estimates are all equal: no rank correlation, counted as 0"


# -- rank correlation --------------------------------------------------------------------------------
def average_ranks(a) -> np.ndarray:
    """Ranks 1..n of a 1-d array, ties sharing the mean of their ranks (float64)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]  # where each run of equal values starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(a)]
    ranks = np.empty(len(a))
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[np.cumsum(first) - 1]
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation (Pearson's of the average ranks); NaN when x or y is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def rho_or_zero(x, y) -> float:
    """Spearman's rho, 0 when either side is constant (no rank correlation)."""
    rho = spearman(x, y)
    return 0.0 if np.isnan(rho) else rho


def bootstrap_rho(x, y, replicates: int, seed: int) -> np.ndarray:
    """(replicates,) `rho_or_zero` of resamples of the (x, y) pairs drawn with replacement; NaN
    for a resample whose x is constant (one pair drawn n times: nothing to correlate, dropped)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty(replicates)
    for b in range(replicates):
        idx = rng.integers(0, len(x), len(x))
        out[b] = rho_or_zero(x[idx], y[idx]) if np.ptp(x[idx]) > 0 else np.nan
    return out


def video_means(truth, estimates, videos) -> tuple[np.ndarray, np.ndarray]:
    """Per video (in order of first appearance): its attribute and the mean of its images'
    estimates. truth, videos: (n,) per sound; estimates: (K, n), K images per sound."""
    videos = np.asarray(videos)
    _, first, inverse = np.unique(videos, return_index=True, return_inverse=True)
    order = np.argsort(first)  # videos in plan order
    sums = np.zeros(len(first))
    np.add.at(sums, inverse, np.asarray(estimates, np.float64).sum(axis=0))
    counts = np.bincount(inverse, minlength=len(first)) * np.asarray(estimates).shape[0]
    return np.asarray(truth, np.float64)[first][order], (sums / counts)[order]


def percentile_interval(replicates, confidence: float) -> list[float] | None:
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if not reps.size:
        return None
    a = (1.0 - confidence) / 2.0
    return [float(np.quantile(reps, a)), float(np.quantile(reps, 1.0 - a))]


def correlation_entry(truth, estimates, replicates: int, seed: int, confidence: float):
    """One class of a correlation dimension from its videos' attributes and mean estimates (n_v,):
    (entry, its bootstrap replicates over the videos, or None)."""
    truth, estimates = np.asarray(truth, np.float64), np.asarray(estimates, np.float64)
    entry = {"value": None, "ci": None, "n_videos": int(len(truth)), "note": None}
    if len(np.unique(truth)) < 2:
        entry["note"] = "fewer than two videos with different attributes: nothing to correlate"
        return entry, None
    if len(np.unique(estimates)) < 2:
        entry["note"] = CONSTANT_NOTE
    reps = bootstrap_rho(truth, estimates, replicates, seed)
    entry["value"], entry["ci"] = rho_or_zero(truth, estimates), percentile_interval(reps, confidence)
    return entry, reps


# -- the sounds' truth and the estimators' error ------------------------------------------------------
def sound_attributes(store, rows) -> dict[str, np.ndarray]:
    """{"tone", "size": (N,) float64, "video": (N,) str} of store rows, from the world's scenes.json."""
    world = store.synthetic_world
    if world is None:
        raise UserError(f"{store.path}: not a store of the synthetic world; attribute scores need the scenes its "
                        "videos were rendered from (`s2i-bench synth`, then `prepare`)")
    scenes = scene_attributes(world.get("path"), world.get("scenes_sha256"))
    videos = store.manifest["video_id"].to_numpy(dtype=object)[np.asarray(rows)]
    missing = sorted({v for v in videos if v not in scenes})
    if missing:
        raise UserError(f"{world.get('path')}: no scene for video {missing[0]!r} of {store.path} "
                        f"({len(missing)} missing): the store was not prepared from this world")
    return {name: np.array([scenes[v][name] for v in videos]) for name in CORRELATIONS} | {"video": videos.astype(str)}


def estimate_images(images, class_key: str) -> np.ndarray:
    """uint8 (B, 96, 96, 3) pictures of `class_key` -> (B, 2) float32: the tone and size they show."""
    e = estimate(images, class_key)
    return np.stack([e["tone"], e["size"]], axis=1)


def estimator_error(store, plan: Plan, truth: dict) -> dict:
    """The estimators on the real frames of the scored sounds, where the truth is known: mean
    absolute error (attributes in [0, 1]) and Spearman's rho, per class and over every frame."""
    out = {"n_frames": int(len(plan.indices)), "split": plan.split}
    est = np.zeros((len(plan.indices), 2))
    for key, sl in plan.class_slices.items():
        if sl.stop > sl.start:
            est[sl] = estimate_images(np.asarray(store.frames[plan.indices[sl]]), key)
    for d, name in enumerate(CORRELATIONS):
        err = np.abs(est[:, d] - truth[name])
        classes = {key: {"mae": float(err[sl].mean()), "n_frames": sl.stop - sl.start,
                         "rho": rho_or_zero(truth[name][sl], est[sl, d]) if np.ptp(truth[name][sl]) > 0 else None}
                   for key, sl in plan.class_slices.items() if sl.stop > sl.start}
        out[name] = {"mae": float(err.mean()) if len(err) else None, "classes": classes}
    return out


def correlation_dimensions(estimates: np.ndarray, plan: Plan, truth: dict, spec) -> dict:
    """The tone and size dimensions from the images' estimates (K, N, 2) in plan order: per class,
    rho over its videos of (the video's attribute, the mean estimate of its images)."""
    out = {}
    for d, name in enumerate(CORRELATIONS):
        classes, reps = {}, []
        for key, sl in plan.class_slices.items():
            x, y = video_means(truth[name][sl], estimates[:, sl, d], truth["video"][sl])
            entry, r = correlation_entry(x, y, spec.bootstrap_samples,
                                         item_seed(plan.seed, f"attributes/{name}/{key}"), spec.confidence)
            classes[key] = entry | {"n_sounds": sl.stop - sl.start, "n_images": (sl.stop - sl.start) * plan.samples}
            if r is not None:
                reps.append(r)
        values = [c["value"] for c in classes.values() if c["value"] is not None]
        out[name] = {"label": LABELS[name], "value": float(np.mean(values)) if values else None,
                     "ci": percentile_interval(np.mean(reps, axis=0), spec.confidence) if reps else None,
                     "higher_is_better": True, "aggregate": "unweighted mean of the classes' rho",
                     "classes": classes}
    return out


# -- probes: mixtures and sounds outside the protocol -------------------------------------------------
_PROBE_FEATURES: dict[tuple, tuple] = {}


def probe_features(probes, store, protocol) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each probe's segment as `prepare` would store it: log-Mel (P, 1, n_mels, frames) float32
    (through the store's dtype), waveform (P, sr) and, when the store keeps one, the context
    window (P, sr * C). Rendered at the world's rate, down-mixed and resampled (no AAC codec)."""
    key = (store.store_hash, tuple(p.id for p in probes), PROBE_VERSION)
    if key in _PROBE_FEATURES:
        return _PROBE_FEATURES[key]
    audio, rate, seg = protocol.audio, protocol.synth.sample_rate, protocol.data.segment_seconds
    raw = np.stack([probe_audio(p, rate) for p in probes])  # (P, T) at the world's rate
    # one resampling and one log-Mel call for every probe: per probe, they were 100x slower on a busy machine
    waves = resample(torch.from_numpy(raw), rate, audio.sample_rate)  # (P, T')
    length = int(round(PROBE_SECONDS * audio.sample_rate))
    waves = torch.nn.functional.pad(waves, (0, max(0, length - waves.shape[1])))[:, :length]
    per, first = int(round(PROBE_SECONDS / seg)), int(round(PROBE_SEGMENT_S / seg))
    # the probes end to end, each one's segment a start: its frames stay inside its own probe
    log_mel = log_mel_segments(waves.reshape(-1), [i * per + first for i in range(len(probes))], audio, seg).numpy()
    lo, n = int(round(PROBE_SEGMENT_S * audio.sample_rate)), int(round(seg * audio.sample_rate))
    contexts = [waveform_windows(w, [PROBE_SEGMENT_S + seg / 2], store.context_seconds, audio.sample_rate)[0]
                for w in waves] if store.context is not None else []
    waves = waves.numpy()[:, lo:lo + n]
    log_mel = log_mel.astype(store.spectrograms.dtype).astype(np.float32)  # (P, 1, n_mels, frames)
    out = (log_mel, waves.astype(np.float32), np.stack(contexts) if contexts else None)
    if len(_PROBE_FEATURES) > 8:
        _PROBE_FEATURES.clear()
    _PROBE_FEATURES[key] = out
    return out


def probe_images(translator, probes, store, protocol, seed: int, device="cpu", batch_size: int = 256):
    """uint8 (P, S, S, 3) images of the probes (draw 0, seeds `item_seed(seed, "probe/<id>")`);
    real-frame shows each probe's picture (None where it has none); None for a folder of images
    (it holds no images of these sounds)."""
    if isinstance(translator, ReferenceTranslator) and translator.name == "real-frame":
        return [probe_picture(p, protocol.image.size) for p in probes]
    if isinstance(translator, StoreTranslator) and not isinstance(translator, ReferenceTranslator):
        return None
    log_mel, waves, context = probe_features(probes, store, protocol)
    seeds = item_seeds(seed, [f"probe/{p.id}" for p in probes])
    inputs = tuple(getattr(translator, "inputs", ("log_mel",)))
    out = []
    for s in range(0, len(probes), batch_size):
        part = slice(s, s + batch_size)
        batch = Batch(log_mel=store.normalise(torch.from_numpy(log_mel[part]).to(device)),
                      seeds=torch.from_numpy(seeds[part]).to(device),
                      waveform=torch.from_numpy(waves[part]).to(device) if "waveform" in inputs else None,
                      sample_rate=store.sample_rate, draw=0,
                      waveform_context=torch.from_numpy(context[part]).to(device)
                      if context is not None and "waveform_context" in inputs else None)
        _, images = translate_checked(translator, batch, size=protocol.image.size, where="probe sounds")
        out.extend(net_to_uint8(images))
    return out


def _share(hits: list[bool], confidence: float, **extra) -> dict:
    k, n = int(sum(hits)), len(hits)
    ci = wilson_interval(k, n, confidence)
    return {"value": k / n if n else None, "ci": list(ci) if ci else None, "k": k, "n": n, **extra}


def _shows(image, key: str, strict: bool = True) -> bool:
    """The judge's verdict on one image for one class; `strict=False` drops its "nearer than
    every other class" test (what two sources in one image can pass at most)."""
    if strict:
        return bool(judge(image[None], key)[0])
    d = judge_details(image[None], key)
    return bool(d["own"][0] <= 1.0 and d["layout"][0] >= LAYOUT_MIN)


def probe_dimensions(translator, store, protocol, seed: int, device="cpu", batch_size: int = 256) -> dict:
    """The mixture and out-of-protocol dimensions (see the module docstring)."""
    keys, conf = tuple(protocol.class_keys), protocol.metrics.confidence
    probes = [p for p in probe_set(seed) if set(p.classes) <= set(keys)]
    images = probe_images(translator, probes, store, protocol, seed, device, batch_size)
    if images is None:
        note = "a folder of images holds no images of the probe sounds"
        return {d: {"label": LABELS[d], "value": None, "ci": None, "note": note}
                for d in ("mixture_louder", "mixture_both", "out_of_protocol")}
    pairs = list(zip(probes, images))
    mixed = [(p, im) for p, im in pairs if p.kind == "mixture"]
    louder = {f"{lv:g}dB": _share([_shows(im, p.louder) for p, im in mixed if p.level_db == lv], conf)
              for lv in MIX_LEVELS_DB}
    louder["single_source_control"] = _share([_shows(im, p.louder) for p, im in pairs if p.kind == "single"], conf)
    both = {f"{lv:g}dB": _share([all(_shows(im, c, strict=False) for c in p.classes)
                                 for p, im in mixed if p.level_db == lv], conf) for lv in MIX_LEVELS_DB}
    out = {"mixture_louder": _share([_shows(im, p.louder) for p, im in mixed], conf, parts=louder),
           "mixture_both": _share([all(_shows(im, c, strict=False) for c in p.classes) for p, im in mixed], conf,
                                  parts=both)}
    outside = [(p, im) for p, im in pairs if p.kind in OUT_OF_PROTOCOL]
    if any(im is None for _, im in outside):
        out["out_of_protocol"] = {"value": None, "ci": None,
                                  "note": "no picture exists for a sound outside the protocol"}
    else:
        def any_class(im):
            return any(_shows(im, c) for c in keys)
        parts = {kind: _share([any_class(im) for p, im in outside if p.kind == kind], conf) for kind in OUT_OF_PROTOCOL}
        parts["silence"]["note"] = "one sound (digital silence): its images differ only by their seeds"
        out["out_of_protocol"] = _share([any_class(im) for _, im in outside], conf, parts=parts)
    for d, entry in out.items():
        entry |= {"label": LABELS[d], "higher_is_better": d != "out_of_protocol"}
    return out


# -- the block ----------------------------------------------------------------------------------------
def attribute_block(estimates: np.ndarray, plan: Plan, store, translator, protocol, *, device="cpu",
                    batch_size: int = 256) -> dict:
    """The record's `attributes` from the images' estimates (K, N, 2) in plan order (tone, size of
    each image read as a picture of its sound's class) and the translator (for the probes)."""
    spec = protocol.metrics
    truth = sound_attributes(store, plan.indices)
    dims = correlation_dimensions(np.asarray(estimates, np.float64), plan, truth, spec)
    dims |= probe_dimensions(translator, store, protocol, plan.seed, device, batch_size)
    probes = [p for p in probe_set(plan.seed) if set(p.classes) <= set(protocol.class_keys)]
    return {
        "version": BLOCK_VERSION,
        "estimators": dict(ESTIMATORS, id=estimator_id()),
        "estimator_error": estimator_error(store, plan, truth),
        "bootstrap": {"replicates": spec.bootstrap_samples, "confidence": spec.confidence,
                      "seed": f"item_seed({int(plan.seed)}, 'attributes/<dimension>/<class key>')",
                      "resamples": "the class's videos (attribute, mean estimate of its images)"},
        "probes": {"version": PROBE_VERSION, "seed": int(plan.seed), "image_seeds": "item_seed(seed, 'probe/<id>')",
                   "counts": {k: sum(p.kind == k for p in probes) for k in dict.fromkeys(p.kind for p in probes)},
                   "levels_db": list(MIX_LEVELS_DB),
                   "rendering": "the world's audio, down-mixed and resampled as prepare does; no AAC codec"},
        "dimensions": dims,
    }


def attribute_scores(translator, store, protocol, *, split: str = "test", seed: int = 0, samples: int = 1,
                     device="cpu", batch_size: int = 256) -> dict:
    """The attribute block of a translator without classifiers: translate the split's sounds
    (the plan `score` uses: same order, same seeds), estimate, and score."""
    plan = make_plan(store, tuple(protocol.class_keys), split, seed, samples)
    if len(plan.indices) == 0:
        raise UserError(f"{store.path}: no {split} sounds to score")
    estimates = np.zeros((plan.samples, len(plan.indices), 2), np.float32)
    inputs = tuple(getattr(translator, "inputs", ("log_mel",)))
    for k, _, key, start, stop, rows, batch in batches_of(store, plan, batch_size, torch.device(device), inputs):
        _, images = translate_checked(translator, batch, size=protocol.image.size, rows=rows)
        estimates[k, start:stop] = estimate_images(net_to_uint8(images), key)
    return attribute_block(estimates, plan, store, translator, protocol, device=device, batch_size=batch_size)


# -- text ---------------------------------------------------------------------------------------------
def _number(entry, share: bool) -> str:
    v, ci = entry.get("value"), entry.get("ci")
    if v is None:
        return "-"
    if share:
        return f"{100 * v:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    return f"{v:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def format_attributes(record, protocol) -> str:
    """The attribute scores of a record (`Record.attribute`) as plain text, one line per dimension."""
    names = dict(zip(protocol.class_keys, protocol.class_names))
    lines = ["", "attribute scores (synthetic world: does the picture follow the sound?)"]
    for dim in ("tone", "size", "mixture_louder", "mixture_both", "out_of_protocol"):
        entry = record.attribute(dim)
        if not entry:
            continue
        share = dim not in CORRELATIONS
        arrow = "" if entry.get("higher_is_better", True) else " (lower is better)"
        line = f"  {dim:<16} {_number(entry, share):<24} {entry.get('label', '')}{arrow}"
        parts = entry.get("classes") or entry.get("parts") or {}
        if parts:
            line += "\n" + " " * 19 + "; ".join(f"{names.get(k, k)} {_number(e, share)}" for k, e in parts.items())
        if entry.get("note"):
            line += f"\n{' ' * 19}note: {entry['note']}"
        lines.append(line)
    err = record.attributes.get("estimator_error") or {}
    if err.get("tone") and err.get("size"):
        lines.append(f"  estimators on the {err.get('n_frames')} real frames of these sounds: mean absolute error "
                     f"tone {err['tone']['mae']:.3f}, size {err['size']['mae']:.3f} (attributes in [0, 1])")
    return "\n".join(lines)
