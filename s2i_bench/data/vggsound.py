"""VGGSound as `prepare` reads it: the official CSV as the manifest, VGGSounder's tags as a gate.

    s2i-bench prepare VGGSOUND.csv --protocol vggsound --clips CLIPS --out STORE [--labels TAGS.csv]

The official CSV (one row per clip, no header): YouTube id, start second, label, train|test. The
clip is the file `<YouTube id>_<start, 6 digits>.<ext>` anywhere under CLIPS (default: the CSV's
folder), one of the protocol's video extensions; that name is also the clip's video id in the
store. VGGSounder's tag file (columns video_id, label, modality, background_music, static_image,
voice_over; one row per label of a clip, `modality` A, V or AV) comes from `--labels`, else the
file the protocol's `vggsound.labels` names beside the CSV, else that file inside the installed
`vggsounder` wheel (read as data: none of its code runs, nothing is downloaded).

The gate (`protocol.vggsound`): a clip VGGSounder tags is kept only when no flag of `exclude` is
set and its CSV label is tagged with one of `visible`; a clip of a `gated_splits` split must be
tagged. Everything left out is a skipped source with its reason (skipped.csv); `gate_summary`
counts them (store.json `gate`, carried by every record's `store`) and `table1_columns` per class
(table1.csv). Both files are parsed strictly: a malformed line is refused naming file and line.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path

from s2i_bench.data.discovery import Source
from s2i_bench.errors import UserError

YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
CLIP_ID = re.compile(r"^([A-Za-z0-9_-]{11})_([0-9]{6})$")
SPLITS = ("train", "test")  # the official CSV's
TAG_COLUMNS = ("video_id", "label", "modality", "background_music", "static_image", "voice_over")
FLAGS = ("background_music", "static_image", "voice_over")
MODALITIES = ("A", "V", "AV")
MAX_BYTES = 256 * 2**20  # both files are a few MB; a larger one is not what it claims
REASONS = ("static_image", "voice_over", "background_music", "audible_only", "label_not_tagged", "not_tagged")


@dataclass
class Row:
    line: int
    youtube_id: str
    start: int
    label: str
    split: str

    @property
    def clip_id(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}"


@dataclass
class Tags:
    labels: dict[str, str] = field(default_factory=dict)  # label -> modality (A, V, AV)
    flags: dict[str, bool] = field(default_factory=dict)  # background_music, static_image, voice_over


def _text(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path}: larger than {MAX_BYTES // 2**20} MB; not a {what}")
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); not a {what}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def read_vggsound_csv(path: Path) -> list[Row]:
    """The official CSV's rows, each checked (4 fields, an 11-character id, a whole start second,
    a label, train or test)."""
    rows = []
    for line, fields in enumerate(csv.reader(_text(path, "VGGSound CSV").splitlines(), strict=True), start=1):
        if not fields or fields == [""]:
            continue
        where = f"{path}: line {line}"
        if len(fields) != 4:
            raise UserError(f"{where}: {len(fields)} fields, expected 4 (YouTube id, start second, label, train/test; "
                            f"no header)")
        ytid, start, label, split = (f.strip() for f in fields)
        if not YOUTUBE_ID.match(ytid):
            raise UserError(f"{where}: YouTube id {ytid[:40]!r} is not 11 characters of [A-Za-z0-9_-]"
                            + (" (a header line? the official CSV has none)" if line == 1 else ""))
        if not start.isdigit() or int(start) > 999_999:
            raise UserError(f"{where}: start second {start[:40]!r} is not a whole number of seconds (0-999999)")
        if not label:
            raise UserError(f"{where}: empty label")
        if split not in SPLITS:
            raise UserError(f"{where}: split {split[:40]!r} is not train or test")
        rows.append(Row(line, ytid, int(start), label, split))
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def _flag(value: str, where: str, column: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise UserError(f"{where}: {column} {value[:20]!r} is not True or False")
    return v == "true"


def read_vggsounder(path: Path) -> dict[str, Tags]:
    """VGGSounder's tags by clip id; every line checked, a clip's flags the same on all its lines."""
    reader = csv.reader(_text(path, "VGGSounder tag file").splitlines(), strict=True)
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != TAG_COLUMNS:
        raise UserError(f"{path}: line 1: columns {header!r}, expected {','.join(TAG_COLUMNS)} (VGGSounder's tag file)")
    tags: dict[str, Tags] = {}
    for line, fields in enumerate(reader, start=2):
        if not fields:
            continue
        where = f"{path}: line {line}"
        if len(fields) != len(TAG_COLUMNS):
            raise UserError(f"{where}: {len(fields)} fields, expected {len(TAG_COLUMNS)}")
        clip, label, modality = fields[0].strip(), fields[1].strip(), fields[2].strip().upper()
        if not CLIP_ID.match(clip):
            raise UserError(f"{where}: video_id {clip[:40]!r} is not <YouTube id>_<start, 6 digits>")
        if not label:
            raise UserError(f"{where}: empty label")
        if modality not in MODALITIES:
            raise UserError(f"{where}: modality {fields[2][:20]!r} is not A, V or AV")
        flags = {c: _flag(v, where, c) for c, v in zip(FLAGS, fields[3:])}
        entry = tags.setdefault(clip, Tags(flags=flags))
        if entry.flags != flags:
            raise UserError(f"{where}: flags of {clip} differ from its earlier lines")
        if label in entry.labels:
            raise UserError(f"{where}: label {label!r} of {clip} listed twice")
        entry.labels[label] = modality
    return tags


def labels_file(spec, csv_path: Path, labels: str | Path | None = None) -> tuple[Path, str]:
    """(the tag file, where it came from): `--labels`, else the protocol's file beside the CSV,
    else that file in the installed vggsounder wheel's data."""
    if labels is not None:
        path = Path(labels)
        if not path.is_file():
            raise UserError(f"--labels {labels}: not found")
        return path, "--labels"
    beside = csv_path.parent / spec.labels
    if beside.is_file():
        return beside, "beside the CSV"
    try:
        dist = importlib.metadata.distribution("vggsounder")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"VGGSounder's tags {spec.labels!r}: not beside {csv_path.name} and the vggsounder package is "
                        f"not installed; `pip install vggsounder` (its wheel ships the tags) or pass --labels "
                        f"FILE") from None
    path = Path(str(dist.locate_file(f"vggsounder/data/{spec.labels}")))
    if not path.is_file():
        raise UserError(f"{path}: the vggsounder {dist.version} wheel has no {spec.labels!r}; pass --labels FILE")
    return path, f"vggsounder {dist.version} wheel"


