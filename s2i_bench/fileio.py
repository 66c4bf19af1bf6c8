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
import mmap
import os
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
        raise UserError(f"{path}: cannot write the {what} output there "
                        f"({describe_os_error(named_os_error(e, probe_dir))}); nothing was done") from None


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


def dig(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]... of parsed JSON; None where a level is missing or not a mapping
    (what `(x.get(a) or {}).get(b)` chains spelled out)."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
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


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per file version (`remembered_digest`): the training loop
    names the bundle's hash in every epoch's record, and scoring names it in every record."""
    return remembered_digest(Path(path), lambda p: {"sha256": sha256_file(p)})["sha256"]
