"""Metric records: the one owner of their schema, their file and their reading.

`metric-informativity.jsonl` holds one JSON object per line, one per scored translator
(docs/architecture.md, "Metric records"). Written by `append` (the one writer: under a lock, and
a line cut by a crash is set aside before the next line goes in), read by `read` (the one
checked reader: every problem names the file and the record), selected into series by
`series_key` / `select`, turned into per-epoch frames by `series_frame` and summarised by
`summarise` (the paper's series metrics, `scoring.metrics`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypedDict

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import append_line, read_no_follow, set_aside_cut_line, to_jsonable
from s2i_bench.locks import exclusive_lock
from s2i_bench.runs import MAX_EPOCH, RECORDS
from s2i_bench.scoring import metrics

RECORDS_NAME = RECORDS
KIND = "informativity"
FORMAT_VERSION = 3  # 2: format_version, translator input/size; 3: per-image decisions; older records still read
CHECKSUM_SINCE = 3  # records of this format on must carry their checksum (corruption detection, not tamper-proof)
MEASURES = ("raw_share", "corrected_share", "true_share", "class_match_rate")
SERIES_FIELDS = ("classifiers.sha256", "store.hash", "split", "seed", "samples", "protocol.fingerprint")


class ClassResult(TypedDict, total=False):
    n_sounds: int
    n_images: int
    raw_share: float | None
    raw_ci: list[float] | None
    corrected_share: float | None
    corrected_ci: list[float] | None
    ci_method: str
    sensitivity: float | None
    specificity: float | None
    class_match_rate: float | None
    true_share: float | None


class InformativityRecord(TypedDict, total=False):
    """One scored translator (the keys every reader may rely on)."""

    kind: str  # "informativity"
    format_version: int
    generator: dict[str, Any]  # path, sha256, kind, epoch, embedding_dim, run (+ plugin's keys)
    run: str | None
    epoch: int | None
    d_update: bool | None
    protocol: dict[str, str]  # name, version, fingerprint
    store: dict[str, Any]  # path, hash, split_policy, leaky, protocol
    split: str
    seed: int
    samples: int
    classifiers: dict[str, Any]  # path, sha256, source, protocol, store_hash, class_match
    bootstrap: dict[str, Any]
    classes: dict[str, ClassResult]
    mean: dict[str, Any]
    mean_all_classes: dict[str, Any]
    untrained_classes: list[str]
    num_sounds: int
    decisions: dict[str, Any] | None  # per-image decisions, packed (`encode_decisions`): paired tests
    sample_sheet: str | None
    code_version: str
    created: str
    seconds: float | None


# -- writing ---------------------------------------------------------------------------------------
def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def checksum(record: Mapping[str, Any]) -> str:
    """sha256 of a record's canonical JSON (without its own checksum): a record edited after it
    was written no longer matches and is refused by `read`."""
    body = {k: v for k, v in record.items() if k not in ("checksum", "_source")}
    return hashlib.sha256(json.dumps(to_jsonable(body), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


APPEND_WAIT_S = 120.0


def append(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line, under the file's lock (`fileio.append_line`: never through
    a link; a last line cut by a crash is moved to `<file>.cut-N` first, with a warning)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: exists and is not a file; give --out a .jsonl file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = to_jsonable(dict(record))
    record["checksum"] = checksum(record)
    line = (json.dumps(record, sort_keys=False) + "\n").encode("utf-8")
    # one line under the lock: a concurrent writer (another shard, another run) waits its turn
    with exclusive_lock(_lock_path(path), f"records file {path}", wait_s=APPEND_WAIT_S):
        append_line(path, line)  # never through a link; a line cut by a crash is set aside first


def extend(path: str | Path, new: Iterable[Mapping[str, Any]]) -> int:
    """Add several records at once, atomically: under the file's lock, the old lines plus the new
    go to a temporary file that replaces the records file (a crash leaves the old file or the new
    one, never half). A record already in the file (the same checksum) is not added twice, so a
    merge interrupted after the replace can be rerun. Returns how many were added."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(_lock_path(path), f"records file {path}", wait_s=APPEND_WAIT_S):
        set_aside_cut_line(path)
        old = read_no_follow(path) if path.is_file() or path.is_symlink() else b""
        have = {r.get("checksum") for _, r in _lines(path, follow_links=False)} if old else set()
        lines = []
        for r in new:
            r = to_jsonable({k: v for k, v in r.items() if k not in ("checksum", "_source")})
            r["checksum"] = checksum(r)
            if r["checksum"] not in have:
                have.add(r["checksum"])
                lines.append((json.dumps(r, sort_keys=False) + "\n").encode("utf-8"))
        if lines:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as f:
                f.write(old + b"".join(lines))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    return len(lines)


