"""Locks: one writer per folder or file at a time, and what killed writers left behind.

`exclusive_lock` holds an advisory lock (fcntl.flock) on a lock file while a process writes
something; a second writer refuses at once (or after a short wait), naming the holder. The lock
goes with the process, so a killed holder leaves no stale lock. `remove_stale_temporaries`
deletes the temporary files and staging folders of writers that are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from s2i_bench.errors import UserError
from s2i_bench.fileio import open_no_follow


class Locked(UserError):
    """Another process holds the lock: the message names the lock file and its holder."""


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive advisory lock (fcntl.flock) on `lock_path` while writing `what`; a second
    writer refuses with the lock and its holder (pid, host, command) named, at once or after
    waiting `wait_s` seconds for it (short critical sections such as one appended record line
    wait; whole jobs refuse at once). The lock goes with the process: a killed holder leaves no
    stale lock behind (the file stays, unlocked)."""
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
