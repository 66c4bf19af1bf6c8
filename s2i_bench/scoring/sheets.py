"""Sample sheets: the images of fixed test sounds (draw 0) beside their real frames, one `.npz`
per scored translator (the report's Figs. 15/16).

    images       (M, H, W, 3) uint8   the translations, at the translator's native size
    frames       (M, S', S', 3) uint8 the real centre frames of the same segments
    segment_ids  (M,) str             class_keys (M,) str       seeds (M,) int64

A record names its sheet (`sample_sheet`); a sheet's file name is unique to what it shows
(`sheet_key`: the translator, store, split and seed; in a run folder with the epoch, elsewhere
with the run and epoch too), so two scorings into one folder never share one.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_bytes


def sheet_key(info: dict, *, store_hash: str, split: str, seed: int) -> str:
    """12 hex digits over what a sheet's content depends on: the translator (its file hash, or
    its path), the store, the split and the scoring seed. Two scorings that would make
    different sheets never share a file name (one generator scored on two splits into one
    folder kept only the last sheet before)."""
    ident = [str(info.get("sha256") or info.get("path") or ""), str(store_hash), str(split), str(int(seed))]
    return hashlib.sha256("|".join(ident).encode()).hexdigest()[:12]


def sheet_name(info: dict, key: str) -> str:
    """`samples-<run>-epoch-EEEEEE-<key>.npz` (what is known of the translator, and `sheet_key`)."""
    parts = ["samples"]
    if info.get("run"):
        parts.append(re.sub(r"[^A-Za-z0-9._-]+", "-", str(info["run"])).strip("-") or "run")
    if info.get("epoch") is not None:
        parts.append(f"epoch-{int(info['epoch']):06d}")
    elif info.get("path"):
        parts.append(re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(info["path"])).stem) or "translator")
    parts.append(key)
    return "-".join(parts) + ".npz"


def write_sheet(path, plan, sheet_images: dict[int, np.ndarray], store, class_keys) -> Path:
    """The sheet of `plan`'s sample-sheet sounds that were translated (see the module docstring)."""
    path = Path(path)
    positions = [int(p) for p in plan.sheet if int(p) in sheet_images]
    rows = plan.indices[positions]
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        images=np.stack([sheet_images[p] for p in positions]),  # (M, H, W, 3) uint8, native size
        frames=np.ascontiguousarray(store.frames[rows]),  # (M, S', S', 3) uint8, the real centre frames
        segment_ids=np.array(plan.segment_ids[positions], dtype=str),
        class_keys=np.array([class_keys[i] for i in plan.class_index[positions]], dtype=str),
        seeds=plan.seeds[0, positions],
    )
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_sheet(path: Path) -> dict:
    """A sample sheet: images (N,H,W,3) uint8 and segment_ids (N,) str; optional frames
    (N,S',S',3) uint8, class_keys (N,) str, seeds. Loaded without pickle; shapes and types checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a sample sheet written by `s2i-bench score` ({e})") from None
    images, ids = data.get("images"), data.get("segment_ids")
    if images is None or ids is None:
        raise UserError(f"{path}: needs arrays 'images' and 'segment_ids' (has {sorted(data)})")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{path}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if ids.ndim != 1 or ids.shape[0] != images.shape[0] or ids.dtype.kind not in "US":
        raise UserError(f"{path}: segment_ids must be (N,) strings matching images, got {ids.dtype} {ids.shape}")
    out = {"path": path, "images": images, "segment_ids": [str(s) for s in ids]}
    if "class_keys" in data:
        if data["class_keys"].shape != ids.shape or data["class_keys"].dtype.kind not in "US":
            raise UserError(f"{path}: class_keys must be (N,) strings matching images")
        out["class_keys"] = [str(s) for s in data["class_keys"]]
    if "frames" in data:
        frames = data["frames"]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != images.shape[0] or frames.shape[-1] != 3:
            raise UserError(f"{path}: frames must be uint8 (N, S, S, 3) matching images, got {frames.dtype} "
                            f"{frames.shape}")
        out["frames"] = frames
    return out
