"""One report rendered into a folder (the staging folder `build_report` publishes): the inputs
read and their notes, the table jobs, the figure jobs of the plan, the series as CSV, the index
and the manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2i_bench.data.store import open_store
from s2i_bench.fileio import atomic_write_text, progress, to_jsonable
from s2i_bench.report.analysis import Analysis, analyse, resolve_protocols, summary_row
from s2i_bench.report.attributes import attribute_figure_jobs, attribute_table_jobs
from s2i_bench.report.audited import audited_figure_jobs, audited_rows, audited_table_jobs
from s2i_bench.report.comparison import comparison_table, seed_table, size_comparison
from s2i_bench.report.image_report import (correlation_table, correlation_with_truth, has_image_metrics,
                                           image_metric_table)
from s2i_bench.report.index import write_index, write_manifest
from s2i_bench.report.inputs import Run, is_reference_run, load_runs, reference_levels
from s2i_bench.report.paper import PAPER_NUMBERS, load_card, load_paper_numbers
from s2i_bench.report.plan import Context, Item, Job, figure_jobs, slug
from s2i_bench.report.tables import classifier_table, informativity_table, reference_table, table1


@dataclass
class Inputs:
    """What the report reads, before any analysis."""

    runs: list[Run]  # series (run folders, records files)
    references: list[Run]  # reference translators (reference:real-frame, ...): levels, not series
    protocol: Any
    store: Any  # the store (--data) or None
    card: dict | None  # the classifiers' card (--classifiers)
    paper: Any  # the paper's numbers, None when the file is missing
    notes: list[str]


def render_report(inputs, out: Path, figures: bool, store, bundle, formats, audits=()) -> None:
    """Every table and (with `figures`) figure of INPUTS into OUT, the series as CSV, the index
    and the manifest; with `audits` (label-audit folders), the audited estimates of the inputs'
    records they audited."""
    src = read_inputs(inputs, store, bundle)
    audited, audit_notes = audited_rows(audits, src.runs, src.references)  # refused before any work
    analyses = [analyse(run, src.protocol) for run in src.runs]
    levels = reference_levels(src.references, src.protocol.class_keys)
    ctx = Context(out, src.protocol, src.runs, src.store, src.card, levels)
    written: list[Path] = []
    tables, compared, correlation = _table_jobs(ctx, src, analyses, written)
    # the attribute scores (synthetic data): a table and a figure per dimension, runs and references
    tables += attribute_table_jobs(src.runs, src.references, src.protocol.class_keys, src.protocol.class_names)
    tables += audited_table_jobs(audited, src.runs + src.references, audit_notes)
    jobs = figure_jobs(ctx, analyses, src.paper, formats, compared, correlation) if figures else []
    jobs += attribute_figure_jobs(ctx, src.runs, src.references, formats) if figures else []
    jobs += audited_figure_jobs(ctx, audited, src.runs + src.references, formats) if figures and audited else []
    items = _make_items(ctx, tables + jobs, written)
    written += _write_series(out, analyses)
    notes = src.notes
    if not figures:
        notes.append("figures not rendered (pass --figures)")
    write_index(ctx, items, notes)
    written += [Path("index.md"), Path("index.html")]
    write_manifest(ctx, written, formats, figures, notes)
    for digest in ctx.bundle_hashes():
        print(f"report: records scored with the classifier bundle sha256 {digest}")


def read_inputs(inputs, store, bundle) -> Inputs:
    """The store, the card, the runs and the protocol they share, and the notes on what does not fit."""
    store_obj = None  # the named files first: a bad --data or --classifiers is refused before anything else
    if store is not None:
        store_obj = open_store(store)
    card = load_card(bundle) if bundle is not None else None
    runs, notes = load_runs([Path(p) for p in inputs])
    # Reference translators (reference:real-frame, ...) are levels, not series: lines and a table.
    references = [run for run in runs if is_reference_run(run)]
    runs = [run for run in runs if not is_reference_run(run)]
    protocol = resolve_protocols(runs or references, store_obj)
    for run in runs:
        if run.protocol_note:
            notes.append(f"run {run.name}: {run.protocol_note}")
    if store_obj is not None and store_obj.protocol_ref.get("name") != protocol.name:
        notes.append(f"the store was made with protocol {store_obj.protocol_ref.get('name')}, "
                     f"the runs with {protocol.name}")
    if card is not None and card.get("bundle_sha256"):
        used = {r.classifiers_sha256 for run in runs for r in run.records} - {None}
        if used and card["bundle_sha256"] not in used:
            notes.append(f"the classifier table shows bundle {card['bundle_sha256'][:12]}, but the records were scored "
                         f"with {', '.join(sorted(u[:12] for u in used))}")
    paper = load_paper_numbers()
    if paper is None:
        notes.append(f"{PAPER_NUMBERS}: missing, so no paper values are shown")
    return Inputs(runs, references, protocol, store_obj, card, paper, notes)


def _table_jobs(ctx: Context, src: Inputs, analyses: list[Analysis],
                written: list[Path]) -> tuple[list[Job], dict | None, list]:
    """The tables (always), in index order; also the comparison of embedding sizes (written to
    OUT/comparison.json) and each image metric's correlation with the truth, for their figures."""
    protocol, paper, runs, references, levels = src.protocol, src.paper, src.runs, src.references, ctx.references
    jobs = []
    if src.store is not None:
        jobs.append(Job("table1", lambda: _table1(src.store, protocol, paper), [], is_table=True, store=True))
    if src.card is not None:
        jobs.append(Job("classifiers", lambda: classifier_table(src.card, protocol.class_keys, protocol.class_names,
                                                                paper), [], is_table=True, bundle=True))
    if analyses:
        jobs.append(Job("informativity", lambda: informativity_table(
            [summary_row(a) for a in analyses], protocol.class_keys, protocol.class_names, paper,
            protocol.metrics.moving_average, (protocol.metrics.window_start, protocol.metrics.window_end)), runs,
            is_table=True))
    if levels:
        jobs.append(Job("references", lambda: reference_table(levels, protocol.class_keys, protocol.class_names),
                        references, is_table=True))
    seeds = seed_table([summary_row(a) for a in analyses], protocol.class_keys, protocol.metrics.confidence)
    if seeds is not None:
        jobs.append(Job("seeds", lambda: seeds, runs, is_table=True))
    compared = _size_comparison(ctx.out, runs, protocol, analyses, written)
    if compared is not None:
        names = dict(zip(protocol.class_keys, protocol.class_names))
        jobs.append(Job("comparison", lambda: comparison_table(compared, names), runs, is_table=True))
    if has_image_metrics(runs + references):
        jobs.append(Job("image-metrics", lambda: image_metric_table(runs, references), runs, is_table=True))
    correlation = correlation_with_truth(runs, references) if has_image_metrics(runs + references) else []
    if correlation:
        jobs.append(Job("metric-vs-truth", lambda: correlation_table(correlation), runs, is_table=True))
    return jobs, compared, correlation


