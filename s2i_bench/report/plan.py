"""The report's plan: which figures it draws from which runs, and what their captions say."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import s2i_bench.report.figures as F
from s2i_bench.report.analysis import Analysis, best_run
from s2i_bench.report.calibration import has_calibration, reliability_figure
from s2i_bench.report.comparison import comparison_figure
from s2i_bench.report.image_report import correlation_figure, image_metric_series
from s2i_bench.report.inputs import Run, pick_sample_sheet


@dataclass
class Item:
    """One figure or table in the index."""

    kind: str  # "figure" | "table"
    title: str
    caption: str  # one line: what it shows
    provenance: str  # which runs, protocol, seeds
    files: list[Path]  # relative to OUT
    table: Any = None  # tables.Table for tables (shown inline)


@dataclass
class Job:
    """One entry of the index to make, in index order: `make()` returns a tables.Table when
    `is_table`, else the figure's Item (None when its data allow no figure)."""

    name: str
    make: Callable[[], Any]
    runs: list[Run]  # the runs it shows (the table's provenance)
    is_table: bool = False
    store: bool = False  # a table of the store: its provenance names the store
    bundle: bool = False  # a table of the classifiers: its provenance names the bundle


@dataclass
class Context:
    out: Path
    protocol: Any
    runs: list[Run]
    store: Any
    card: dict | None
    references: list = None  # reference translators' levels (inputs.reference_levels)

    @property
    def random_split(self) -> list[Run]:
        return [r for r in self.runs if r.split_policy == "random"]

    @property
    def leaky_split(self) -> list[Run]:
        """Runs on a video split that the audit found leaky and the user allowed anyway."""
        return [r for r in self.runs if r.leaky and r.split_policy != "random"]

    @property
    def split_warning(self) -> str | None:
        """The short form for figure titles."""
        if self.random_split:
            return "split: RANDOM (segment-level, leaky)"
        return "split: LEAKY (allowed by --allow-leakage)" if self.leaky_split else None

    def title_lines(self) -> list[str]:
        p = self.protocol
        lines = [f"Protocol {p.name} {p.version} (fingerprint {p.fingerprint}); "
                 f"{len(self.runs)} run(s): {', '.join(r.label for r in self.runs)}."]
        versions = sorted({str(v) for r in self.runs
                           for v in [r.options.get("code_version"), *(x.code_version for x in r.records)] if v})
        if versions:
            # The code that made the numbers (the report's own version would change the index
            # with every commit although the inputs did not change).
            lines.append("Code version of the inputs: " + ", ".join(versions) + ".")
        bundles = self.bundle_hashes()
        if bundles:
            # The one identity a reader can check against their own copy: the checksums inside
            # records are unkeyed (anyone can recompute them), the bundle's hash is not forgeable.
            lines.append("Scored with the classifier bundle(s) of sha256 " + ", ".join(bundles)
                         + " (print it beside the numbers: a reader with the bundle can check it).")
        if self.leaky_split:
            lines.insert(0, "WARNING: LEAKY split (the audit found videos or near-duplicates across splits and "
                         "`prepare --allow-leakage` kept them) for " + ", ".join(r.label for r in self.leaky_split)
                         + ": informativity may be inflated.")
        if self.random_split:
            lines.insert(0, "WARNING: split policy RANDOM (segment-level, leaky) for "
                         + ", ".join(r.label for r in self.random_split)
                         + ": test sounds come from videos seen in training, so informativity is inflated.")
        return lines

    def bundle_hashes(self) -> list[str]:
        """The full sha256 of every classifier bundle the runs' and references' records name."""
        runs = list(self.runs) + [lv["run"] for lv in (self.references or [])]
        return sorted({str(rec.classifiers_sha256) for r in runs for rec in r.records if rec.classifiers_sha256})

    def provenance(self, runs: list[Run], store: bool = False, bundle: bool = False) -> str:
        parts = []
        if runs:
            parts.append("runs: " + "; ".join(r.describe() for r in runs))
        p = self.protocol
        parts.append(f"protocol {p.name} {p.version} ({p.fingerprint})")
        if store and self.store is not None:
            sp = self.store.split_info
            parts.append(f"store {self.store.store_hash} (split {sp.get('policy')}, seed {sp.get('seed')})")
        if bundle and self.card is not None:
            c = self.card
            known = [f"source {c.get('source', 'trained')}"]
            known += [f"seed {c['seed']}"] if c.get("seed") is not None else []
            known += [f"pool {str(c['pool_hash'])[:12]}"] if c.get("pool_hash") else []
            parts.append("classifiers: " + ", ".join(known))
        if runs:
            bundles = sorted({str(rec.classifiers_sha256)[:12] for r in runs for rec in r.records
                              if rec.classifiers_sha256})
            if bundles:
                parts.append("scored with classifiers " + ", ".join(bundles))
        return "; ".join(parts) + "."


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "run"


