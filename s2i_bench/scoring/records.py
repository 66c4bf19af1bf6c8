"""Metric records: the one owner of their schema, their file and their reading.

`metric-informativity.jsonl` holds one JSON object per line, one per scored translator
(docs/architecture.md, "Metric records"). Written by `append` / `extend` (the writers: under the
file's lock; a line cut by a crash is set aside before the next line goes in), read by `read`
(the one checked reader: every problem names the file and the line), which returns `Record`s:
readers ask a record for what they need by accessor (`r.share(class_key, measure)`,
`r.mean(measure)`, `r.image_metric(name)`, `r.decisions()`, `r.run`, `r.epoch`, ...) and never
spell its keys. Series of records: `scoring.series`.

Format 4 renamed `generator` to `translator`; format 5 (this version) adds the optional `audit`
block (`s2i-bench label-audit estimate`: the audited share from labels plus the classifier, recomputed
and checked on every read); formats 1-4 still read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import append_line, atomic_write_text, dig, read_no_follow, set_aside_cut_line, to_jsonable
from s2i_bench.locks import exclusive_lock
from s2i_bench.runs import MAX_EPOCH, RECORDS
from s2i_bench.scoring import ppi
from s2i_bench.scoring.decisions import unpack_decisions
from s2i_bench.scoring.record_type import AUDITED, PRDC_PARTS, Record  # noqa: F401 (records.Record)

logger = logging.getLogger(__name__)

RECORDS_NAME = RECORDS
KIND = "informativity"
# 2: format_version, translator input/size; 3: per-image decisions; 4: `generator` renamed `translator`;
# 5: the optional `audit` block, and each image's P(informative) in `decisions` (optional too)
FORMAT_VERSION = 5
CHECKSUM_SINCE = 3  # records of this format on must carry their checksum (corruption detection, not tamper-proof)
MEASURES = ("raw_share", "corrected_share", "true_share", "class_match_rate")
SERIES_FIELDS = ("classifiers.sha256", "store.hash", "split", "seed", "samples", "protocol.fingerprint")


# -- writing ---------------------------------------------------------------------------------------
def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def checksum(record: Mapping[str, Any]) -> str:
    """sha256 of a record's canonical JSON (without its own checksum): a record damaged after it
    was written no longer matches and is refused by `read`. Unkeyed: anyone can recompute it, so
    it detects corruption, not tampering."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(to_jsonable(body), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


APPEND_WAIT_S = 120.0


