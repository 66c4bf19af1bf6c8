"""Collect: translate every sound of a split and record the per-image decisions, once.

    plan = make_plan(store, class_keys, split, seed, samples)
    outcomes = collect(translator, store, bundle, plan, device=..., batch_size=..., keep_sheet=True)

For every sound, K images (K = `samples`; their seeds are `item_seeds(seed, segment_ids,
draw=k)`, so nothing depends on batch size or device) are translated in batches and judged:
`informative` (the class's informativity classifier) with its `probability` of "informative"
(from the same forward pass: `informative == (probability > 0.5)`), `predicted` (the 5-class
real-frame classifier), `truth` (the synthetic world's judge, synthetic stores only). The arithmetic on
these decisions is `scoring.metrics`; `scoring.score` writes the record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import dig, progress
from s2i_bench.images import net_to_uint8
from s2i_bench.seeding import item_seeds
from s2i_bench.translators import batch_for_rows, check_inputs, translate_checked

SHEET_PER_CLASS = 8  # fixed test sounds per class saved for the report's Figs. 15/16
# Images per sound: the field draws 1-10; each draw of each sound costs a seed, decisions and
# (with image metrics) a feature row in memory, so an absurd K is refused before any work.
MAX_SAMPLES = 1000
BYTES_PER_IMAGE = 8 + 8 + 1 + 1 + 8  # seed, predicted class, informative, truth, probability (+ features)


def check_samples(samples: int, num_sounds: int, feature_dim: int = 0) -> None:
    """`samples` (K images per sound) in 1..MAX_SAMPLES, and the (K, N) arrays of the outcomes
    fit in half of this machine's memory; else one line, before any translation."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or not 1 <= samples <= MAX_SAMPLES:
        raise UserError(f"--samples {samples!r}: images per sound must be a whole number in 1..{MAX_SAMPLES}")
    need = int(samples) * max(int(num_sounds), 1) * (BYTES_PER_IMAGE + 4 * int(feature_dim))
    try:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > avail // 2:
        raise UserError(f"--samples {samples}: {samples} images for each of {num_sounds} sounds need about "
                        f"{need / 2**30:.1f} GiB for their decisions, more than half of this machine's "
                        f"{avail / 2**30:.1f} GiB; use fewer samples")


@dataclass(frozen=True)
class Plan:
    """Which sounds, in which order, with which seeds."""

    indices: np.ndarray  # (N,) store rows, grouped by class, manifest order within a class
    class_index: np.ndarray  # (N,) protocol class index of each row
    segment_ids: np.ndarray  # (N,) str
    seeds: np.ndarray  # (K, N) int64: seed of draw k for sound n
    class_slices: dict[str, slice]  # class key -> its positions in `indices`
    sheet: np.ndarray  # positions (into `indices`) of the sample-sheet sounds
    split: str
    seed: int

    @property
    def samples(self) -> int:
        return int(self.seeds.shape[0])


@dataclass
class Outcomes:
    """The per-image decisions of one translator on one plan."""

    informative: np.ndarray  # (K, N) bool; False for classes without a classifier
    predicted: np.ndarray | None  # (K, N) int64 class index, None without a class-match classifier
    truth: np.ndarray | None  # (K, N) bool, None when the store is not the synthetic world
    scored_keys: tuple[str, ...]  # the classes that have an informativity classifier
    # plan position -> (H, W, 3) uint8, draw 0, native size
    sheet_images: dict[int, np.ndarray] = field(default_factory=dict)
    native_size: tuple[int, int] | None = None  # (H, W) the translator answered with
    features: np.ndarray | None = None  # (K, N, D) image features (with an extractor: the image metrics)
    image_embeddings: np.ndarray | None = None  # (K, N, D') by the AIS image encoder
    audio: np.ndarray | None = None  # (N, D') audio embeddings of the sounds (with an audio encoder: AIS)
    # (K, N) float64 P(informative), 0 for classes without a classifier; None when the bundle
    # gives decisions only (no `informative_scores`)
    probability: np.ndarray | None = None
    attributes: np.ndarray | None = None  # (K, N, 2) tone and size each image shows (`attribute_estimator`)


