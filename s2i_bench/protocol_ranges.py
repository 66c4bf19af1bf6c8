"""The range of every number a protocol holds (`protocol.py` checks it when a protocol loads).

A number out of range fails naming the key: `batch_size = -16` once trained nothing and wrote an
"epoch 0" checkpoint. The bounds are what the code can run, generous beyond the paper (vegas5)
and the scaled protocols; `check_ranges` also fails for a numeric key that has no range here, so
a new key cannot slip through unchecked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields

from s2i_bench.errors import UserError

# Every number with the closed range it must lie in (for arrays: each element).
BIG = 1_000_000_000  # "any count that fits the machine"; seeds are 63-bit
SEED = (0, 2**63 - 1)
RANGES: dict[str, tuple[float, float]] = {
    "data.segment_seconds": (0.1, 60.0), "data.coverage_tolerance_s": (0.0, 1.0),
    "audio.sample_rate": (1000, 384_000), "audio.frame_length": (16, 65_536), "audio.hop_length": (1, 65_536),
    "audio.n_fft": (16, 65_536), "audio.n_mels": (1, 1024), "audio.f_min": (0.0, 192_000.0),
    "audio.f_max": (1.0, 192_000.0), "audio.log_floor": (1e-30, 1.0), "audio.frames_per_segment": (1, 100_000),
    "image.size": (8, 4096), "image.frame_offset_s": (0.0, 60.0),
    "split.seed": SEED, "split.train": (0.0, 1.0), "split.val": (0.0, 1.0), "split.test": (0.0, 1.0),
    "split.phash_max_distance": (0, 64), "split.spectrogram_max_distance": (0.0, 10.0),
    "autoencoder.epochs": (1, 1_000_000), "autoencoder.batch_size": (1, 65_536),
    "autoencoder.lr": (1e-12, 100.0), "autoencoder.momentum": (0.0, 1.0),
    "model.image_size": (8, 4096), "model.encoder_channels": (1, 65_536), "model.decoder_channels": (1, 65_536),
    "model.decoder_dropout": (0.0, 1.0), "model.generator_transition0": (1, 65_536),
    "model.generator_blocks": (1, 65_536), "model.generator_dropout": (0.0, 1.0),
    "model.discriminator_channels": (1, 65_536), "model.discriminator_dropout": (0.0, 1.0),
    "model.encoder_kernels": (1, 64), "model.encoder_strides": (1, 64), "model.decoder_kernels": (1, 64),
    "model.decoder_strides": (1, 64), "model.generator_transition_kernels": (1, 64),
    "model.generator_transition_strides": (1, 64), "model.generator_transition_paddings": (0, 64),
    "model.discriminator_kernels": (1, 64), "model.discriminator_strides": (1, 64),
    "model.discriminator_paddings": (0, 64),
    "training.embedding_dims": (4, 65_536), "training.embedding_dim": (4, 65_536),
    "training.epochs": (1, 1_000_000), "training.batch_size": (1, 65_536), "training.lr_g": (1e-12, 100.0),
    "training.momentum_g": (0.0, 1.0), "training.lr_d": (1e-12, 100.0), "training.momentum_d": (0.0, 1.0),
    "training.adv_lambda": (0.0, 1e6), "training.adv_ma_k": (1, 1_000_000), "training.d_every_epochs": (1, 1_000_000),
    "training.r_max": (-1.0, 1.0), "training.r_min": (-1.0, 1.0), "training.save_every": (1, 1_000_000),
    "training.grid_every": (1, 1_000_000), "training.seed": SEED, "training.grid_per_class": (1, 1000),
    "classifiers.informative_per_class": (1, BIG), "classifiers.non_informative_per_class": (1, BIG),
    "classifiers.num_models": (1, 100_000), "classifiers.train_per_class": (1, BIG),
    "classifiers.test_per_class": (1, BIG), "classifiers.val_fraction": (0.0, 0.9),
    "classifiers.epochs": (1, 1_000_000),
    "classifiers.batch_size": (1, 65_536), "classifiers.lr": (1e-12, 100.0), "classifiers.momentum": (0.0, 1.0),
    "classifiers.weight_decay": (0.0, 1.0), "classifiers.dropout": (0.0, 1.0), "classifiers.fc_dropout": (0.0, 1.0),
    "classifiers.pool_per_model": (1, BIG), "classifiers.class_match_epochs": (1, 1_000_000),
    "classifiers.fingerprint_warn_ratio": (1.0, 1e6), "classifiers.pool_draws_per_sound": (1, 1000),
    "classifiers.real_frames_per_class": (0, BIG),
    "metrics.window_start": (0, 1_000_000), "metrics.window_end": (0, 1_000_000),
    "metrics.moving_average": (1, 1_000_000), "metrics.skip_after_d_update": (0, 1000), "metrics.skip_fill": (1, 1000),
    "metrics.bootstrap_samples": (10, 1_000_000), "metrics.confidence": (0.5, 0.9999),
    "metrics.image_metrics_bootstrap": (2, 1_000_000),
    "scoring.seed": SEED, "scoring.samples": (1, 1000), "scoring.batch_size": (1, 65_536),
    "synth.videos_per_class": (1, 100_000), "synth.seed": SEED, "synth.width": (16, 4096), "synth.height": (16, 4096),
    "synth.fps": (1, 240), "synth.min_seconds": (1.0, 600.0), "synth.max_seconds": (1.0, 600.0),
    "synth.sample_rate": (8000, 192_000), "synth.channels": (1, 8),
}

# The values a [vggsound] table's lists may hold (`protocol._validate`; `data/vggsound.py` reads them).
VGGSOUND_CHOICES = {"visible": ("A", "V", "AV"), "exclude": ("static_image", "voice_over", "background_music"),
                    "gated_splits": ("train", "test")}


def _numbers(value) -> list:
    """Every number in a field's value (arrays and arrays of arrays included)."""
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def check_ranges(p) -> None:
    """Every numeric key of `p` is finite and inside its declared range (`RANGES`)."""
    def walk(obj, prefix: str) -> None:
        for f in fields(obj):
            if f.name in ("source", "classes"):
                continue
            value = getattr(obj, f.name)
            key = prefix + f.name
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
                continue
            numbers = _numbers(value)
            if not numbers:
                continue
            if key not in RANGES:
                raise AssertionError(f"protocol key {key} has no declared range (s2i_bench.protocol.RANGES)")
            low, high = RANGES[key]
            for v in numbers:
                if v != v or v in (float("inf"), float("-inf")) or not low <= v <= high:
                    raise UserError(f"{p.source}: {key} = {v!r} is out of its range [{low:g}, {high:g}]")
    walk(p, "")