def append(path: str | Path, record: Mapping[str, Any] | Record) -> None:
    """Append one record as one line, under the file's lock (`fileio.append_line`: never through
    a link; a last line cut by a crash is moved to `<file>.cut-N` first, with a warning)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: exists and is not a file; give --out a .jsonl file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = to_jsonable(record.to_dict() if isinstance(record, Record) else dict(record))
    record["checksum"] = checksum(record)
    line = (json.dumps(record, sort_keys=False) + "\n").encode("utf-8")
    # one line under the lock: a concurrent writer (another shard, another run) waits its turn
    with exclusive_lock(_lock_path(path), f"records file {path}", wait_s=APPEND_WAIT_S):
        append_line(path, line)  # never through a link; a line cut by a crash is set aside first


def extend(path: str | Path, new: Iterable[Mapping[str, Any] | Record]) -> int:
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
            r = to_jsonable({k: v for k, v in (r.to_dict() if isinstance(r, Record) else r).items() if k != "checksum"})
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


def replace_all(path: str | Path, new: Iterable[Mapping[str, Any] | Record]) -> int:
    """Write `new` as the whole records file (each with its checksum), atomically under the file's
    lock: for a file a command owns and remakes (an audit's `records.jsonl`). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in new:
        r = to_jsonable({k: v for k, v in (r.to_dict() if isinstance(r, Record) else r).items() if k != "checksum"})
        r["checksum"] = checksum(r)
        lines.append(json.dumps(r, sort_keys=False) + "\n")
    with exclusive_lock(_lock_path(path), f"records file {path}", wait_s=APPEND_WAIT_S):
        atomic_write_text(path, "".join(lines))
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
                logger.warning("%s: line %d was cut by an interrupted write and is not a whole record; skipped (the "
                               "next `s2i-bench score` into this file moves it to %s.cut-N)", path, i, path.name)
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
        for name in ("corrected_ci", "corrected_ci_lr", "corrected_ci_bootstrap"):
            ci = c.get(name)
            if ci is not None and (not isinstance(ci, list) or len(ci) != 2 or not all(_share_ok(b) for b in ci)):
                raise UserError(f"{where}: classes.{key}.{name} = {ci!r} is not an interval in [0, 1]")
    for name in ("store", "classifiers", "generator", "translator", "protocol"):
        if r.get(name) is not None and not isinstance(r[name], dict):
            raise UserError(f"{where}: '{name}' is not an object")
    if "checksum" not in r and version >= CHECKSUM_SINCE:
        raise UserError(f"{where}: no checksum; every record of format {CHECKSUM_SINCE} or later carries one (it was "
                        f"removed, or the record was not written by `s2i-bench score`)")
    if "checksum" in r and r["checksum"] != checksum(r):
        raise UserError(f"{where}: the record was changed or damaged after `s2i-bench score` wrote it (its checksum "
                        f"does not match); score the translator again")
    if r.get("attributes") is not None:
        check_attributes(r["attributes"], f"{where}: attributes")
    cross_check(r, where)
    return r


def check_attributes(block: Any, where: str) -> None:
    """The attribute scores (`scoring.attributes`): every dimension, class and part has a `value`
    and a `ci` that are null or in [-1, 1] (rank correlations; shares lie in [0, 1] within)."""
    def ok(v):
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and -1.0 <= v <= 1.0)

    dims = block.get("dimensions") if isinstance(block, dict) else None
    if not isinstance(dims, dict):
        raise UserError(f"{where}: not an attribute-score block (no 'dimensions')")
    for name, dim in dims.items():
        entries = [(name, dim)] + [(f"{name}.{k}", e) for part in ("classes", "parts")
                                   for k, e in ((dim.get(part) or {}) if isinstance(dim, dict) else {}).items()]
        for label, e in entries:
            ci = e.get("ci") if isinstance(e, dict) else None
            if not isinstance(e, dict) or not ok(e.get("value")) or not (
                    ci is None or (isinstance(ci, list) and len(ci) == 2 and all(ok(b) and b is not None for b in ci))):
                raise UserError(f"{where}.dimensions.{label}: value or ci is not null or in [-1, 1]")


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
            vals = [dig(classes, k, m) for k in keys]
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
    d = unpack_decisions(r.get("decisions"), where)
    k, n = d["shape"]
    classes = r["classes"]
    sizes = [(key, c.get("n_sounds")) for key, c in classes.items()]
    if not all(isinstance(s, int) for _, s in sizes) or sum(s for _, s in sizes) != n:
        raise UserError(f"{where}: the classes' n_sounds add up to {sum(s or 0 for _, s in sizes)}, the decisions "
                        f"hold {n} sounds: the record was edited or damaged")
    start = 0
    for key, size in sizes:
        c = classes[key]
        for part, measure in (("informative", "raw_share"), ("truth", "true_share"),
                              ("class_match", "class_match_rate")):
            v = c.get(measure)
            if v is None or d[part] is None or size == 0:
                continue
            actual = float(d[part][:, start:start + size].mean())
            if abs(actual - float(v)) > 1e-9:
                raise UserError(f"{where}: classes.{key}.{measure} = {v!r}, but its per-image decisions give "
                                f"{actual!r}: the record was edited or damaged")
        start += size
    _check_audit(r, where)


# -- the audit block (format 5) ----------------------------------------------------------------------
AUDIT_SCORES = ("decision", "probability")


def _audit_class_numbers(est: ppi.Estimate) -> dict[str, Any]:
    return {AUDITED: est.estimate, "audited_ci": list(est.ci), "half_width": est.half_width, "se": est.se,
            "lambda": est.lam, "n_audited": est.n, "n_images": est.N}


