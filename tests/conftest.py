"""Shared fixtures: tiny seeded synthetic data made in the tests, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("S2I_BENCH_QUIET", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for the whole suite: the tests' tensors are tiny, and on a shared or
    busy machine (CI) two spinning threads per process were measured 5-40x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_fake_store(path: Path, protocol_name: str = "tiny", per_class: dict[str, int] | None = None,
                    seed: int = 0, videos_per_class: int = 4) -> Path:
    """A small store written with `write_store`, without decoding any video.

    Spectrograms and frames carry the class (a per-class offset / colour) plus noise, so models
    can learn something; video ids are unique per (class, video) and never cross splits. It is
    meant for tests of training, pooling and scoring that do not need `prepare`.
    """
    import pandas as pd

    from s2i_bench.protocol import load_protocol
    from s2i_bench.data.store import write_store

    proto = load_protocol(protocol_name)
    per_class = per_class or {"train": 12, "val": 6, "test": 6}
    rng = np.random.default_rng(seed)
    rows, specs, frames = [], [], []
    n_mels, n_frames, side = proto.audio.n_mels, proto.audio.frames_per_segment, proto.image.size
    for ci, key in enumerate(proto.class_keys):
        colour = np.array([(60 * ci) % 255, (120 + 40 * ci) % 255, (200 - 35 * ci) % 255], dtype=np.float32)
        for split, n in per_class.items():
            for k in range(n):
                video = f"{key[:4]}{split[:2]}{k % videos_per_class:05d}".ljust(11, "x")[:11]
                rows.append(dict(segment_id=f"{video}_{key}_{k:04d}", video_id=video, **{"class": key},
                                 class_index=ci, split=split, start_s=float(k), source=f"{key}/{video}.mp4",
                                 group=video))
                spec = rng.normal(-8.0 + ci, 1.0, size=(1, n_mels, n_frames))
                spec[0, 10 * ci: 10 * ci + 10] += 4.0
                specs.append(spec)
                img = colour + rng.normal(0, 20, size=(side, side, 3))
                frames.append(np.clip(img, 0, 255).astype(np.uint8))
    manifest = pd.DataFrame(rows)
    spectrograms = np.stack(specs).astype(np.float16)
    frames_arr = np.stack(frames)
    train = spectrograms[manifest["split"].to_numpy() == "train"].astype(np.float32)
    meta = {
        "protocol": proto.ref(),
        "protocol_full": proto.to_dict(),
        "features": {"audio": proto.to_dict()["audio"], "image": proto.to_dict()["image"]},
        "normalisation": {"low": float(np.percentile(train, 0.1)), "high": float(np.percentile(train, 99.9)),
                          "fitted_on": "train", "method": "percentiles 0.1 / 99.9 of training log-Mel values"},
        "split": {"policy": "video", "seed": seed, "ratios": [proto.split.train, proto.split.val, proto.split.test],
                  "balance": proto.split.balance, "leaky": False},
        "sources": [],
        "synthetic_world": None,
    }
    return write_store(path, manifest, spectrograms, frames_arr, meta)


@pytest.fixture(scope="session")
def fake_store(tmp_path_factory) -> Path:
    """A tiny store (5 classes x 12/6/6 segments) shared by the session; treat as read-only."""
    return make_fake_store(tmp_path_factory.mktemp("fake_store") / "store")
