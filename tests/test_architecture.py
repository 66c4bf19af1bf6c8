"""The seams between the toolkit and the baselines, checked on the code itself: who imports
whom, a second baseline plugged in from outside the toolkit, and the installed package (not
editable) finding its protocols and the paper's numbers."""

from __future__ import annotations

import ast
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a baseline may import of the toolkit (docs/architecture.md, "Stable helpers").
STABLE = {"s2i_bench.errors", "s2i_bench.fileio", "s2i_bench.protocol", "s2i_bench.provenance", "s2i_bench.seeding",
          "s2i_bench.images", "s2i_bench.safeload", "s2i_bench.runs", "s2i_bench.translators", "s2i_bench.data.store",
          "s2i_bench.distributed", "s2i_bench.log"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_baselines_import_only_the_stable_helpers():
    bad = {}
    for path in (ROOT / "baselines").rglob("*.py"):
        toolkit = {m for m in imports_of(path) if m == "s2i_bench" or m.startswith("s2i_bench.")}
        outside = {m for m in toolkit if not any(m == s or m.startswith(s + ".") for s in STABLE)
                   and m not in {s.rsplit(".", 1)[0] for s in STABLE if "." in s}}
        if outside:
            bad[str(path.relative_to(ROOT))] = sorted(outside)
    assert not bad, bad


def test_the_toolkit_never_imports_the_baseline_by_name():
    bad = [str(p.relative_to(ROOT)) for p in (ROOT / "s2i_bench").rglob("*.py")
           if any(m == "s2i_translator" or m.startswith("s2i_translator.") for m in imports_of(p))]
    assert not bad, bad


def test_subpackages_point_down_the_data_flow():
    """data <- translators <- informativity <- scoring <- report: no arrow back up the flow."""
    order = ["data", "translators", "informativity", "scoring", "report"]
    bad = []
    for i, pkg in enumerate(order):
        for path in (ROOT / "s2i_bench" / pkg).rglob("*.py"):
            for m in imports_of(path):
                parts = m.split(".")
                if len(parts) > 1 and parts[0] == "s2i_bench" and parts[1] in order[i + 1:]:
                    bad.append(f"{path.relative_to(ROOT)} imports {m}")
    assert not bad, bad


TOY = '''
import torch
from s2i_bench.translators import Loader, Plugin, Translator

def _sniff(path, obj):
    return isinstance(obj, dict) and obj.get("format") == "toy-translator"

def _load(path, obj, *, device="cpu", options=None):
    level = float(obj["level"])

    def fn(batch):  # a flat grey picture, 48 high and 64 wide, as uint8: any size is allowed
        return torch.full((len(batch), 48, 64, 3), int(127 + 100 * level), dtype=torch.uint8)

    return Translator(fn, {"path": str(path), "sha256": "toy", "kind": "toy", "epoch": int(obj["epoch"]),
                           "embedding_dim": None, "run": "toy"})

PLUGIN = Plugin(name="toy-baseline", loaders=(Loader("toy", _sniff, _load, "a toy translator"),), version="0.1")
'''


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    """A second baseline as an installed package would be: code plus a dist-info with its entry point."""
    site = tmp_path_factory.mktemp("site")
    (site / "toy_baseline").mkdir()
    (site / "toy_baseline" / "__init__.py").write_text(TOY)
    info = site / "toy_baseline-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-baseline\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[s2i_bench.translators]\ntoy = toy_baseline:PLUGIN\n")
    return site


