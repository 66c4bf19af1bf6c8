"""Discovery: which files are sources, and of which class and video id (SPEC section 2).

A source folder holds one sub-folder per class (names matched through the protocol's aliases);
a manifest CSV lists path,class[,video_id][,split]. Every file found is a `Source`; one that
cannot be used is kept with its `skip_reason` (it ends up in skipped.csv, never silently lost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from s2i_bench.errors import UserError

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


@dataclass
class Source:
    path: Path                  # absolute
    rel: str                    # as recorded: relative to the source folder / CSV folder
    class_key: str | None
    video_id: str | None
    given_split: str | None = None
    skip_reason: str | None = None  # known before decoding (unknown class, missing file, ...)


def video_id_of(stem: str, pattern: str) -> str:
    """The YouTube id in a file name (first match of the protocol's pattern), else the stem."""
    m = re.search(pattern, stem)
    return m.group(0) if m else stem


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def discover_folder(root: Path, protocol) -> list[Source]:
    sources: list[Source] = []
    exts = {e.lower() for e in protocol.data.video_extensions}
    matched_any = False
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        key = protocol.match_class(folder.name)
        matched_any |= key is not None
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in f.relative_to(root).parts):
                continue  # hidden files (.DS_Store, editor swap files) are not sources
            src = Source(f, _rel(f, root), key, video_id_of(f.stem, protocol.data.video_id_pattern))
            if key is None:
                src.skip_reason = f"folder {folder.name!r} matches no class of protocol {protocol.name!r}"
            elif f.suffix.lower() not in exts:
                src.skip_reason = f"not a video file (extension {f.suffix or 'none'!r})"
            sources.append(src)
    if not matched_any:
        names = ", ".join(protocol.class_keys)
        raise UserError(f"{root}: no sub-folder matches a class of protocol {protocol.name!r} "
                        f"(expected one folder per class: {names})")
    return sources


def discover_manifest(csv_path: Path, protocol) -> list[Source]:
    import pandas as pd

    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{csv_path}: cannot read as CSV ({e})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in ("path", "class") if c not in table.columns]
    if missing:
        raise UserError(f"{csv_path}: missing columns {missing} (expected path,class[,video_id][,split])")
    has_split = "split" in table.columns
    if has_split:
        values = table["split"].str.strip().str.lower()
        bad = sorted(set(values) - set(SPLIT_ALIASES))
        if bad:
            raise UserError(f"{csv_path}: split values {bad} are not train/val/test")
    root = csv_path.parent
    sources = []
    for row_number, row in enumerate(table.to_dict("records"), start=2):
        p = Path(row["path"].strip())
        path = p if p.is_absolute() else root / p
        key = protocol.match_class(row["class"])
        vid = (row.get("video_id") or "").strip() or video_id_of(path.stem, protocol.data.video_id_pattern)
        split = SPLIT_ALIASES[row["split"].strip().lower()] if has_split else None
        src = Source(path, _rel(path, root), key, vid, split)
        if key is None:
            src.skip_reason = f"class {row['class']!r} (line {row_number}) matches no class of protocol {protocol.name!r}"
        elif not path.is_file():
            src.skip_reason = f"file not found (line {row_number})"
        sources.append(src)
    if not sources:
        raise UserError(f"{csv_path}: no rows")
    return sources


def discover(source: Path, protocol) -> tuple[list[Source], Path, bool]:
    """-> (sources, root folder, split given in a manifest)."""
    if source.is_dir():
        return discover_folder(source, protocol), source, False
    if source.suffix.lower() == ".csv":
        sources = discover_manifest(source, protocol)
        return sources, source.parent, any(s.given_split for s in sources)
    raise UserError(f"{source}: expected a folder with one sub-folder per class, or a manifest .csv")