def figure_jobs(ctx: Context, analyses: list[Analysis], paper, formats, compared: dict | None = None,
                correlation: list | None = None) -> list[Job]:
    """A job for every figure its data allows, in index order; `compared` (the comparison of
    embedding sizes) and `correlation` (each image metric against the truth) add theirs."""
    warn = ctx.split_warning

    def figure_item(stem, title, caption, runs, make, store=False):
        def job():
            with F.style():
                fig = make()
                if fig is None:
                    return None
                if warn:
                    F.add_warning(fig, warn)
                files = F.save(fig, ctx.out / "figures" / stem, formats)
            return Item("figure", title, caption, ctx.provenance(runs, store=store),
                        [f.relative_to(ctx.out) for f in files])
        return Job(stem, job, runs)

    return (_paper_figures(ctx, analyses, paper, figure_item) + _sample_figures(ctx, analyses, figure_item)
            + _beyond_figures(ctx, analyses, paper, figure_item)
            + _measure_figures(ctx, compared, correlation, formats) + _calibration_figures(ctx, formats))


def _paper_figures(ctx: Context, analyses: list[Analysis], paper, figure_item) -> list:
    """Figs. 7-14: informativity per epoch and against f, the training pixel loss."""
    keys, names, spec = ctx.protocol.class_keys, ctx.protocol.class_names, ctx.protocol.metrics
    jobs = []
    scored = [a for a in analyses if "raw_share" in a.frames]
    if scored:
        jobs.append(figure_item(
            "fig07-11-informativity", "Figs. 7–11: informativity per epoch",
            f"Share of test images called informative per epoch (raw, after the post-update replacement), per class "
            f"and mean, one panel per run/embedding size; replaced epochs marked, {spec.moving_average}-epoch moving "
            "average drawn.", [a.run for a in scored],
            lambda: F.informativity_per_epoch(scored, keys, names, spec, ctx.references or [])))
    with_dim = [a for a in scored if a.run.embedding_dim is not None]
    if with_dim:
        jobs.append(figure_item(
            "fig12-embedding-size", "Fig. 12: informativity against embedding size",
            f"Window average (epochs {spec.window_start}–{spec.window_end}) and maximum {spec.moving_average}-epoch "
            "moving average of informativity against the embedding size f, per class and mean, with the paper's "
            "value where it gives one (> 14% at f = 512, §5.4.1).", [a.run for a in with_dim],
            lambda: F.embedding_size(with_dim, keys, names, paper, ctx.references or [])))
    logged = [a for a in analyses if a.run.log is not None and len(a.run.log)]
    if logged:
        jobs.append(figure_item(
            "fig13-pixel-loss-moving-average", "Fig. 13: moving average of the training pixel loss",
            f"{spec.moving_average}-epoch moving average of the generator's training pixel loss (MSE on images in "
            "[-1, 1]) per run/embedding size.", [a.run for a in logged],
            lambda: F.pixel_loss(logged, moving=True, length=spec.moving_average)))
        jobs.append(figure_item(
            "fig14-pixel-loss", "Fig. 14: average pixel loss per epoch",
            "The generator's training pixel loss (MSE, epoch mean) per epoch, per run/embedding size.",
            [a.run for a in logged], lambda: F.pixel_loss(logged, moving=False, length=spec.moving_average)))
    return jobs


