"""A folder of images made elsewhere, scored as a translator (`s2i-bench score IMAGES_DIR`).

The images answer the sounds `s2i-bench export-sounds` wrote: `<segment_id>.png` (one image per
sound, draw 0) or `<segment_id>_<k>.png` (draw k), PNG or JPEG, any size, where `segment_id` is
the export's opaque id. Before anything is scored:

- every image file's name must be an id of the store's split (else refused: it answers no
  sound of this store, or of another split); files that are not images are left alone, noted;
- every scored sound must have all K draws (K from --samples, else the draws every sound has);
  missing ones are listed and refused unless --allow-missing, which scores the sounds that are
  there and records the missing ids;
- JPEG is noted in the record (lossy compression can change the classifiers' decisions);
- the folder's content hash (sha256 over the names and bytes of the images used) is recorded.

Images are decoded per batch (PIL; at most MAX_PIXELS each, RGB; grey or alpha are converted and
noted). A batch whose images share a size keeps it (the sample sheet shows the native size);
mixed sizes get the one resize policy image by image.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.runs import RunFolder
from s2i_bench.translators.base import Batch, StoreTranslator, to_protocol_size

IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
MAX_PIXELS = 4096 * 4096
_NAME = re.compile(r"^(s[0-9a-f]{16})(?:_(\d{1,4}))?$")


@dataclass
class FolderContents:
    images: dict[tuple[str, int], Path]  # (sound id, draw) -> file
    formats: dict[str, int]  # png / jpeg -> count
    ignored: list[str] = field(default_factory=list)


def looks_like_image_folder(path: Path) -> bool:
    """A folder holding image files and no checkpoints (a run folder is scored otherwise)."""
    if not path.is_dir() or RunFolder(path).exists():
        return False
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def scan(folder: Path, known_ids: set[str]) -> FolderContents:
    """The folder's image files by (id, draw); refuses names that answer no sound."""
    images: dict[tuple[str, int], Path] = {}
    formats: dict[str, int] = {}
    ignored, unknown, bad_names = [], [], []
    for p in sorted(folder.iterdir()):
        suffix = p.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            ignored.append(p.name)
            continue
        if not p.is_file():  # a folder, a device or a dangling link named like an image
            raise UserError(f"{p}: not a regular file")
        m = _NAME.match(p.stem)
        if m is None:
            bad_names.append(p.name)
            continue
        sid, k = m.group(1), int(m.group(2)) if m.group(2) is not None else 0
        if sid not in known_ids:
            unknown.append(p.name)
            continue
        if (sid, k) in images:
            raise UserError(f"{folder}: two images for sound {sid} draw {k}: {images[(sid, k)].name} and {p.name}")
        images[(sid, k)] = p
        formats[IMAGE_SUFFIXES[suffix]] = formats.get(IMAGE_SUFFIXES[suffix], 0) + 1
    if bad_names:
        raise UserError(f"{folder}: {len(bad_names)} image file(s) not named <segment_id>.png or <segment_id>_<k>.png "
                        f"with an id from `s2i-bench export-sounds` (e.g. {', '.join(bad_names[:3])})")
    if unknown:
        raise UserError(f"{folder}: {len(unknown)} image(s) answer no sound of this store's split (e.g. "
                        f"{', '.join(unknown[:3])}): exported from another store or split?")
    if not images:
        raise UserError(f"{folder}: no images named by the sounds' ids (from `s2i-bench export-sounds`)")
    return FolderContents(images=images, formats=formats, ignored=ignored)


def plan_draws(contents: FolderContents, ids_in_order: list[str], samples: int | None) -> tuple[int, list[str]]:
    """(K, ids missing at least one of draws 0..K-1). K: `samples`, else the most draws that
    every sound that has any image has."""
    per_sound: dict[str, set[int]] = {}
    for sid, k in contents.images:
        per_sound.setdefault(sid, set()).add(k)
    if samples is None:
        def consecutive(ks: set[int]) -> int:  # draws 0, 1, ... without a gap
            n = 0
            while n in ks:
                n += 1
            return n

        samples = max(1, min(consecutive(ks) for ks in per_sound.values()))
    missing = [sid for sid in ids_in_order if not set(range(samples)) <= per_sound.get(sid, set())]
    return samples, missing