# -- reading ---------------------------------------------------------------------------------------
def _share_ok(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0)


def _lines(path: Path, follow_links: bool = True) -> list[tuple[int, Any]]:
    """(line number, parsed object) of every non-empty line; a cut last line is skipped with a
    warning (it holds no whole record), any other bad line is an error."""
    try:
        data = read_no_follow(path) if not follow_links else path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e}); not a metric record file") from None
    lines = text.split("\n")
    cut = not text.endswith("\n") and bool(text)
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line)))
        except json.JSONDecodeError:
            if cut and i == len(lines):
                print(f"warning: {path}: line {i} was cut by an interrupted write and is not a whole record; skipped "
                      f"(the next `s2i-bench score` into this file moves it to {path.name}.cut-N)", file=sys.stderr)
                continue
            raise UserError(f"{path}: line {i} is not valid JSON; not a metric record file written by "
                            "`s2i-bench score`") from None
    return out


def check(r: Any, where: str) -> dict:
    """One informativity record, checked (what the readers rely on)."""
    if not isinstance(r, dict):
        raise UserError(f"{where}: not a JSON object")
    version = r.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{where}: record format version {version!r} is newer than this s2i-bench reads "
                        f"({FORMAT_VERSION}); update s2i-bench")
    epoch = r.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCH):
        raise UserError(f"{where}: epoch must be a whole number in 0..{MAX_EPOCH}, got {epoch!r}")
    classes = r.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise UserError(f"{where}: no per-class results ('classes')")
    for key, c in classes.items():
        if not isinstance(c, dict):
            raise UserError(f"{where}: classes.{key} is not an object")
        for m in MEASURES:
            if not _share_ok(c.get(m)):
                raise UserError(f"{where}: classes.{key}.{m} = {c.get(m)!r} is not a share in [0, 1]")
        for field in ("corrected_ci", "corrected_ci_lr", "corrected_ci_bootstrap"):
            ci = c.get(field)
            if ci is not None and (not isinstance(ci, list) or len(ci) != 2 or not all(_share_ok(b) for b in ci)):
                raise UserError(f"{where}: classes.{key}.{field} = {ci!r} is not an interval in [0, 1]")
    for field in ("store", "classifiers", "generator", "protocol"):
        if r.get(field) is not None and not isinstance(r[field], dict):
            raise UserError(f"{where}: '{field}' is not an object")
    if "checksum" not in r and version >= CHECKSUM_SINCE:
        raise UserError(f"{where}: no checksum; every record of format {CHECKSUM_SINCE} or later carries one (it was "
                        f"removed, or the record was not written by `s2i-bench score`)")
    if "checksum" in r and r["checksum"] != checksum(r):
        raise UserError(f"{where}: the record was changed or damaged after `s2i-bench score` wrote it (its checksum "
                        f"does not match); score the translator again")
    cross_check(r, where)
    return r


def cross_check(r: Mapping[str, Any], where: str) -> None:
    """What a record says twice must agree: every share is k / n for the class's n images, each
    mean is the mean of its classes, and the shares are those of the per-image decisions. The
    checksum is unkeyed (anyone can recompute it), so it detects damage, not tampering; these
    checks catch an edited number that was not edited everywhere it shows."""
    classes = r["classes"]
    for key, c in classes.items():
        n = c.get("n_images")
        if n is None:
            continue
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise UserError(f"{where}: classes.{key}.n_images = {n!r} is not a count")
        for m in ("raw_share", "class_match_rate", "true_share"):
            v = c.get(m)
            if v is not None and (n == 0 or abs(v * n - round(v * n)) > 1e-6 * max(1, n)):
                raise UserError(f"{where}: classes.{key}.{m} = {v!r} is not k / {n} for the class's {n} images: the "
                                f"record was edited or damaged")
    mean = r.get("mean")
    if isinstance(mean, dict):
        keys = mean.get("classes") if isinstance(mean.get("classes"), list) else list(classes)
        for m in MEASURES:
            vals = [(classes.get(k) or {}).get(m) for k in keys]
            if mean.get(m) is None or not vals or any(v is None for v in vals):
                continue
            if abs(float(mean[m]) - float(np.mean(vals))) > 1e-9:
                raise UserError(f"{where}: mean.{m} = {mean[m]!r} is not the mean of its classes "
                                f"({float(np.mean(vals))!r}): the record was edited or damaged")
    _check_against_decisions(r, where)


