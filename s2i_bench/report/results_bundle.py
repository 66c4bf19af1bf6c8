"""Submission bundles: one system's results in one zip (`s2i-bench bundle-results`), and their
verification when a leaderboard reads them (`open_results_bundle`).

    bundle_results(RUN_OR_RECORDS, OUT.zip)     -> the manifest written
    open_results_bundle(OUT.zip)                -> VerifiedBundle (records, provenance, checks)

Layout of the zip (names owned here):

    manifest.json                 format "s2i-bench-results" v1: the system, its identities, every
                                  record (member, line, checksum, sheet) and every file's sha256
    records.jsonl                 every informativity record of the system, as written by `score`
    provenance/run-options.json   the run's options (code, library versions, command line), if a run
    provenance/run-log.csv        the run's training log, if a run
    sheets/<name>.npz             the sample sheets the records name

What a bundle proves, and what it cannot. The hashes in the manifest detect a file changed after
packing, but anyone can recompute them (and the records' checksums, which are unkeyed), so they
are corruption checks, not signatures. A bundle whose hashes were recomputed after an edit is
still refused when its records disagree with themselves (`records.cross_check`: shares against
counts, means against classes, shares against the packed per-image decisions), with the manifest
(record list, identities), with the run's options (the protocol's fingerprint, recomputed from the
full protocol), or with the shipped protocol of the same name and version. An edit made
consistently everywhere, decisions included, cannot be told from a real scoring: only scoring the
translator again (or a signature by someone trusted) can prove that.

Reading a stranger's bundle: the strict zip reader (`s2i_bench.archive`) refuses duplicate names,
path traversal, encryption, unknown compression, overlapping entries and bombs before any member
is read; members are read into memory with a hard cap (nothing is extracted to disk); a name
outside the layout is refused; sample sheets (zips themselves) go through the strict reader too
and are loaded without pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.archive import ArchiveError, MiB, StrictZip
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_path, dig, sha256_file, to_jsonable
from s2i_bench.protocol import available_protocols, load_protocol, protocol_from_dict
from s2i_bench.provenance import code_version, library_versions
from s2i_bench.runs import RunFolder, is_run_folder, record_files_in
from s2i_bench.scoring import records as R
from s2i_bench.scoring.records import Record

logger = logging.getLogger(__name__)

FORMAT = "s2i-bench-results"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS_MEMBER = "records.jsonl"
OPTIONS_MEMBER = "provenance/run-options.json"
LOG_MEMBER = "provenance/run-log.csv"
SHEET_DIR = "sheets/"
_SHEET_NAME = re.compile(r"^sheets/[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.npz$")
# What a bundle may hold, and how much of it is read into memory (declared sizes, checked before
# any member is read; the strict reader also stops a member that expands past its declared size).
LIMITS = {MANIFEST: 16 * MiB, RECORDS_MEMBER: 512 * MiB, OPTIONS_MEMBER: 16 * MiB, LOG_MEMBER: 64 * MiB}
MAX_SHEET = 256 * MiB
MAX_SHEETS = 4096
MAX_TOTAL = 2048 * MiB
MAX_BUNDLE_FILE = 2048 * MiB
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same records give the same bytes
PROOF = ("sha256 of every file and each record's checksum: they detect a file changed after packing, not a "
         "deliberate edit (anyone can recompute them); the leaderboard also checks each record against itself, "
         "against this manifest, the run's options and the shipped protocol")


def identity(r: Record) -> dict[str, Any]:
    """What a record's numbers are valid for (what systems must share to stand on one board): the
    protocol, classifiers, store, split, images per sound, and the image metrics' feature space."""
    return {"protocol": dict(r.protocol), "classifiers_sha256": r.classifiers_sha256, "store_hash": r.store_hash,
            "split": r.split, "samples": r.samples, "feature_space": r.feature_space,
            "feature_space_name": r.feature_space_name}


def _identity_key(ident: dict[str, Any]) -> str:
    return json.dumps(to_jsonable(ident), sort_keys=True)


# -- packing -------------------------------------------------------------------------------------------
@dataclass
class _Source:
    name: str
    kind: str  # "run" or "records"
    records: list[Record]
    base: Path  # where relative sheet paths are looked up
    options: bytes | None = None
    log: bytes | None = None


