"""The report's audited informativity (`report --audit AUDIT`, beyond the paper).

An audit (`s2i-bench label-audit`) writes AUDIT/records.jsonl: each audited record is a copy of a
scored record plus its `audit` block, which names the scored record it came from by checksum
(`audit.of`). The report joins each audited record to a record of its own inputs by that
checksum, so an audit of a record the report does not show is refused (nothing is mixed in from
elsewhere), and every run or reference of the report without an audit is listed as such.

    audited_rows(audit_dirs, runs, references) -> ([(label, audited record)], notes)
    audited_table_jobs(rows, runs, notes)            the table (raw, corrected, audited, truth)
    audited_figure_jobs(ctx, rows, runs, formats)    estimates against the judge's truth
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.report.figures import FULL_IN, _figure, class_colours, save, style
from s2i_bench.report.plan import Item, Job
from s2i_bench.report.tables import Column, Table, pct, pct_interval
from s2i_bench.scoring import records as R
from s2i_bench.scoring.audit.folder import AuditFolder


def _label(run, record) -> str:
    if record.epoch is None:  # a reference translator, a plugin, a folder of images
        return f"reference:{record.translator_name}" if record.translator_name else run.label
    return f"{run.label} (epoch {record.epoch})"


def audited_rows(audit_dirs, runs, references) -> tuple[list[tuple[str, R.Record]], list[str]]:
    """(label, audited record) in the audits' order, each joined to the report input it audits;
    and one note naming the inputs that carry no audit."""
    if not audit_dirs:
        return [], []
    by_checksum = {r.data.get("checksum"): (run, r) for run in [*runs, *references] for r in run.records}
    rows, audited_runs = [], set()
    for d in audit_dirs:
        path = AuditFolder(Path(d)).records_path
        if not path.is_file():
            raise UserError(f"{d}: no audited records yet (run `s2i-bench label-audit estimate {d}` first)")
        for rec in R.read(path, follow_links=False):
            hit = by_checksum.get(rec.audited_of)
            if hit is None:
                raise UserError(f"{path}: {rec.source} audits a record (checksum {str(rec.audited_of)[:12]}) that "
                                "none of the report's inputs holds; add its run or records file, or leave the "
                                "audit out")
            run, scored = hit
            rows.append((_label(run, scored), rec))
            audited_runs.add(run.name)
    bare = [run.label for run in [*runs, *references] if run.name not in audited_runs]
    notes = [f"Not audited (raw and corrected shares only): {', '.join(bare)}."] if bare else []
    return rows, notes


def audited_table(rows, notes) -> Table:
    table_rows = []
    for label, r in rows:
        ci, cci = r.audited_ci(), r.mean_ci("corrected_share")
        table_rows.append({
            "system": label, "raw": r.mean("raw_share"), "corrected": r.mean("corrected_share"),
            "corrected_low": (cci or [None])[0], "corrected_high": (cci or [None, None])[1],
            "audited": r.mean(R.AUDITED), "audited_low": ci[0], "audited_high": ci[1],
            "half_width": r.audited_half_width(), "labels": r.audit["mean"].get("n_audited"),
            "images": r.audit["mean"].get("n_images"), "score": r.audit.get("score"),
            "truth": r.mean("true_share")})
    columns = [Column("system", "run / reference"), Column("raw", "raw", lambda x: pct(x["raw"])),
               Column("corrected", "corrected [95% CI]",
                      lambda x: pct_interval(x["corrected"], [x["corrected_low"], x["corrected_high"]])),
               Column("corrected_low", "", in_text=False), Column("corrected_high", "", in_text=False),
               Column("audited", "audited [95% CI]",
                      lambda x: pct_interval(x["audited"], [x["audited_low"], x["audited_high"]])),
               Column("audited_low", "", in_text=False), Column("audited_high", "", in_text=False),
               Column("half_width", "± achieved", lambda x: pct(x["half_width"])),
               Column("labels", "labels"), Column("images", "images", in_text=False),
               Column("score", "classifier output", in_text=False)]
    if any(x["truth"] is not None for x in table_rows):
        columns.append(Column("truth", "judge's truth", lambda x: pct(x["truth"])))
    return Table("audited-informativity", "Audited informativity (beyond the paper)",
                 "Mean over the classes: the raw share, the Rogan-Gladen corrected share, and the audited share "
                 "(prediction-powered inference from the labelled sample of each system's own images and the "
                 "classifiers' output on all of them; PPI++ weight, finite-population correction) with its 95% "
                 "interval and the half-width it achieved; the synthetic world's truth where there is one.",
                 columns, table_rows, notes)


def audited_table_jobs(rows, runs, notes) -> list[Job]:
    if not rows:
        return []
    return [Job("audited-informativity", lambda: audited_table(rows, notes), runs, is_table=True)]


def audited_truth_figure(rows, class_keys, class_names):
    """Per class and system: the raw, corrected and audited (with its interval) shares against
    the judge's truth; the diagonal is a perfect estimate."""
    fig = _figure(FULL_IN, 2.6)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    colours = class_colours(class_keys)
    for ax, (measure, title) in zip(axes, (("raw_share", "raw"), ("corrected_share", "corrected"),
                                           (R.AUDITED, "audited (95% interval)"))):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        for _, r in rows:
            for k in class_keys:
                truth, est = r.share(k, "true_share"), r.share(k, measure)
                if truth is None or est is None:
                    continue
                if measure == R.AUDITED:
                    lo, hi = r.audited_ci(k)
                    ax.plot([truth, truth], [lo, hi], color=colours[k], lw=0.8, alpha=0.6)
                ax.plot([truth], [est], "o", ms=3, color=colours[k], alpha=0.85)
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("judge's true share")
    axes[0].set_ylabel("estimate")
    handles = [axes[0].plot([], [], "o", ms=3, color=colours[k])[0] for k in class_keys]
    fig.legend(handles, list(class_names), loc="outside lower center", ncol=len(class_keys), fontsize=6)
    return fig


def audited_figure_jobs(ctx, rows, runs, formats) -> list[Job]:
    keys = list(ctx.protocol.class_keys)
    if not any(r.share(k, "true_share") is not None for _, r in rows for k in keys):
        return []
    held = [lo <= r.share(k, "true_share") <= hi for _, r in rows for k in keys
            if r.share(k, "true_share") is not None and r.share(k, R.AUDITED) is not None
            for lo, hi in [r.audited_ci(k)]]

    def job():
        with style():
            fig = audited_truth_figure(rows, keys, list(ctx.protocol.class_names))
            files = save(fig, ctx.out / "figures" / "beyond-audited-truth", formats)
        return Item("figure", "Audited estimates against the judge's truth (synthetic data, beyond the paper)",
                    f"Each audited system and class: raw, corrected and audited informativity against the judge's "
                    f"true share of the same images; the audited 95% interval holds the truth in "
                    f"{int(np.sum(held))} of {len(held)} cells.",
                    ctx.provenance(runs), [f.relative_to(ctx.out) for f in files])
    return [Job("beyond-audited-truth", job, runs)]