def _size_comparison(out: Path, runs: list[Run], protocol, analyses: list[Analysis],
                     written: list[Path]) -> dict | None:
    """The runs compared by embedding size, written to OUT/comparison.json; None when they cannot be."""
    compared = size_comparison(runs, protocol) if analyses else None
    if compared is not None:
        # the report's files name no absolute path and no code version (same inputs, same bytes)
        compared.pop("code_version", None)
        for system in compared["systems"]:
            for m in system["members"]:
                m["folder"] = None
        atomic_write_text(out / "comparison.json", json.dumps(to_jsonable(compared), indent=2) + "\n")
        written.append(Path("comparison.json"))
    return compared


def _make_items(ctx: Context, jobs: list[Job], written: list[Path]) -> list[Item]:
    """Every job made, tables written as CSV, Markdown and LaTeX; the index's items in order."""
    items: list[Item] = []
    for job in progress(jobs, desc="report", unit="item"):
        if job.is_table:
            table = job.make()
            paths = table.write(ctx.out / "tables")
            rel = [p.relative_to(ctx.out) for p in paths.values()]
            written += rel
            items.append(Item("table", table.title, table.caption,
                              ctx.provenance(job.runs, store=job.store, bundle=job.bundle), rel, table))
        else:
            item = job.make()
            if item is not None:
                items.append(item)
                written += item.files
    return items


def _write_series(out: Path, analyses: list[Analysis]) -> list[Path]:
    """The replaced series behind Figs. 7-11, as data."""
    written = []
    for a in analyses:
        for measure, frame in a.frames.items():
            rel = Path("series") / f"{slug(a.run.label)}-{measure.replace('_share', '')}.csv"
            atomic_write_text(out / rel, frame.to_csv(index=False, float_format="%.6g", na_rep=""))
            written.append(rel)
    return written


def _table1(store, protocol, paper):
    videos = store.manifest.groupby("class")["video_id"].nunique().to_dict()
    return table1(store.counts, videos, protocol.class_keys, protocol.class_names, paper, store.split_policy)
