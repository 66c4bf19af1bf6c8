"""Operating-system confinement of the child process that runs a stranger's program.

The operator allowlist (`opcheck`) decides what a program may compute; this module makes the
kernel enforce what the process may touch, for the case the allowlist misses one.
`program_child.serve` calls, in the child:

    network = isolate_network()      first, while the process has one thread: a user and a
                                     network namespace (no interface but a down loopback)
    ... import torch, torch.jit, torch.export, initialise CUDA ...
    report = apply(program=..., private_dir=..., device=..., timeout_s=..., network=network)
    ... only now is the program file opened ...

`apply` sets `PR_SET_NO_NEW_PRIVS`, resource limits and a Landlock domain, and returns a report
of what was actually confined on the running kernel (records name it: `info["confinement"]`):

- Landlock (Linux 5.13+): every file access right the running ABI knows is handled, so denied
  unless a rule allows it. Reads: the program file; the private folder. Writes: the private
  folder only (the parent creates it and removes it afterwards). On CUDA, also the NVIDIA device
  files and, read-only, the folders of the libraries already loaded (the CUDA libraries load
  more of themselves lazily). Nothing else: the runtime (torch, numpy, CPU or CUDA) is
  imported and initialised before, and files opened before stay usable (the output file, the
  protocol pipe). ABI 4+: TCP bind and connect denied. ABI 6+: abstract unix sockets and
  signals scoped to the domain. Landlock restricts the calling thread and the threads it starts
  afterwards, so `serve` confines before torch starts its thread pools; the report counts the
  threads that were already running (`threads_not_covered`: CUDA's own, or numpy's BLAS pool).
- A network namespace (`unshare(CLONE_NEWUSER | CLONE_NEWNET)`) where unprivileged user
  namespaces are allowed and the process is still single-threaded; otherwise the report says
  why not and the rest still applies.
- Resource limits: memory (`memory_bytes` on top of what the initialised runtime maps already,
  default 3/4 of the RAM, at most 16 GiB, at least 4 GiB: the data limit, and the address-space
  limit with `ADDRESS_SLACK` more; on CUDA only the data limit, because the driver reserves huge
  virtual ranges), CPU time (derived from the time limit: `timeout_s` for every CPU the process
  may use, plus `CPU_ALLOWANCE_S`; renewed before every call with `extend_cpu`; none with an
  infinite time limit), file size (`FILE_SIZE_LIMIT`: the child writes only its output file),
  core dumps 0. Not the number of processes: torch's thread pools count as processes, and the
  domain denies executing any file.

Without Landlock (not Linux, an old kernel, Landlock disabled at boot) a stranger's program is
refused unless the user passes `--unconfined` (`check_available`); `describe()` says in one
line what confinement gives on this machine.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import logging
import math
import os
import platform
import signal
import sys
import sysconfig
from pathlib import Path

from s2i_bench.errors import UserError

try:
    import resource
except ImportError:  # not a Unix: no limits, and no Landlock either (refused without --unconfined)
    resource = None

logger = logging.getLogger(__name__)

GiB = 1 << 30
MEMORY_CAP = 16 * GiB  # the default memory limit is 3/4 of the RAM, at most this much ...
MEMORY_FLOOR = 4 * GiB  # ... and at least this much (on top of what the runtime maps itself)
ADDRESS_SLACK = 2 * GiB  # address space on top of data: thread stacks, malloc arenas' reservations
FILE_SIZE_LIMIT = 1 << 20  # bytes; the child's only file is its output (prints, warnings)
CPU_ALLOWANCE_S = 60.0  # CPU seconds on top of the time limit's share (imports, checks)

# landlock_create_ruleset, landlock_add_rule, landlock_restrict_self: the same numbers on both
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38

# Landlock's access rights in bit order, each with the ABI that introduced it.
_FS_RIGHTS = (("execute", 1), ("write_file", 1), ("read_file", 1), ("read_dir", 1), ("remove_dir", 1),
              ("remove_file", 1), ("make_char", 1), ("make_dir", 1), ("make_reg", 1), ("make_sock", 1),
              ("make_fifo", 1), ("make_block", 1), ("make_sym", 1), ("refer", 2), ("truncate", 3),
              ("ioctl_dev", 5))
_NET_RIGHTS = (("bind_tcp", 4), ("connect_tcp", 4))
_SCOPES = (("abstract_unix_socket", 6), ("signal", 6))
_FS = {name: 1 << i for i, (name, _) in enumerate(_FS_RIGHTS)}
_FILE_ONLY = _FS["execute"] | _FS["write_file"] | _FS["read_file"] | _FS["truncate"] | _FS["ioctl_dev"]
_READ = _FS["read_file"] | _FS["read_dir"]
_PRIVATE = _READ | _FS["write_file"] | _FS["truncate"] | _FS["remove_file"] | _FS["remove_dir"] | \
    _FS["make_reg"] | _FS["make_dir"] | _FS["refer"]
_DEVICE = _FS["read_file"] | _FS["write_file"] | _FS["ioctl_dev"]


class ConfinementError(RuntimeError):
    """The child could not be confined as asked."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _mask(table, abi: int) -> int:
    return sum(1 << i for i, (_, since) in enumerate(table) if since <= abi)