def audit_estimates(r: Mapping[str, Any], positions: Mapping[str, Any], votes: Mapping[str, Any], score: str,
                    alpha: float, where: str) -> tuple[dict[str, ppi.Estimate], ppi.Estimate]:
    """The audited shares of record `r` (`scoring.ppi.finite_population` per class, `mean_of` over
    them) from the audited flat positions (k * N + n) and each image's votes [informative, total]
    per class. The audit's estimate and the reader's check both come from here."""
    d = unpack_decisions(r.get("decisions"), where)
    if d is None:
        raise UserError(f"{where}: an audit needs the record's per-image decisions")
    if score not in AUDIT_SCORES:
        raise UserError(f"{where}: audit.score {score!r} is not one of {AUDIT_SCORES}")
    f = d["informative"].astype(np.float64) if score == "decision" else d.get("probability")
    if f is None:
        raise UserError(f"{where}: audit.score is 'probability' but the decisions hold no probabilities")
    k, n = d["shape"]
    f = np.asarray(f, dtype=np.float64).reshape(-1)  # (K * N,)
    starts, start = {}, 0
    for key, c in r["classes"].items():
        starts[key] = (start, start + int(c.get("n_sounds") or 0))
        start = starts[key][1]
    out = {}
    for key in positions:
        if key not in starts:
            raise UserError(f"{where}: audit.classes.{key} is not a class of the record")
        everyone = (np.arange(k)[:, None] * n + np.arange(*starts[key])[None, :]).ravel()
        pos, v = positions[key], votes.get(key)
        if not (isinstance(pos, list) and isinstance(v, list) and len(pos) == len(v) and pos
                and all(isinstance(x, int) and not isinstance(x, bool) for x in pos) and len(set(pos)) == len(pos)
                and set(pos) <= set(everyone.tolist())):
            raise UserError(f"{where}: audit.classes.{key}: positions must be distinct images of the class, one "
                            f"vote pair each")
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (len(pos), 2) or (v[:, 1] < 1).any() or (v[:, 0] < 0).any() or (v[:, 0] > v[:, 1]).any():
            raise UserError(f"{where}: audit.classes.{key}.votes must be [informative, total] pairs, total >= 1")
        out[key] = ppi.finite_population(v[:, 0] / v[:, 1], f[pos], f[everyone], alpha=alpha)
    if not out:
        raise UserError(f"{where}: the audit has no class")
    return out, ppi.mean_of(list(out.values()), alpha=alpha)


def audit_block(r: Mapping[str, Any], *, positions: Mapping[str, list[int]], votes: Mapping[str, list[list[int]]],
                score: str, alpha: float, about: Mapping[str, Any]) -> dict[str, Any]:
    """The `audit` block of an audited record: `about` (who labelled, the audit's seed and key,
    the rule) and the numbers of `audit_estimates`, with the positions and votes they come from."""
    per_class, mean = audit_estimates(r, positions, votes, score, alpha, "audit")
    classes = {key: {**_audit_class_numbers(est), "positions": list(positions[key]), "votes": list(votes[key])}
               for key, est in per_class.items()}
    mean_numbers = {k: v for k, v in _audit_class_numbers(mean).items() if k not in ("lambda", "n_images")}
    return {**about, "of": r.get("checksum"), "estimator": ppi.ESTIMATOR, "score": score, "alpha": alpha,
            "classes": classes, "mean": {**mean_numbers, "classes": list(classes)}}


def _check_audit(r: Mapping[str, Any], where: str) -> None:
    """An audit block's numbers are those its positions, votes and the record's decisions give."""
    a = r.get("audit")
    if a is None:
        return
    classes = a.get("classes") if isinstance(a, dict) else None
    alpha = a.get("alpha") if isinstance(a, dict) else None
    if not isinstance(classes, dict) or not all(isinstance(c, dict) for c in classes.values()) \
            or not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
        raise UserError(f"{where}: 'audit' must hold classes and alpha in (0, 1)")
    per_class, mean = audit_estimates(r, {k: c.get("positions") for k, c in classes.items()},
                                      {k: c.get("votes") for k, c in classes.items()}, a.get("score"), alpha, where)
    pairs = [(f"audit.classes.{k}", classes[k], _audit_class_numbers(e)) for k, e in per_class.items()]
    pairs.append(("audit.mean", a.get("mean") or {}, _audit_class_numbers(mean)))
    for name, have, want in pairs:
        for field in (AUDITED, "audited_ci", "half_width"):
            got, exp = have.get(field), want[field]
            if got is None or not np.allclose(np.asarray(got, dtype=float), np.asarray(exp, dtype=float),
                                              rtol=0, atol=1e-9):
                raise UserError(f"{where}: {name}.{field} = {got!r}, but its labels and the record's decisions "
                                f"give {exp!r}: the record was edited or damaged")


def read(path: str | Path, follow_links: bool = True) -> list[Record]:
    """The informativity records of one records file, checked, in file order, each with its
    source ("<file name>:<line>"). Records of other kinds are skipped. `follow_links=False` for
    files found inside a folder (a run folder's records): a link there is refused."""
    path = Path(path)
    out = []
    for line, r in _lines(path, follow_links):
        if isinstance(r, dict) and r.get("kind") not in (None, KIND):
            continue
        where = f"{path}: line {line}"
        if not isinstance(r, dict) or r.get("kind") != KIND:
            raise UserError(f"{where}: not an informativity record")
        out.append(Record(check(r, where), f"{path.name}:{line}"))
    return out