def _read_source(source: Path, run: str | None) -> _Source:
    """The records (and, for a run folder, options and log) of one system."""
    if not source.exists():
        raise UserError(f"{source}: not found (a run folder or a metric-*.jsonl records file)")
    options = log = None
    if source.is_dir() and is_run_folder(source):
        folder = RunFolder(source)
        recs = [r for p in folder.record_files() for r in R.read(p, follow_links=False)]
        options = folder.options_path.read_bytes()
        log = folder.log_path.read_bytes() if folder.log_path.is_file() else None
        kind, base = "run", source
    elif source.is_dir():
        files = record_files_in(source)
        if not files:
            raise UserError(f"{source}: neither a run folder (options.json) nor a folder of metric-*.jsonl records")
        recs = [r for p in files for r in R.read(p, follow_links=False)]
        kind, base = "records", source
    else:
        recs, kind, base = R.read(source), "records", source.parent
    if run is not None:
        recs = [r for r in recs if r.run == run]
    names = sorted({r.run for r in recs})
    if not names:
        raise UserError(f"{source}: no informativity records" + (f" of run {run!r}" if run else ""))
    if len(names) > 1:
        raise UserError(f"{source}: records of {len(names)} translators ({', '.join(names[:6])}); a bundle holds one "
                        "system: pick one with --run NAME")
    for r in recs:
        version = r.to_dict().get("format_version", 1)
        if version < R.CHECKSUM_SINCE or not r.has_decisions:
            raise UserError(f"{source}: record {r.source} is of format {version}, without a "
                            f"checksum or per-image decisions, so it cannot be verified; score the translator again "
                            f"with this s2i-bench")
    return _Source(names[0], kind, recs, base, options, log)


def _find_sheet(r: Record, base: Path) -> Path | None:
    """The sample sheet a record names: absolute, or relative to where the scoring ran or to the
    records' folder (as the report finds it)."""
    name = r.sample_sheet
    if not name:
        return None
    p = Path(name)
    for c in ([p] if p.is_absolute() else [p, base / p, base / p.name]):
        if c.is_file():
            return c
    return None


def _sheet_member(path: Path, taken: dict[str, str], digest: str) -> str:
    """A layout name for a sheet (`sheets/<safe name>.npz`), unique within the bundle."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.")[:180] or "sheet"
    name, i = f"{SHEET_DIR}{stem}.npz", 1
    while name in taken and taken[name] != digest:
        i += 1
        name = f"{SHEET_DIR}{stem}-{i}.npz"
    return name


def _pack(src: _Source) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The members (name -> bytes) and the manifest of a bundle."""
    members: dict[str, bytes] = {}
    lines, listed, sheets = [], [], {}
    for i, r in enumerate(src.records, start=1):
        lines.append(json.dumps(r.to_dict()) + "\n")
        sheet = _find_sheet(r, src.base)
        member = None
        if sheet is not None:
            digest = sha256_file(sheet)
            member = _sheet_member(sheet, sheets, digest)
            if member not in members:
                members[member] = sheet.read_bytes()
                sheets[member] = digest
        elif r.sample_sheet:
            logger.warning("%s: record %s names the sample sheet %s, which is not there; packed without it",
                           src.name, r.source, r.sample_sheet)
        listed.append({"member": RECORDS_MEMBER, "line": i, "checksum": r.to_dict().get("checksum"), "epoch": r.epoch,
                       "split": r.split, "sample_sheet": member})
    members[RECORDS_MEMBER] = "".join(lines).encode("utf-8")
    if src.options is not None:
        members[OPTIONS_MEMBER] = src.options
    if src.log is not None:
        members[LOG_MEMBER] = src.log
    identities = {_identity_key(identity(r)): identity(r) for r in src.records}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "system": src.name,
                "source": {"kind": src.kind}, "identities": [identities[k] for k in sorted(identities)],
                "records": listed,
                "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                          for n, b in sorted(members.items())},
                "packed_with": {"code_version": code_version(), "libraries": library_versions()},
                "what_the_hashes_prove": PROOF}
    return members, manifest


def _write_zip(out: Path, members: dict[str, bytes], manifest: dict[str, Any]) -> None:
    """The zip, deterministic: fixed times and order, JSON and CSV deflated, sheets stored (they
    are compressed already)."""
    ordered = [(MANIFEST, (json.dumps(to_jsonable(manifest), indent=2) + "\n").encode("utf-8"))]
    ordered += sorted(members.items())
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w") as z:
        for name, data in ordered:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED if name.startswith(SHEET_DIR) else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)


