"""People's labels of a pool: one append-only log per annotator, the order they see, agreement.

    POOL/annotations/<annotator>.jsonl     one line per action, appended under a lock and fsynced:
        {"seq": 7, "op": "label", "image_id": "img000123", "label": 1, "image_sha256": "…", "time": "…"}
        {"seq": 8, "op": "clear", "image_id": "img000123", ...}     (undo)
        {"seq": 9, "op": "skip", "image_id": "img000124", ...}

An image's label is its last `label` event unless a later `clear` undid it; a kill between two
lines loses nothing written (a line cut by a crash is set aside, as in the records files). Each
event carries the image's sha256 from the pool, so labels of an image that has since changed are
refused when read.

`order(pool, annotator)` is the sequence an annotator sees: a seeded random permutation (by the
pool's seed and the annotator's name) that interleaves models and classes; with an overlap set
(a fixed share of the pool shown to every annotator, for agreement) first, and with
`share=(k, n)` only the overlap plus every n-th of the rest.

Agreement on the images several annotators labelled: Cohen's kappa for two, Krippendorff's
alpha (nominal) for more, per class, each with a bootstrap interval over the images.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import append_line
from s2i_bench.locks import exclusive_lock
from s2i_bench.provenance import now_iso

ANNOTATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
FOLDER = "annotations"
OPS = ("label", "clear", "skip")


def check_annotator(name: str) -> str:
    if not isinstance(name, str) or not ANNOTATOR.match(name) or ".." in name:
        raise UserError(f"annotator name {name!r}: use 1-40 letters, digits, '_', '-' or '.', "
                        "starting with a letter or digit (it names a file)")
    return name


def log_path(pool_dir: Path, annotator: str) -> Path:
    return Path(pool_dir) / FOLDER / f"{check_annotator(annotator)}.jsonl"


def append(pool_dir: Path, annotator: str, event: dict) -> dict:
    """Append one event (under the annotator's lock, fsynced); returns it with its sequence number."""
    if event.get("op") not in OPS:
        raise ValueError(f"unknown op {event.get('op')!r}")
    path = log_path(pool_dir, annotator)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"labels of {annotator}", wait_s=30.0):
        events = read_log(path)
        event = {"seq": (events[-1]["seq"] + 1) if events else 1, **event, "time": now_iso()}
        line = (json.dumps(event, sort_keys=True) + "\n").encode()
        append_line(path, line)  # never through a link; a line cut by a crash is set aside first
    return event


def append_many(pool_dir: Path, annotator: str, events: list[dict]) -> int:
    """Append several events at once (one lock, one read of the log, one write): an annotator
    that labels a whole set in one go, as the synthetic world's judge does. Returns the count."""
    if any(e.get("op") not in OPS for e in events):
        raise ValueError("unknown op")
    path = log_path(pool_dir, annotator)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"labels of {annotator}", wait_s=30.0):
        old = read_log(path)
        seq, when = (old[-1]["seq"] if old else 0), now_iso()
        lines = [json.dumps({"seq": seq + i + 1, **e, "time": when}, sort_keys=True) + "\n"
                 for i, e in enumerate(events)]
        if lines:
            append_line(path, "".join(lines).encode())
    return len(lines)


def read_log(path: Path) -> list[dict]:
    """The events of one log in order; a last line cut by a crash is skipped (kept by the next append)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) and not text.endswith("\n"):
                continue
            raise UserError(f"{path}: line {i} is not valid JSON; not an annotation log written by "
                            "`s2i-bench label-server`") from None
        if not isinstance(event, dict) or event.get("op") not in OPS or not isinstance(event.get("image_id"), str):
            raise UserError(f"{path}: line {i} is not an annotation event")
        if event["op"] == "label" and event.get("label") not in (0, 1):
            raise UserError(f"{path}: line {i}: label must be 0 or 1")
        out.append(event)
    return out


@dataclass
class State:
    """One annotator's current labels and where they are."""

    labels: dict[str, int]  # image id -> 0 / 1
    skipped: set[str]
    history: list[str]  # image ids in the order they were labelled (for undo)
    times: list[str]


def state(events: list[dict]) -> State:
    labels: dict[str, int] = {}
    skipped: set[str] = set()
    history: list[str] = []
    times: list[str] = []
    for e in events:
        iid = e["image_id"]
        if e["op"] == "label":
            labels[iid] = int(e["label"])
            skipped.discard(iid)
            history = [h for h in history if h != iid] + [iid]
            times.append(e.get("time", ""))
        elif e["op"] == "clear":
            labels.pop(iid, None)
            history = [h for h in history if h != iid]
        else:
            skipped.add(iid)
    return State(labels, skipped, history, times)


