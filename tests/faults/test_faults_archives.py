"""Fault catalogue: hostile zip archives and program files. Every hostile file is built here (in
tmp_path), never downloaded; payloads touch a marker file, and each test checks the marker never
appears and that the refusal is one line (exit 2) naming the file and the reason.

Holes closed (s2i_bench.archive): `__setstate__` hidden from a regex (a line continuation, a
second entry of the same name, a name in other case), zip bombs (declared, lying and
overlapping), encrypted entries, unknown compression, duplicate names, local and central headers
that disagree, and `.pt2` programs whose JSON torch would eval (`expr_str`), exec (`guards_code`)
or paste into generated code (names). A first test loads the hostile programs with torch alone,
in a child interpreter, to show that each payload really runs when nothing checks it."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from fakes import run_cli, write_bundle
from s2i_bench import archive
from s2i_bench.translators.program_archives import torchscript_code_problem
from s2i_bench.translators.symexpr import parse_sym_expr
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_bench.safeload import archive_kind, load_weights_only
from s2i_bench.translators.programs import checked_program

PROTOCOL = load_protocol("tiny")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


# -- programs ---------------------------------------------------------------------------------------
class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x):
        y = torch.nn.functional.interpolate(self.conv(x), size=(96, 96), mode="bilinear", align_corners=False)
        return torch.tanh(y)


class SetsStateOnLoad(torch.nn.Module):
    """Code that TorchScript runs while the file loads (`__setstate__`): it creates a file."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.path = state[0]
        self.training = state[1]
        t = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8)
        self.training = bool(t[0] == 0) and state[1]

    def forward(self, x):
        return torch.zeros(x.shape[0], 3, 96, 96)


@pytest.fixture(scope="module")
def env(tmp_path_factory, fake_store):
    root = tmp_path_factory.mktemp("archives")
    torch.manual_seed(0)
    model = Small().eval()
    ts, dyn, dyn2 = root / "good.ts", root / "good.pt2", root / "good_b.pt2"
    torch.jit.script(model).save(str(ts))
    example = (torch.rand(2, 1, 128, 100) * 2 - 1,)
    torch.export.save(torch.export.export(model, example, dynamic_shapes={
        "x": {0: torch.export.Dim("batch", min=1, max=1024)}}), dyn)
    torch.export.save(torch.export.export(model, example, dynamic_shapes={"x": {0: torch.export.Dim("b")}}), dyn2)
    saved = root / "weights.pt"
    torch.save({"w": torch.arange(6.0)}, saved)
    return {"root": root, "store": fake_store, "bundle": write_bundle(root / "bundle.pt", PROTOCOL), "ts": ts,
            "pt2": dyn, "pt2b": dyn2, "saved": saved}


def score(env, path, *extra):
    return run_cli("score", path, "--data", env["store"], "--classifiers", env["bundle"], *extra)