_PLANS: dict[tuple, Plan] = {}


def make_plan(store, class_keys, split: str, seed: int, samples: int, only_rows=None) -> Plan:
    """Cached per (store, split, seed, samples): the training loop scores every epoch.
    `only_rows`: score these rows of the split only (images of a folder with some missing)."""
    only = None if only_rows is None else tuple(sorted(int(r) for r in only_rows))
    key = (str(store.path), store.store_hash, tuple(class_keys), split, seed, samples, only)
    if key in _PLANS:
        return _PLANS[key]
    rows = store.split_indices(split)
    check_samples(samples, len(rows) if only is None else len(only))
    if only is not None:
        rows = rows[np.isin(rows, np.array(only, dtype=np.int64))]
    store_classes = store.manifest["class"].to_numpy()[rows]
    videos = store.manifest["video_id"].to_numpy()[rows]
    parts, slices, sheet, start = [], {}, [], 0
    for key_c in class_keys:
        in_class = store_classes == key_c
        mine = rows[in_class]  # manifest order
        parts.append(mine)
        slices[key_c] = slice(start, start + len(mine))
        sheet.extend(start + p for p in sheet_positions(videos[in_class], SHEET_PER_CLASS))
        start += len(mine)
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    class_index = np.concatenate([np.full(len(p), ci) for ci, p in enumerate(parts)]) if parts else indices
    segment_ids = store.segment_ids[indices]
    seeds = np.stack([item_seeds(seed, segment_ids, draw=k) for k in range(samples)])
    plan = Plan(indices=indices, class_index=class_index.astype(np.int64), segment_ids=segment_ids, seeds=seeds,
                class_slices=slices, sheet=np.array(sheet, dtype=np.int64), split=split, seed=int(seed))
    if len(_PLANS) > 16:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def sheet_positions(videos: np.ndarray, count: int) -> list[int]:
    """The sample-sheet sounds of a class: the first segment of each video in manifest order,
    then second segments and so on, so the sheet shows as many scenes as it can, and any leading
    part of it (Fig. 16 shows the first four) as many as that part can."""
    order, seen = [], {}
    for pos, video in enumerate(videos):
        order.append((seen.get(video, 0), pos))
        seen[video] = seen.get(video, 0) + 1
    return [pos for _, pos in sorted(order)[:count]]


def batches_of(store, plan: Plan, batch_size: int, device, inputs=("log_mel",)):
    """(draw k, class position, key, start, stop, store rows, Batch) for every draw, class and
    batch, in plan order."""
    for k in range(plan.samples):
        for ci, (key, sl) in enumerate(plan.class_slices.items()):
            for start in range(sl.start, sl.stop, batch_size):
                stop = min(start + batch_size, sl.stop)
                rows = plan.indices[start:stop]
                batch = batch_for_rows(store, rows, plan.seeds[k, start:stop], device, inputs=inputs, draw=k)
                yield k, ci, key, start, stop, rows, batch


