"""File helpers shared by every part: atomic writes, JSON lines, hashing, progress bars, and
folders a command owns by a file manifest.

Anything a crash could leave half-written goes through `atomic_write_*` (temp file in the same
folder, then `os.replace`), so a reader sees either the old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from s2i_bench.errors import UserError

logger = logging.getLogger(__name__)


# -- atomic writes ----------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically (a link at
    `path` is replaced, never written through). An OSError on the way names `path` (a full disk
    otherwise says only "No space left on device")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the writer's pid in the name: a later run can tell a dead writer's leftover from a live one
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise named_os_error(e, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates files 0600; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except OSError as e:
            raise named_os_error(e, path) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def named_os_error(e: OSError, path: str | Path) -> OSError:
    """`e` with the file named (writes through a file object raise errors without a name)."""
    if getattr(e, "filename", None):
        return e
    out = OSError(e.errno, e.strerror or str(e), str(path))
    return out


def describe_os_error(e: OSError) -> str:
    """One line for a failed file operation: the file, and "disk full" when that is the cause."""
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}disk full ({e.strerror or 'no space left on the device'})"
    if e.errno == errno.EROFS:
        return f"{where}read-only file system"
    return f"{where}{e.strerror or e}"


def check_writable(path: str | Path, what: str) -> None:
    """Refuse before the work, not after it, when `path` (a folder, or a file to be made) cannot
    be written: a temporary file is made and removed in the folder that would hold the output
    (the nearest existing one), which also catches read-only mounts that permission bits hide."""
    path = Path(path)
    probe_dir = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not probe_dir.is_dir():
        raise UserError(f"{path}: {probe_dir} is a file, so no {what} output can be made under it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".s2i-bench-write-test-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{path}: cannot write the {what} output there ({describe_os_error(named_os_error(e, probe_dir))}); "
                        f"nothing was done") from None


def open_no_follow(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """`os.open` that never follows a link at `path` itself (O_NOFOLLOW): a planted link in a
    folder the user named cannot redirect an append or a truncate to a file elsewhere."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path}: is a symbolic link; s2i-bench writes its own files only, never through a "
                            f"link (remove the link)") from None
        raise named_os_error(e, path) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line. A line is written with one `write` call on an O_APPEND file, so a
    crash leaves at most a truncated last line, which `read_jsonl` reports and skips."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(to_jsonable(record), sort_keys=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a crash mid-append: the last line is cut
                print(f"warning: {path}: last line is incomplete and was skipped", file=sys.stderr)
                continue
            raise
    return out


def append_line(path: str | Path, line: bytes) -> Path | None:
    """Append one line (bytes ending in a newline) with one `write` on an O_APPEND file opened
    without following a link, then fsync. A last line cut by a crash (no newline at the end) is
    first moved to `<file>.cut-N`, so the new line never glues onto it and the cut bytes are
    kept, not dropped; returns that file, or None. Callers hold the file's lock."""
    path = Path(path)
    aside = set_aside_cut_line(path)
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        with os.fdopen(fd, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise named_os_error(e, path) from None
    return aside


def set_aside_cut_line(path: Path) -> Path | None:
    """Move a last line cut by an interrupted write to `<file>.cut-N` (the first free N)."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; s2i-bench writes its own files only, never through a link "
                        f"(remove the link)")
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with os.fdopen(open_no_follow(path, os.O_RDWR), "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return None
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        n = 1
        while path.with_name(f"{path.name}.cut-{n}").exists() or path.with_name(f"{path.name}.cut-{n}").is_symlink():
            n += 1
        aside = path.with_name(f"{path.name}.cut-{n}")
        fd = open_no_follow(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "wb") as out:
            out.write(data[keep:])
        f.truncate(keep)
    logger.warning("%s: its last line was cut (%d bytes, an interrupted write); moved to %s", path,
                   len(data) - keep, aside)
    return aside


def read_no_follow(path: str | Path) -> bytes:
    """The bytes of a file found inside a folder, refusing a link in its place."""
    with os.fdopen(open_no_follow(path, os.O_RDONLY), "rb") as f:
        return f.read()


def release_pages(*arrays) -> None:
    """Drop this process's mapping of the pages of memory-mapped arrays (numpy memmaps and their
    views) that it has touched, so streaming passes over arrays larger than memory keep the
    resident set flat: the data stays in the file (shared mappings write through the page
    cache), the next access maps it again. Copy-on-write maps ('c') and plain arrays are left
    alone; where the platform has no madvise this does nothing."""
    import mmap

    advice = getattr(mmap, "MADV_DONTNEED", None)
    for a in arrays:
        mm = getattr(a, "_mmap", None)
        if advice is None or mm is None or getattr(a, "mode", "r") == "c" or mm.closed:
            continue
        try:
            mm.madvise(advice)
        except (OSError, ValueError):
            pass


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, Paths and tuples into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


# -- hashing ----------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- progress ---------------------------------------------------------------------------------
def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it", **kw):
    """A tqdm bar on stderr; silent when the environment sets S2I_BENCH_QUIET=1 (the tests do),
    or where tqdm is not installed (a bare GPU machine's python: the work runs the same)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)

    disable = os.environ.get("S2I_BENCH_QUIET") == "1"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                mininterval=0.5, leave=False, **kw)


