"""Local translator plugins: `--translator MODULE:FACTORY` or `--translator path/to/file.py:FACTORY`.

    def make(protocol, device):          # the FACTORY
        return MySystem()                # any object with translate(batch) -> images

    class MySystem:
        name = "my-system"               # optional: how records name it (default: the spec)
        version = "1.0"                  # optional: recorded
        inputs = ("waveform",)           # optional: what it reads (default: waveform and log_mel)
        def translate(self, batch):      # batch: translators.base.Batch
            ...                          # uint8 (B, H, W, 3) or float (B, 3, H, W) in [-1, 1]

A local plugin is code the user chose to run, with the user's rights: it is imported and run in
this process, not inspected or sandboxed like a TorchScript / torch.export file. Its answers are
checked like any translator's (batch size, dtype, shape, NaN, range) and a failure is one line
naming the plugin. The record names it, with the sha256 of its source file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from s2i_bench.errors import UserError
from s2i_bench.translators.base import Translator

KNOWN_INPUTS = ("waveform", "waveform_context", "log_mel")
DEFAULT_INPUTS = ("waveform", "log_mel")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def looks_like_plugin(spec: str) -> bool:
    """`MODULE:FACTORY` or `file.py:FACTORY` (and not an existing path)."""
    if ":" not in spec or Path(spec).exists():
        return False
    target, _, factory = spec.rpartition(":")
    return bool(factory.isidentifier() and (target.endswith(".py") or _MODULE_NAME.match(target)))


def load_plugin(spec: str, protocol, device: str = "cpu") -> Translator:
    """Import the plugin, call its factory with (protocol, device), wrap the answer."""
    target, _, factory_name = spec.rpartition(":")
    if not target or not factory_name.isidentifier():
        raise UserError(f"--translator {spec!r}: expected MODULE:FACTORY or path/to/file.py:FACTORY")
    module, source = _import(target, spec)
    factory = getattr(module, factory_name, None)
    if factory is None:
        import difflib

        names = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(factory_name, names, n=1)
        hint = (f"; did you mean {close[0]!r}?" if close
                else f" (it defines: {', '.join(sorted(names)[:10]) or 'nothing callable'})")
        raise UserError(f"plugin {spec}: {target} has no {factory_name!r}{hint}")
    if not callable(factory):
        raise UserError(f"plugin {spec}: {factory_name} is a {type(factory).__name__}, not a factory function")
    try:
        system = factory(protocol, device)
    except UserError:
        raise
    except Exception as e:  # the user's code: say what it said, in one line
        raise UserError(f"plugin {spec}: {factory_name}(protocol, device) failed ({type(e).__name__}: "
                        f"{_first_line(e)})") from None
    translate = getattr(system, "translate", None)
    if not callable(translate):
        raise UserError(f"plugin {spec}: {factory_name}() returned {type(system).__name__}, which has no "
                        "translate(batch) method")
    inputs = _inputs(system, spec)
    info = {"path": spec, "sha256": _sha256(source), "kind": "plugin",
            "name": str(getattr(system, "name", None) or spec), "version": _version(system, module),
            "source_file": str(source) if source else None,
            "inputs_declared": hasattr(system, "inputs")}
    return Translator(translate, info, device=device, inputs=inputs)


def _import(target: str, spec: str):
    """(module, its source file or None)."""
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UserError(f"plugin {spec}: {path} not found")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        name = f"s2i_bench_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise UserError(f"plugin {spec}: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            module_spec.loader.exec_module(module)
        except KeyboardInterrupt:
            sys.modules.pop(name, None)
            raise
        except BaseException as e:  # SystemExit too: a plugin's exit() must not end the scoring silently
            sys.modules.pop(name, None)
            raise UserError(f"plugin {spec}: importing {path} failed ({type(e).__name__}: {_first_line(e)})") from None
        return module, path.resolve()
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)  # a module beside the user, as `python -m` would find it
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name and target.startswith(e.name):
            raise UserError(f"plugin {spec}: no module named {target!r} (not installed, and not a .py path)") from None
        raise UserError(f"plugin {spec}: importing {target} failed ({type(e).__name__}: {_first_line(e)})") from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise UserError(f"plugin {spec}: importing {target} failed ({type(e).__name__}: {_first_line(e)})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    source = getattr(module, "__file__", None)
    return module, Path(source).resolve() if source else None


def _inputs(system: Any, spec: str) -> tuple[str, ...]:
    declared = getattr(system, "inputs", DEFAULT_INPUTS)
    if isinstance(declared, str):
        declared = (declared,)
    try:
        inputs = tuple(str(x) for x in declared)
    except TypeError:
        raise UserError(f"plugin {spec}: inputs must be a tuple of names ({', '.join(KNOWN_INPUTS)})") from None
    unknown = [x for x in inputs if x not in KNOWN_INPUTS]
    if unknown or not inputs:
        raise UserError(f"plugin {spec}: unknown inputs {unknown or '(none)'}; a batch holds "
                        f"{', '.join(KNOWN_INPUTS)} and seeds")
    return inputs


def _version(system: Any, module) -> str | None:
    v = getattr(system, "version", None) or getattr(module, "__version__", None)
    return None if v is None else str(v)


def _sha256(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else "no message"