def _names(table, mask: int) -> list[str]:
    return [name for i, (name, _) in enumerate(table) if mask >> i & 1]


def _libc():
    if sys.platform != "linux":
        return None
    return ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args) -> int:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    return libc.syscall(ctypes.c_long(number), *args)


def landlock_abi() -> tuple[int, str]:
    """(ABI version, why not): 0 and the reason where the kernel has no usable Landlock."""
    if sys.platform != "linux":
        return 0, f"Landlock is Linux-only (this is {sys.platform})"
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return 0, f"Landlock's system call numbers on {platform.machine()} are not known here"
    abi = _syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if abi >= 1:
        return int(abi), ""
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        return 0, f"the kernel ({platform.release()}) has no Landlock (Linux 5.13 or newer is needed)"
    if err == errno.EOPNOTSUPP:
        return 0, "Landlock is disabled on this kernel (it must be in the lsm= boot parameter)"
    return 0, f"Landlock is not available ({os.strerror(err) if err else 'unknown error'})"


def _user_namespaces() -> str:
    """Whether sysctls allow unprivileged user namespaces ("" when nothing says no)."""
    for path, bad in (("/proc/sys/user/max_user_namespaces", "0"), ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                      ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")):
        try:
            if Path(path).read_text().strip() == bad:
                return f"{Path(path).name} is {bad}"
        except OSError:
            continue
    return ""


def describe() -> str:
    """One line: what confinement gives strangers' programs on this machine."""
    abi, why = landlock_abi()
    if abi < 1:
        return f"no confinement of strangers' programs here ({why})"
    parts = ["file access (read the program only, write a private folder only)"]
    parts.append("TCP bind/connect denied" if abi >= 4 else "TCP not confined (Landlock ABI < 4)")
    parts.append("abstract unix sockets and signals scoped" if abi >= 6 else "signals not scoped (Landlock ABI < 6)")
    userns = _user_namespaces()
    net = (f"no network namespace ({userns})" if userns else
           "a network namespace where the kernel lets the child make one")
    return (f"confinement here: Landlock ABI {abi}: {', '.join(parts)}; {net}; limits on memory, CPU time, "
            f"file size, no core dumps")


def check_available(what: str, unconfined: bool = False) -> None:
    """In the parent, before a stranger's program is started: refuse it without Landlock
    unless `unconfined`; say on stderr (logger `s2i_bench`) when it runs unconfined."""
    if unconfined:
        abi, why = landlock_abi()
        logger.warning("%s: runs UNCONFINED (--unconfined): no Landlock, network namespace or resource limits; "
                       "only the operator allowlist and its own process stand between it and your files%s",
                       what, f" ({why})" if abi < 1 else "")
        return
    abi, _ = landlock_abi()
    if abi < 1:
        raise UserError(f"{what}: refused: a stranger's program runs only confined by the operating system, and there "
                        f"is {describe()}; pass --unconfined to run it with the operator allowlist and its own "
                        f"process only")


# -- in the child ------------------------------------------------------------------------------------
def isolate_network() -> dict:
    """A new user and network namespace for this process (call it while it has one thread)."""
    if sys.platform != "linux":
        return {"network_namespace": False, "network_namespace_error": "not Linux"}
    uid, gid = os.geteuid(), os.getegid()
    libc = _libc()
    ctypes.set_errno(0)
    if libc.unshare(ctypes.c_int(_CLONE_NEWUSER | _CLONE_NEWNET)) != 0:
        err = ctypes.get_errno()
        why = os.strerror(err)
        if err == errno.EINVAL:
            why += f" (the process already runs {_threads()} threads)"
        elif err in (errno.EPERM, errno.ENOSPC):
            sysctl = _user_namespaces()
            why += f" (unprivileged user namespaces are not allowed{': ' + sysctl if sysctl else ''})"
        return {"network_namespace": False, "network_namespace_error": why}
    try:  # keep our own ids inside (else they read as 65534): plain files, written before Landlock
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1\n")
        Path("/proc/self/setgroups").write_text("deny\n")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1\n")
    except OSError:
        pass  # the namespace stands; ids only look different inside
    return {"network_namespace": True}


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def default_memory() -> int:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return MEMORY_CAP
    return int(max(MEMORY_FLOOR, min(MEMORY_CAP, ram * 3 // 4)))


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def extend_cpu(timeout_s: float) -> int | None:
    """Set the CPU-time limit to what is used so far plus `timeout_s` on every CPU this process
    may use (plus `CPU_ALLOWANCE_S`): it never fires before the parent's wall-clock limit, and
    stops a program whose parent cannot (stopped, or killed without taking the child along).
    None: no limit (an infinite time limit)."""
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if math.isinf(timeout_s):
        return None
    limit = math.ceil(_cpu_used() + timeout_s * _cpus() + CPU_ALLOWANCE_S)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    return limit


def _set_limit(which: int, value: int) -> int:
    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))
    return value


def _mapped() -> tuple[int, int]:
    """(address space, data) this process maps now, in bytes (0, 0 where /proc says nothing)."""
    sizes = {"VmSize": 0, "VmData": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in sizes:
                    sizes[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return sizes["VmSize"], sizes["VmData"]


def _limits(device: str, timeout_s: float, memory_bytes: float | None) -> dict:
    """The memory limit is what the program may add to what the initialised runtime maps
    already (torch alone maps about 3 GiB of address space, 0.8 GiB of data)."""
    memory = default_memory() if memory_bytes is None else memory_bytes
    out: dict = {"memory": None if math.isinf(memory) else int(memory)}
    if not math.isinf(memory):
        space, data = _mapped()
        if not device.startswith("cuda"):
            out["address_space"] = _set_limit(resource.RLIMIT_AS, int(space + memory + ADDRESS_SLACK))
        else:
            out["address_space"] = "not limited on CUDA (the driver reserves huge virtual ranges)"
        out["data"] = _set_limit(resource.RLIMIT_DATA, int(data + memory))
    else:
        out["address_space"] = out["data"] = None
    out["cpu_s"] = extend_cpu(timeout_s)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    out["file_size"] = _set_limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
    out["core"] = _set_limit(resource.RLIMIT_CORE, 0)
    return out


def _cuda_paths() -> tuple[list[str], list[str]]:
    """(device files, library folders) the CUDA runtime may open after it was initialised."""
    devices = sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir())
    folders = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[5].strip() if len(line.split(maxsplit=5)) == 6 else ""
                if path.startswith("/") and ".so" in Path(path).name:
                    folders.add(str(Path(path).parent))
    except OSError:
        pass
    return devices, sorted(folders)


# torch.export.load and ExportedProgram.module() import parts of these lazily (found by testing
# with torch 2.11), and which parts depends on the program: their folders are readable (code
# only, no user data); everything else is imported before the domain is in place.
_EXPORT_LIBRARIES = ("torch", "sympy", "mpmath", "networkx", "filelock", "triton", "numpy")


def _python_libraries() -> list[str]:
    folders = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    for name in _EXPORT_LIBRARIES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            folders.add(folder)
    return sorted(folders)


def _landlock(program: Path, private_dir: Path, device: str, kind: str) -> tuple[dict, list[str], list[str]]:
    abi, why = landlock_abi()
    if abi < 1:
        raise ConfinementError(why)
    fs, net, scoped = _mask(_FS_RIGHTS, abi), _mask(_NET_RIGHTS, abi), _mask(_SCOPES, abi)
    attr = _RulesetAttr(fs, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as the running ABI knows it
    create, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    ruleset = _syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise ConfinementError(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    reads, writes = ["program file", "private folder"], ["private folder"]
    rules = [(program, _FS["read_file"]), (private_dir, _PRIVATE)]
    if device.startswith("cuda"):
        devices, folders = _cuda_paths()
        rules += [(Path(p), _DEVICE) for p in devices] + [(Path(p), _READ) for p in folders]
        reads += ["NVIDIA device files", "folders of the loaded libraries"]
        writes += ["NVIDIA device files"]
    if kind == "export":
        rules += [(Path(p), _READ) for p in _python_libraries()]
        reads += ["Python library folders (" + ", ".join(_EXPORT_LIBRARIES) + ", the standard library)"]
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as e:
                if path in (program, private_dir):
                    raise ConfinementError(f"{path}: {e.strerror}") from None
                continue
            try:
                allowed = access & fs
                if not os.path.isdir(f"/proc/self/fd/{fd}"):
                    allowed &= _FILE_ONLY
                rule = _PathBeneathAttr(allowed, fd)
                if _syscall(add_rule, ctypes.c_long(ruleset), ctypes.c_long(_RULE_PATH_BENEATH), ctypes.byref(rule),
                            ctypes.c_uint32(0)) != 0:
                    raise ConfinementError(f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
        if _syscall(restrict_self, ctypes.c_long(ruleset), ctypes.c_uint32(0)) != 0:
            raise ConfinementError(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    landlock = {"abi": abi, "fs": _names(_FS_RIGHTS, fs), "net": _names(_NET_RIGHTS, net),
                "scoped": _names(_SCOPES, scoped)}
    return landlock, reads, writes


def apply(*, program: str | Path, private_dir: str | Path, device: str = "cpu", timeout_s: float = math.inf,
          memory_bytes: int | None = None, network: dict | None = None, kind: str = "torchscript") -> dict:
    """Confine this process (see the module docstring); the report of what was confined.
    Raises ConfinementError where Landlock cannot be applied: the program must not run then."""
    if sys.platform != "linux":
        raise ConfinementError(landlock_abi()[1])
    device = str(device)
    report: dict = {"unconfined": False}
    report.update(network if network is not None else isolate_network())
    libc = _libc()
    if libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        raise ConfinementError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    report["threads_not_covered"] = _threads() - 1
    report["limits"] = _limits(device, float(timeout_s), memory_bytes)
    report["landlock"], report["reads"], report["writes"] = _landlock(Path(program), Path(private_dir), device, kind)
    return report


def die_with_parent() -> None:
    """SIGKILL this process when the parent (the thread that started it) ends."""
    if sys.platform == "linux":
        _libc().prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                      ctypes.c_ulong(0), ctypes.c_ulong(0))

