"""Paired audited differences (`s2i-bench compare ... --audit AUDIT`).

One audit draws the same positions for every system whose record has the same plan (the same
sounds in the same order, `decisions.order`, and the same K): image (k, n) of system A and image
(k, n) of system B come from the same sound and draw. Two audited records of such systems give a
paired difference per class, A minus B, by `scoring.ppi.paired_difference` (PPI++ on the label
differences with the classifier differences as predictor; the sounds are the independent units),
and for the mean over classes the classes' differences averaged (independent audits: variances
add). Records audited at other positions, or scored on another store, split or classifiers, are
refused naming the field that differs: a paired test on unpaired images would be wrong, not weak.

    audited_of_systems(audit_dirs, systems) -> ({system name: audited record}, notes)
    audited_pairs(audited, alpha) -> [row]   rows in the comparison's format (metric "audited share")
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.fileio import dig
from s2i_bench.scoring import ppi
from s2i_bench.scoring import records as R
from s2i_bench.scoring.audit.folder import AuditFolder

# what must agree between two audited records for their images to pair
SAME = (("store", lambda r: r.store_hash), ("classifiers", lambda r: r.classifiers_sha256),
        ("split", lambda r: r.split), ("decisions.order", lambda r: dig(r.data, "decisions", "order")),
        ("decisions.shape", lambda r: tuple(dig(r.data, "decisions", "shape") or ())))


def audited_of_systems(audit_dirs, systems) -> tuple[dict[str, R.Record], list[str]]:
    """For each compared system, the audited record (from the AUDIT folders) of the checkpoint it is
    compared at: the audited record whose `audit.of` is the checksum of one of the system's records.
    A system with several audited records (seeds, epochs) takes the latest epoch's; a system with
    none is named in a note."""
    audited = []
    for d in audit_dirs:
        path = AuditFolder(Path(d)).records_path
        if not path.is_file():
            raise UserError(f"{d}: no audited records yet (run `s2i-bench label-audit estimate {d}` first)")
        audited += R.read(path, follow_links=False)
    out, notes = {}, []
    for system in systems:
        sums = {r.data.get("checksum") for m in system.members for r in m.records}
        mine = [r for r in audited if r.audited_of in sums]
        if len(system.members) > 1 and mine:
            raise UserError(f"{system.name}: a group of seeds; compare audited records one run at a time")
        if mine:
            out[system.name] = max(mine, key=lambda r: -1 if r.epoch is None else r.epoch)
        else:
            notes.append(f"{system.name}: not audited in {', '.join(map(str, audit_dirs))} (no audited rows)")
    return out, notes


def _flat_score(r: R.Record) -> np.ndarray:
    d = r.decisions()
    f = d["probability"] if r.audit["score"] == "probability" else d["informative"]
    return np.asarray(f, dtype=np.float64).reshape(-1)  # (K * N,)


def _class_positions(r: R.Record, key: str) -> np.ndarray:
    k, n = dig(r.data, "decisions", "shape")  # (K, N), without unpacking the decisions again
    start = 0
    for c, entry in r.data["classes"].items():
        size = int(entry.get("n_sounds") or 0)
        if c == key:
            return (np.arange(k)[:, None] * n + np.arange(start, start + size)[None, :]).ravel()
        start += size
    raise UserError(f"{r.source}: no class {key}")


def check_paired(a: R.Record, b: R.Record, where: str) -> None:
    for field, get in SAME:
        if get(a) != get(b):
            raise UserError(f"{where}: the two audited records differ in {field} ({get(a)!s:.24} vs {get(b)!s:.24}): "
                            f"their images do not pair")
    for key in set(a.audit["classes"]) | set(b.audit["classes"]):
        pa, pb = (dict(r.audit["classes"]).get(key, {}).get("positions") for r in (a, b))
        if pa != pb:
            raise UserError(f"{where}: audit.classes.{key}.positions differ: the systems were not audited at the same "
                            f"images (audit them in one `label-audit draw`)")


def _row(a_name, b_name, cls, est: ppi.Estimate, p: float) -> dict[str, Any]:
    return {"a": a_name, "b": b_name, "metric": "audited share", "measure": "audited", "class": cls,
            "difference": est.estimate, "ci": list(est.ci), "se": est.se, "p_value": p, "n_audited": est.n,
            "n_images": est.N, "mde": None, "test": "paired PPI++ difference, normal interval (sounds as units)"}


def pair_rows(a_name: str, a: R.Record, b_name: str, b: R.Record, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Per class and the mean: A minus B, audited and paired (module docstring)."""
    check_paired(a, b, f"{a_name} vs {b_name}")
    fa, fb = _flat_score(a), _flat_score(b)
    rows, per_class = [], []
    for key in a.audit["classes"]:
        ca, cb = a.audit["classes"][key], b.audit["classes"][key]
        pos = np.asarray(ca["positions"], dtype=np.int64)
        va, vb = np.asarray(ca["votes"], dtype=np.float64), np.asarray(cb["votes"], dtype=np.float64)
        everyone = _class_positions(a, key)
        diff = ppi.paired_difference(va[:, 0] / va[:, 1], vb[:, 0] / vb[:, 1], fa[pos], fb[pos], fa[everyone],
                                     fb[everyone], units=int(a.data["classes"][key]["n_sounds"]), alpha=alpha)
        per_class.append(diff.estimate)
        rows.append(_row(a_name, b_name, key, diff.estimate, diff.p_value))
    est = float(np.mean([e.estimate for e in per_class]))
    se = math.sqrt(sum(e.se ** 2 for e in per_class)) / len(per_class)
    z = ppi.z_value(alpha)
    p = 1.0 if se == 0 else float(min(1.0, 2 * (1 - NormalDist().cdf(abs(est) / se))))
    mean = ppi.Estimate(est, (est - z * se, est + z * se), se, float("nan"), sum(e.n for e in per_class),
                        sum(e.N for e in per_class))
    return rows + [_row(a_name, b_name, "mean", mean, p)]


def audited_pairs(audited: dict[str, R.Record], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Every pair of audited systems, in the order given."""
    rows = []
    for (an, a), (bn, b) in itertools.combinations(audited.items(), 2):
        rows += pair_rows(an, a, bn, b, alpha)
    return rows
