"""File helpers shared by every part: atomic writes, JSON lines, hashing, progress bars, and
folders a command owns by a file manifest.

Anything a crash could leave half-written goes through `atomic_write_*` (temp file in the same
folder, then `os.replace`), so a reader sees either the old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from s2i_bench.errors import UserError


# -- atomic writes ----------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later run can tell a dead writer's leftover from a live one
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates files 0600; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def _owned_files(dest: Path, kind: str) -> dict[str, str | None] | None:
    """rel path -> sha256 of the files an earlier `kind` command wrote into `dest`; None when
    `dest` holds no manifest of that kind. (A report folder written before manifests had hashes
    lists its files in report.json: those count as the report's own, unchanged.)"""
    manifest = dest / OWNED_MANIFEST
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(doc, dict) and doc.get("kind") == kind and isinstance(doc.get("files"), dict):
            return {str(k): (str(v) if v else None) for k, v in doc["files"].items()}
        return None
    legacy = dest / "report.json"
    if kind == "s2i-bench-report" and legacy.is_file():
        try:
            doc = json.loads(legacy.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(doc, dict) and doc.get("format") == "s2i-bench-report" and isinstance(doc.get("files"), list):
            return {str(f): None for f in doc["files"]} | {"report.json": None}
    return None


def check_publishable(dest: Path, kind: str, *, overwrite: bool = False, what: str = "",
                      ignore: Path | None = None) -> dict[str, str | None]:
    """The files `kind` owns in `dest` (see `publish_folder`); refuses a folder that holds other
    files and no manifest of `kind`, unless `overwrite`. Cheap: call it before the real work."""
    dest = Path(dest)
    what = what or kind
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    if not dest.is_dir():
        return {}
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
    the manifest lists it and it is unchanged since (same sha256); anything else in the way is
    refused (all checks before any file moves) unless `overwrite`. With `replace`, files the
    manifest lists that `staging` no longer has are deleted when unchanged (changed ones are
    kept, with a warning). Files are moved (or copied, `move=False`) one by one with
    `os.replace`. Returns the warnings. The user's own files in `dest` are never touched.
    """
    import shutil

    what = what or kind
    staging, dest = Path(staging), Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    new_files = {p.relative_to(staging).as_posix(): p for p in sorted(staging.rglob("*"))
                 if p.is_file() and p.name not in (OWNED_MANIFEST, ".lock")}
    owned = check_publishable(dest, kind, overwrite=overwrite, what=what, ignore=staging)
    blocked = []
    for rel in new_files:
        target = dest / rel
        if target.is_dir() or (target.exists() and not target.is_file()):
            blocked.append(f"{rel} (a folder)")
        elif target.is_file() and not overwrite:
            if rel not in owned:
                blocked.append(f"{rel} (not written by {what})")
            elif owned[rel] is not None and sha256_file(target) != owned[rel]:
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
            old = dest / rel
            if not old.is_file():
                continue
            if digest is not None and sha256_file(old) != digest:
                warnings.append(f"{old}: changed since {what} wrote it; kept")
                hashes[rel] = digest  # still ours to report on next time
                continue
            old.unlink()
            parent = old.parent
            while parent != dest and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    else:
        hashes = {**{k: v for k, v in owned.items() if v and (dest / k).is_file()}, **hashes}
    atomic_write_json(dest / OWNED_MANIFEST, {"kind": kind, "files": dict(sorted(hashes.items()))})
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return warnings


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
    if staging.exists():
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
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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


def staging_sibling(out: Path) -> Path:
    """A fresh `<out>.partial-<pid>` beside `out` to build a folder in."""
    import shutil

    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def check_replaceable(out: Path, marker: str, what: str, overwrite: bool) -> None:
    """`out` may be written: it does not exist, or `overwrite` is given and it is a folder of
    this kind (it holds `marker`). A file, or a folder of something else, is never replaced."""
    out = Path(out)
    if not out.exists():
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"{out}: {parent} is a file, so no {what} can be made under it")
                break
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is a file, not a {what}; choose another --out")
    if not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    if any(out.iterdir()) and not (out / marker).is_file():
        raise UserError(f"{out}: holds no {marker}, so it is not a {what}; refusing to replace it even with "
                        f"--overwrite: choose a new or empty folder")


def swap_into_place(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out` (replacing the earlier one of its kind, which
    `check_replaceable` allowed): readers see the old folder or the whole new one."""
    import shutil

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
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def remembered_digest(path: Path, compute) -> dict:
    """`compute(path) -> dict` (a content hash and checks), computed once per file version: the
    result is remembered by (path, size, mtime, inode), in memory and in the user's cache
    (`$S2I_BENCH_CACHE`, else ~/.cache/s2i-bench; `S2I_BENCH_CACHE=off` turns it off). A file
    changed in place gets a new mtime and is read again."""
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
