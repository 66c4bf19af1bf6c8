"""A blind label set: images to label with nothing that says where they came from.

An audit (`s2i_bench.scoring.audit`) mixes the images of every system it audits into one set
that people (the labelling page, `s2i-bench label-server BLIND`) or the synthetic world's judge
label. The folder holds only what an annotator may see:

    blind.json    format, the classes (key and name), how many images, the files' sha256, the set hash
    items.csv     image_id, class, image_sha256; ordered by image id
    images.npy    (M, 96, 96, 3) uint8, in the order of items.csv
    annotations/  one log per annotator (`informativity.annotations`), written by the page or the judge

Image ids are `b` + 12 hex digits of a hash of the audit's seed and the image's place in the
audit's key (which lives outside this folder), so neither the names nor the order (sorted by id)
carry the system, the epoch, the sound or the classifier's decision. The set hash covers
items.csv, images.npy and the classes; a set changed after it was written is refused.

`open_label_set` opens either a blind set or a pool: both give the labelling page and the
annotation logs what they need (`path`, `table` with image_id / class / image_sha256, `images`,
`class_names`, `content_hash`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_save_npy, atomic_write_json, atomic_write_text, file_sha256, sha256_file
from s2i_bench.informativity.pool import IMAGE_SIZE, open_pool

FORMAT = "s2i-bench-blind-set"
FORMAT_VERSION = 1
META, ITEMS, IMAGES = "blind.json", "items.csv", "images.npy"
COLUMNS = ["image_id", "class", "image_sha256"]
NAMES = (META, ITEMS, IMAGES, "annotations")  # what the folder may hold


@dataclass
class BlindSet:
    path: Path
    meta: dict[str, Any]
    table: Any  # pandas.DataFrame: image_id, class, image_sha256 (sorted by image_id)
    images: np.ndarray  # (M, 96, 96, 3) uint8, memory-mapped

    @property
    def class_names(self) -> dict[str, str]:
        return dict(self.meta["classes"])

    @property
    def content_hash(self) -> str:
        return str(self.meta["set_hash"])

    @property
    def synthetic(self) -> bool:
        return False  # the judge labels through the audit, which knows the store


def blind_id(seed: int, key: str) -> str:
    """The id of the image at `key` (its place in the audit's key) in a set drawn with `seed`."""
    return "b" + hashlib.sha256(f"s2i-bench blind|{int(seed)}|{key}".encode()).hexdigest()[:12]


def image_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def _set_hash(files: dict[str, str], classes: dict[str, str]) -> str:
    blob = {"format_version": FORMAT_VERSION, "files": dict(sorted(files.items())), "classes": classes}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def write_blind_set(folder: Path, ids: list[str], classes: list[str], images: np.ndarray,
                    class_names: dict[str, str]) -> BlindSet:
    """Write the set into `folder` (new or empty): rows sorted by id whatever order they came in."""
    folder = Path(folder)
    images = np.asarray(images)
    if images.shape != (len(ids), IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        raise UserError(f"{folder}: blind-set images have shape {images.shape} {images.dtype}, expected "
                        f"({len(ids)}, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) uint8")
    if len(set(ids)) != len(ids):
        raise UserError(f"{folder}: two images share a blind id")
    order = np.argsort(np.array(ids, dtype=str), kind="stable")
    table = pd.DataFrame({"image_id": [ids[i] for i in order], "class": [classes[i] for i in order],
                          "image_sha256": [image_sha256(images[i]) for i in order]}, columns=COLUMNS)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / ITEMS, table.to_csv(index=False))
    atomic_save_npy(folder / IMAGES, np.ascontiguousarray(images[order]))
    files = {ITEMS: sha256_file(folder / ITEMS), IMAGES: file_sha256(folder / IMAGES)}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "count": len(ids), "classes": dict(class_names),
            "files": files, "set_hash": _set_hash(files, dict(class_names))}
    atomic_write_json(folder / META, meta)
    return open_blind_set(folder)


def open_blind_set(path: str | Path) -> BlindSet:
    """Open and check a blind set: every problem names the file; changed content is refused."""
    path = Path(path)
    meta_path = path / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{meta_path}: not a blind label set ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{meta_path}: not an s2i-bench blind set of format version {FORMAT_VERSION}")
    classes = meta.get("classes")
    if not isinstance(classes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in classes.items()):
        raise UserError(f"{meta_path}: 'classes' must map class keys to names")
    try:
        table = pd.read_csv(path / ITEMS, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path / ITEMS}: cannot read ({e})") from None
    if list(table.columns) != COLUMNS:
        raise UserError(f"{path / ITEMS}: columns {list(table.columns)}, expected {COLUMNS}")
    if table["image_id"].duplicated().any() or not table["class"].isin(list(classes)).all():
        raise UserError(f"{path / ITEMS}: duplicate image ids or a class not in {META}")
    try:
        images = np.load(path / IMAGES, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path / IMAGES}: cannot read as a numpy array ({e})") from None
    if images.shape != (len(table), IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        raise UserError(f"{path / IMAGES}: shape {images.shape} {images.dtype}, expected "
                        f"({len(table)}, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) uint8")
    files = {ITEMS: sha256_file(path / ITEMS), IMAGES: file_sha256(path / IMAGES)}
    if meta.get("files") != files or meta.get("set_hash") != _set_hash(files, classes):
        raise UserError(f"{meta_path}: the set's files changed since the audit wrote them (sha256 differs): labels "
                        f"of it would describe other images")
    return BlindSet(path=path, meta=meta, table=table, images=images)


def open_label_set(path: str | Path):
    """A blind set (it has blind.json) or a pool: what the labelling page serves."""
    path = Path(path)
    if (path / META).is_file():
        return open_blind_set(path)
    return open_pool(path)