def rewrite(src: Path, dst: Path, fn, extra=()) -> Path:
    """Copy a zip member by member through `fn(name, data) -> [(name, data), ...]`, then `extra`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
        for item, data in items:
            for name, new in fn(item.filename, data):
                info = zipfile.ZipInfo(name, item.date_time)
                info.compress_type = item.compress_type
                zout.writestr(info, new)
        for name, data in extra:
            zout.writestr(name, data)
    return dst


def setstate_program(root: Path, case: str) -> tuple[Path, Path]:
    """A TorchScript file whose `__setstate__` creates `marker` when torch loads it."""
    marker = root / f"MARKER_{case}"
    path = root / f"setstate_{case}.ts"
    torch.jit.script(SetsStateOnLoad(str(marker))).save(str(path))
    marker.unlink(missing_ok=True)
    return path, marker


def hidden_setstate(root: Path, case: str) -> tuple[Path, Path]:
    """The bypasses of the old regex check: each file still runs `__setstate__` in torch."""
    src, marker = setstate_program(root, case)
    dst = root / f"hidden_{case}.ts"

    def fn(name, data):
        if not (name.endswith(".py") and b"def __setstate__(" in data):  # the module's class, in code/
            return [(name, data)]
        if case == "continuation":  # valid TorchScript: `def \` newline `__setstate__(`
            return [(name, data.replace(b"def __setstate__(", b"def \\\n__setstate__("))]
        if case == "duplicate":  # torch reads the first entry, Python's zipfile the last
            return [(name, data), (name, data.replace(b"__setstate__", b"__setstatf__"))]
        if case == "case":  # torch finds "code/__torch__/x.py" as "CODE/__TORCH__/X.PY"
            head, rest = name.split("/", 1)
            return [(f"{head}/{rest.upper()}", data)]
        raise AssertionError(case)

    rewrite(src, dst, fn)
    return dst, marker


def sym_payload(doc: dict) -> str:
    """The first symbolic size of a model.json (e.g. "Symbol('s77', positive=True, integer=True)")."""
    return next(v["as_expr"]["expr_str"] for v in doc["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
                if "as_expr" in v)


def replace_strings(doc, old: str, new: str):
    if isinstance(doc, dict):
        return {(new if k == old else k): replace_strings(v, old, new) for k, v in doc.items()}
    if isinstance(doc, list):
        return [replace_strings(v, old, new) for v in doc]
    return new if doc == old else doc


def hostile_pt2(env, tmp: Path, case: str) -> tuple[Path, Path]:
    """A `.pt2` edited in one place: (file, the marker its payload would create)."""
    marker = tmp / f"MARKER_pt2_{case}"
    touch = f"__import__('os').system('touch {marker}')"
    dst = tmp / f"{case}.pt2"
    extra = []

    def edit(doc: dict) -> dict:
        symbol = sym_payload(doc)
        if case == "eval":  # torch.export.load hands expr_str to sympy.sympify (eval)
            return replace_strings(doc, symbol, f"({touch} and 0) + {symbol}")
        if case == "attribute":
            return replace_strings(doc, symbol, f"{symbol}.func.__globals__")
        if case == "lambda":
            return replace_strings(doc, symbol, f"(lambda: {touch})() * 0 + {symbol}")
        if case == "subscript":
            return replace_strings(doc, symbol, f"[{symbol}][0]")
        if case == "guards":  # ExportedProgram.module() execs guards_code (run when the module is called)
            doc["guards_code"] = [f"{touch} == 0"]
        elif case == "unknown_key":
            doc["graph_module"]["graph"]["evil"] = touch
        elif case == "name":  # torch pastes names into the Python code it generates for the graph and runs
            return replace_strings(doc, "x", f"x={touch}")
        elif case == "treespec":
            sig = doc["graph_module"]["module_call_graph"][0]["signature"]
            sig["in_spec"] = json.dumps([1, {"type": "collections.defaultdict", "context": json.dumps({
                "default_factory_module": "os", "default_factory_name": "getpid", "dict_context": []}),
                "children_spec": []}])
        elif case == "range_key":  # torch counts up to the number of an unbacked symbol
            doc["range_constraints"]["u99999999999"] = {"min_val": 0, "max_val": 4}
        elif case == "stack_trace":  # FX may paste stack traces into generated code: a \r is a line break there
            doc["graph_module"]["graph"]["nodes"][0]["metadata"]["stack_trace"] = f'File "a.py", line 1, in f\r{touch}'
        elif case == "undeclared":
            return replace_strings(doc, symbol, "s5")
        elif case == "aotinductor":
            extra.append((f"{env['pt2'].stem}/data/aotinductor/model/model.so", b"\x7fELF"))
        return doc

    def fn(name, data):
        if name.endswith("/models/model.json"):
            data = json.dumps(edit(json.loads(data))).encode()
        return [(name, data)]

    rewrite(env["pt2"], dst, fn, extra)
    return dst, marker


# -- a zip written by hand, byte by byte -------------------------------------------------------------
def zip_bytes(entries: list[dict], trailing: bytes = b"") -> bytes:
    """A zip with the given entries: name, data (as stored in the file), method, flags, size
    (uncompressed), crc; `local` overrides what the local header declares."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name = e["name"].encode("latin-1") if isinstance(e["name"], str) else e["name"]
        data, method, flags = e["data"], e.get("method", 0), e.get("flags", 0)
        size = e.get("size", len(data))
        crc = e.get("crc", zlib.crc32(data) if method == 0 else 0)
        local = {"name": name, "method": method, "flags": flags, "crc": crc, "csize": len(data), "size": size,
                 **e.get("local", {})}
        lname = local["name"].encode("latin-1") if isinstance(local["name"], str) else local["name"]
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, local["flags"], local["method"], 0, 0x21,
                           local["crc"], local["csize"], local["size"], len(lname), 0) + lname + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0x21, crc, len(data),
                               size, len(name), 0, 0, 0, 0, 0, offset) + name
    n = len(entries)
    tail = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    return bytes(out) + bytes(central) + tail + trailing


