"""Which code turns a file into a translator: loaders registered by plugins, tried by format.

The toolkit knows no translator family by name. A package plugs in through the entry-point
group `s2i_bench.translators`, whose value is a `Plugin` (or a function returning one):

    # pyproject.toml of the package
    [project.entry-points."s2i_bench.translators"]
    my-translator = "my_package.plugin:PLUGIN"

    # my_package/plugin.py
    PLUGIN = Plugin(name="my-translator", loaders=[Loader("my-checkpoint", sniff, load, "...")],
                    trainer=train)   # trainer optional: what `s2i-bench train-baseline` runs

A `Loader` says whether it recognises a file (`sniff(path, obj)`, where `obj` is the file as
`safeload.load_weights_only` read it: plain tensors and containers, never code) and builds the
`Translator` (`load(path, obj, device=..., options=...)`). Programs (TorchScript, torch.export)
are the toolkit's own and are recognised by their archive layout before anything is unpickled.
`register(plugin)` adds one at run time (tests, notebooks).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from s2i_bench.errors import UserError

ENTRY_POINT_GROUP = "s2i_bench.translators"


@dataclass(frozen=True)
class Loader:
    name: str  # the format, as records show it (info["kind"] is the loader's choice)
    sniff: Callable[[Path, Any], bool]
    load: Callable[..., Any]  # (path, obj, *, device, options) -> Translator
    description: str = ""


@dataclass(frozen=True)
class Plugin:
    name: str
    loaders: tuple[Loader, ...] = ()
    trainer: Callable[..., Any] | None = None  # (run, store, protocol, options, hooks) -> None
    version: str | None = None
    options: tuple[str, ...] = ()  # loader options it understands (e.g. "audio_encoder")


@dataclass
class _Registry:
    plugins: dict[str, Plugin] = field(default_factory=dict)
    loaded_entry_points: bool = False
    errors: list[str] = field(default_factory=list)


_REGISTRY = _Registry()


def register(plugin: Plugin) -> Plugin:
    """Add (or replace) a plugin by name."""
    if not isinstance(plugin, Plugin):
        raise TypeError(f"register() takes a Plugin, got {type(plugin).__name__}")
    _REGISTRY.plugins[plugin.name] = plugin
    return plugin


def unregister(name: str) -> None:
    _REGISTRY.plugins.pop(name, None)


def plugins() -> dict[str, Plugin]:
    """Every plugin: those of installed packages (entry points, read once) and registered ones."""
    if not _REGISTRY.loaded_entry_points:
        _REGISTRY.loaded_entry_points = True
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                value = ep.load()
                plugin = value() if callable(value) and not isinstance(value, Plugin) else value
                if not isinstance(plugin, Plugin):
                    raise TypeError(f"gives {type(plugin).__name__}, not a Plugin")
            except Exception as e:  # a broken plugin must not stop the others
                _REGISTRY.errors.append(f"translator plugin {ep.name!r} ({ep.value}): {type(e).__name__}: {e}")
                continue
            _REGISTRY.plugins.setdefault(plugin.name, plugin)
    return dict(_REGISTRY.plugins)


def loaders() -> list[tuple[Plugin, Loader]]:
    return [(p, loader) for p in plugins().values() for loader in p.loaders]


def trainer(name: str | None = None):
    """The training function of plugin `name` (or of the only plugin that has one)."""
    with_trainer = {n: p for n, p in plugins().items() if p.trainer is not None}
    if name is None:
        if len(with_trainer) == 1:
            return next(iter(with_trainer.values()))
        if not with_trainer:
            raise UserError("no installed translator plugin can train (is s2i-bench installed with its baseline?)"
                            + _plugin_errors())
        raise UserError(f"several translator plugins can train ({', '.join(sorted(with_trainer))}); "
                        "choose one with --baseline NAME")
    if name not in with_trainer:
        import difflib

        close = difflib.get_close_matches(name, list(with_trainer), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown baseline {name!r}{hint} (installed: {', '.join(sorted(with_trainer)) or 'none'})")
    return with_trainer[name]


def _plugin_errors() -> str:
    return ("; " + "; ".join(_REGISTRY.errors)) if _REGISTRY.errors else ""


def load_file(path: Path, *, device: str = "cpu", options: dict[str, Any] | None = None):
    """A translator file as a `Translator`: a program by its archive layout, else the first
    registered loader that recognises its (weights-only) content."""
    from s2i_bench.safeload import archive_kind, load_weights_only

    options = {k: v for k, v in (options or {}).items() if v is not None}
    kind = archive_kind(path)
    if path.suffix == ".pt2" or kind in ("torchscript", "export"):
        from s2i_bench.translators.programs import load_program_translator

        return load_program_translator(path, device, timeout_s=options.get("program_timeout"),
                                       unconfined=bool(options.get("unconfined")),
                                       memory_gib=options.get("program_memory"))
    obj = load_weights_only(path, "translator")
    for plugin, loader in loaders():
        try:
            recognised = loader.sniff(path, obj)
        except UserError:  # the loader knows the file and what is wrong with it
            raise
        except Exception:  # a sniffer that trips over an unexpected layout simply does not recognise it
            recognised = False
        if recognised:
            translator = loader.load(path, obj, device=device, options=options)
            translator.info.setdefault("plugin", plugin.name)
            if plugin.version:
                translator.info.setdefault("plugin_version", plugin.version)
            return translator
    known = [f"{loader.name} ({plugin.name})" for plugin, loader in loaders()]
    raise UserError(f"{path}: not a recognised translator: no loader claims it (known formats: "
                    f"{', '.join(known + ['TorchScript', 'torch.export .pt2']) or 'none'}){_plugin_errors()}")