class _NoBar:
    """What `progress` returns without tqdm: iterates, and takes the bar's calls silently."""

    def __init__(self, iterable=None):
        self._iterable = iterable if iterable is not None else ()

    def __iter__(self):
        return iter(self._iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass

    def close(self):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def set_description(self, *args, **kwargs):
        pass


# -- folders a command owns -------------------------------------------------------------------
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
    import shutil

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


# -- locks --------------------------------------------------------------------------------------
class Locked(UserError):
    """Another process holds the lock: the message names the lock file and its holder."""


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive advisory lock (fcntl.flock) on `lock_path` while writing `what`; a second
    writer refuses with the lock and its holder (pid, host, command) named, at once or after
    waiting `wait_s` seconds for it (short critical sections such as one appended record line
    wait; whole jobs refuse at once). The lock goes with the process: a killed holder leaves no
    stale lock behind (the file stays, unlocked)."""
    import fcntl
    import socket
    import time

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_no_follow(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.005)
                    continue
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
                raise Locked(f"{what} is being written by another process ({holder}); lock {lock_path}: wait for it "
                             f"to finish or stop it") from None
        info = (f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(sys.argv)[:300]}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete what killed writers left in `folder` (not below it): temp files of `atomic_path`
    (`.<name>.<pid>-<random>.tmp`) and staging folders (`.staging-<pid>`, `<name>.partial-<pid>`)
    whose process is gone. A live writer's files are left alone. Returns what was removed."""
    import re
    import shutil

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    patterns = (re.compile(r"^\..+\.(\d+)-[^.]+\.tmp$"), re.compile(r"^\.staging-(\d+)$"),
                re.compile(r"^.+\.partial-(\d+)$"))
    for p in folder.iterdir():
        for pattern in patterns:
            m = pattern.match(p.name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                try:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                    removed.append(p)
                except OSError:
                    pass
                break
    return removed


# -- folders built aside and swapped in -----------------------------------------------------------
def folder_hash(folder: Path, names) -> str:
    """16 hex digits over the named files of a folder (name and content of each, in order)."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(sha256_file(Path(folder) / name).encode())
    return h.hexdigest()[:16]


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


# -- content verified once, remembered by size and mtime ------------------------------------------
_VERIFIED: dict[str, dict] = {}


def _verified_cache_file() -> Path | None:
    env = os.environ.get("S2I_BENCH_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none", "no") else Path(env) / "verified-files.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s2i-bench" / "verified-files.json"


def _file_key(path: Path) -> str:
    """What identifies one version of a file: its path, size, inode, and its modification and
    status-change times. `st_ctime_ns` is set by the kernel on every write or metadata change and
    cannot be set back by the user (`touch -r` resets the mtime only), so an edit in place with
    the mtime restored still gives a new key."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"


def remembered_digest(path: Path, compute) -> dict:
    """`compute(path) -> dict` (a content hash and checks), computed once per file version: the
    result is remembered by (path, size, mtime, ctime, inode, device), in memory and in the
    user's cache (`$S2I_BENCH_CACHE`, else ~/.cache/s2i-bench; `S2I_BENCH_CACHE=off` turns it
    off). A file changed in place gets a new ctime (which no user call can set back) and is read
    again. This saves time; it is no defence against someone who can write the cache file itself
    (`s2i-bench audit` always hashes)."""
    path = Path(path)
    key = _file_key(path)
    if key in _VERIFIED:
        return _VERIFIED[key]
    cache = _verified_cache_file()
    stored: dict = {}
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}
    if key in stored and isinstance(stored[key], dict):
        _VERIFIED[key] = stored[key]
        return stored[key]
    result = compute(path)
    _VERIFIED[key] = result
    if cache is not None:
        try:
            stored = {k: v for k, v in stored.items() if Path(k.split("|")[0]).exists()}  # forget deleted files
            stored[key] = result
            atomic_write_json(cache, stored)
        except OSError:
            pass  # a read-only home: remembered for this process only
    return result