def _unit(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") / 2 ** 64


def order(pool, annotator: str, *, seed: int = 0, overlap: float = 0.0,
          share: tuple[int, int] | None = None) -> list[str]:
    """The image ids `annotator` labels, in the order shown (see the module docstring)."""
    ids = pool.table["image_id"].astype(str).tolist()
    base = f"{pool.content_hash}|{seed}"
    in_overlap = [i for i in ids if _unit(f"{base}|overlap|{i}") < overlap]
    rest = [i for i in ids if i not in set(in_overlap)]
    if share is not None:
        k, n = share
        if not (1 <= k <= n):
            raise UserError(f"--share {k}/{n}: give K/N with 1 <= K <= N")
        rest = [i for i in rest if int(_unit(f"{base}|share|{i}") * n) == k - 1]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{base}|{annotator}".encode()).digest()[:8], "little"))
    return [in_overlap[j] for j in rng.permutation(len(in_overlap))] + [rest[j] for j in rng.permutation(len(rest))]


def annotators(pool_dir: Path) -> list[str]:
    folder = Path(pool_dir) / FOLDER
    return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []


def collected_votes(pool):
    """Every annotator's current labels as votes (image_id, label, annotator), checked against the
    pool's image hashes."""
    import pandas as pd

    sha = dict(zip(pool.table["image_id"].astype(str), pool.table["image_sha256"].astype(str)))
    rows = []
    names = annotators(pool.path)
    if not names:
        raise UserError(f"{pool.path}: no annotations yet ({FOLDER}/ is empty); label with `s2i-bench label-server "
                        f"{pool.path}`")
    for name in names:
        path = log_path(pool.path, name)
        events = read_log(path)
        for e in events:
            if e["image_id"] not in sha:
                raise UserError(f"{path}: image {e['image_id']} is not in the pool {pool.path}")
            if e.get("image_sha256") and e["image_sha256"] != sha[e["image_id"]]:
                raise UserError(f"{path}: image {e['image_id']} changed since {name} labelled it (sha256 differs); "
                                "the pool was rebuilt: its labels do not describe these images")
        for iid, label in state(events).labels.items():
            rows.append({"image_id": iid, "label": int(label), "annotator": name})
    if not rows:
        raise UserError(f"{pool.path}: the annotation logs hold no labels")
    return pd.DataFrame(rows, columns=["image_id", "label", "annotator"])


# -- agreement ---------------------------------------------------------------------------------------------
def cohen_kappa(a, b) -> float | None:
    a, b = np.asarray(a, int), np.asarray(b, int)
    if a.size == 0:
        return None
    po = float(np.mean(a == b))
    pe = float(np.mean(a) * np.mean(b) + (1 - np.mean(a)) * (1 - np.mean(b)))
    return None if pe == 1 else (po - pe) / (1 - pe)


def krippendorff_alpha(matrix) -> float | None:
    """Nominal alpha of a (units, coders) matrix with NaN where a coder gave no value."""
    m = np.asarray(matrix, dtype=float)
    pairable = [row[~np.isnan(row)] for row in m]
    pairable = [v for v in pairable if v.size >= 2]
    if not pairable:
        return None
    values = np.unique(np.concatenate(pairable))
    o = np.zeros((len(values), len(values)))  # coincidence matrix
    index = {v: i for i, v in enumerate(values)}
    for v in pairable:
        counts = np.zeros(len(values))
        for x in v:
            counts[index[x]] += 1
        o += (np.outer(counts, counts) - np.diag(counts)) / (v.size - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return None
    d_o = o.sum() - np.trace(o)
    d_e = (n * n - (n_c ** 2).sum()) / (n - 1)
    return None if d_e == 0 else float(1 - d_o / d_e)


def agreement(votes, classes: dict[str, str], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Per class (and all): images labelled by two or more annotators, Cohen's kappa (two
    annotators) or Krippendorff's alpha (more), with a bootstrap interval over the images."""
    if votes["annotator"].nunique() < 2:
        return {"annotators": int(votes["annotator"].nunique()), "note": "one annotator: no agreement to measure"}
    wide = votes.pivot_table(index="image_id", columns="annotator", values="label", aggfunc="last")
    wide = wide[wide.notna().sum(axis=1) >= 2]
    out: dict[str, Any] = {"annotators": int(votes["annotator"].nunique()), "classes": {}}
    rng = np.random.default_rng(seed)
    a = (1 - confidence) / 2
    groups = {"all": wide.index.tolist()}
    for key in sorted(set(classes.values())):
        groups[key] = [i for i in wide.index if classes.get(i) == key]
    for key, ids in groups.items():
        m = wide.loc[ids].to_numpy(dtype=float)
        if len(ids) < 2:
            continue
        two = m.shape[1] == 2 and not np.isnan(m).any()
        stat = (lambda x: cohen_kappa(x[:, 0], x[:, 1])) if two else krippendorff_alpha
        point = stat(m)
        reps = [stat(m[rng.integers(0, len(m), len(m))]) for _ in range(n_boot)]
        reps = [r for r in reps if r is not None and np.isfinite(r)]
        entry = {"images": len(ids), "statistic": "cohen_kappa" if two else "krippendorff_alpha_nominal",
                 "value": point, "ci": [float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))] if reps else None,
                 "raw_agreement": float(np.nanmean([np.nanmax(r) == np.nanmin(r) for r in m]))}
        if key == "all":
            out["overall"] = entry
        else:
            out["classes"][key] = entry
    return out
