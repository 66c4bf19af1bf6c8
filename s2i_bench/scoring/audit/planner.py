"""`s2i-bench label-audit plan`: how many labels per class reach a target half-width.

The audited interval's half-width is z sqrt((1 - n / N) S2 / n), with S2 the variance of the
residual y - lambda f (`scoring.ppi.labels_needed` solves it for n). S2 comes from:

- a first audit (its audited records): S2 = se^2 n / (1 - n / N), what the labels showed;
- or, before any label, the record's classifier sensitivity Se and specificity Sp (measured on
  the pool's test images, so only a guide: the audit exists because they may not hold on the
  system's images), with lambda = 1 and the worst case over the true share p:
  S2 = a + b - (a - b)^2, a = p (1 - Se) the missed share, b = (1 - p)(1 - Sp) the false alarms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.runs import RunFolder
from s2i_bench.scoring import records as R
from s2i_bench.scoring.audit.folder import AuditFolder
from s2i_bench.scoring.ppi import labels_needed
from s2i_bench.text import percent


def residual_variance_from_card(sensitivity: float, specificity: float) -> float:
    """The worst case over p in [0, 1] (a grid of 1001 points) of Var(y - f) with lambda = 1."""
    p = np.linspace(0.0, 1.0, 1001)
    a, b = p * (1.0 - sensitivity), (1.0 - p) * (1.0 - specificity)
    return float(np.max(a + b - (a - b) ** 2))


def plan_rows(recs: list[R.Record], half_width: float, alpha: float = 0.05) -> list[dict]:
    """One row per record and class: N, S2 and where it came from, the labels needed, and the
    half-width an audit reached (audited records)."""
    rows = []
    for r in recs:
        name = r.translator_name or f"{r.run} epoch {r.epoch}"
        for key in r.class_keys:
            n_images = r.n_images(key)
            c, a = r.cls(key), (r.audit.get("classes") or {}).get(key)
            if a:
                n, se = int(a["n_audited"]), float(a["se"])
                s2 = se ** 2 * n / (1.0 - n / n_images) if n < n_images else None
                source = "audit"
            elif c.get("sensitivity") is not None and c.get("specificity") is not None:
                s2, source = residual_variance_from_card(float(c["sensitivity"]), float(c["specificity"])), "card"
            else:
                continue
            rows.append({"system": name, "class": key, "N": n_images, "S2": s2, "from": source,
                         "needed": None if s2 is None else labels_needed(s2, n_images, half_width, alpha),
                         "reached": r.audited_half_width(key)})
    if not rows:
        raise UserError("no record with an audit or with the classifiers' sensitivity and specificity")
    return rows


def format_plan(rows: list[dict], half_width: float) -> str:
    lines = [f"labels per class for a 95% half-width of at most {percent(half_width, suffix=' points')}",
             f"{'system':<28} {'class':<16} {'N':>6} {'S2':>7} {'from':<5} {'labels':>7} {'reached':>9}"]
    for row in rows:
        s2 = "-" if row["S2"] is None else f"{row['S2']:.4f}"
        need = "all" if row["needed"] is None else str(row["needed"])
        lines.append(f"{row['system'][:28]:<28} {row['class'][:16]:<16} {row['N']:>6} {s2:>7} {row['from']:<5} "
                     f"{need:>7} {percent(row['reached'], missing='-', suffix=' pt'):>9}")
    return "\n".join(lines)


def plan_labels(sources, half_width: float, alpha: float = 0.05) -> list[dict]:
    """`s2i-bench label-audit plan`: rows for records files, run folders' records or an audit folder."""
    recs = []
    for src in sources:
        path = Path(src)
        if path.is_dir() and AuditFolder(path).plan_path.is_file():
            path = AuditFolder(path).records_path
            if not path.is_file():
                raise UserError(f"{src}: no audited records yet; run `s2i-bench label-audit estimate {src}`")
        elif path.is_dir():
            files = RunFolder(path).record_files()
            recs.extend(r for f in files for r in R.read(f, follow_links=False)[-1:])
            continue
        recs.extend(R.read(path))
    return plan_rows(recs, half_width, alpha)
