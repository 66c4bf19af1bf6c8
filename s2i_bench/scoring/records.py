"""Metric records: the one owner of their schema, their file and their reading.

`metric-informativity.jsonl` holds one JSON object per line, one per scored translator
(docs/architecture.md, "Metric records"). Written by `append` / `extend` (the writers: under the
file's lock; a line cut by a crash is set aside before the next line goes in), read by `read`
(the one checked reader: every problem names the file and the line), which returns `Record`s:
readers ask a record for what they need by accessor (`r.share(class_key, measure)`,
`r.mean(measure)`, `r.image_metric(name)`, `r.decisions()`, `r.run`, `r.epoch`, ...) and never
spell its keys. Series of records: `scoring.series`.

Format 4 (this version) renamed `generator` to `translator`; formats 1-3 still read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import append_line, dig, read_no_follow, set_aside_cut_line, to_jsonable
from s2i_bench.locks import exclusive_lock
from s2i_bench.runs import MAX_EPOCH, RECORDS, run_of_checkpoint
from s2i_bench.scoring.decisions import unpack_decisions

logger = logging.getLogger(__name__)

RECORDS_NAME = RECORDS
KIND = "informativity"
# 2: format_version, translator input/size; 3: per-image decisions; 4: `generator` renamed `translator`
FORMAT_VERSION = 4
CHECKSUM_SINCE = 3  # records of this format on must carry their checksum (corruption detection, not tamper-proof)
MEASURES = ("raw_share", "corrected_share", "true_share", "class_match_rate")
SERIES_FIELDS = ("classifiers.sha256", "store.hash", "split", "seed", "samples", "protocol.fingerprint")
PRDC_PARTS = ("precision", "recall", "density", "coverage")


@dataclass(frozen=True, eq=False)
class Record:
    """One scored translator, as read back (`read`): what every reader asks of a record, by
    accessor. The JSON layout is docs/architecture.md ("Metric records"); only this class and the
    checks below spell its keys. Records of formats 1-3 read the same (format 4 renamed
    `generator` to `translator`)."""

    data: Mapping[str, Any] = field(repr=False)  # the JSON object as written, never changed
    source: str = ""  # "<file name>:<line>", for messages

    # -- what was scored --------------------------------------------------------------------------
    @property
    def translator(self) -> Mapping[str, Any]:
        """path, sha256, kind, epoch, embedding_dim, run, plugin, inputs, native_size (+ a loader's keys)."""
        return self.data.get("translator") or self.data.get("generator") or {}

    @property
    def translator_kind(self) -> str | None:
        return self.translator.get("kind")

    @property
    def translator_name(self) -> str | None:
        """A reference translator's or plugin's own name, if it has one."""
        return self.translator.get("name")

    @property
    def translator_path(self) -> str | None:
        return self.translator.get("path")

    @property
    def translator_sha256(self) -> str | None:
        return self.translator.get("sha256")

    @property
    def embedding_dim(self) -> int | None:
        dim = self.translator.get("embedding_dim")
        return dim if isinstance(dim, int) and not isinstance(dim, bool) else None

    @property
    def run(self) -> str:
        """The run the record belongs to: its `run`, else the translator's, else the run folder of
        its checkpoint path (`RUN/checkpoints/generator-E.pt`), else the file's stem."""
        for name in (self.data.get("run"), self.translator.get("run")):
            if name:
                return str(name)
        return run_of_checkpoint(str(self.translator_path or "unnamed"))

    @property
    def epoch(self) -> int | None:
        return self.data.get("epoch")

    @property
    def d_update(self) -> bool | None:
        d = self.data.get("d_update")
        return None if d is None else bool(d)

    # -- how it was scored ------------------------------------------------------------------------
    @property
    def split(self) -> str | None:
        return self.data.get("split")

    @property
    def seed(self) -> int | None:
        return self.data.get("seed")

    @property
    def samples(self) -> int | None:
        return self.data.get("samples")

    @property
    def protocol(self) -> Mapping[str, Any]:
        """name, version, fingerprint."""
        return self.data.get("protocol") or {}

    @property
    def store(self) -> Mapping[str, Any]:
        """path, hash, split_policy, leaky, protocol."""
        return self.data.get("store") or {}

    @property
    def store_hash(self) -> str | None:
        return self.store.get("hash")

    @property
    def split_policy(self) -> str | None:
        return self.store.get("split_policy")

    @property
    def leaky(self) -> bool:
        return bool(self.store.get("leaky"))

    @property
    def classifiers(self) -> Mapping[str, Any]:
        """path, sha256, source, protocol, store_hash, class_match."""
        return self.data.get("classifiers") or {}

    @property
    def classifiers_sha256(self) -> str | None:
        return self.classifiers.get("sha256")

    @property
    def series_key(self) -> tuple:
        """What must agree for records to form one series (`SERIES_FIELDS`): the classifiers,
        store, split, seed, samples and protocol."""
        return (self.classifiers_sha256, self.store_hash, self.split, self.seed, self.samples,
                self.protocol.get("fingerprint"))

    @property
    def metrics(self) -> list[str]:
        """The metrics scored (informativity, and the image metrics asked for)."""
        return list(self.data.get("metrics") or ["informativity"])

    @property
    def num_sounds(self) -> int:
        return int(self.data.get("num_sounds") or sum(int(self.cls(k).get("n_sounds") or 0) for k in self.class_keys))

    @property
    def seconds(self) -> float | None:
        """How long the scoring took."""
        return self.data.get("seconds")

    @property
    def code_version(self) -> str | None:
        return self.data.get("code_version")

    @property
    def sample_sheet(self) -> str | None:
        return self.data.get("sample_sheet")

    # -- the numbers ------------------------------------------------------------------------------
    @property
    def class_keys(self) -> list[str]:
        """The classes the record has, in its (the protocol's) order."""
        return list(self.data["classes"])

    def cls(self, class_key: str) -> Mapping[str, Any]:
        """One class's results (n_sounds, n_images, raw_share, raw_ci, corrected_share,
        corrected_ci, sensitivity, specificity, class_match_rate, true_share, ...); {} if absent."""
        return self.data["classes"].get(class_key) or {}

    def share(self, class_key: str, measure: str = "raw_share") -> float | None:
        v = self.cls(class_key).get(measure)
        return None if v is None else float(v)

    def mean(self, measure: str = "raw_share") -> float | None:
        """The mean over the scored classes; the judge's truth falls back on the mean over every
        class (`mean_all_classes`) when the scored classes have none."""
        v = dig(self.data, "mean", measure)
        if v is None and measure == "true_share":
            v = dig(self.data, "mean_all_classes", measure)
        return None if v is None else float(v)

    def mean_all_classes(self, measure: str = "true_share") -> float | None:
        """The mean over every class of the protocol (the scored classes' mean when the record has
        no such mean): what image-set metrics, which see every class, are compared with."""
        v = dig(self.data, "mean_all_classes", measure)
        if v is None:
            v = dig(self.data, "mean", measure)
        return None if v is None else float(v)

    def mean_result(self) -> dict[str, Any]:
        """The means block as written (raw_share, corrected_share, corrected_ci, class_match_rate,
        true_share, classes)."""
        return dict(self.data.get("mean") or {})

    def mean_ci(self, measure: str = "corrected_share") -> list[float] | None:
        """The interval of a mean (the corrected share's, where the record has one)."""
        return dig(self.data, "mean", "corrected_ci") if measure == "corrected_share" else None

    def has_measure(self, measure: str) -> bool:
        return any(self.share(k, measure) is not None for k in self.class_keys)

    @property
    def image_metrics(self) -> Mapping[str, Any]:
        """{metric: {value, ci, ...}, "extractor": ref, ...}; {} without image metrics."""
        return self.data.get("image_metrics") or {}

    def image_metric(self, name: str) -> float | None:
        """The value of an image metric: "fid", "kid", "iis", "ais", or a PRDC part
        ("precision", "recall", "density", "coverage")."""
        v = dig(self.image_metrics, "prdc", name, "value") if name in PRDC_PARTS else None
        if v is None:
            v = dig(self.image_metrics, name, "value")
        return None if v is None else float(v)

    @property
    def has_decisions(self) -> bool:
        return bool(self.data.get("decisions"))

    def image_metric_ci(self, name: str) -> list[float] | None:
        """The bootstrap interval of an image-set metric ("fid", "kid", ...), or None."""
        return dig(self.image_metrics, name, "ci") or None

    def image_metric_warning(self, name: str) -> str | None:
        return dig(self.image_metrics, name, "warning")

    @property
    def feature_space_name(self) -> str | None:
        return dig(self.image_metrics, "extractor", "name")

    @property
    def feature_space(self) -> str | None:
        """What the image metrics were computed on (the extractor's identity): two records'
        image metrics compare only when it is the same."""
        return dig(self.image_metrics, "extractor", "sha256")

    def decisions(self) -> dict[str, Any] | None:
        """{order, shape, informative, truth, class_match, iis} with (K, N) arrays (plan order:
        class by class, `n_sounds` each), or None for a record without decisions (format 1-2)."""
        return unpack_decisions(self.data.get("decisions"), self.source or "record")

    def n_sounds(self, class_key: str) -> int:
        return int(self.cls(class_key).get("n_sounds") or 0)

    def n_images(self, class_key: str) -> int:
        return int(self.cls(class_key).get("n_images") or 0)

    @property
    def total_images(self) -> int:
        """Every scored image, over every class (what the judge saw)."""
        return sum(self.n_images(k) for k in self.class_keys)

    def class_slices(self, class_keys=None) -> dict[str, slice]:
        """Each class's positions in the decisions: class by class, `n_sounds` each, in the order
        of `class_keys` (default: the record's, which is the protocol's)."""
        out, start = {}, 0
        for k in (self.class_keys if class_keys is None else class_keys):
            n = self.n_sounds(k)
            out[k] = slice(start, start + n)
            start += n
        return out

    def to_dict(self) -> dict[str, Any]:
        """The record as written (for `--json` and for writing it again)."""
        return dict(self.data)


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