def gate_reason(row: Row, tags: Tags | None, spec) -> str | None:
    """Why the gate leaves this clip out (a REASONS key), or None when it is let in."""
    if tags is None:
        return "not_tagged" if row.split in spec.gated_splits else None
    for flag in ("static_image", "voice_over", "background_music"):
        if flag in spec.exclude and tags.flags.get(flag):
            return flag
    modality = tags.labels.get(row.label)
    if modality is None:
        return "label_not_tagged"
    return None if modality in spec.visible else "audible_only"


REASON_TEXT = {"static_image": "VGGSounder flags the clip static_image", "voice_over": "VGGSounder flags the clip "
               "voice_over", "background_music": "VGGSounder flags the clip background_music",
               "audible_only": "VGGSounder tags its label {label!r} {modality} (not visible)",
               "label_not_tagged": "VGGSounder does not tag its label {label!r} for this clip",
               "not_tagged": "a {split} clip without VGGSounder tags (every {split} clip must have them)"}


def clip_index(clips: Path, extensions) -> dict[str, list[Path]]:
    """Every video file under `clips` by its stem (a clip id), hidden files left out."""
    exts = {e.lower() for e in extensions}
    index: dict[str, list[Path]] = {}
    for p in sorted(clips.rglob("*")):
        rel = p.relative_to(clips).parts
        if p.suffix.lower() in exts and not any(part.startswith(".") for part in rel) and p.is_file():
            index.setdefault(p.stem, []).append(p)
    return index


