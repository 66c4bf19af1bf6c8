"""Confinement of the child process that runs a stranger's program (`translators.confine`).

The operator allowlist stops the hostile programs of the fault catalogue before they run; these
tests switch it off, so that the operating system is the only thing left between the program
and the user's files: a program that bypasses every static check still cannot create, read or
overwrite a file outside its private folder, nor connect over TCP. Also: the program's output
never reaches the terminal or `score --json`'s stdout, the time limit is the user's from the
first probe on, and without Landlock a program is refused unless `--unconfined`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import run_cli, write_bundle
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_bench.translators import confine, program_child, programs

ABI = confine.landlock_abi()[0]
needs_landlock = pytest.mark.skipif(ABI < 1, reason="no Landlock on this kernel: " + confine.landlock_abi()[1])
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory, fake_store):
    root = tmp_path_factory.mktemp("confinement")
    return {"root": root, "store": fake_store, "bundle": write_bundle(root / "bundle.pt", load_protocol("tiny"))}


def score(env, translator, *extra):
    return run_cli("score", translator, "--data", env["store"], "--classifiers", env["bundle"], *extra)


def scripted(path: Path, module: torch.nn.Module) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module).save(str(path))
    return path


class Good(torch.nn.Module):
    def forward(self, x):
        return torch.tanh(torch.nn.functional.adaptive_avg_pool2d(x.expand(-1, 3, -1, -1), (32, 32)))


class Prints(torch.nn.Module):
    def forward(self, x):
        print("\x1b[31mPROGRAM-PRINTS\x1b[0m\x07", x.shape)
        return torch.tanh(torch.nn.functional.adaptive_avg_pool2d(x.expand(-1, 3, -1, -1), (32, 32)))


class WritesFile(torch.nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        t = torch.from_file(self.path, shared=True, size=32, dtype=torch.uint8)
        t.fill_(65)  # straight into the (shared, memory-mapped) file
        return torch.zeros(x.shape[0], 3, 32, 32) + 0 * t[0].float()


class ReadsFile(torch.nn.Module):
    """Returns the first 96 bytes of a file as the first row of every image: a way out for a secret."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        t = torch.from_file(self.path, shared=False, size=96, dtype=torch.uint8)
        row = (t.float() / 127.5 - 1).view(1, 3, 1, 32)
        return torch.cat([row, torch.zeros(1, 3, 31, 32)], dim=2).expand(x.shape[0], 3, 32, 32)


class Slow(torch.nn.Module):
    def forward(self, x):
        y = x
        for _ in range(2_000_000_000):
            y = y + 1
        return torch.zeros(x.shape[0], 3, 32, 32)


def _serve_without_allowlist(*args, **kwargs):
    """`program_child.serve` with the operator allowlist switched off (a check that missed a case):
    the hostile program reaches whatever the operating system lets it reach."""
    from s2i_bench.translators import opcheck
    from s2i_bench.translators import program_child as child

    opcheck.refused_operators = lambda operators: []
    child.serve(*args, **kwargs)


# -- the confinement itself, applied the way the child applies it -----------------------------------------
_HOSTILE = r"""
import json, os, socket, subprocess, sys
from s2i_bench.translators import confine

a = json.loads(sys.argv[1])
report = confine.apply(program=a["program"], private_dir=a["private"], timeout_s=30, memory_bytes=2 << 30)
results = {}

def attempt(name, fn):
    try:
        fn()
        results[name] = "allowed"
    except (OSError, MemoryError, subprocess.SubprocessError) as e:
        results[name] = f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"

def write(path, mode, data=b"pwned"):
    with open(path, mode) as f:
        f.write(data)

def connect(family, address):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(address)

attempt("create outside", lambda: write(os.path.join(a["outside"], "new.txt"), "wb"))
attempt("create beside the program", lambda: write(os.path.join(os.path.dirname(a["program"]), "new.txt"), "wb"))
attempt("create in the parent folder", lambda: write(os.path.join(a["root"], "new.txt"), "wb"))
attempt("read a secret", lambda: open(a["secret"], "rb").read())
attempt("overwrite", lambda: write(a["victim"], "r+b"))
attempt("truncate", lambda: write(a["victim"], "wb", b""))
attempt("append", lambda: write(a["victim"], "ab"))
attempt("delete", lambda: os.unlink(a["victim"]))
attempt("move into the private folder", lambda: os.rename(a["victim"], os.path.join(a["private"], "stolen")))
attempt("link into the private folder", lambda: os.link(a["secret"], os.path.join(a["private"], "linked")))
attempt("list a folder", lambda: os.listdir(a["outside"]))
attempt("read /etc/passwd", lambda: open("/etc/passwd", "rb").read())
attempt("run a program", lambda: subprocess.run(["/bin/true"], check=True))
attempt("tcp connect", lambda: connect(socket.AF_INET, ("127.0.0.1", a["port"])))
attempt("tcp bind", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).bind(("127.0.0.1", 0)))
attempt("abstract unix socket", lambda: connect(socket.AF_UNIX, a["abstract"]))
if report["landlock"]["scoped"]:
    attempt("signal the parent", lambda: os.kill(os.getppid(), 0))
attempt("allocate 3 GiB", lambda: bytearray(3 << 30))
attempt("write 4 MiB", lambda: write(os.path.join(a["private"], "big"), "wb", b"0" * (4 << 20)))
# what it may do
attempt("read the program", lambda: open(a["program"], "rb").read())
attempt("write in the private folder", lambda: write(os.path.join(a["private"], "scratch"), "wb"))
print(json.dumps({"report": report, "results": results}))
"""