def bundle_results(source: str | Path, out: str | Path, *, run: str | None = None,
                   overwrite: bool = False) -> dict[str, Any]:
    """Pack one system (a run folder, a records file, or a folder of them) into OUT (a .zip):
    its records, the run's options and log, the sample sheets its records name, and a manifest
    with every file's sha256. Returns the manifest."""
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise UserError(f"{out}: the bundle is a zip file; give --out a name ending in .zip")
    if out.is_dir() or (out.exists() and not out.is_file()):
        raise UserError(f"{out}: exists and is not a file; choose another --out")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    src = _read_source(Path(source), run)
    members, manifest = _pack(src)
    _write_zip(out, members, manifest)
    return manifest


def bundle_command(source, out, *, run: str | None = None, overwrite: bool = False) -> None:
    """`s2i-bench bundle-results`: the bundle written, and one line on what it holds."""
    manifest = bundle_results(source, out, run=run, overwrite=overwrite)
    sheets = sum(1 for n in manifest["files"] if n.startswith(SHEET_DIR))
    print(f"bundle-results: {len(manifest['records'])} records of {manifest['system']}, {sheets} sample sheet(s) "
          f"-> {out} (sha256 {sha256_file(Path(out))})")


# -- verifying -----------------------------------------------------------------------------------------
@dataclass
class VerifiedBundle:
    """A bundle that passed every check (`open_results_bundle`)."""

    path: Path
    sha256: str
    system: str
    manifest: dict[str, Any]
    records: list[Record]
    options: dict[str, Any] | None
    sheets: dict[str, int] = field(default_factory=dict)  # member -> images in it
    checks: list[str] = field(default_factory=list)  # what was verified, in words
    notes: list[str] = field(default_factory=list)


def _refuse(path: Path, reason: str) -> UserError:
    return UserError(f"{path}: bundle refused: {reason}")


def _layout(z: StrictZip, path: Path) -> None:
    """Every member is a name of the layout, within its size limit, before any is read."""
    names = z.names
    if MANIFEST not in names:
        raise _refuse(path, f"no {MANIFEST} (not a bundle written by `s2i-bench bundle-results`)")
    sheets = [n for n in names if n.startswith(SHEET_DIR)]
    if len(sheets) > MAX_SHEETS:
        raise _refuse(path, f"{len(sheets)} sample sheets, more than the {MAX_SHEETS} read")
    total = 0
    for n in names:
        limit = LIMITS.get(n, MAX_SHEET if _SHEET_NAME.match(n) else None)
        if limit is None:
            raise _refuse(path, f"member {n!r} is not part of a results bundle (allowed: {', '.join(LIMITS)}, "
                                f"{SHEET_DIR}<name>.npz)")
        size = z.entry(n).size
        if size > limit:
            raise _refuse(path, f"member {n!r} declares {size} bytes, more than the {limit} read")
        total += size
    if total > MAX_TOTAL:
        raise _refuse(path, f"its members declare {total} bytes in all, more than the {MAX_TOTAL} read")


def _json(data: bytes, path: Path, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _refuse(path, f"{what} is not valid UTF-8 JSON") from None


def _manifest(z: StrictZip, path: Path) -> dict[str, Any]:
    m = _json(z.read(MANIFEST, LIMITS[MANIFEST]), path, MANIFEST)
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise _refuse(path, f"{MANIFEST} is not a results manifest (format {FORMAT!r})")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise _refuse(path, f"{MANIFEST}: format_version {version!r} is not one this s2i-bench reads "
                            f"(1..{FORMAT_VERSION}); update s2i-bench")
    files, listed, idents = m.get("files"), m.get("records"), m.get("identities")
    if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and _HEX64.match(v["sha256"])
            and isinstance(v.get("size"), int) for v in files.values()):
        raise _refuse(path, f"{MANIFEST}: 'files' is not a map of name -> {{sha256, size}}")
    if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
        raise _refuse(path, f"{MANIFEST}: 'records' is not a list of records")
    if not isinstance(idents, list) or not all(isinstance(e, dict) for e in idents):
        raise _refuse(path, f"{MANIFEST}: 'identities' is not a list")
    if not isinstance(m.get("system"), str) or not m["system"].strip() or len(m["system"]) > 200:
        raise _refuse(path, f"{MANIFEST}: 'system' is not a name")
    return m