def content_hash(contents: FolderContents, used: list[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for key in sorted(used):
        p = contents.images[key]
        h.update(p.name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) uint8 and a note (converted mode), or a UserError naming the file."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise UserError(f"{path}: {im.width}x{im.height} pixels, more than the {MAX_PIXELS} allowed")
                mode = im.mode
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except UserError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable PNG/JPEG image ({type(e).__name__}: {str(e)[:200]})") from None
    note = None if mode == "RGB" else f"mode {mode} converted to RGB"
    return rgb, note


class FolderTranslator(StoreTranslator):
    """The images of a folder, looked up by the batch's sounds (see the module docstring)."""

    def __init__(self, folder: Path, contents: FolderContents, ids_by_row: dict[int, str], size: int,
                 info: dict):
        super().__init__(info, device="cpu", inputs=())
        self.folder, self.contents, self.ids_by_row, self.size = folder, contents, ids_by_row, size
        self.native_sizes: dict[str, int] = {}
        self.notes: set[str] = set()

    def after_info(self) -> dict:
        return {"native_sizes": dict(sorted(self.native_sizes.items())), "decode_notes": sorted(self.notes) or None}

    def translate_rows(self, batch: Batch, rows):
        import torch

        images = []
        for r in np.asarray(rows).tolist():
            img, note = read_image(self.contents.images[(self.ids_by_row[int(r)], int(batch.draw))])
            if note:
                self.notes.add(note)
            key = f"{img.shape[0]}x{img.shape[1]}"
            self.native_sizes[key] = self.native_sizes.get(key, 0) + 1
            images.append(img)
        if len({im.shape for im in images}) == 1:
            return torch.from_numpy(np.stack(images))  # (B, H, W, 3) uint8, native size
        # mixed sizes: the resize policy image by image, then one batch at the protocol's size
        out = [to_protocol_size(torch.from_numpy(im).permute(2, 0, 1)[None].float().div(127.5).sub(1.0), self.size)
               for im in images]
        self.notes.add("images of several sizes: each resized to the protocol's size (sheet at that size)")
        return torch.cat(out).clamp(-1.0, 1.0)  # (B, 3, S, S)


def load_folder(folder: Path, store, *, split: str, samples: int | None, allow_missing: bool, size: int):
    """(FolderTranslator, the store rows to score, K, what the record says about the folder)."""
    from s2i_bench.data.export import sound_ids

    rows = store.split_indices(split)
    ids = sound_ids(store, rows)
    contents = scan(folder, set(ids.tolist()))
    samples, missing = plan_draws(contents, ids.tolist(), samples)
    if missing and not allow_missing:
        raise UserError(f"{folder}: {len(missing)} of {len(rows)} {split} sounds lack an image for draws "
                        f"0..{samples - 1} (e.g. {', '.join(missing[:5])}); pass --allow-missing to score the "
                        f"{len(rows) - len(missing)} that are complete (the record lists the missing ids)")
    missing_set = set(missing)
    keep = np.array([r for r, sid in zip(rows.tolist(), ids.tolist()) if sid not in missing_set], dtype=np.int64)
    if len(keep) == 0:
        raise UserError(f"{folder}: no sound has all {samples} draws")
    ids_by_row = {int(r): str(sid) for r, sid in zip(rows.tolist(), ids.tolist())}
    used = [(ids_by_row[int(r)], k) for r in keep.tolist() for k in range(samples)]
    unused = sorted(set(contents.images) - set(used))
    lossy = contents.formats.get("jpeg", 0) > 0
    info = {"path": str(folder), "kind": "image-folder", "name": folder.name,
            "sha256": content_hash(contents, used), "formats": dict(sorted(contents.formats.items())),
            "lossy": lossy, "missing": {"count": len(missing), "ids": missing[:1000]} if missing else None,
            "images_used": len(used), "images_not_used": len(unused), "ignored_files": len(contents.ignored)}
    if lossy:
        info["note"] = "JPEG images: lossy compression can change the classifiers' decisions"
    translator = FolderTranslator(folder, contents, ids_by_row, size, info)
    return translator, keep, samples