def members(path: Path) -> list[dict]:
    with zipfile.ZipFile(path) as z:
        return [{"name": i.filename, "data": z.read(i.filename)} for i in z.infolist()]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def zeros_deflated(total: int, piece: int = 16 << 20) -> bytes:
    """`total` zero bytes deflated (~1000:1): one full-flushed block repeated, then a final empty block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(piece)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (total // piece) + b"\x03\x00"


def overlapping_bomb(n: int = 2048, kernel: int = 1 << 20) -> bytes:
    """n stored entries, each one's data running to the end of one shared kernel, so that each
    holds the local headers after it (an "overlapping files" bomb: ~n x kernel bytes declared)."""
    names = [f"b/{i:05d}".encode() for i in range(n)]
    head = 30 + len(names[0])
    total = n * head + kernel
    out, central = bytearray(), bytearray()
    for i, name in enumerate(names):
        size = total - (i + 1) * head
        fields = (0, 0, 0, 0x21, 0, size, size, len(name), 0)
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, size, size, len(name),
                               0, 0, 0, 0, 0, len(out)) + name
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, *fields) + name
    out += bytes(kernel)
    return bytes(out) + bytes(central) + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)


# == the payloads are real ============================================================================
def test_the_hostile_files_run_their_payload_when_nothing_checks_them(env, tmp_path):
    """Loaded by torch alone (a child interpreter, no s2i-bench): each payload creates its marker.
    So the refusals below are of files that would have acted."""
    cases = [hidden_setstate(tmp_path, c) for c in ("continuation", "duplicate", "case")]
    pt2 = [hostile_pt2(env, tmp_path, c) for c in ("eval", "name", "guards")]
    code = textwrap.dedent("""
        import sys, warnings, torch
        warnings.simplefilter("ignore")
        kind, path = sys.argv[1], sys.argv[2]
        if kind == "ts":
            torch.jit.load(path)
        else:
            torch.export.load(path).module()(torch.rand(2, 1, 128, 100))
    """)
    for kind, (path, marker) in [("ts", c) for c in cases] + [("pt2", c) for c in pt2]:
        subprocess.run([sys.executable, "-c", code, kind, str(path)], check=False, capture_output=True, timeout=300,
                       env=dict(os.environ, S2I_BENCH_QUIET="1"))
        assert marker.exists(), f"{path.name}: the payload did not run in plain torch; the test file is not hostile"


# == TorchScript: code that runs while the file loads ================================================
@pytest.mark.parametrize("case, needle", [
    ("continuation", "__setstate__"),
    ("duplicate", "twice"),
    ("case", "__setstate__"),
])
def test_hidden_setstate_is_refused_and_never_runs(env, tmp_path, case, needle):
    path, marker = hidden_setstate(tmp_path, case)
    res = score(env, path).refused(str(path), needle)
    assert "was not loaded" in res.output
    assert not marker.exists()


def test_torchscript_code_is_parsed_not_grepped(tmp_path):
    assert torchscript_code_problem(b"class M(Module):\n  def forward(self, x):\n    return x\n") is None
    for code, needle in [
        (b"class M(Module):\n  def \\\n__setstate__(self, s):\n    pass\n", "__setstate__"),
        (b"class M(Module):\n  f = getattr(self, '__set' 'state__')\n", "__setstate__"),  # ast joins the strings
        (b"class M(Module):\n  def forward(self, x:\n", "does not parse"),
        (b"x = 1\x00", "does not parse"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x : __torch__.torch.classes.quantized.LinearPackedParamsBase", "TorchBind"),
    ]:
        problem = torchscript_code_problem(code)
        assert problem and needle in problem, (code, problem)


def test_a_code_file_that_does_not_parse_is_refused(env, tmp_path):
    dst = rewrite(env["ts"], tmp_path / "garbled.ts",
                  lambda n, d: [(n, d + b"\ndef (\n" if n.endswith(".py") and b"def forward" in d else d)])
    score(env, dst).refused(str(dst), "does not parse", "/code/__torch__/")


# == the zip itself ===================================================================================
def test_a_rebuilt_zip_still_loads(env, tmp_path):
    """The hand-written zips below are valid as such: the good members, rebuilt, load."""
    good = write(tmp_path / "rebuilt.pt", zip_bytes(members(env["saved"])))
    assert archive_kind(good) == "torch-save"
    assert torch.equal(load_weights_only(good)["w"], torch.arange(6.0))
    ts = write(tmp_path / "rebuilt.ts", zip_bytes(members(env["ts"])))
    assert checked_program(ts, "translator")[0] == "torchscript"


def _variant(env, case: str) -> list[dict]:
    entries = members(env["saved"])
    pkl = next(e for e in entries if e["name"].endswith("/data.pkl"))
    if case == "encrypted":
        pkl["flags"] = 0x0001
    elif case in ("lzma", "method99"):
        pkl["method"] = 14 if case == "lzma" else 99
    elif case == "duplicate":
        entries.append(dict(pkl, data=b"\x80\x02}q\x00."))
    elif case == "case_duplicate":
        entries.append(dict(pkl, name=pkl["name"].replace("data.pkl", "DATA.PKL")))
    elif case == "local_name":
        pkl["local"] = {"name": pkl["name"].replace("data.pkl", "data.pkz")}
    elif case == "local_size":
        pkl["local"] = {"size": len(pkl["data"]) + 1000}
    elif case == "local_method":
        pkl["local"] = {"method": 8}
    elif case == "stored_sizes":
        pkl["size"] = len(pkl["data"]) * 2
    elif case in ("absolute", "dotdot", "backslash", "nul"):
        bad = {"absolute": "/etc/data.pkl", "dotdot": "x/../data.pkl", "backslash": "x\\data.pkl",
               "nul": "x/data.pkl\x00.txt"}[case]
        entries.append({"name": bad, "data": b"x"})
    elif case == "bomb":  # 2 GiB of zeros declared, deflated to ~2 MB
        pkl.update(data=zeros_deflated(2 << 30), method=8, size=2 << 30)
    else:
        raise AssertionError(case)
    return entries


@pytest.mark.parametrize("case, needle", [
    ("encrypted", "is encrypted"),
    ("lzma", "compression method 14 (LZMA)"),
    ("method99", "compression method 99"),
    ("duplicate", "twice"),
    ("case_duplicate", "without regard to case"),
    ("local_name", "local header names"),
    ("local_size", "another size"),
    ("local_method", "another compression method"),
    ("stored_sizes", "declares"),
    ("absolute", "absolute name"),
    ("dotdot", "'..'"),
    ("backslash", "backslash"),
    ("nul", "non-printable"),
    ("bomb", "zip bomb"),
])
def test_hostile_zips_are_refused_in_one_line(env, tmp_path, case, needle):
    path = write(tmp_path / f"{case}.pt", zip_bytes(_variant(env, case)))
    score(env, path).refused(str(path), "refused", needle)
    with pytest.raises(UserError, match=re.escape(needle)):
        load_weights_only(path, "checkpoint")


def test_overlapping_entries_are_refused(env, tmp_path):
    path = write(tmp_path / "overlap.pt", overlapping_bomb())
    assert path.stat().st_size < 2 << 20  # ~2 GiB declared in a ~1 MB file
    score(env, path).refused(str(path), "overlap")


def test_appended_bytes_and_too_many_entries(env, tmp_path, monkeypatch):
    appended = write(tmp_path / "appended.pt", zip_bytes(members(env["saved"]), trailing=b"tail"))
    score(env, appended).refused(str(appended), "does not end the file")
    monkeypatch.setattr(archive, "MAX_ENTRIES", 3)
    with pytest.raises(UserError, match="more than the 3 allowed"):
        load_weights_only(env["saved"])


def zip64_bytes(name: bytes, data: bytes) -> bytes:
    """One stored entry written as a zip of more than 4 GiB writes it (sizes and offset in zip64
    extra fields, zip64 end records), to check the reader follows them."""
    crc, n = zlib.crc32(data), len(data)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 20)
    out = local + name + struct.pack("<HHQQ", 1, 16, n, n) + data
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                          len(name), 28, 0, 0, 0, 0, 0xFFFFFFFF) + name + struct.pack("<HHQQQ", 1, 24, n, n, 0)
    cd_offset, rec = len(out), len(out) + len(central)
    eocd64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, len(central), cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, rec, 1)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return out + central + eocd64 + locator + eocd


def test_zip64_entries_are_read(tmp_path):
    path = write(tmp_path / "z64.zip", zip64_bytes(b"a/blob", b"0123456789" * 100))
    with archive.open_zip(path) as z:
        assert z.names == ["a/blob"] and z.read("a/blob", 10_000) == b"0123456789" * 100
    with zipfile.ZipFile(path) as z:  # Python's reader agrees
        assert z.read("a/blob") == b"0123456789" * 100


def test_a_hostile_zip_inside_a_program_is_refused(env, tmp_path):
    inner = zip_bytes([{"name": "model/data.pkl", "data": b"\x80\x02}q\x00."}] * 2)  # listed twice

    def fn(name, data):
        return [(name, inner if name.endswith("/data/sample_inputs/model.pt") else data)]

    path = rewrite(env["pt2"], tmp_path / "nested.pt2", fn)
    score(env, path).refused(str(path), "member", "sample_inputs/model.pt", "twice")


def test_zip_bombs_are_refused_without_expanding_them(env, tmp_path):
    """The declared bomb is refused from its header; the lying one (1 MiB declared, 2 GiB inside)
    while reading, at the cap. Peak memory is measured in a child process."""
    honest = write(tmp_path / "bomb.pt", zip_bytes(_variant(env, "bomb")))
    entries = _variant(env, "bomb")
    next(e for e in entries if e["method"] == 8)["size"] = 1 << 20
    lying = write(tmp_path / "lying.pt", zip_bytes(entries))
    ts_entries = members(env["ts"])
    code = next(e for e in ts_entries if e["name"].endswith(".py") and b"def forward" in e["data"])
    code.update(data=zeros_deflated(2 << 30), method=8, size=4096)
    lying_ts = write(tmp_path / "lying.ts", zip_bytes(ts_entries))
    script = textwrap.dedent("""
        import json, resource, sys
        from pathlib import Path
        import torch
        from s2i_bench.errors import UserError
        from s2i_bench.safeload import load_weights_only
        from s2i_bench.translators.programs import checked_program
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        messages = []
        for p in sys.argv[1:]:
            try:
                checked_program(Path(p), "translator") if p.endswith(".ts") else load_weights_only(p, "checkpoint")
                messages.append("loaded")
            except UserError as e:
                messages.append(str(e))
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"grew_kib": grew, "messages": messages}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(honest), str(lying), str(lying_ts)], check=False,
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, S2I_BENCH_QUIET="1"))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    honest_msg, lying_msg, ts_msg = result["messages"]
    assert str(honest) in honest_msg and "zip bomb" in honest_msg
    assert str(lying) in lying_msg and "expands past" in lying_msg
    assert str(lying_ts) in ts_msg and "expands past" in ts_msg
    assert result["grew_kib"] < 64 * 1024, result  # the old reader reached 3.7 GB on such a file