def _check_files(z: StrictZip, path: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Every member is listed with its sha256 and size, every listed file is there: the bytes."""
    present = set(z.names) - {MANIFEST}
    listed = set(manifest["files"])
    if present - listed:
        raise _refuse(path, f"{sorted(present - listed)[0]!r} is in the zip but not in the manifest (added after "
                            "packing)")
    if listed - present:
        raise _refuse(path, f"{sorted(listed - present)[0]!r} is listed in the manifest but missing from the zip")
    data = {}
    for n in sorted(present):
        b = z.read(n, LIMITS.get(n, MAX_SHEET))
        want = manifest["files"][n]
        if len(b) != want["size"] or hashlib.sha256(b).hexdigest() != want["sha256"]:
            raise _refuse(path, f"{n!r} was changed after packing (its sha256 differs from the manifest's)")
        data[n] = b
    return data


def _records(data: bytes, path: Path) -> list[Record]:
    """The records member, each record checked as `records.read` checks a file (checksum, the
    record against itself); of format 3 or later only (checksum and decisions)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(path, f"{RECORDS_MEMBER} is not UTF-8 text") from None
    out = []
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{RECORDS_MEMBER} line {i}"
        obj = _json(line.encode("utf-8"), path, where)
        if not isinstance(obj, dict) or obj.get("kind") != R.KIND:
            raise _refuse(path, f"{where} is not an informativity record")
        try:
            R.check(obj, where)  # the checksum, and the record against itself (records.cross_check)
        except UserError as e:
            raise _refuse(path, str(e)) from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):  # a stranger's values of odd types
            raise _refuse(path, f"{where} is not a record `score` writes (values of the wrong type)") from None
        if "checksum" not in obj or not obj.get("decisions"):
            raise _refuse(path, f"{RECORDS_MEMBER} line {i}: a record without checksum or per-image decisions "
                                "(format 1-2) cannot be verified")
        out.append(Record(obj, f"{path.name}:{RECORDS_MEMBER}:{i}"))
    if not out:
        raise _refuse(path, f"{RECORDS_MEMBER} holds no records")
    return out


def _check_listing(path: Path, manifest: dict[str, Any], recs: list[Record], files: dict[str, bytes]) -> None:
    """The manifest's record list and identities are those of the records."""
    listed = manifest["records"]
    if len(listed) != len(recs):
        raise _refuse(path, f"the manifest lists {len(listed)} records, {RECORDS_MEMBER} holds {len(recs)}")
    for i, (entry, r) in enumerate(zip(listed, recs), start=1):
        where = (entry.get("member"), entry.get("line"), entry.get("checksum"))
        if where != (RECORDS_MEMBER, i, r.to_dict()["checksum"]):
            raise _refuse(path, f"record {i}: its checksum differs from the manifest's (the record was replaced "
                                "after packing)")
        sheet = entry.get("sample_sheet")
        if sheet is not None and sheet not in files:
            raise _refuse(path, f"record {i} names the sample sheet {sheet!r}, which the bundle does not hold")
    names = {r.run for r in recs}
    if names != {manifest["system"]}:
        raise _refuse(path, f"the manifest names the system {manifest['system']!r}, its records are of "
                            f"{', '.join(sorted(names))}")
    have = {_identity_key(identity(r)): identity(r) for r in recs}
    said = {_identity_key(e): e for e in manifest["identities"]}
    if set(have) != set(said):
        extra = sorted(set(said) - set(have))
        a = said[extra[0]] if extra else have[sorted(set(have) - set(said))[0]]
        b = next(iter(have.values())) if extra else next(iter(said.values()), {})
        differ = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)] or ["identity"]
        raise _refuse(path, f"mismatched identities: the manifest and the records disagree on what they were "
                            f"scored with ({', '.join(differ)})")


