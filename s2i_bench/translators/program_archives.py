"""Program archives checked by parsing what torch would later parse, before torch sees them.

The zip is first read by the strict reader (`s2i_bench.archive`); then:

  * TorchScript (`check_torchscript_archive`): every code file is parsed with Python's `ast`
    (TorchScript code is Python syntax; a file that does not parse is refused) and refused if it
    defines or names `__setstate__` (TorchScript runs it while the file loads). A reference to a
    TorchBind class (`torch.classes`) is refused too: its native `__setstate__` also runs at load.
  * `torch.export` (`check_export_archive`): only the members `torch.export.save` writes are
    accepted (no AOTInductor shared libraries, no pickled weights); every JSON member is parsed
    and walked against torch's own schema dataclasses (`torch/_export/serde/schema.py`): a key
    that is not a field is refused, and every string field has a grammar. Symbolic sizes
    (`expr_str`, which torch hands to `sympy.sympify`, an `eval`) must parse under a small
    grammar (`parse_sym_expr`); names (which torch pastes into the Python code it generates and
    runs for the graph) must be identifiers; `guards_code` (which `ExportedProgram.module()`
    execs) must be empty; tree specs may not name Python types or enums to import.
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import re
import types
from pathlib import Path
from typing import Any

from s2i_bench.archive import KiB, MiB, _one_line, _shown, open_zip
from s2i_bench.translators.symexpr import parse_sym_expr

MAX_CODE_BYTES = 64 * MiB  # one TorchScript code file
MAX_CODE_TOTAL = 256 * MiB
MAX_PICKLE_BYTES = 256 * MiB  # data.pkl, constants.pkl (searched, never unpickled here)
MAX_JSON_BYTES = 256 * MiB  # models/model.json and the weights/constants configs
MAX_SMALL_BYTES = 4 * KiB  # archive_format, archive_version, byteorder, ...


# == TorchScript ================================================================================
_TORCHBIND = b"torch.classes"
_SETSTATE = "__setstate__"


def torchscript_code_problem(text: bytes) -> str | None:
    """Why a TorchScript code file may not be loaded, or None: it must be UTF-8 Python that
    neither defines nor names `__setstate__` nor refers to a TorchBind class."""
    if _SETSTATE.encode() in text:
        return (f"its code defines or names {_SETSTATE}, which TorchScript runs while the file is loaded; a "
                f"translator program needs none")
    if _TORCHBIND in text:
        return ("its code refers to a TorchBind class (torch.classes), native code whose __setstate__ runs while the "
                "file is loaded; a translator program needs none")
    try:
        tree = ast.parse(text.decode("utf-8"), mode="exec")
    except UnicodeDecodeError:
        return "its code is not UTF-8 text"
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return f"its code does not parse ({type(e).__name__}: {_one_line(getattr(e, 'msg', '') or e)[:120]})"
    for node in ast.walk(tree):
        names = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.Attribute):
            names.append(node.attr)
        elif isinstance(node, ast.arg):
            names.append(node.arg)
        elif isinstance(node, ast.alias):
            names += [node.name, node.asname or ""]
        elif isinstance(node, ast.keyword):
            names.append(node.arg or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.append(node.value)
        if _SETSTATE in names:  # (ast normalises look-alike identifiers, which the bytes above miss)
            return (f"its code defines or names {_SETSTATE}, which TorchScript runs while the file is loaded; a "
                    f"translator program needs none")
    return None


def check_torchscript_archive(path: str | Path) -> None:
    """Refuse a TorchScript archive with code that would run while it loads (module docstring)."""
    with open_zip(path) as z:
        root = z.root()
        total = 0
        for e in z.entries:
            low = e.name[len(root) + 1:].lower()  # torch finds "code/x.py" as "CODE/X.PY" too
            if low.startswith("code/") and low.endswith(".py"):
                total += e.size
                if total > MAX_CODE_TOTAL:
                    raise z._refuse(f"more than {MAX_CODE_TOTAL} bytes of code")
                problem = torchscript_code_problem(z.read(e.name, MAX_CODE_BYTES))
                if problem:
                    raise z._refuse(f"{problem} ({e.name})")
            elif low.endswith("pkl") and _TORCHBIND in z.read(e.name, MAX_PICKLE_BYTES):
                raise z._refuse(f"{e.name} refers to a TorchBind class (torch.classes), native code whose "
                                f"__setstate__ runs while the file is loaded")
        z.check_compressed()


# == torch.export programs: the JSON members ====================================================
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_FQN = re.compile(r"[A-Za-z0-9_]{1,200}(?:\.[A-Za-z0-9_]{1,200}){0,63}")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}(?:\.[A-Za-z_][A-Za-z0-9_]{0,199}){0,15}")
_OPERATOR = re.compile(r"torch\.ops\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?"
                       r"|_operator\.[A-Za-z_][A-Za-z0-9_]*|math\.[A-Za-z_][A-Za-z0-9_]*|torch\.[A-Za-z_][A-Za-z0-9_]*")
_DEVICE = re.compile(r"[a-z_]{1,32}")
_VERIFIER = re.compile(r"[A-Z_]{1,32}")
_VERSION = re.compile(r"[0-9A-Za-z.+_<=-]{1,64}")
_PAYLOAD_FILE = re.compile(r"(?:weight|tensor)_[0-9]{1,9}")
_MAX_TEXT = 100_000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")
_NODE_METADATA = frozenset({"stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "custom", "from_node"})
_TREESPEC_TYPES = frozenset({"builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})

# The grammar of every string field (class, field) of torch's export schema, and of the keys of
# its dict fields (class, field, "key"). A string field not listed here must be an identifier.
_STRING_RULES: dict[tuple, str] = {
    ("Device", "type"): "device",
    ("SymExpr", "expr_str"): "expr",
    ("Argument", "as_string"): "text", ("Argument", "as_strings"): "text", ("ConstantValue", "as_string"): "text",
    ("Argument", "as_operator"): "operator", ("Node", "target"): "operator",
    ("Node", "metadata", "key"): "node_metadata_key", ("Node", "metadata"): "text",
    ("GraphModule", "metadata", "key"): "graph_metadata_key", ("GraphModule", "metadata"): "json",
    ("GraphModule", "treespec_namedtuple_fields", "key"): "dotted",
    ("InputToParameterSpec", "parameter_name"): "fqn", ("InputToBufferSpec", "buffer_name"): "fqn",
    ("InputToTensorConstantSpec", "tensor_constant_name"): "fqn", ("BufferMutationSpec", "buffer_name"): "fqn",
    ("ParameterMutationSpec", "parameter_name"): "fqn", ("GradientToParameterSpec", "parameter_name"): "fqn",
    ("ModuleCallEntry", "fqn"): "fqn_or_empty",
    ("NamedArgument", "name"): "ident_or_empty",  # empty for the positional inputs of cond, map, ...
    ("ModuleCallSignature", "in_spec"): "treespec", ("ModuleCallSignature", "out_spec"): "treespec",
    ("ExportedProgram", "range_constraints", "key"): "range_key",
    ("ExportedProgram", "verifiers"): "verifier", ("ExportedProgram", "torch_version"): "version",
    ("ExportedProgram", "guards_code"): "guards",
    ("PayloadConfig", "config", "key"): "fqn", ("PayloadMeta", "path_name"): "payload_file",
}
# Custom objects (TorchScript classes) are pickles torch would unpickle; a translator needs none.
_FORBIDDEN = {"CustomObjArgument": "a custom object (TorchScript class)",
              "InputToCustomObjSpec": "a custom object (TorchScript class)"}


class _Refused(Exception):
    def __init__(self, where: tuple, reason: str):
        self.where, self.reason = where, reason


def _where(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, tuple):  # a dict key
            out += f"[{_shown(part[0], 48)}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _strict_json(raw: bytes) -> Any:
    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"key {_shown(k, 48)} appears twice in one object")
            out[k] = v
        return out

    def constant(name):
        raise ValueError(f"bare {name} is not JSON")

    return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)


def _treespec_problem(text: str) -> str | None:
    """torch's tree specs: [1, node], node = {"type", "context", "children_spec"} over plain
    containers only (a type name or an enum in a context would make torch import a module)."""
    try:
        doc = _strict_json(text.encode())
    except (ValueError, RecursionError) as e:
        return f"not a tree spec ({_one_line(e)[:80]})"
    if not (isinstance(doc, list) and len(doc) == 2 and doc[0] == 1 and type(doc[0]) is int):
        return "not a protocol-1 tree spec"
    count = 0
    stack = [(doc[1], 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > 64 or count > 100_000:
            return "a tree spec too deep or too large"
        if not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"}:
            return "a tree spec node with other fields than type, context, children_spec"
        typ, context, children = node["type"], node["context"], node["children_spec"]
        if not isinstance(children, list):
            return "a tree spec node whose children are not a list"
        if typ is None:
            if context is not None or children:
                return "a tree spec leaf with a context or children"
            continue
        if typ not in _TREESPEC_TYPES:
            return f"a tree spec of type {_shown(str(typ), 48)} (only tuples, lists and dicts are read)"
        if not isinstance(context, str):
            return "a tree spec context that is not a string"
        try:
            value = _strict_json(context.encode())
        except (ValueError, RecursionError):
            return "a tree spec context that is not JSON"
        if value is not None and not (isinstance(value, list) and all(
                (isinstance(k, str) and len(k) <= 200) or type(k) is int for k in value)):
            return "a tree spec context other than null or a list of keys"
        stack.extend((c, depth + 1) for c in children)
    return None


class _SchemaWalker:
    """Walk a JSON document against torch's export schema dataclasses (module docstring)."""

    def __init__(self):
        import dataclasses
        import typing
        from enum import IntEnum

        from torch._export.serde import schema
        from torch._export.serde.union import _Union

        self.schema, self.Union, self.IntEnum = schema, _Union, IntEnum
        self.dataclasses, self.typing = dataclasses, typing
        self._hints: dict[type, dict] = {}
        self.declared: set[str] = set()
        self.used: set[str] = set()
        self.nodes = 0

    def hints(self, cls) -> dict:
        if cls not in self._hints:
            self._hints[cls] = self.typing.get_type_hints(cls, globalns=vars(self.schema), include_extras=True)
        return self._hints[cls]

    def walk(self, cls, value) -> None:
        self.value(cls, value, (), ("", ""), 0)

    def value(self, tp, v, path: tuple, rule: tuple, depth: int) -> None:
        typing = self.typing
        self.nodes += 1
        if depth > 200:
            raise _Refused(path, "nested too deeply")
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            return self.value(typing.get_args(tp)[0], v, path, rule, depth)
        if isinstance(tp, (str, typing.ForwardRef)):
            name = tp if isinstance(tp, str) else tp.__forward_arg__
            return self.value(getattr(self.schema, name), v, path, rule, depth)
        if origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if v is None and len(args) < len(typing.get_args(tp)):
                return
            if len(args) != 1:
                raise _Refused(path, "a field of a type s2i-bench does not check")
            return self.value(args[0], v, path, rule, depth)
        if tp is bool:
            if type(v) is not bool:
                raise _Refused(path, "not true or false")
            return
        if tp is int:
            if type(v) is not int or not -(1 << 63) <= v < (1 << 63):
                raise _Refused(path, "not a 64-bit integer")
            return
        if tp is float:
            if v in ("Infinity", "-Infinity", "NaN") or (type(v) in (int, float) and math.isfinite(v)):
                return
            raise _Refused(path, "not a number")
        if tp is str:
            if not isinstance(v, str):
                raise _Refused(path, "not a string")
            return self.string(v, path, rule)
        if isinstance(tp, type) and issubclass(tp, self.IntEnum):
            if type(v) is not int or v not in {m.value for m in tp}:
                raise _Refused(path, f"not a {tp.__name__}")
            return
        if origin is list:
            if not isinstance(v, list):
                raise _Refused(path, "not a list")
            (item,) = typing.get_args(tp)
            if rule == ("ExportedProgram", "guards_code") and v:
                raise _Refused(path, "not empty: Python code that torch execs when the program becomes a module; "
                                     "s2i-bench runs none (export without constraints that need guards)")
            for k, x in enumerate(v):
                self.value(item, x, path + (k,), rule, depth + 1)
            return
        if origin is dict:
            if not isinstance(v, dict):
                raise _Refused(path, "not an object")
            _, item = typing.get_args(tp)
            if rule == ("Graph", "custom_obj_values") and v:
                raise _Refused(path, "custom objects (TorchScript classes); a translator needs none")
            for k, x in v.items():
                self.string(k, path + ((k,),), rule + ("key",))
                self.value(item, x, path + ((k,),), rule, depth + 1)
            return
        if isinstance(tp, type) and self.dataclasses.is_dataclass(tp):
            return self.record(tp, v, path, depth)
        raise _Refused(path, f"a field of type {tp!r} s2i-bench does not check")

    def record(self, cls, v, path: tuple, depth: int) -> None:
        name = cls.__name__
        if name in _FORBIDDEN:
            raise _Refused(path, f"{_FORBIDDEN[name]}; a translator needs none")
        if not isinstance(v, dict):
            raise _Refused(path, f"not a {name} object")
        hints = self.hints(cls)
        fields = {f.name: f for f in self.dataclasses.fields(cls)}
        unknown = [k for k in v if k not in fields]
        if unknown:
            raise _Refused(path, f"unknown field {_shown(str(unknown[0]), 48)} (not in torch's {name} schema)")
        if issubclass(cls, self.Union):
            if len(v) != 1:
                raise _Refused(path, f"a {name} must hold exactly one of its fields, it holds {len(v)}")
            ((key, x),) = v.items()
            return self.value(hints[key], x, path + (key,), (name, key), depth + 1)
        missing = [f for f, spec in fields.items() if f not in v and spec.default is self.dataclasses.MISSING
                   and spec.default_factory is self.dataclasses.MISSING]
        if missing:
            raise _Refused(path, f"missing field {missing[0]!r} of torch's {name} schema")
        for key, x in v.items():
            self.value(hints[key], x, path + (key,), (name, key), depth + 1)

    def string(self, s: str, path: tuple, rule: tuple) -> None:
        if not isinstance(s, str):
            raise _Refused(path, "not a string")
        kind = _STRING_RULES.get(rule, "ident")
        if kind == "ident" or kind == "ident_or_empty":
            if not (_IDENT.fullmatch(s) and not keyword.iskeyword(s) or kind == "ident_or_empty" and s == ""):
                raise _Refused(path, f"{_shown(s, 60)} is not a name (torch writes names into Python code it runs)")
        elif kind == "fqn" or kind == "fqn_or_empty":
            if not (_FQN.fullmatch(s) or (kind == "fqn_or_empty" and s == "")):
                raise _Refused(path, f"{_shown(s, 60)} is not a dotted attribute name")
        elif kind == "dotted":
            if not _DOTTED.fullmatch(s):
                raise _Refused(path, f"{_shown(s, 60)} is not a dotted name")
        elif kind == "operator":
            if not _OPERATOR.fullmatch(s):
                raise _Refused(path, f"{_shown(s, 60)} is not an operator name torch writes")
        elif kind == "expr":
            try:
                declared, used = parse_sym_expr(s)
            except ValueError as e:
                raise _Refused(path, f"not a symbolic size torch writes ({e}): torch would hand it to sympy's "
                                     f"eval") from None
            self.declared |= declared
            self.used |= used
        elif kind == "range_key":
            try:
                parse_sym_expr(s, range_key=True)
            except ValueError as e:
                raise _Refused(path, f"{_shown(s, 60)} is not a symbolic size ({e})") from None
        elif kind == "treespec":
            problem = _treespec_problem(s)
            if problem:
                raise _Refused(path, problem)
        elif kind == "text":
            if len(s) > _MAX_TEXT:
                raise _Refused(path, f"a string longer than {_MAX_TEXT} characters")
            if rule == ("Node", "metadata"):
                # FX can paste stack traces into the code it generates, as comments: a carriage
                # return (a line break to Python) or another control character there is refused
                if _CONTROL.search(s):
                    raise _Refused(path, "a control character (a line break to Python) in node metadata")
                self.node_metadata(s, path)
        elif kind == "json":
            if len(s) > _MAX_TEXT:
                raise _Refused(path, f"a string longer than {_MAX_TEXT} characters")
            try:
                _strict_json(s.encode())
            except (ValueError, RecursionError):
                raise _Refused(path, "not JSON") from None
        elif kind in ("node_metadata_key", "graph_metadata_key"):
            allowed = _NODE_METADATA if kind == "node_metadata_key" else {"custom"}
            if s not in allowed:
                raise _Refused(path, f"unknown metadata key {_shown(s, 48)}")
        elif kind == "device":
            if not _DEVICE.fullmatch(s):
                raise _Refused(path, f"{_shown(s, 48)} is not a device type")
        elif kind == "verifier":
            if not _VERIFIER.fullmatch(s):
                raise _Refused(path, f"{_shown(s, 48)} is not a verifier name")
        elif kind == "version":
            if not _VERSION.fullmatch(s):
                raise _Refused(path, f"{_shown(s, 48)} is not a version")
        elif kind == "payload_file":
            if not _PAYLOAD_FILE.fullmatch(s):
                raise _Refused(path, f"{_shown(s, 48)} is not a weight or tensor file name")
        elif kind == "guards":
            raise _Refused(path, "guards_code is Python code that torch execs; s2i-bench runs none")
        else:  # pragma: no cover - a rule without a check
            raise _Refused(path, f"no rule {kind!r}")

    def node_metadata(self, s: str, path: tuple) -> None:
        key = path[-1][0] if path and isinstance(path[-1], tuple) else ""
        if key == "source_fn_stack":  # "name,target;..." and torch looks each target up by attribute
            for item in s.split(";"):
                parts = item.split(",")
                if len(parts) != 2 or not _IDENT.fullmatch(parts[0]) or not _DOTTED.fullmatch(parts[1]):
                    raise _Refused(path, f"{_shown(item, 60)} is not a source function entry")
        elif key in ("custom", "from_node"):
            try:
                _strict_json(s.encode())
            except (ValueError, RecursionError):
                raise _Refused(path, "not JSON") from None