# == torch.export programs ============================================================================
@pytest.mark.parametrize("case, needles", [
    ("eval", ["expr_str", "not a symbolic size", "sympy"]),
    ("attribute", ["expr_str", "unexpected '.'"]),
    ("lambda", ["expr_str", "unexpected ':'"]),
    ("subscript", ["expr_str", "unexpected '['"]),
    ("guards", ["guards_code", "execs"]),
    ("unknown_key", ["graph_module.graph", "unknown field 'evil'"]),
    ("name", ["as_tensor.name", "is not a name"]),
    ("treespec", ["in_spec", "collections.defaultdict"]),
    ("range_key", ["range_constraints", "u99999999999"]),
    ("stack_trace", ["metadata['stack_trace']", "control character"]),
    ("undeclared", ["symbol 's5'", "never declared"]),
    ("aotinductor", ["AOTInductor"]),
])
def test_hostile_export_programs_are_refused_and_never_run(env, tmp_path, case, needles):
    path, marker = hostile_pt2(env, tmp_path, case)
    res = score(env, path).refused(str(path), *needles)
    assert "models/model.json" in res.output or case == "aotinductor"
    assert "it was not loaded" in res.output
    assert not marker.exists()


def test_good_programs_still_load_and_score(env, tmp_path):
    for path in (env["ts"], env["pt2"], env["pt2b"]):
        kind, sha = checked_program(path, "translator")
        assert kind == ("torchscript" if path.suffix == ".ts" else "export") and len(sha) == 64
        score(env, path, "--split", "train", "--out", tmp_path / f"{path.stem}.jsonl").ok()
        assert (tmp_path / f"{path.stem}.jsonl").exists()


