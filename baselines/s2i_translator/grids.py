"""Image grids saved while training: fixed validation sounds, real frames beside translations."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s2i_bench.fileio import atomic_write_bytes
from s2i_bench.images import chw_uint8_to_net
from s2i_translator.checkpoint import unwrap

GRID_MIN_CELL = 64  # pixels of one image in the grids


def grid_indices(store, class_keys, per_class: int) -> np.ndarray:
    """Fixed sounds for the grids: per class, the first validation segment of each of the first
    `per_class` videos in store order (more segments of the same videos when there are fewer
    videos; training segments when a class has no validation segment)."""
    chosen = []
    manifest = store.manifest
    classes, splits, videos = (manifest[c].to_numpy() for c in ("class", "split", "video_id"))
    for key in class_keys:
        for split in ("val", "train"):
            rows = np.flatnonzero((classes == key) & (splits == split))
            if len(rows):
                break
        seen, first, rest = set(), [], []
        for r in rows.tolist():
            (rest if videos[r] in seen else first).append(r)
            seen.add(videos[r])
        chosen.extend((first + rest)[:per_class])
    return np.array(chosen, dtype=np.int64)


@torch.no_grad()
def save_grid(path: Path, encoder, G, grid_spec: torch.Tensor, grid_real: torch.Tensor, grid_seeds: torch.Tensor,
              per_class: int, device: str) -> None:
    """One row per class: the real frames, then their translations (test-time dropout seeded per
    sound, so grids of different epochs differ only by the weights)."""
    from torchvision.utils import save_image

    G_raw = unwrap(G)
    was = G_raw.training
    G_raw.eval()
    try:
        fake = G_raw(encoder(grid_spec.to(device)), dropout_seeds=grid_seeds).float().cpu()  # (N, 3, S, S)
    finally:
        G_raw.train(was)
    real = chw_uint8_to_net(grid_real)
    rows = []
    for start in range(0, len(fake), per_class):
        rows.extend([real[start:start + per_class], fake[start:start + per_class]])
    tiles = torch.cat(rows)  # per class: per_class real, then per_class generated
    if tiles.shape[-1] < GRID_MIN_CELL:  # small-profile images: enlarge (nearest) so they can be seen
        tiles = F.interpolate(tiles, size=(GRID_MIN_CELL, GRID_MIN_CELL), mode="nearest")
    buf = io.BytesIO()
    save_image((tiles + 1) / 2, buf, nrow=2 * per_class, padding=2, format="png")

    atomic_write_bytes(path, buf.getvalue())
