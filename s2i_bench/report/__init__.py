"""`s2i-bench report`: the paper's figures and tables for a set of runs, beside the paper's numbers.

The report only reads what the other commands wrote (docs/architecture.md):

    RUN/options.json, RUN/log.csv, RUN/metric-*.jsonl, sample sheets, RUN/grids/   train-baseline, score
    *.jsonl (metric records)                                                      score
    STORE/store.json, manifest.csv, frames.npy   (--data, Table 1 and Fig. 16)     prepare
    BUNDLE.json, the bundle card                  (--classifiers)                  train-classifiers

and writes OUT/index.md, OUT/index.html, OUT/tables/*.{csv,md,tex}, OUT/series/*.csv,
OUT/figures/*.{png,pdf,svg} (with --figures) and OUT/report.json (what was read and written).
It never trains or scores. Its parts, one job each:

    inputs     run folders and records files -> runs (one series each)
    analysis   the series metrics of each run (scoring.metrics) and the protocol they use
    paper      the paper's numbers, the classifiers' card
    plan       which figures, from which runs, with which captions
    figures, tables, index    drawing, tabulating, the index and manifest

Tables contain no time stamps and no absolute paths, so the same inputs give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_text, progress, to_jsonable
from s2i_bench.locks import exclusive_lock
from s2i_bench.publish import check_publishable, publish_folder, staged_folder
from s2i_bench.report.analysis import analyse, resolve_protocols, summary_row
from s2i_bench.report.index import write_index, write_manifest
from s2i_bench.report.inputs import is_reference_run, load_runs, reference_levels
from s2i_bench.report.paper import PAPER_NUMBERS, load_card, load_paper_numbers
from s2i_bench.report.plan import Context, Item, figure_jobs, slug

FORMATS = ("png", "pdf", "svg")
REPORT_KIND = "s2i-bench-report"  # the kind of folder `report` owns (fileio.publish_folder)

__all__ = ["FORMATS", "PAPER_NUMBERS", "build_report"]


def _check_formats(formats) -> list[str]:
    formats = [f.lower().lstrip(".") for f in (formats or ["png"])]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"--format: unknown {', '.join(bad)} (valid: {', '.join(FORMATS)})")
    return list(dict.fromkeys(formats)) or ["png"]


def build_report(inputs, out, figures: bool = False, store=None, bundle=None, formats=("png",),
                 overwrite: bool = False) -> Path:
    """Render the report of INPUTS (run folders, metric-*.jsonl files) into OUT; returns index.md.

    OUT is the report's own: new, empty, or an earlier report (its file manifest says which
    files it wrote, with their hashes). The report is rendered into a staging folder inside OUT,
    then moved in file by file; a file of the user's in the way, or one of the report's that the
    user has changed since, is refused (unless `overwrite`); earlier report files that this one
    does not write are removed only when unchanged."""
    formats = _check_formats(formats)
    final = Path(out)
    check_publishable(final, REPORT_KIND, overwrite=overwrite, what="`s2i-bench report`")
    final.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(final / ".lock", f"report folder {final}"), staged_folder(final) as stage:
        _render_report(inputs, stage, figures=figures, store=store, bundle=bundle, formats=formats)
        publish_folder(stage, final, REPORT_KIND, overwrite=overwrite, what="`s2i-bench report`")
    return final / "index.md"


def _render_report(inputs, out: Path, figures: bool, store, bundle, formats) -> None:
    from s2i_bench.report import tables as T

    store_obj = None  # the named files first: a bad --data or --classifiers is refused before anything else
    if store is not None:
        from s2i_bench.data.store import open_store

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
    if store_obj is not None and store_obj.meta.get("protocol", {}).get("name") != protocol.name:
        notes.append(f"the store was made with protocol {store_obj.meta.get('protocol', {}).get('name')}, "
                     f"the runs with {protocol.name}")
    if card is not None and card.get("bundle_sha256"):
        used = {(r.get("classifiers") or {}).get("sha256") for run in runs for r in run.records} - {None}
        if used and card["bundle_sha256"] not in used:
            notes.append(f"the classifier table shows bundle {card['bundle_sha256'][:12]}, but the records were scored "
                         f"with {', '.join(sorted(u[:12] for u in used))}")
    paper = load_paper_numbers()
    if paper is None:
        notes.append(f"{PAPER_NUMBERS}: missing, so no paper values are shown")
    analyses = [analyse(run, protocol) for run in runs]
    levels = reference_levels(references, protocol.class_keys)

    items: list[Item] = []
    written: list[Path] = []
    ctx = Context(out, protocol, runs, store_obj, card, levels)

    # Tables (always).
    table_jobs = []
    if store_obj is not None:
        table_jobs.append(("table1", lambda: _table1(T, store_obj, protocol, paper), [], True))
    if card is not None:
        table_jobs.append(("classifiers", lambda: T.classifier_table(card, protocol.class_keys, protocol.class_names,
                                                                    paper), [], True))
    if analyses:
        table_jobs.append(("informativity", lambda: T.informativity_table(
            [summary_row(a) for a in analyses], protocol.class_keys, protocol.class_names, paper,
            protocol.metrics.moving_average, (protocol.metrics.window_start, protocol.metrics.window_end)), runs, False))
    if levels:
        table_jobs.append(("references", lambda: T.reference_table(levels, protocol.class_keys, protocol.class_names),
                           references, False))
    from s2i_bench.report import comparison as C

    seeds = C.seed_table([summary_row(a) for a in analyses], protocol.class_keys, protocol.metrics.confidence)
    if seeds is not None:
        table_jobs.append(("seeds", lambda: seeds, runs, False))
    compared = C.size_comparison(runs, protocol) if analyses else None
    if compared is not None:
        # the report's files name no absolute path and no code version (same inputs, same bytes)
        compared.pop("code_version", None)
        for system in compared["systems"]:
            for m in system["members"]:
                m["folder"] = None
        names = dict(zip(protocol.class_keys, protocol.class_names))
        table_jobs.append(("comparison", lambda: C.comparison_table(compared, names), runs, False))
        atomic_write_text(out / "comparison.json", json.dumps(to_jsonable(compared), indent=2) + "\n")
        written.append(Path("comparison.json"))

    from s2i_bench.report import image_report as IR

    if IR.has_image_metrics(runs + references):
        table_jobs.append(("image-metrics", lambda: IR.image_metric_table(runs, references), runs, False))
    correlation = IR.correlation_with_truth(runs, references) if IR.has_image_metrics(runs + references) else []
    if correlation:
        table_jobs.append(("metric-vs-truth", lambda: IR.correlation_table(correlation), runs, False))

    jobs = figure_jobs(ctx, analyses, paper, formats) if figures else []
    if figures and compared is not None:
        jobs.append(_comparison_figure(ctx, compared, formats))
    if figures and correlation:
        jobs.append(_simple_figure(ctx, "beyond-metric-vs-truth", "Which metric tracks the truth (beyond the paper)",
                                   "Spearman's correlation of each metric with the judge's true informativity over every "
                                   "checkpoint and reference translator, with 95% bootstrap intervals; green: the "
                                   "interval excludes 0 in the right direction ((↓): lower is better).",
                                   lambda: IR.correlation_figure(correlation), formats))
    if figures and any(r.get("image_metrics") and r.get("epoch") is not None for run in runs for r in run.records):
        jobs.append(_simple_figure(ctx, "beyond-image-metrics", "Image metrics per epoch (beyond the paper)",
                                   "FID, KID and IIS of every scored epoch, one line per run (domain features).",
                                   lambda: IR.image_metric_series(runs), formats))
    for job in progress(table_jobs + jobs, desc="report", unit="item"):
        name, make, used_runs, is_data_table = job[:4]
        if name in ("table1", "classifiers", "informativity", "references", "seeds", "comparison", "image-metrics",
                    "metric-vs-truth"):
            table = make()
            paths = table.write(out / "tables")
            rel = [p.relative_to(out) for p in paths.values()]
            written += rel
            items.append(Item("table", table.title, table.caption,
                              ctx.provenance(used_runs, store=name == "table1", bundle=name == "classifiers"),
                              rel, table))
        else:
            item = make()
            if item is not None:
                items.append(item)
                written += item.files

    # The replaced series behind Figs. 7-11, as data.
    for a in analyses:
        for measure, frame in a.frames.items():
            rel = Path("series") / f"{slug(a.run.label)}-{measure.replace('_share', '')}.csv"
            atomic_write_text(out / rel, frame.to_csv(index=False, float_format="%.6g", na_rep=""))
            written.append(rel)

    if not figures:
        notes.append("figures not rendered (pass --figures)")
    write_index(ctx, items, notes)
    written += [Path("index.md"), Path("index.html")]
    write_manifest(ctx, written, formats, figures, notes)
    for digest in ctx.bundle_hashes():
        print(f"report: records scored with the classifier bundle sha256 {digest}")


def _simple_figure(ctx, stem: str, title: str, caption: str, make, formats):
    from s2i_bench.report import figures as F

    def job():
        with F.style():
            files = F.save(make(), ctx.out / "figures" / stem, formats)
        return Item("figure", title, caption, ctx.provenance(ctx.runs), [f.relative_to(ctx.out) for f in files])
    return (stem, job, ctx.runs, False)


def _comparison_figure(ctx, compared, formats):
    from s2i_bench.report import comparison as C
    from s2i_bench.report import figures as F

    def job():
        with F.style():
            fig = C.comparison_figure(compared, ctx.protocol.class_keys, ctx.protocol.class_names)
            files = F.save(fig, ctx.out / "figures" / "beyond-comparison", formats)
        return Item("figure", "Comparison of embedding sizes (beyond the paper)",
                    f"Every pair of embedding sizes at their last common epoch: the difference in informativity (raw, "
                    f"corrected, and the judge's truth on synthetic data) per class and mean with its 95% interval; "
                    f"filled markers are significant after Holm's adjustment ({compared['multiple_comparisons']}).",
                    ctx.provenance(ctx.runs), [f.relative_to(ctx.out) for f in files])
    return ("beyond-comparison", job, ctx.runs, False)


def _table1(T, store, protocol, paper):
    manifest = store.manifest
    videos = manifest.groupby("class")["video_id"].nunique().to_dict()
    counts = store.meta.get("counts") or {}
    if not counts:  # older stores: count from the manifest
        for (cls, split), n in manifest.groupby(["class", "split"]).size().items():
            counts.setdefault(cls, {})[split] = int(n)
    return T.table1(counts, videos, protocol.class_keys, protocol.class_names, paper, store.split_policy)
