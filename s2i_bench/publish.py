"""Folders a command owns: published file by file under a manifest, or built aside and
swapped in.

`report` and `compare --out` own their folder by a manifest (`.s2i-bench-files.json`: every
file they wrote, with its sha256): `publish_folder` moves a staged folder in file by file,
writing over or deleting only files the manifest lists with a known, unchanged hash, never
through a link and never outside the folder. Stores, pools and worlds are built in a sibling
folder (`built_aside`) and swapped in whole; `check_replaceable` allows `--overwrite` only on a
folder that holds nothing but the kind's own files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_path, atomic_write_json, check_writable, sha256_file
from s2i_bench.locks import remove_stale_temporaries

logger = logging.getLogger(__name__)

OWNED_MANIFEST = ".s2i-bench-files.json"


def _safe_relative(rel: str) -> bool:
    """A manifest entry names a file below its folder: relative, POSIX, no '..', '.', empty or
    hidden-control parts (a manifest is read back from disk, so it is a stranger's file)."""
    if not isinstance(rel, str) or not rel or len(rel) > 4096 or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") and not any(ord(c) < 32 for c in p) for p in parts)


def contained(folder: Path, rel: str) -> Path | None:
    """`folder / rel` when it stays inside `folder` without passing through a link (no part
    between `folder` and the file is a symbolic link, and the file is not one), else None.
    `folder` itself is what the user named and may be reached through a link."""
    if not _safe_relative(rel):
        return None
    path = Path(folder)
    for part in rel.split("/"):
        path = path / part
        try:
            if path.is_symlink():
                return None
        except OSError:
            return None
    return path


def _owned_files(dest: Path, kind: str) -> dict[str, str | None] | None:
    """rel path -> sha256 of the files an earlier `kind` command wrote into `dest`; None when
    `dest` holds no manifest of that kind. Entries that would leave `dest` (absolute, '..',
    through a link) are dropped with a warning: the manifest is read back from disk and may have
    been planted. (A report folder written before manifests had hashes lists its files in
    report.json: those count as the report's, with unknown hashes, so they are never deleted and
    never written over without --overwrite.)"""
    manifest = dest / OWNED_MANIFEST
    if manifest.is_file() and not manifest.is_symlink():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(doc, dict) and doc.get("kind") == kind and isinstance(doc.get("files"), dict):
            files = {str(k): (str(v) if isinstance(v, str) and _SHA256.match(v) else None)
                     for k, v in doc["files"].items()}
            return _keep_contained(dest, files, manifest)
        return None
    legacy = dest / "report.json"
    if kind == "s2i-bench-report" and legacy.is_file() and not legacy.is_symlink():
        try:
            doc = json.loads(legacy.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(doc, dict) and doc.get("format") == "s2i-bench-report" and isinstance(doc.get("files"), list):
            # report.json itself was just parsed as the report's own manifest: known, not the user's
            return _keep_contained(dest, {str(f): None for f in doc["files"]}, legacy) | {"report.json": _LEGACY}
    return None


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LEGACY = "legacy-manifest"  # the old report.json: ours by its content, whatever its bytes
_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def _keep_contained(dest: Path, files: dict[str, str | None], source: Path) -> dict[str, str | None]:
    kept = {rel: digest for rel, digest in files.items() if contained(dest, rel) is not None}
    dropped = sorted(set(files) - set(kept))
    if dropped and (str(source), tuple(dropped)) not in _WARNED:
        _WARNED.add((str(source), tuple(dropped)))
        logger.warning("%s: ignored %d entr%s naming a file outside the folder or behind a link (e.g. %r)",
                       source, len(dropped), "y" if len(dropped) == 1 else "ies", dropped[0][:200])
    return kept


def check_publishable(dest: Path, kind: str, *, overwrite: bool = False, what: str = "",
                      ignore: Path | None = None) -> dict[str, str | None]:
    """The files `kind` owns in `dest` (see `publish_folder`); refuses a folder that holds other
    files and no manifest of `kind`, unless `overwrite`. Cheap: call it before the real work."""
    dest = Path(dest)
    what = what or kind
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    if not dest.is_dir():
        check_writable(dest, what)
        return {}
    check_writable(dest, what)
    owned = _owned_files(dest, kind)
    if owned is not None:
        return owned
    present = next((p for p in dest.rglob("*") if p.is_file() and p.name not in (OWNED_MANIFEST, ".lock")
                    and not p.name.startswith(".staging-") and (ignore is None or ignore not in p.parents)
                    and not any(q.name.startswith(".staging-") for q in p.parents)), None)
    if present is not None and not overwrite:
        raise UserError(f"{dest}: holds files that {what} did not write (e.g. {present.relative_to(dest)}); "
                        f"choose a new or empty folder, or pass --overwrite to write over them")
    return {}


def publish_folder(staging: Path, dest: Path, kind: str, *, overwrite: bool = False, replace: bool = True,
                   move: bool = True, what: str = "") -> list[str]:
    """Put every file of `staging` into `dest`, which the command `kind` owns by a manifest.

    `dest` must be new, empty, or hold a manifest of `kind`. A file is written over only when
    the manifest lists it with its sha256 and it is unchanged since; anything else in the way is
    refused (all checks before any file moves) unless `overwrite`. With `replace`, files the
    manifest lists that `staging` no longer has are deleted when their hash is known and
    unchanged (changed ones, and ones of unknown hash, are kept with a warning), and folders
    they leave empty are removed, never `dest` or anything above it. No path leaves `dest` and
    none passes through a link: a manifest entry that would is ignored, a link in the way is
    refused. Files are moved (or copied, `move=False`) one by one with `os.replace`. Returns the
    warnings. The user's own files in `dest` are never touched.
    """
    what = what or kind
    staging, dest = Path(staging), Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    new_files = {p.relative_to(staging).as_posix(): p for p in sorted(staging.rglob("*"))
                 if p.is_file() and p.name not in (OWNED_MANIFEST, ".lock")}
    owned = check_publishable(dest, kind, overwrite=overwrite, what=what, ignore=staging)
    blocked = []
    for rel in new_files:
        target = contained(dest, rel)
        if target is None:
            blocked.append(f"{rel} (a link is in the way)")
        elif target.is_dir() or (target.exists() and not target.is_file()):
            blocked.append(f"{rel} (a folder)")
        elif target.is_file() and not overwrite:
            if rel not in owned:
                blocked.append(f"{rel} (not written by {what})")
            elif owned[rel] is None:
                blocked.append(f"{rel} (its hash is unknown, so it may have changed since {what} wrote it)")
            elif owned[rel] != _LEGACY and sha256_file(target) != owned[rel]:
                blocked.append(f"{rel} (changed since {what} wrote it)")
    if blocked:
        raise UserError(f"{dest}: refusing to write over {len(blocked)} file(s): {', '.join(blocked[:5])}"
                        f"{' ...' if len(blocked) > 5 else ''}; move them away or pass --overwrite")
    warnings = []
    hashes: dict[str, str] = {}
    for rel, src in new_files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        hashes[rel] = sha256_file(src)
        if move:
            os.replace(src, target)
        else:
            with atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)
    if replace:
        for rel, digest in owned.items():
            if rel in new_files:
                continue
            old = contained(dest, rel)
            if old is None or not old.is_file():
                continue
            if digest == _LEGACY:
                old.unlink()
                continue
            if digest is None or sha256_file(old) != digest:
                warnings.append(f"{old}: {'changed since' if digest else 'of unknown hash, so maybe changed since'} "
                                f"{what} wrote it; kept")
                if digest is not None:
                    hashes[rel] = digest  # still ours to report on next time
                continue
            old.unlink()
            _remove_empty_parents(old.parent, dest)
    else:
        hashes = {**{k: v for k, v in owned.items() if v and v != _LEGACY and (dest / k).is_file()}, **hashes}
    atomic_write_json(dest / OWNED_MANIFEST, {"kind": kind, "files": dict(sorted(hashes.items()))})
    for w in warnings:
        logger.warning("%s", w)
    return warnings


def _remove_empty_parents(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents while they are empty, stopping below `top` (never `top`
    itself, never anything outside it)."""
    top_abs = os.path.abspath(top)
    while True:
        here = os.path.abspath(folder)
        if here == top_abs or not here.startswith(top_abs + os.sep) or folder.is_symlink() or not folder.is_dir():
            return
        if any(folder.iterdir()):
            return
        folder.rmdir()
        folder = folder.parent


def own_file(folder: Path, path: Path, kind: str) -> None:
    """Add `path` (a file inside `folder` that a caller wrote beside what `publish_folder` put
    there) to the folder's manifest of `kind`, with its sha256."""
    folder, path = Path(folder), Path(path)
    rel = path.relative_to(folder).as_posix()
    if contained(folder, rel) is None or not path.is_file():
        raise UserError(f"{path}: not a file inside {folder}")
    owned = _owned_files(folder, kind) or {}
    digest = sha256_file(path)
    if owned.get(rel) != digest:
        owned[rel] = digest
        atomic_write_json(folder / OWNED_MANIFEST, {"kind": kind, "files": dict(sorted(
            (k, v) for k, v in owned.items() if v is not None))})


@contextlib.contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """A hidden staging folder inside `dest` (created if needed) for `publish_folder`; removed
    afterwards, also when the work in between fails."""

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)  # what a killed earlier report left
    staging = dest / f".staging-{os.getpid()}"
    if staging.is_symlink() or staging.is_file():
        staging.unlink()
    elif staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def built_aside(out: Path) -> Iterator[Path]:
    """A fresh `<out>.partial-<pid>` beside `out` to build a folder in; on success it is swapped
    in at `out` (`swap_into_place`), on any failure (a full disk, Ctrl-C) it is removed, so no
    half-built folder is left behind."""
    out = Path(out)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    elif tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(out: Path, marker: str, what: str, overwrite: bool, names: tuple[str, ...] = ()) -> None:
    """`out` may be written: it does not exist, or `overwrite` is given and it is a folder of
    this kind: it holds `marker` and, when `names` is given, nothing but those names (the files
    and folders the kind writes), so replacing it never deletes a file the command did not
    write. A file, or a folder of something else, is never replaced. Checks that the output can
    be written, before any work."""
    out = Path(out)
    if not out.exists():
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"{out}: {parent} is a file, so no {what} can be made under it")
                break
        check_writable(out, what)
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is a file, not a {what}; choose another --out")
    if not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    if any(out.iterdir()) and not (out / marker).is_file():
        raise UserError(f"{out}: holds no {marker}, so it is not a {what}; refusing to replace it even with "
                        f"--overwrite: choose a new or empty folder")
    if names:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in names or p.is_symlink())
        if foreign:
            raise UserError(f"{out}: holds {len(foreign)} file(s) that no {what} has (e.g. {foreign[0]!r}); "
                            f"replacing the {what} would delete them: move them away first")
    check_writable(out.parent if out.parent.exists() else out, what)


def swap_into_place(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out` (replacing the earlier one of its kind, which
    `check_replaceable` allowed): readers see the old folder or the whole new one."""
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
