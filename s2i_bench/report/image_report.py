"""The report's image metrics (beyond the paper): FID, KID, PRDC, IIS, AIS per run, their series
over epochs, and which metric tracks the synthetic world judge's truth.

`correlation_with_truth` takes every scored checkpoint of every run and every reference
translator (one record each, with the judge's true informativity: synthetic stores only) and
gives, per metric, Spearman's rank correlation with the truth (mean of the classes) and a 95%
bootstrap interval over the checkpoints. FID and KID are distances (lower is better): a metric
that tracks the truth has a negative correlation for them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from s2i_bench.report.figures import COLUMN_IN, FULL_IN, _figure
from s2i_bench.report.tables import Column, Table, pct
from s2i_bench.scoring import image_metrics as IM
from s2i_bench.scoring.records import Record

def metric_readers() -> list[tuple[str, str, Callable[[Record], float | None], bool]]:
    """(key, label, how to read it from a record, lower is better) for every number the registry's
    metrics report (`scoring.image_metrics`): informativity's raw, corrected and class-match means,
    then each image-set metric's values."""
    out = [(v.key, v.label, lambda r, key=v.key: r.mean(key), v.lower_is_better)
           for v in IM.get(IM.registry.INFORMATIVITY).value_list()]
    out += [(v.key, v.label, lambda r, key=v.key: r.image_metric(key), v.lower_is_better) for _, v in IM.values()]
    return out


def _truth(record: Record):
    """The judge's truth over every class (the metrics see every class's images)."""
    return record.mean_all_classes("true_share")


def has_image_metrics(runs) -> bool:
    return any(r.image_metrics for run in runs for r in run.records)


def correlation_with_truth(runs, references=(), n_boot: int = 1000, seed: int = 0, confidence: float = 0.95):
    """[{metric, label, n, rho, ci, lower_is_better}] over every checkpoint with the truth, or []."""
    from scipy.stats import spearmanr

    recs = [r for run in [*runs, *references] for r in run.records if _truth(r) is not None]
    if len(recs) < 5:
        return []
    truth = np.array([_truth(r) for r in recs], dtype=float)
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, len(recs), len(recs)) for _ in range(n_boot)]
    a = (1 - confidence) / 2
    out = []
    for key, label, get, lower in metric_readers():
        values = np.array([np.nan if get(r) is None else get(r) for r in recs], dtype=float)
        ok = ~np.isnan(values)
        if ok.sum() < 5 or np.ptp(values[ok]) == 0 or np.ptp(truth[ok]) == 0:
            continue
        x, y = values[ok], truth[ok]
        rho = float(spearmanr(x, y).statistic)
        idx_ok = np.flatnonzero(ok)
        pos = {j: i for i, j in enumerate(idx_ok)}
        reps = []
        for b in boots:
            sel = [pos[j] for j in b if j in pos]
            xs, ys = x[sel], y[sel]
            if len(sel) > 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0:
                reps.append(spearmanr(xs, ys).statistic)
        ci = [float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))] if reps else None
        out.append({"metric": key, "label": label, "n": int(ok.sum()), "rho": rho, "ci": ci,
                    "lower_is_better": lower, "tracks": None if ci is None else
                    bool((ci[1] < 0) if lower else (ci[0] > 0))})
    return out


def correlation_table(rows: list[dict]) -> Table:
    columns = [Column("metric", "", in_text=False), Column("label", "metric"), Column("n", "checkpoints"),
               Column("rho", "Spearman ρ with the truth [95% CI]",
                      lambda r: f"{r['rho']:+.2f}" + (f" [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
                                                      if r.get("ci_low") is not None else "")),
               Column("ci_low", "", in_text=False), Column("ci_high", "", in_text=False),
               Column("lower_is_better", "lower is better", lambda r: "yes" if r["lower_is_better"] else "no"),
               Column("tracks", "tracks the truth",
                      lambda r: "–" if r["tracks"] is None else ("yes" if r["tracks"] else "no"))]
    table_rows = [{**r, "ci_low": (r["ci"] or [None, None])[0], "ci_high": (r["ci"] or [None, None])[1]} for r in rows]
    return Table("metric-vs-truth", "Which metric tracks the judge's truth (synthetic data, beyond the paper)",
                 "Over every scored checkpoint of every run and every reference translator: Spearman's rank "
                 "correlation of each metric with the judge's true informativity (mean of the classes), with a 95% "
                 "bootstrap interval over the checkpoints. A distance (FID, KID) tracks the truth when its correlation "
                 "is negative.", columns, table_rows)