def _check_against_decisions(r: Mapping[str, Any], where: str) -> None:
    """The per-class shares equal the shares of the packed per-image decisions (plan order:
    class by class in the record's class order, `n_sounds` each)."""
    if not r.get("decisions"):
        return
    d = decisions({**r, "_source": where})
    k, n = d["shape"]
    classes = r["classes"]
    sizes = [(key, c.get("n_sounds")) for key, c in classes.items()]
    if not all(isinstance(s, int) for _, s in sizes) or sum(s for _, s in sizes) != n:
        raise UserError(f"{where}: the classes' n_sounds add up to {sum(s or 0 for _, s in sizes)}, the decisions "
                        f"hold {n} sounds: the record was edited or damaged")
    start = 0
    for key, size in sizes:
        c = classes[key]
        for field, measure in (("informative", "raw_share"), ("truth", "true_share"), ("class_match", "class_match_rate")):
            v = c.get(measure)
            if v is None or d[field] is None or size == 0:
                continue
            actual = float(d[field][:, start:start + size].mean())
            if abs(actual - float(v)) > 1e-9:
                raise UserError(f"{where}: classes.{key}.{measure} = {v!r}, but its per-image decisions give "
                                f"{actual!r}: the record was edited or damaged")
        start += size


def read(path: str | Path, follow_links: bool = True) -> list[dict]:
    """The informativity records of one records file, checked, in file order; each carries
    `_source` ("<file name>:<line>"). Records of other kinds are skipped. `follow_links=False`
    for files found inside a folder (a run folder's records): a link there is refused."""
    path = Path(path)
    out = []
    for line, r in _lines(path, follow_links):
        if isinstance(r, dict) and r.get("kind") not in (None, KIND):
            continue
        where = f"{path}: line {line}"
        if not isinstance(r, dict) or r.get("kind") != KIND:
            raise UserError(f"{where}: not an informativity record")
        r = dict(check(r, where))
        r["_source"] = f"{path.name}:{line}"
        out.append(r)
    return out


# -- per-image decisions ---------------------------------------------------------------------------
def _pack(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes()).decode("ascii")