def collect(translator, store, bundle, plan: Plan, *, device="cpu", batch_size: int = 256, judge=None,
            keep_sheet: bool = False, image_size: int = 96, where: str | None = None, extractor=None,
            image_encoder=None, audio_encoder=None, attribute_estimator=None) -> Outcomes:
    """Translate and judge every image of `plan` (see the module docstring). With `extractor`,
    the images' features too (the image metrics); with an `image_encoder` and an
    `audio_encoder` (AIS), the generated images' and the sounds' embeddings; with an
    `attribute_estimator` (uint8 images, class key -> (B, 2)), the attributes they show."""
    import torch


    scored_keys = tuple(k for k in plan.class_slices if k in tuple(bundle.class_keys))
    if not scored_keys and not dig(getattr(bundle, "card", None), "class_match_only"):  # class-match only: allowed
        raise UserError(f"{getattr(bundle, 'path', 'classifiers')}: no classifier for any class of the plan "
                        f"({', '.join(plan.class_slices)})")
    check_inputs(translator, store)
    k_n = (plan.samples, len(plan.indices))
    out = Outcomes(informative=np.zeros(k_n, dtype=bool), predicted=np.full(k_n, -1, dtype=np.int64),
                   truth=np.zeros(k_n, dtype=bool) if judge is not None else None, scored_keys=scored_keys)
    scores = getattr(bundle, "informative_scores", None)  # (decision, probability) from one forward pass
    if scores is not None:
        out.probability = np.zeros(k_n, dtype=np.float64)
    sheet_set = set(plan.sheet.tolist()) if keep_sheet else set()
    dev = torch.device(device)
    inputs = tuple(getattr(translator, "inputs", ("log_mel",)))
    if audio_encoder is not None:  # AIS listens to the sounds whatever the translator reads
        inputs += ("waveform_context",) if audio_encoder.wants_context else ("waveform",)
    total = plan.samples * sum(-(-(sl.stop - sl.start) // batch_size) for sl in plan.class_slices.values())
    bar = progress(batches_of(store, plan, batch_size, dev, inputs), total=total,
                   desc=f"translate {where or 'images'}"[:60], unit="batch")
    for k, _, key, start, stop, rows, batch in bar:
        native, images = translate_checked(translator, batch, size=image_size, where=where, rows=rows)  # (B, 3, S, S)
        out.native_size = tuple(int(v) for v in native.shape[-2:])
        for enc, name in ((extractor, "features"), (image_encoder, "image_embeddings")):
            if enc is None:
                continue
            f = enc(images)  # (B, D) from the images at the protocol's size
            if getattr(out, name) is None:
                setattr(out, name, np.zeros((plan.samples, len(plan.indices), f.shape[1]), dtype=np.float32))
            getattr(out, name)[k, start:stop] = f
        if audio_encoder is not None and k == 0:
            wave = (batch.waveform_context if audio_encoder.wants_context else batch.waveform).cpu().numpy()
            rate = getattr(audio_encoder, "sample_rate", None)
            if rate not in (None, batch.sample_rate):  # the encoder's own rate, from the store's high-rate copy
                wave = store.audio_at(rows, rate).astype(np.float32) / 32767
            emb = audio_encoder(wave)
            if out.audio is None:
                out.audio = np.zeros((len(plan.indices), emb.shape[1]), dtype=np.float32)
            out.audio[start:stop] = emb
        if key in scored_keys and scores is not None:
            decision, probability = scores(images, key)
            out.informative[k, start:stop] = np.asarray(decision, dtype=bool)
            out.probability[k, start:stop] = np.asarray(probability, dtype=np.float64)
        elif key in scored_keys:
            out.informative[k, start:stop] = np.asarray(bundle.predict_informative(images, key), dtype=bool)
        if out.predicted is not None:
            cls = bundle.predict_class(images)
            if cls is None:
                out.predicted = None
            else:
                out.predicted[k, start:stop] = np.asarray(cls, dtype=np.int64)
        if judge is not None:
            out.truth[k, start:stop] = np.asarray(judge(net_to_uint8(images), key), dtype=bool)
        if attribute_estimator is not None:
            if out.attributes is None:
                out.attributes = np.zeros((*k_n, 2), dtype=np.float32)
            out.attributes[k, start:stop] = attribute_estimator(net_to_uint8(images), key)
        if k == 0 and sheet_set:
            wanted = [p for p in range(start, stop) if p in sheet_set]
            if wanted:
                sheet_u8 = net_to_uint8(native[[p - start for p in wanted]])  # (M, H, W, 3), native size
                for i, p in enumerate(wanted):
                    out.sheet_images[p] = sheet_u8[i]
    return out