def test_a_second_baseline_plugs_in_through_its_entry_point(toy_site, fake_store, tmp_path):
    import torch

    from fakes import write_bundle
    from s2i_bench.protocol import load_protocol

    protocol = load_protocol("tiny")
    bundle = write_bundle(tmp_path / "bundle.pt", protocol)
    toy = tmp_path / "toy.pt"
    torch.save({"format": "toy-translator", "level": 0.2, "epoch": 3}, toy)
    cli = Path(sys.executable).parent / "s2i-bench"
    env = dict(os.environ, PYTHONPATH=str(toy_site), S2I_BENCH_QUIET="1")
    done = subprocess.run([str(cli), "score", str(toy), "--data", str(fake_store), "--classifiers", str(bundle),
                           "--json", "--out", str(tmp_path / "r.jsonl")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    assert record["translator"]["kind"] == "toy" and record["translator"]["plugin"] == "toy-baseline"
    assert record["translator"]["native_size"] == [48, 64] and record["epoch"] == 3
    assert set(record["classes"]) == set(protocol.class_keys)
    assert all(c["n_images"] == 6 for c in record["classes"].values())


@pytest.mark.slow
def test_installed_package_finds_its_protocols_and_the_papers_numbers(tmp_path):
    """`pip install .` (not editable): the protocol files and paper-numbers.csv travel as package data."""
    target = tmp_path / "target"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                           "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (target / "s2i_bench" / "protocols" / "vegas5.toml").is_file()
    code = ("import s2i_bench, sys; assert s2i_bench.__file__.startswith(sys.argv[1]), s2i_bench.__file__; "
            "from s2i_bench.protocol import available_protocols, load_protocol; "
            "from s2i_bench.report.paper import load_paper_numbers; "
            "print(available_protocols(), load_protocol('vegas5').name, len(load_paper_numbers()))")
    env = dict(os.environ, PYTHONPATH=str(target))
    done = subprocess.run([sys.executable, "-c", code, str(target)], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vegas5" in done.stdout and "synth" in done.stdout and done.stdout.split()[-1].isdigit()


# -- fitness: the owners are not bypassed, and the code keeps its shape ----------------------------------
CODE = sorted([*(ROOT / "s2i_bench").rglob("*.py"), *(ROOT / "baselines").rglob("*.py")])
RUN_NAMES = {"options.json", "log.csv", "checkpoints", "grids", "metric-informativity.jsonl", "metric-*.jsonl",
             "resume.pt", "generator-*.pt", "samples-*"}


def _path_strings(tree) -> list[tuple[int, str]]:
    """String constants used as file names: joined with `/`, given to glob / open / Path /
    with_name, or compared with a path's `.name`."""
    found = []
    for node in ast.walk(tree):
        candidates = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            candidates = [node.left, node.right]
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("glob", "rglob", "joinpath", "with_name", "open", "Path"):
                candidates = list(node.args)
        elif isinstance(node, ast.Compare):
            candidates = [node.left, *node.comparators]
        found += [(c.lineno, c.value) for c in candidates if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return found


def test_only_runs_py_spells_the_run_folders_files():
    bad = [f"{p.relative_to(ROOT)}:{line} {value!r}" for p in CODE if p != ROOT / "s2i_bench" / "runs.py"
           for line, value in _path_strings(ast.parse(p.read_text())) if value in RUN_NAMES]
    assert not bad, bad


def test_only_the_store_and_pool_modules_read_their_metadata_by_key():
    """`x.meta[...]` / `x.meta.get(...)` of a store, a pool or a blind label set only in
    data/store*.py, informativity/pool.py and informativity/blind_set.py (FX graph nodes' `.meta`
    are torch's, not ours)."""
    owners = {ROOT / "s2i_bench" / "data" / "store.py", ROOT / "s2i_bench" / "data" / "store_write.py",
              ROOT / "s2i_bench" / "informativity" / "pool.py", ROOT / "s2i_bench" / "informativity" / "blind_set.py"}
    bad = []
    for p in CODE:
        if p in owners:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            target = node.value if isinstance(node, ast.Subscript) else \
                node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "get" else None
            if isinstance(target, ast.Attribute) and target.attr == "meta" and \
                    not (isinstance(target.value, ast.Name) and target.value.id == "node"):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def _module_graph() -> dict[str, set[str]]:
    """Every import (at the top or inside functions) between the project's modules, by the
    module it names (a package's implicit __init__ is not counted: it is already loaded)."""
    mods = {}
    for base, prefix in ((ROOT / "s2i_bench", "s2i_bench"), (ROOT / "baselines" / "s2i_translator", "s2i_translator")):
        for p in base.rglob("*.py"):
            parts = [prefix, *p.relative_to(base).with_suffix("").parts]
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def named(name: str) -> set[str]:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in mods:
                return {".".join(parts[:i])}
        return set()

    graph = {}
    for m, p in mods.items():
        edges = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                for a in node.names:
                    edges |= named(a.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                edges |= named(node.module)
                edges |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods}
        graph[m] = edges - {m}
    return graph


def test_no_module_import_cycle():
    graph = _module_graph()
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_code_keeps_its_shape():
    """docs/architecture.md, "Shape": at most two functions over 80 lines (each with a comment
    saying why), one module over 500, 20 imports inside functions of the project or the standard
    library outside cli.py, and fewer than 10 `(x.get(..) or {}).get(..)` chains."""
    stdlib = set(sys.stdlib_module_names)
    long_functions, big_modules, inner_imports, chains = [], [], [], 0
    for p in CODE:
        text = p.read_text()
        chains += text.count("or {}).get(")
        if len(text.splitlines()) > 500:
            big_modules.append(str(p.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{p.relative_to(ROOT)}:{node.name}")
                if p.name == "cli.py":
                    continue
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        name = sub.names[0].name if isinstance(sub, ast.Import) else (sub.module or "")
                        if name.split(".")[0] in ("s2i_bench", "s2i_translator") or name.split(".")[0] in stdlib:
                            inner_imports.append(f"{p.relative_to(ROOT)}:{sub.lineno}")
    assert len(long_functions) <= 2, long_functions
    assert len(big_modules) <= 1, big_modules
    assert len(inner_imports) <= 20, inner_imports
    assert chains < 10, chains


def imported_test_files(path: Path, test_modules: set[str]) -> list[str]:
    """The modules named `test_*` that a file imports (`import`, `from .. import`, relative or
    absolute, at the top or inside functions, or by name through importlib / __import__)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from tests.scoring import test_scoring`: a name may be a module too
            modules = [node.module or ""] + [a.name for a in node.names if a.name in test_modules]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            modules = [node.args[0].value]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {m}" for m in modules
                  if any(part.startswith("test_") for part in m.split("."))]
    return found


def test_no_file_imports_a_test_file():
    """A test file is never a library: what two files share lives in tests/fakes.py (the fakes)
    or tests/conftest.py (the fixtures), never in a `test_*` module that another file imports
    (a second import of it, under another name, would also collect its tests twice)."""
    files = sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])
    test_modules = {p.stem for p in files if p.stem.startswith("test_")}
    assert len(test_modules) > 20  # the walk really sees the test files in their folders
    bad = [hit for p in files for hit in imported_test_files(p, test_modules)]
    assert not bad, bad


def test_the_owners_table_lists_every_module_and_only_real_ones():
    """docs/architecture.md's owners table names every module of the package and the baseline
    (by path, or a sibling's file name in the same row), and nothing that does not exist."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc[doc.index("## Modules: who owns which contract"):doc.index("### Stable helpers")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named: set[Path] = set()
    for row in rows:
        cells = row.split("|")[1]
        paths = re.findall(r"`([\w/.]+)`", cells)
        folder = None
        for p in paths:
            if "/" in p:
                folder = (ROOT / p).parent if p.endswith(".py") else ROOT / p
                named.add(ROOT / p)
            elif folder is not None:
                named.add(folder / p)  # a sibling named by its file name in the same row
    missing = sorted(str(p.relative_to(ROOT)) for p in named if not p.exists())
    assert not missing, f"the table names modules that do not exist: {missing}"
    modules = [p for p in CODE if p.name != "__init__.py"]
    folders = {p for p in named if p.is_dir()}
    unlisted = sorted(str(p.relative_to(ROOT)) for p in modules if p not in named and p.parent not in folders)
    assert not unlisted, f"modules missing from the owners table: {unlisted}"
