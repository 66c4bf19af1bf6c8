"""Skippable pipeline steps for `demo`: a step reruns only when its inputs changed.

Each step has a key (what it depends on: protocol fingerprint, parameters, the keys of the steps
it reads, a hash of the code) and writes `<work>/.steps/<name>.json` after it succeeds. The next
run compares keys: equal key and outputs present → skip. `--force` redoes every step.

The code hash is taken over the source files, not the git commit, so committing the results of
a run does not invalidate it, while any change to the code does.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from s2i_bench.fileio import atomic_write_json, to_jsonable
from s2i_bench.provenance import now_iso


@lru_cache(maxsize=1)
def code_hash() -> str:
    """sha256 over the toolkit's and the baseline's Python sources and the protocol files."""
    root = Path(__file__).resolve().parents[2]  # s2i_bench/demo/steps.py -> the repository
    h = hashlib.sha256()
    for folder in ("s2i_bench", "baselines", "protocols"):
        for p in sorted((root / folder).rglob("*")):
            if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def step_key(**parts: Any) -> str:
    blob = json.dumps(to_jsonable(parts), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class StepRunner:
    work: Path
    force: bool = False
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    def _stamp(self, name: str) -> Path:
        return self.work / ".steps" / f"{name}.json"

    def run(self, name: str, key: str, outputs: list[Path], fn: Callable[[], Any]) -> bool:
        """Run `fn` unless its stamp has the same key and every output exists. True if it ran."""
        stamp = self._stamp(name)
        if not self.force and stamp.is_file() and all(Path(o).exists() for o in outputs):
            try:
                previous = json.loads(stamp.read_text())
            except json.JSONDecodeError:
                previous = {}
            if previous.get("key") == key:
                self.timings[name] = 0.0
                self.log(f"[{name}] up to date, skipped (made {previous.get('finished', '?')}, "
                         f"took {previous.get('seconds', 0):.1f} s)")
                return False
        self.log(f"[{name}] running ...")
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        self.timings[name] = seconds
        atomic_write_json(stamp, {"name": name, "key": key, "seconds": round(seconds, 2),
                                  "finished": now_iso(), "outputs": [str(o) for o in outputs]})
        self.log(f"[{name}] done in {seconds:.1f} s")
        return True

    def key_of(self, name: str) -> str | None:
        stamp = self._stamp(name)
        if not stamp.is_file():
            return None
        return json.loads(stamp.read_text()).get("key")