@needs_landlock
def test_a_confined_process_cannot_touch_files_or_the_network(tmp_path):
    root = tmp_path / "home"
    outside, private, prog_dir = root / "data", tmp_path / "private", root / "models"
    for folder in (outside, private, prog_dir):
        folder.mkdir(parents=True)
    secret, victim, program = outside / "secret.txt", outside / "victim.sh", prog_dir / "program.pt"
    secret.write_text("TOP-SECRET-42")
    victim.write_text("echo original\n")
    program.write_bytes(b"PROGRAM")
    before = {p: p.read_bytes() for p in (secret, victim, program)}
    server = socket.create_server(("127.0.0.1", 0))
    abstract = f"\0s2i-bench-test-{os.getpid()}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(abstract)
    unix.listen()
    args = {"program": str(program), "private": str(private), "outside": str(outside), "root": str(root),
            "secret": str(secret), "victim": str(victim), "port": server.getsockname()[1], "abstract": abstract}
    try:
        done = subprocess.run([sys.executable, "-c", _HOSTILE, json.dumps(args)], capture_output=True, text=True,
                              check=False, timeout=60, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        server.setblocking(False)
        unix.setblocking(False)
        for listener in (server, unix):
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody got through
    finally:
        server.close()
        unix.close()
    results, report = out["results"], out["report"]
    allowed = {"read the program", "write in the private folder"}
    for name, outcome in results.items():
        if name in allowed:
            assert outcome == "allowed", (name, outcome)
        else:
            assert outcome != "allowed", f"{name}: allowed; {report}"
    assert "Permission denied" in results["read a secret"] and "Permission denied" in results["overwrite"]
    assert "File too large" in results["write 4 MiB"] and results["allocate 3 GiB"].startswith("MemoryError")
    assert {p: p.read_bytes() for p in (secret, victim, program)} == before
    assert sorted(p.name for p in root.rglob("*")) == ["data", "models", "program.pt", "secret.txt", "victim.sh"]
    assert sorted(p.name for p in private.iterdir()) == ["big", "scratch"]
    assert report["landlock"]["abi"] == ABI and report["writes"] == ["private folder"]
    assert report["reads"] == ["program file", "private folder"]
    assert report["limits"]["cpu_s"] >= 30 and report["limits"]["core"] == 0
    assert report["limits"]["memory"] == 2 << 30 and report["limits"]["file_size"] == confine.FILE_SIZE_LIMIT
    if ABI >= 4:
        assert report["landlock"]["net"] == ["bind_tcp", "connect_tcp"]


# -- the real path: ProgramWorker, with the allowlist switched off -------------------------------------
@needs_landlock
def test_a_program_past_the_allowlist_cannot_write_or_read_files(tmp_path, monkeypatch):
    monkeypatch.setattr(program_child, "serve", _serve_without_allowlist)
    outside = tmp_path / "outside"
    outside.mkdir()
    marker, victim, secret = outside / "PWNED", outside / "victim.sh", outside / "secret.bin"
    victim.write_text("echo original; exit 0\n" + "#" * 40)
    secret_bytes = bytes(range(100, 196))
    secret.write_bytes(secret_bytes)
    x, seeds = np.zeros((2, 1, 128, 100), np.float32), np.arange(2)

    writes = scripted(tmp_path / "p" / "writes.ts", WritesFile(str(marker)))
    with pytest.raises(UserError, match="Permission denied"):
        programs.ProgramWorker(writes, "torchscript", "cpu", 60)
    assert not marker.exists()
    overwrite = scripted(tmp_path / "p" / "overwrite.ts", WritesFile(str(victim)))
    with pytest.raises(UserError, match="Permission denied"):
        programs.ProgramWorker(overwrite, "torchscript", "cpu", 60)
    assert victim.read_text().startswith("echo original")
    reads = scripted(tmp_path / "p" / "reads.ts", ReadsFile(str(secret)))
    with pytest.raises(UserError, match="Permission denied"):
        programs.ProgramWorker(reads, "torchscript", "cpu", 60)  # the probe fails: no images at all

    # The control: unconfined, the same programs do what they were written to do.
    unconfined = programs.ProgramWorker(reads, "torchscript", "cpu", 60, unconfined=True)
    try:
        images = unconfined.call(x, seeds)
    finally:
        unconfined.close()
    leaked = np.rint((images[0, :, 0, :].reshape(-1) + 1) * 127.5).astype(np.uint8).tobytes()
    assert leaked == secret_bytes  # the program works: only the confinement kept the secret in
    programs.ProgramWorker(writes, "torchscript", "cpu", 60, unconfined=True).close()
    assert marker.read_bytes()[:1] == b"A"


# -- output, records, time limits --------------------------------------------------------------------
@needs_landlock
def test_the_programs_prints_reach_neither_the_terminal_nor_json(env, tmp_path, capfd):
    path = scripted(tmp_path / "prints.ts", Prints())
    res = score(env, path, "--json", "--out", tmp_path / "r.jsonl").ok()
    record = json.loads(res.stdout)  # stdout is the JSON and nothing else
    captured = capfd.readouterr()
    for text in (res.output, captured.out, captured.err):
        assert "PROGRAM-PRINTS" not in text and "\x1b" not in text and "\x07" not in text
    confinement = record["translator"]["confinement"]
    assert confinement["landlock"]["abi"] == ABI and not confinement["unconfined"]
    assert confinement["writes"] == ["private folder"]
    line = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[-1])
    assert line["translator"]["confinement"] == confinement  # the record names what confined the program


