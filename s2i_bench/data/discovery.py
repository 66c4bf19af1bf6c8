"""Discovery: which files are sources, and of which class and video id (SPEC section 2).

A source folder holds one sub-folder per class (names matched through the protocol's aliases);
a manifest CSV lists path,class[,video_id][,split]. Every file found is a `Source`; one that
cannot be used is kept with its `skip_reason` (it ends up in skipped.csv, never silently lost).
"""

from __future__ import annotations

import logging
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from s2i_bench.errors import UserError

logger = logging.getLogger(__name__)

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


def _printable(path: Path) -> str:
    """A path as valid UTF-8 text (undecodable bytes of a file name shown as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _closest_class(name: str, protocol) -> str:
    """'closest: <key> (aliases: ...)' for a folder name that matches no class."""
    wanted = name.lower().replace("_", " ").replace("-", " ")
    candidates = {a.lower(): c.key for c in protocol.classes for a in (c.key, c.name, *c.aliases)}
    close = difflib.get_close_matches(wanted, list(candidates), n=1, cutoff=0.0)
    if not close:
        return "no close class"
    cls = protocol.classes[protocol.class_index(candidates[close[0]])]
    return f"closest class {cls.key!r} (its folder may be named: {', '.join(dict.fromkeys((cls.key, *cls.aliases)))})"


def class_folders(root: Path, protocol) -> dict[Path, str | None]:
    """Every visible sub-folder of `root` and the class it names (None: none), checked before
    any video is decoded: a class without a folder is refused with each unmatched folder, its
    closest class and that class's accepted names; unmatched folders beside complete classes
    are listed (their files are skipped)."""
    folders = {f: protocol.match_class(f.name) for f in sorted(p for p in root.iterdir()
                                                               if p.is_dir() and not p.name.startswith("."))}
    unmatched = [f for f, k in folders.items() if k is None]
    missing = [k for k in protocol.class_keys if k not in folders.values()]
    detail = "; ".join(f"folder {_printable(Path(f.name))!r} matches no class, {_closest_class(f.name, protocol)}"
                       for f in unmatched)
    if missing:
        raise UserError(f"{root}: no folder for class(es) {', '.join(missing)} of protocol {protocol.name!r}"
                        + (f"; {detail}" if detail
                           else f" (found folders: {', '.join(f.name for f in folders) or 'none'})")
                        + "; rename the folder or pass a manifest CSV (nothing was decoded)")
    if unmatched:
        logger.warning(f"prepare: {detail}; their files are skipped (listed in skipped.csv)")
    return folders


def discover_folder(root: Path, protocol) -> list[Source]:
    sources: list[Source] = []
    exts = {e.lower() for e in protocol.data.video_extensions}
    for folder, key in class_folders(root, protocol).items():
        for f in sorted(folder.rglob("*")):
            try:
                if not f.is_file():
                    continue
            except OSError:  # a link loop
                continue
            parts = f.relative_to(root).parts
            if any(part.startswith(".") for part in parts):
                continue  # hidden files (.DS_Store, editor swap files) are not sources
            rel = _printable(f.relative_to(root))
            src = Source(f, rel, key, video_id_of(f.stem, protocol.data.video_id_pattern))
            named_like_video = [p for p in parts[1:-1] if Path(p).suffix.lower() in exts]
            if key is None:
                src.skip_reason = (f"folder {_printable(Path(folder.name))!r} matches no class of protocol "
                                   f"{protocol.name!r}")
            elif rel != str(f.relative_to(root)):
                src.skip_reason = "file name is not valid UTF-8 (undecodable bytes shown as \\xNN)"
                src.video_id = _printable(Path(src.video_id))
            elif named_like_video:
                src.skip_reason = (f"inside folder {named_like_video[0]!r}, which is named like a video file: "
                                   f"a folder, not a clip; its files are not read")
            elif f.suffix.lower() not in exts:
                src.skip_reason = f"not a video file (extension {f.suffix or 'none'!r})"
            sources.append(src)
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
            src.skip_reason = (f"class {row['class']!r} (line {row_number}) matches no class of protocol "
                               f"{protocol.name!r}")
        elif path.is_dir():
            src.skip_reason = f"a folder, not a video file (line {row_number})"
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