# == the grammar of symbolic sizes ====================================================================
S = "Symbol('s77', positive=True, integer=True)"


@pytest.mark.parametrize("text", [
    S, "Integer(-3)", f"Add({S}, Integer(1))", f"Mul(Integer(2), {S})", f"FloorDiv({S}, Integer(2))",
    f"Mod(Mul(Integer(2), {S}), Integer(3))", f"Max({S}, Symbol('u1', integer=True))",
    f"CeilDiv(Add({S}, Integer(2)), Integer(3))", f"ModularIndexing({S}, Integer(2), Integer(4))",
    f"Equality({S}, Integer(2))", f"StrictLessThan({S}, Integer(3))", f"Not(Unequality({S}, Integer(2)))",
    f"And(StrictGreaterThan({S}, Integer(1)), LessThan({S}, Integer(9)))", "true", "false",
    f"Mul(Rational(1, 3), {S})", f"FloatTrueDiv(ToFloat({S}), Float('2.0', precision=53))",
    f"Pow({S}, Integer(2))", f"Where(StrictGreaterThan({S}, Integer(1)), {S}, Integer(1))",
    f"{S} + 1", f"-{S} * 2", f"({S})", f"PythonMod({S}, Integer(3))", f"CleanDiv({S}, Integer(2))",
])
def test_symbolic_sizes_torch_writes_are_accepted(text):
    declared, _ = parse_sym_expr(text)
    assert declared <= {"s77", "u1"}


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", f"{S}.func", f"[{S}][0]", "lambda: 0", f"{S}; 1", f"{S} and 1",
    "Symbol('s77', positive=__import__('os'))", "Symbol('os.system')", "Symbol(\"s77\")",
    "Symbol('s77', evaluate=True)", "Integer(1.5)", "Integer(99999999999999999999)", "exec('1')", "eval",
    f"Pow({S}, Integer(10000))",
    "Float('1e5; import os')", "Add(" * 80 + "Integer(1)" + ")" * 80, "x" * 5000, "", "Integer(1)\nInteger(2)",
    f"{S} ** 2", f"{S} // 2", f"getattr({S}, 'func')", "Max(Integer(1))", "Integer('1')",
])
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError):
        parse_sym_expr(text)


def test_range_keys_are_infix_sizes():
    for key in ("s77", "2*s16", "s16 + 1", "(s0//2)", "Mod(s0, 3)", "u0"):
        parse_sym_expr(key, range_key=True)
    for key in ("u99999999999", "__import__('os')", "Symbol('s0')", "s0.x", "s0; 1"):
        with pytest.raises(ValueError):
            parse_sym_expr(key, range_key=True)