def test_program_timeouts_must_be_positive_or_inf(env, tmp_path):
    path = scripted(tmp_path / "good.ts", Good())
    for bad in ("nan", "-1", "0", "NaN", "abc"):
        for cmd in (("score", path, "--data", env["store"], "--classifiers", env["bundle"]),
                    ("pool", path, "--data", env["store"], "--out", tmp_path / "pool")):
            res = run_cli(*cmd, "--program-timeout", bad)
            assert res.exit_code == 2, res.output
            errors = [ln for ln in res.output.splitlines() if "rror" in ln]
            assert len(errors) == 1 and "--program-timeout" in errors[0] and "inf for no limit" in errors[0]
            assert "Traceback" not in res.output
    assert not (tmp_path / "pool").exists()
    for bad in (math.nan, -1.0, 0.0, "nan"):
        with pytest.raises(UserError, match="positive number of seconds, or inf"):
            programs.ProgramWorker(path, "torchscript", "cpu", bad)
    if ABI >= 1:
        res = score(env, path, "--program-timeout", "inf", "--out", tmp_path / "inf.jsonl").ok()
        assert "without a time limit" in res.output


class Hog(torch.nn.Module):
    def forward(self, x):
        big = torch.ones(300_000_000)  # 1.2 GB
        return torch.zeros(x.shape[0], 3, 32, 32) + big[0]


@needs_landlock
def test_a_program_past_its_memory_limit_is_told_so(env, tmp_path):
    path = scripted(tmp_path / "hog.ts", Hog())
    with pytest.raises(UserError, match=r"can't allocate memory.*memory limit is 0.5 GiB: --program-memory"):
        programs.ProgramWorker(path, "torchscript", "cpu", 60, memory_gib=0.5)
    for bad in ("nan", "0", "-2"):
        res = score(env, path, "--program-memory", bad)
        assert res.exit_code == 2 and "--program-memory" in res.output and "Traceback" not in res.output


@needs_landlock
def test_loading_and_probing_obey_a_short_program_timeout(env, tmp_path):
    path = scripted(tmp_path / "slow.ts", Slow())
    started = time.monotonic()
    score(env, path, "--program-timeout", "1.5").refused(str(path), "took longer than 1.5 s to load")
    assert time.monotonic() - started < programs.START_TIMEOUT_S / 10  # not the start allowance


def test_without_landlock_a_program_is_refused_unless_unconfined(env, tmp_path, monkeypatch):
    monkeypatch.setattr(confine, "landlock_abi", lambda: (0, "simulated: this kernel has no Landlock"))
    path = scripted(tmp_path / "good.ts", Good())
    score(env, path).refused(str(path), "simulated: this kernel has no Landlock", "--unconfined")
    run_cli("pool", path, "--data", env["store"], "--out", tmp_path / "pool").refused("--unconfined")
    assert not (tmp_path / "pool").exists()
    res = score(env, path, "--unconfined", "--json", "--out", tmp_path / "u.jsonl").ok()
    assert "UNCONFINED" in res.output
    assert json.loads(res.stdout)["translator"]["confinement"] == {"unconfined": True}
    assert "no confinement" in confine.describe() and "simulated" in confine.describe()


@needs_landlock
def test_describe_says_in_one_line_what_confinement_gives_here():
    line = confine.describe()
    assert "\n" not in line and f"Landlock ABI {ABI}" in line
    assert confine.MEMORY_FLOOR <= confine.default_memory() <= confine.MEMORY_CAP