def _check_protocols(path: Path, recs: list[Record], options: dict | None, notes: list[str]) -> None:
    """The records' protocol agrees with the run's options (the fingerprint recomputed from the
    full protocol) and with the shipped protocol of that name and version."""
    fingerprints = {r.protocol.get("fingerprint") for r in recs}
    if options is not None:
        said = dig(options, "protocol", "fingerprint")
        if said is None:
            notes.append("the run's options name no protocol: the records' protocol was not checked against them")
        elif said not in fingerprints:
            raise _refuse(path, f"mismatched identities: the run's options name protocol {said!r}, its records "
                                f"{', '.join(sorted(map(str, fingerprints)))}")
        if said is not None and isinstance(options.get("protocol_full"), dict):
            try:
                actual = protocol_from_dict(options["protocol_full"]).fingerprint
            except (UserError, TypeError, ValueError, KeyError, AttributeError) as e:  # a stranger's dict
                raise _refuse(path, f"the run's full protocol does not load ({str(e)[:200]})") from None
            if actual != said:
                raise _refuse(path, f"mismatched identities: the run's full protocol has fingerprint {actual}, not "
                                    f"the {said} its records and options claim")
    shipped = set(available_protocols())
    for ref in {json.dumps(dict(r.protocol), sort_keys=True) for r in recs}:
        p = json.loads(ref)
        if p.get("name") not in shipped:
            notes.append(f"protocol {p.get('name')!r} is not shipped with this s2i-bench: its fingerprint was not "
                         "checked against a protocol file")
            continue
        here = load_protocol(p["name"])
        if here.version == p.get("version") and here.fingerprint != p.get("fingerprint"):
            raise _refuse(path, f"mismatched identities: its records claim protocol {p['name']} {p['version']} with "
                                f"fingerprint {p.get('fingerprint')}, but that protocol is {here.fingerprint}")
        if here.version != p.get("version"):
            notes.append(f"scored under protocol {p['name']} {p.get('version')}; this s2i-bench ships "
                         f"{here.version}")


def _check_sheets(z: StrictZip, path: Path, files: dict[str, bytes]) -> dict[str, int]:
    """Each sample sheet is an .npz the strict reader accepts, loaded without pickle, with
    images (M, H, W, 3) uint8 and M segment ids."""
    out = {}
    for name in sorted(n for n in files if n.startswith(SHEET_DIR)):
        with z.nested(name):
            pass  # the strict reader's checks (names, bombs, overlaps) before numpy's zip reader
        try:
            with np.load(io.BytesIO(files[name]), allow_pickle=False) as npz:
                images, ids = npz["images"], npz["segment_ids"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise _refuse(path, f"{name!r} is not a sample sheet (images and segment_ids, no pickle)") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or ids.shape != images.shape[:1]:
            raise _refuse(path, f"{name!r}: images must be uint8 (M, H, W, 3) with M segment ids")
        out[name] = int(images.shape[0])
    return out


def open_results_bundle(path: str | Path) -> VerifiedBundle:
    """A stranger's bundle, verified (see the module docstring); refused with one line naming
    the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not a file (a results bundle is the .zip `s2i-bench bundle-results` wrote)")
    if path.stat().st_size > MAX_BUNDLE_FILE:
        raise _refuse(path, f"{path.stat().st_size} bytes, more than the {MAX_BUNDLE_FILE} read")
    try:
        return _verify(path)
    except ArchiveError as err:  # the strict reader's refusals, worded as the bundle's
        reason = str(err)[len(str(path)):].lstrip(": ").replace("refused: ", "").replace(
            "; it was not loaded", "; nothing in it was used")
        raise _refuse(path, reason) from None


def _verify(path: Path) -> VerifiedBundle:
    with StrictZip(path) as z:
        _layout(z, path)
        manifest = _manifest(z, path)
        files = _check_files(z, path, manifest)
        recs = _records(files[RECORDS_MEMBER], path) if RECORDS_MEMBER in files else []
        if not recs:
            raise _refuse(path, f"no {RECORDS_MEMBER}")
        _check_listing(path, manifest, recs, files)
        options = _json(files[OPTIONS_MEMBER], path, OPTIONS_MEMBER) if OPTIONS_MEMBER in files else None
        if options is not None and not isinstance(options, dict):
            raise _refuse(path, f"{OPTIONS_MEMBER} is not a JSON object")
        notes: list[str] = []
        _check_protocols(path, recs, options, notes)
        sheets = _check_sheets(z, path, files)
    checks = [f"zip read by the strict reader ({len(files) + 1} members, no traversal, duplicates or bombs)",
              f"sha256 of all {len(files)} files as the manifest lists them",
              f"{len(recs)} records: checksums, each against itself (shares, means, per-image decisions)",
              "the manifest's record list, system and identities against the records",
              "the protocol against the run's options and the shipped protocol" if options is not None
              else "the protocol against the shipped protocol (no run options in the bundle)",
              f"{len(sheets)} sample sheets loaded without pickle"]
    return VerifiedBundle(path, sha256_file(path), manifest["system"], manifest, recs, options, sheets, checks, notes)