def correlation_figure(rows: list[dict]):
    fig = _figure(COLUMN_IN, 0.5 + 0.22 * len(rows))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        colour = (0.17, 0.63, 0.17) if r["tracks"] else (0.55, 0.55, 0.55)
        if r["ci"]:
            ax.plot(r["ci"], [i, i], color=colour, lw=1.4)
        ax.plot([r["rho"]], [i], marker="o", ms=4, color=colour)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["label"] + (" (↓)" if r["lower_is_better"] else "") for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Spearman ρ with the judge's truth")
    return fig


def image_metric_table(runs, references=()) -> Table:
    """The last scored epoch of each run and each reference translator: every image metric with
    its interval."""
    rows = []
    for run in [*runs, *references]:
        recs = [r for r in run.records if r.image_metrics]
        if not recs:
            continue
        r = max(recs, key=lambda x: (-1 if x.epoch is None else x.epoch))
        row = {"run": run.label, "epoch": r.epoch, "n_generated": r.image_metrics.get("n_generated"),
               "extractor": r.feature_space_name}
        for key in ("fid", "kid", "iis", "ais"):
            row[key], ci = r.image_metric(key), r.image_metric_ci(key) or [None, None]
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = ci
        for key in ("precision", "recall", "density", "coverage"):
            row[key] = r.image_metric(key)
        row["warning"] = r.image_metric_warning("fid")
        rows.append(row)

    def num(key, scale=1.0, digits=2):
        def f(r):
            v = r.get(key)
            if v is None:
                return "–"
            text = f"{scale * v:.{digits}f}"
            if r.get(f"{key}_ci_low") is not None:
                text += f" [{scale * r[f'{key}_ci_low']:.{digits}f}, {scale * r[f'{key}_ci_high']:.{digits}f}]"
            return text
        return f

    columns = [Column("run", "run / reference"),
               Column("epoch", "epoch", lambda r: "–" if r["epoch"] is None else str(r["epoch"])),
               Column("n_generated", "images"), Column("extractor", "", in_text=False),
               Column("fid", "FID [95% CI]", num("fid")), Column("fid_ci_low", "", in_text=False),
               Column("fid_ci_high", "", in_text=False),
               Column("kid", "KID ×1000 [95% CI]", num("kid", 1000, 1)), Column("kid_ci_low", "", in_text=False),
               Column("kid_ci_high", "", in_text=False)]
    columns += [Column(k, k, lambda r, k=k: pct(r.get(k))) for k in ("precision", "recall", "density", "coverage")]
    columns += [Column("iis", "IIS [95% CI]", num("iis")), Column("iis_ci_low", "", in_text=False),
                Column("iis_ci_high", "", in_text=False),
                Column("ais", "AIS", num("ais"), in_text=any(r.get("ais") is not None for r in rows)),
                Column("ais_ci_low", "", in_text=False), Column("ais_ci_high", "", in_text=False),
                Column("warning", "", in_text=False)]
    notes = [f"Features: {rows[0]['extractor']}, offline (docs/metrics.md). FID is biased upwards with few images; "
             "KID is the small-sample metric. IIS: each image's similarity to its own segment's real frame, ranked "
             "against 20 other real frames (0.5 = chance)."] if rows else []
    if any(r.get("warning") for r in rows):
        notes.append(next(r["warning"] for r in rows if r.get("warning")))
    return Table("image-metrics", "Image metrics (beyond the paper)",
                 "FID, KID, precision / recall / density / coverage and IIS of the last scored epoch of each run "
                 "and of each reference translator, against the real frames of the same test sounds.",
                 columns, rows, notes)


def image_metric_series(runs):
    """FID, KID and IIS over the epochs, one line per run."""
    fig = _figure(FULL_IN, 2.3)
    axes = fig.subplots(1, 3)
    for ax, (key, label) in zip(axes, (("fid", "FID"), ("kid", "KID"), ("iis", "IIS"))):
        for run in runs:
            pts = sorted((r.epoch, r.image_metric(key)) for r in run.records
                         if r.epoch is not None and r.image_metric(key) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.0, label=run.label)
        ax.set_title(label, loc="left")
        ax.set_xlabel("epoch")
    axes[-1].legend(fontsize=5, loc="best")
    return fig