def _sample_figures(ctx: Context, analyses: list[Analysis], figure_item) -> list:
    """Figs. 15/16 show one translator, as the paper does (its best, f = 512): the run with the
    highest maximum moving average of mean informativity among those with a sample sheet."""
    keys, names = ctx.protocol.class_keys, ctx.protocol.class_names
    with_sheet = [a for a in analyses if a.run.sample_sheets]
    best = best_run(with_sheet)
    if best is None:
        with_grid = [a for a in analyses if a.run.grids]
        if not with_grid:
            return []
        best_grid = best_run(with_grid).run
        return [Job("fig15-grid", lambda: _copy_grid(ctx, best_grid), [best_grid])]
    run, sheet = best.run, pick_sample_sheet(best.run)
    epoch = sheet.get("epoch")
    at = f" after epoch {epoch}" if epoch is not None else ""
    why = "" if len(with_sheet) == 1 else ", the run with the highest mean informativity"
    jobs = [figure_item(
        "fig15-samples", f"Fig. 15: generated images per class ({run.label})",
        f"Images translated from fixed test sounds by {run.label}{why}{at}, one row per class "
        f"(sheet {sheet['path'].name}).", [run],
        lambda: F.sample_grid(sheet, keys, names))]
    if "frames" in sheet or ctx.store is not None:
        source = "the sheet" if "frames" in sheet else "the store"
        jobs.append(figure_item(
            "fig16-originals", f"Fig. 16: original frames beside translations ({run.label})",
            f"Centre frame of each test segment (left of each pair, from {source}) beside the image {run.label} "
            f"translated from its sound{at}, one row per class.", [run],
            lambda: F.originals_beside(sheet, ctx.store, keys, names), store="frames" not in sheet))
    return jobs


def _beyond_figures(ctx: Context, analyses: list[Analysis], paper, figure_item) -> list:
    """Beyond the paper: raw vs corrected, class match, the judge's truth, the split policy."""
    keys, names = ctx.protocol.class_keys, ctx.protocol.class_names
    jobs = []
    if any("corrected_share" in a.frames or a.last for a in analyses):
        with_last = [a for a in analyses if a.last]
        jobs.append(figure_item(
            "beyond-raw-vs-corrected", "Raw vs corrected informativity (beyond the paper)",
            "At each run's last scored epoch: the raw share the classifiers report, the Rogan–Gladen corrected share "
            "with its 95% bootstrap interval, and (synthetic data) the judge's true share, per class and mean.",
            [a.run for a in with_last], lambda: F.raw_vs_corrected(with_last, keys, names)))
    if any(r.share(k, "class_match_rate") is not None for a in analyses for r in a.run.records for k in keys):
        jobs.append(figure_item(
            "beyond-class-match", "Class-match rate vs informativity (beyond the paper)",
            "Every scored epoch and class: the share of images a real-frame 5-class classifier assigns to the sound's "
            "class (the metric the paper rejected, §5.3) against the share called informative; points right of the "
            "diagonal are the inflation.", [a.run for a in analyses],
            lambda: F.class_match(analyses, keys, names, paper)))
    if any("true_share" in a.frames for a in analyses):
        truth = [a for a in analyses if "true_share" in a.frames]
        jobs.append(figure_item(
            "beyond-judge-truth", "Estimates against the judge's truth (synthetic data, beyond the paper)",
            "Every scored epoch and class: raw and corrected informativity against the synthetic world judge's true "
            "share; the diagonal is a perfect estimate.", [a.run for a in truth],
            lambda: F.judge_truth(truth, keys, names)))
    scored = [a for a in analyses if "raw_share" in a.frames]
    if {"random", "video"} <= {a.run.split_policy for a in scored}:
        jobs.append(figure_item(
            "beyond-split-policy", "Random vs video-disjoint split (beyond the paper)",
            "Mean informativity (window average; and the judge's truth when known) of runs trained and scored on a "
            "random segment-level split against a video-disjoint split, per embedding size.", [a.run for a in scored],
            lambda: F.split_policy(scored)))
    return jobs