def _payload_problems(doc: dict, folder: str, prefix: str, members: set[str], base: str) -> tuple[tuple, str] | None:
    for fqn, meta in doc["config"].items():
        where = ("config", (fqn,))
        if meta["use_pickle"]:
            return where + ("use_pickle",), (f"{folder} entry {_shown(fqn, 60)} is a pickle, which torch would load "
                                             f"with code execution allowed")
        if not meta["path_name"].startswith(prefix):
            return where + ("path_name",), f"{_shown(meta['path_name'])} is not a {prefix}N file"
        if base + meta["path_name"] not in members:
            return where + ("path_name",), f"{_shown(meta['path_name'])} is not in the archive"
        tm = meta["tensor_meta"]
        if tm is None:
            return where + ("tensor_meta",), "a tensor without its shape and type"
        ints = tm["sizes"] + tm["strides"] + [tm["storage_offset"]]
        if any(set(x) != {"as_int"} or x["as_int"] < 0 for x in ints):
            return where + ("tensor_meta",), "a stored tensor whose shape is not plain non-negative integers"
    return None


def check_export_archive(path: str | Path) -> None:
    """Refuse a `.pt2` with anything torch would run or unpickle while loading it (module
    docstring): every member is accounted for and every JSON member parsed."""
    with open_zip(path) as z:
        root = z.root()
        members = {e.name[len(root) + 1:]: e.name for e in z.entries}
        fixed = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
                 "models/model.json", "data/weights/model_weights_config.json",
                 "data/constants/model_constants_config.json", "data/sample_inputs/model.pt"}
        for rel, name in members.items():
            folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
            base = rel.rsplit("/", 1)[-1]
            if rel in fixed or rel.startswith("extra/") and len(rel) > 6:
                continue
            if folder == "data/weights" and re.fullmatch(r"weight_[0-9]{1,9}", base):
                continue
            if folder == "data/constants" and re.fullmatch(r"tensor_[0-9]{1,9}", base):
                continue
            if folder in ("data/weights", "data/constants") and base.lower().endswith(".pt"):
                raise z._refuse(f"legacy pickled {folder.split('/')[1]} file {_shown(name)} in the program "
                                f"(re-export it with a current torch.export.save)")
            if rel.lower().startswith("data/aotinductor/"):
                raise z._refuse(f"{_shown(name)} is AOTInductor output (a shared library torch would load and run); "
                                f"s2i-bench reads only the exported graph")
            raise z._refuse(f"unexpected member {_shown(name)} (not one torch.export.save writes)")
        for rel in ("archive_format", "archive_version", "models/model.json", "data/weights/model_weights_config.json",
                    "data/constants/model_constants_config.json", "data/sample_inputs/model.pt"):
            if rel not in members:
                raise z._refuse(f"no {root}/{rel} (not a complete torch.export program)")
        expect = {"archive_format": (b"pt2",), "archive_version": (b"0",), "byteorder": (b"little", b"big")}
        for rel, allowed in expect.items():
            if rel in members and z.read(members[rel], MAX_SMALL_BYTES) not in allowed:
                raise z._refuse(f"{members[rel]} is not {allowed[0].decode()!r}")
        for rel in (".data/version", ".data/serialization_id"):
            if rel in members and not re.fullmatch(rb"[0-9A-Za-z]{1,64}\n?", z.read(members[rel], MAX_SMALL_BYTES)):
                raise z._refuse(f"{members[rel]} is not a version or id")

        walker = _SchemaWalker()
        schema = walker.schema
        docs = (("models/model.json", schema.ExportedProgram, ""),
                ("data/weights/model_weights_config.json", schema.PayloadConfig, "weights"),
                ("data/constants/model_constants_config.json", schema.PayloadConfig, "constants"))
        for rel, cls, folder in docs:
            name = members[rel]
            try:
                doc = _strict_json(z.read(name, MAX_JSON_BYTES))
            except (ValueError, RecursionError) as e:
                raise z._refuse(f"{name}: not JSON ({_one_line(e)[:120]})") from None
            try:
                walker.walk(cls, doc)
                if folder:
                    bad = _payload_problems(doc, folder, "weight_" if folder == "weights" else "tensor_",
                                            set(members), f"data/{folder}/")
                    if bad:
                        raise _Refused(*bad)
            except _Refused as e:
                raise z._refuse(f"{name}: {_where(e.where)}: {e.reason}") from None
            except RecursionError:
                raise z._refuse(f"{name}: nested too deeply") from None
        undeclared = sorted(walker.used - walker.declared)
        if undeclared:
            raise z._refuse(f"{members['models/model.json']}: symbol {undeclared[0]!r} is used in a size but never "
                            f"declared")
        with z.nested(members["data/sample_inputs/model.pt"]):
            pass  # a zip torch reads too (its pickle is read weights-only)
        z.check_compressed()