def _unpack(text: str, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    except (binascii.Error, ValueError, UnicodeEncodeError, AttributeError):
        raise UserError(f"{where}: decisions are not base64 packed bits") from None
    bits = np.unpackbits(raw)
    size = shape[0] * shape[1]
    if bits.size < size or bits.size - size >= 8:
        raise UserError(f"{where}: decisions hold {bits.size} bits, expected {size}")
    return bits[:size].reshape(shape).astype(bool)


def encode_decisions(segment_ids, informative, truth=None, matched=None, iis=None) -> dict[str, Any]:
    """The per-image decisions of a record: (K, N) bool arrays in the plan's order (class by
    class, manifest order within a class), packed; `order` is the sha256 of the segment ids in
    that order, so two records pair image for image only when it matches."""
    informative = np.asarray(informative, dtype=bool)
    order = hashlib.sha256("\n".join(map(str, segment_ids)).encode()).hexdigest()
    out = {"order": order, "shape": list(informative.shape), "encoding": "base64 numpy.packbits, row-major (K, N)",
           "informative": _pack(informative)}
    out["truth"] = None if truth is None else _pack(truth)
    out["class_match"] = None if matched is None else _pack(matched)
    if iis is not None:  # per-image IIS ranks, k / 40 with 20 negatives: exact as bytes

        out["iis_x40"] = base64.b64encode(np.round(np.asarray(iis) * 40).astype(np.uint8).tobytes()).decode("ascii")
    return out


def decisions(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """{order, informative, truth, class_match} with (K, N) bool arrays, or None for a record
    without decisions (format 1-2)."""
    d = record.get("decisions")
    if not d:
        return None
    where = str(record.get("_source") or "record")
    shape = d.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v >= 0 for v in shape)):
        raise UserError(f"{where}: decisions.shape {shape!r} is not [K, N]")
    out = {"order": d.get("order"), "shape": tuple(shape)}
    for field in ("informative", "truth", "class_match"):
        out[field] = None if d.get(field) is None else _unpack(d[field], tuple(shape), f"{where}: decisions.{field}")
    out["iis"] = None
    if d.get("iis_x40"):
        try:
            raw = np.frombuffer(base64.b64decode(d["iis_x40"].encode("ascii"), validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError, AttributeError):
            raise UserError(f"{where}: decisions.iis_x40 is not base64") from None
        if raw.size != shape[0] * shape[1] or raw.max(initial=0) > 40:
            raise UserError(f"{where}: decisions.iis_x40 holds {raw.size} values, expected {shape[0] * shape[1]} in 0..40")
        out["iis"] = raw.reshape(tuple(shape)) / 40.0
    return out


# -- series --------------------------------------------------------------------------------------
def series_key(r: Mapping[str, Any]) -> tuple:
    """What must agree for records to form one series: the same classifiers, store, split,
    seed, samples and protocol (`SERIES_FIELDS`)."""
    return ((r.get("classifiers") or {}).get("sha256"), (r.get("store") or {}).get("hash"), r.get("split"),
            r.get("seed"), r.get("samples"), (r.get("protocol") or {}).get("fingerprint"))


def select(records: Iterable[Mapping[str, Any]], *, classifiers_sha256: str | None, store_hash: str, split: str,
           seed: int, samples: int, protocol_fingerprint: str | None = None) -> list[dict]:
    """The records scored with these classifiers on this store, split, seed and samples (and
    protocol, when given)."""
    wanted = (classifiers_sha256, store_hash, split, seed, samples)
    return [dict(r) for r in records if r.get("kind") == KIND and series_key(r)[:5] == wanted
            and protocol_fingerprint in (None, series_key(r)[5])]


def last_per_epoch(records: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """epoch -> its record; an epoch scored twice (a resumed run): the last record wins."""
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for r in records:
        if r.get("epoch") is not None:
            by_epoch[int(r["epoch"])] = r
    return by_epoch


def series_frame(records: Iterable[Mapping[str, Any]], class_keys: Sequence[str], *, measure: str = "raw_share",
                 d_update_epochs: Iterable[int] | None = None, d_every_epochs: int | None = None):
    """A per-epoch frame (epoch, d_update, <class keys>) of one measure. D-update epochs come from
    `d_update_epochs` (the run's log.csv) when given, else from the records' `d_update`, else
    from `d_every_epochs` (epoch % n == 0)."""
    import pandas as pd

    by_epoch = last_per_epoch(records)
    known = set(int(e) for e in d_update_epochs) if d_update_epochs is not None else None
    rows = []
    for e in sorted(by_epoch):
        r = by_epoch[e]
        if known is not None:
            d = e in known
        elif r.get("d_update") is not None:
            d = bool(r["d_update"])
        elif d_every_epochs:
            d = e % d_every_epochs == 0
        else:
            raise UserError(f"epoch {e}: no record of whether the discriminator was updated")
        row = {"epoch": e, "d_update": int(d)}
        for key in class_keys:
            v = (r.get("classes") or {}).get(key, {}).get(measure)
            row[key] = np.nan if v is None else float(v)
        rows.append(row)
    return pd.DataFrame(rows, columns=["epoch", "d_update", *class_keys])


def summarise(records, protocol, *, d_update_epochs=None, measures: Sequence[str] = MEASURES) -> dict[str, Any]:
    """The paper's series metrics of a run's records for each measure every record has:
    {measure: summary (scoring.metrics.summarise_classes)}."""
    out: dict[str, Any] = {}
    keys = protocol.class_keys
    for measure in measures:
        df = series_frame(records, keys, measure=measure, d_update_epochs=d_update_epochs,
                          d_every_epochs=protocol.training.d_every_epochs)
        if df.empty or df[list(keys)].isna().all().all():
            continue
        summary, _ = metrics.summarise_frame(df, keys, protocol.metrics)
        out[measure] = summary
    return out