def _measure_figures(ctx: Context, compared: dict | None, correlation: list | None, formats) -> list[Job]:
    """Beyond the paper: the embedding sizes compared, which image metric tracks the truth, the
    image metrics per epoch."""
    jobs = []
    if compared is not None:
        jobs.append(_comparison_figure(ctx, compared, formats))
    if correlation:
        jobs.append(_simple_figure(ctx, "beyond-metric-vs-truth", "Which metric tracks the truth (beyond the paper)",
                                   "Spearman's correlation of each metric with the judge's true informativity over "
                                   "every checkpoint and reference translator, with 95% bootstrap intervals; green: "
                                   "the interval excludes 0 in the right direction ((↓): lower is better).",
                                   lambda: correlation_figure(correlation), formats))
    if any(r.image_metrics and r.epoch is not None for run in ctx.runs for r in run.records):
        jobs.append(_simple_figure(ctx, "beyond-image-metrics", "Image metrics per epoch (beyond the paper)",
                                   "FID, KID and IIS of every scored epoch, one line per run (domain features).",
                                   lambda: image_metric_series(ctx.runs), formats))
    return jobs


def _calibration_figures(ctx: Context, formats) -> list[Job]:
    """Beyond the paper: the classifiers' reliability diagrams (with --classifiers, when its card
    holds them)."""
    if not has_calibration(ctx.card):
        return []

    def job():
        with F.style():
            fig = reliability_figure(ctx.card, ctx.protocol.class_keys, ctx.protocol.class_names)
            if fig is None:
                return None
            files = F.save(fig, ctx.out / "figures" / "beyond-calibration", formats)
        return Item("figure", "Calibration of the informativity classifiers (beyond the paper)",
                    "Per class, on the classifier's held-out test images: the share labelled informative against the "
                    "mean P(informative) of 10 equal-width probability bins (marker area ~ images in the bin); the "
                    "dashed diagonal is perfect calibration, ECE the count-weighted mean gap to it. From the JSON "
                    "card beside the bundle (its calibration block is not covered by the bundle's sha256).",
                    ctx.provenance([], bundle=True), [f.relative_to(ctx.out) for f in files])
    return [Job("beyond-calibration", job, [])]


def _simple_figure(ctx: Context, stem: str, title: str, caption: str, make, formats) -> Job:
    def job():
        with F.style():
            files = F.save(make(), ctx.out / "figures" / stem, formats)
        return Item("figure", title, caption, ctx.provenance(ctx.runs), [f.relative_to(ctx.out) for f in files])
    return Job(stem, job, ctx.runs)


def _comparison_figure(ctx: Context, compared: dict, formats) -> Job:
    def job():
        with F.style():
            fig = comparison_figure(compared, ctx.protocol.class_keys, ctx.protocol.class_names)
            files = F.save(fig, ctx.out / "figures" / "beyond-comparison", formats)
        return Item("figure", "Comparison of embedding sizes (beyond the paper)",
                    f"Every pair of embedding sizes at their last common epoch: the difference in informativity (raw, "
                    f"corrected, and the judge's truth on synthetic data) per class and mean with its 95% interval; "
                    f"filled markers are significant after Holm's adjustment ({compared['multiple_comparisons']}).",
                    ctx.provenance(ctx.runs), [f.relative_to(ctx.out) for f in files])
    return Job("beyond-comparison", job, ctx.runs)


def _copy_grid(ctx: Context, run: Run) -> Item:
    """No sample sheet: show the run's last training grid (fixed validation sounds) as it is."""
    grid = run.grids[-1]
    rel = Path("figures") / "fig15-grid.png"
    (ctx.out / "figures").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid, ctx.out / rel)
    return Item("figure", f"Fig. 15 (training grid): {run.label}",
                f"The last image grid saved during training ({grid.name}: fixed validation sounds); no sample sheet "
                "of test sounds was found (written by `s2i-bench score`).", ctx.provenance([run]), [rel])