def discover_vggsound(csv_path: Path, protocol, clips: Path | None = None,
                      labels: str | Path | None = None) -> tuple[list[Source], Path, dict]:
    """(sources, root = the CSV's folder, the gate's summary) for `prepare`."""
    spec = protocol.vggsound
    rows = read_vggsound_csv(csv_path)
    tag_path, origin = labels_file(spec, csv_path, labels)
    tags = read_vggsounder(tag_path)
    clips = Path(clips) if clips is not None else csv_path.parent
    if not clips.is_dir():
        raise UserError(f"--clips {clips}: not a folder")
    index = clip_index(clips, protocol.data.video_extensions)
    root = csv_path.parent
    sources, seen, counts = [], {}, {}
    for row in rows:
        key = protocol.match_class(row.label)
        found = index.get(row.clip_id, [])
        path = found[0] if found else clips / f"{row.clip_id}{protocol.data.video_extensions[0]}"
        src = Source(path.resolve(), _rel(path, root), key, row.clip_id, row.split)
        t = tags.get(row.clip_id)
        reason = None if key is None else gate_reason(row, t, spec)
        if key is not None:
            c = counts.setdefault(key, {"kept": 0, **{r: 0 for r in REASONS}, "untagged_kept": 0})
            c[reason or "kept"] += 1
            c["untagged_kept"] += int(reason is None and t is None)
        if key is None:
            src.skip_reason = f"label {row.label!r} (line {row.line}) is no class of protocol {protocol.name!r}"
        elif reason is not None:
            src.skip_reason = REASON_TEXT[reason].format(label=row.label, split=row.split,
                                                         modality=(t.labels.get(row.label) if t else None))
        elif (row.clip_id, key) in seen:
            src.skip_reason = (f"clip {row.clip_id} with label {row.label!r} listed twice (lines "
                               f"{seen[row.clip_id, key]} and {row.line})")
        elif len(found) > 1:
            src.skip_reason = f"several files are clip {row.clip_id}: {', '.join(_rel(p, root) for p in found[:3])}"
        elif not found:
            src.skip_reason = f"file not found (line {row.line}: no {row.clip_id}.* under {clips})"
        seen.setdefault((row.clip_id, key), row.line)
        sources.append(src)
    return sources, root, gate_summary(spec, tag_path, origin, len(rows), counts)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def gate_summary(spec, tag_path: Path, origin: str, n_rows: int, counts: dict) -> dict:
    """store.json `gate`: what the tags let in and left out, in total and per class."""
    total = {k: sum(c[k] for c in counts.values()) for k in ("kept", *REASONS, "untagged_kept")}
    return {"kind": "vggsounder", "targets": f"the CSV label, when tagged {' or '.join(spec.visible)}",
            "visible": list(spec.visible), "exclude": list(spec.exclude), "gated_splits": list(spec.gated_splits),
            "labels": {"file": tag_path.name, "from": origin,
                       "sha256": hashlib.sha256(tag_path.read_bytes()).hexdigest()},
            "csv_rows": n_rows, "clips_let_in": total["kept"], "untagged_let_in": total["untagged_kept"],
            "left_out": {r: total[r] for r in REASONS}, "per_class": counts}


def table1_columns(gate: dict, class_keys) -> dict[str, list[int]]:
    """Per-class counts of clips (CSV rows) let in and left out, in `class_keys` order, with a
    total: the columns table1.csv adds for a gated store."""
    per = gate.get("per_class") or {}
    out = {}
    for name in ("kept", *REASONS):
        values = [int((per.get(k) or {}).get(name, 0)) for k in class_keys]
        out["gate_let_in" if name == "kept" else f"left_out_{name}"] = values + [sum(values)]
    return out


def youtube_pairs(video_ids) -> list[tuple[str, str]]:
    """Clips cut from one YouTube video, as pairs that put them in one near-duplicate group (a
    video-disjoint split then keeps them together)."""
    first: dict[str, str] = {}
    pairs = []
    for vid in sorted(video_ids):
        m = CLIP_ID.match(str(vid))
        if m:
            if m.group(1) in first:
                pairs.append((first[m.group(1)], str(vid)))
            first.setdefault(m.group(1), str(vid))
    return pairs
