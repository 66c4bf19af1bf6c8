"""Figures of the report (matplotlib through seaborn's styles; no pyplot, so no global state).

Every function takes data the report already loaded (`report.Analysis`, sample sheets, the
store) and returns a `matplotlib.figure.Figure`; `save` writes it in the requested formats with
fixed metadata, so a rerun gives the same bytes. Colours: one per class, the same in every
figure (`class_colours`), black for the class mean; one per embedding size (`dim_colours`).
Sizes are for a two-column paper: 3.4 in (one column) or 7 in (full width).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from s2i_bench.data.store import segment_class
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_path

COLUMN_IN = 3.4
FULL_IN = 7.0
MEAN_COLOUR = (0.0, 0.0, 0.0)
PAPER_COLOUR = (0.35, 0.35, 0.35)
# Fixed metadata: no software version, no creation date, so files do not change between runs.
METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Creator": None, "Date": None},
}


@contextlib.contextmanager
def style():
    """seaborn's paper style, fixed SVG ids, for the figures made inside."""
    import matplotlib
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.9), \
            matplotlib.rc_context({"svg.hashsalt": "s2i-bench", "pdf.compression": 6,
                                   "axes.titlesize": 8, "legend.fontsize": 6.5, "legend.frameon": False}):
        yield


def class_colours(class_keys) -> dict[str, tuple]:
    """One colour per class (seaborn's colour-blind palette, protocol order), black for the mean."""
    import seaborn as sns

    palette = sns.color_palette("colorblind", max(len(class_keys), 5))
    colours = {k: tuple(palette[i]) for i, k in enumerate(class_keys)}
    colours["mean"] = MEAN_COLOUR
    return colours


def dim_colours(dims) -> dict:
    """One colour per embedding size, ordered small (light) to large (dark)."""
    import seaborn as sns

    dims = sorted({d for d in dims if d is not None})
    palette = sns.color_palette("flare", max(len(dims), 1))
    return {d: tuple(palette[i]) for i, d in enumerate(dims)}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(fig, stem: Path, formats) -> list[Path]:
    """Write `stem.<fmt>` for every format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=200, metadata=METADATA[fmt])
        paths.append(path)
    return paths


def add_warning(fig, text: str) -> None:
    """A red line over the whole figure (e.g. a leaky random split)."""
    fig.suptitle(text, color="#b00000", fontsize=7, fontweight="bold")


def _pct(values) -> np.ndarray:
    return 100.0 * np.asarray(values, dtype=float)


def _run_title(run) -> str:
    dim = f"f = {run.embedding_dim}" if run.embedding_dim is not None else "f unknown"
    policy = "" if run.split_policy in ("video", "unknown") else f", {run.split_policy} split"
    return f"{run.label} ({dim}{policy})"


def _class_legend(fig, class_keys, class_names, extra=(), ncol=None):
    from matplotlib.lines import Line2D

    colours = class_colours(class_keys)
    handles = [Line2D([], [], color=colours[k], lw=1.5, label=n) for k, n in zip(class_keys, class_names)]
    handles.append(Line2D([], [], color=MEAN_COLOUR, lw=2.0, label="mean"))
    handles += list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol or min(len(handles), 4))


# -- Figs. 7-11 ----------------------------------------------------------------------------------
REFERENCE_STYLE = {"real-frame": (0, (1, 1)), "retrieval": (0, (4, 2)), "class-prototype": (0, (6, 2, 1, 2)),
                   "random-frame": (0, (2, 3))}


def _reference_lines(ax, references, label: bool = True) -> None:
    """The reference translators' mean raw shares as grey horizontal lines, named at the right."""
    for lv in references:
        v = lv["raw"].get("mean")
        if v is None:
            continue
        ax.axhline(100 * v, color="0.45", lw=0.8, ls=REFERENCE_STYLE.get(lv["name"], "--"), zorder=0.5)
        if label:
            ax.annotate(lv["name"], (1.0, 100 * v), xycoords=("axes fraction", "data"), xytext=(2, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=5.5, color="0.35")


def informativity_per_epoch(analyses, class_keys, class_names, spec, references=()):
    """One panel per run: replaced per-epoch informativity (thin) and its moving average (thick),
    per class and mean; replaced epochs marked on the mean; the averaging window shaded; the
    reference translators' mean levels as grey lines."""
    from matplotlib.lines import Line2D

    colours = class_colours(class_keys)
    n = len(analyses)
    fig = _figure(FULL_IN, 1.0 + 1.55 * n)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, a in zip(axes, analyses):
        frame = a.frames["raw_share"]
        ma = a.moving["raw_share"]
        x = frame["epoch"].to_numpy()
        marker = "o" if len(x) < 3 else None
        ax.axvspan(spec.window_start, spec.window_end, color="0.5", alpha=0.07, lw=0)
        for k in (*class_keys, "mean"):
            mean = k == "mean"
            ax.plot(x, _pct(frame[k]), color=colours[k], lw=0.8 if mean else 0.6, alpha=0.45 if mean else 0.35,
                    marker=marker, ms=3)
            ax.plot(x, _pct(ma[k]), color=colours[k], lw=2.0 if mean else 1.2)
        replaced = frame["replaced"].to_numpy().astype(bool)
        ax.plot(x[replaced], _pct(frame["mean"].to_numpy()[replaced]), ls="none", marker="x", ms=3,
                color="0.3", mew=0.8)
        best = a.summaries["raw_share"]["mean"]
        if best.get("max_moving_average_epoch") is not None:
            e, v = best["max_moving_average_epoch"], 100 * best["max_moving_average"]
            ax.plot([e], [v], marker="o", ms=4, color=MEAN_COLOUR)
            ax.annotate(f"max MA {v:.1f}% (epoch {e})", (e, v), xytext=(-4, 6), textcoords="offset points",
                        ha="right", fontsize=6)
        elif len(x) < spec.moving_average:
            ax.text(0.99, 0.95, f"series shorter than the {spec.moving_average}-epoch moving average",
                    transform=ax.transAxes, ha="right", va="top", fontsize=6, color="0.3")
        _reference_lines(ax, references)
        ax.set_title(_run_title(a.run), loc="left")
        ax.set_ylabel("informative (%)")
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("epoch")
    extra = [Line2D([], [], color="0.3", lw=0.6, alpha=0.6, label="per epoch (replaced)"),
             Line2D([], [], color="0.3", lw=1.6, label=f"{spec.moving_average}-epoch moving average"),
             Line2D([], [], color="0.3", ls="none", marker="x", ms=4, label="replaced after a D update"),
             Line2D([], [], color="0.5", alpha=0.3, lw=6, label=f"window {spec.window_start}–{spec.window_end}")]
    if any(lv["raw"].get("mean") is not None for lv in references):
        extra.append(Line2D([], [], color="0.45", lw=0.8, ls="--", label="reference translators (mean)"))
    _class_legend(fig, class_keys, class_names, extra, ncol=5)
    return fig


# -- Fig. 12 ---------------------------------------------------------------------------------------------
def embedding_size(analyses, class_keys, class_names, paper, references=()):
    """Window average and maximum moving average of informativity against embedding size, with
    the reference translators' mean levels as grey lines."""
    from matplotlib.lines import Line2D

    colours = class_colours(class_keys)
    fig = _figure(FULL_IN, 2.6)
    axes = fig.subplots(1, 2, sharey=True)
    policies = sorted({a.run.split_policy for a in analyses}, key=lambda p: (p != "video", p))
    styles = {p: ls for p, ls in zip(policies, ("-", "--", ":", "-."))}
    dims = sorted({a.run.embedding_dim for a in analyses})
    paper_mean = None
    if paper is not None and "informativity.best.mean" in paper.index:
        paper_mean = paper.loc["informativity.best.mean"]
    for ax, metric, label in ((axes[0], "window_average", "window average"),
                              (axes[1], "max_moving_average", "maximum moving average")):
        for policy in policies:
            group = sorted((a for a in analyses if a.run.split_policy == policy), key=lambda a: a.run.embedding_dim)
            x = [a.run.embedding_dim for a in group]
            for k in (*class_keys, "mean"):
                s = [a.summaries["raw_share"]["mean" if k == "mean" else "classes"] for a in group]
                v = [(si if k == "mean" else si[k]).get(metric) for si in s]
                y = [np.nan if vi is None else 100 * vi for vi in v]
                ax.plot(x, y, color=colours[k], lw=2.0 if k == "mean" else 1.0, ls=styles[policy],
                        marker="o", ms=3 if k == "mean" else 2)
        if metric == "max_moving_average" and paper_mean is not None:
            f, v = int(paper_mean["embedding_dim"]), 100 * float(paper_mean["value"])
            ax.plot([f], [v], marker="^", ms=6, mfc="none", mec=PAPER_COLOUR, ls="none")
            ax.annotate(f"paper: > {v:.0f}% at f = {f}\n({paper_mean['source']})", (f, v), xytext=(0, -8),
                        textcoords="offset points", ha="center", va="top", fontsize=6, color=PAPER_COLOUR)
            dims = sorted(set(dims) | {f})
        _reference_lines(ax, references, label=metric == "max_moving_average")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.minorticks_off()
        ax.set_xlabel("embedding size f (dimensions)")
        ax.set_title(label, loc="left")
    axes[0].set_ylim(bottom=0)  # after plotting: the shared y range covers both panels
    axes[0].set_ylabel("informative (%)")
    extra = [Line2D([], [], color="0.3", ls=styles[p], label=f"{p} split") for p in policies if len(policies) > 1]
    if paper_mean is not None:
        extra.append(Line2D([], [], color=PAPER_COLOUR, ls="none", marker="^", mfc="none", label="paper"))
    if any(lv["raw"].get("mean") is not None for lv in references):
        extra.append(Line2D([], [], color="0.45", lw=0.8, ls="--", label="reference translators (mean)"))
    _class_legend(fig, class_keys, class_names, extra, ncol=4)
    return fig


# -- Figs. 13, 14 ------------------------------------------------------------------------------------
def pixel_loss(analyses, moving: bool, length: int):
    """Training pixel loss per epoch (Fig. 14) or its moving average (Fig. 13), one line per run."""
    colours = dim_colours([a.run.embedding_dim for a in analyses])
    fig = _figure(COLUMN_IN, 2.5)
    ax = fig.subplots()
    for i, a in enumerate(analyses):
        log = a.run.log
        y = a.pixel_ma if moving else log["pixel_loss"].to_numpy(dtype=float)
        colour = colours.get(a.run.embedding_dim, tuple(np.array([0.3, 0.3, 0.3]) + 0.1 * i))
        ls = "-" if a.run.split_policy != "random" else "--"
        ax.plot(log["epoch"].to_numpy(), y, color=colour, lw=1.2, ls=ls, label=_run_title(a.run))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"pixel loss, {length}-epoch MA (MSE)" if moving else "pixel loss (MSE, epoch mean)")
    ax.legend(loc="upper right")
    if moving and all(np.isnan(a.pixel_ma).all() for a in analyses):
        ax.text(0.5, 0.5, f"runs shorter than {length} epochs: no full window", transform=ax.transAxes,
                ha="center", fontsize=7, color="0.3")
    return fig


# -- Figs. 15, 16 ----------------------------------------------------------------------------------
def _sheet_classes(sheet, class_keys, store=None) -> list[str | None]:
    if "class_keys" in sheet:
        return sheet["class_keys"]
    if store is not None:
        known = dict(zip(store.segment_ids.tolist(), store.manifest["class"].tolist()))
        return [known.get(s) for s in sheet["segment_ids"]]
    return [segment_class(s, class_keys) for s in sheet["segment_ids"]]


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """An image in an h x w cell: nearest-neighbour scaled to fit with its aspect kept, centred on
    white (sheets keep each translator's native size; the figure only places them)."""
    ih, iw = img.shape[:2]
    if (ih, iw) == (h, w):
        return img
    scale = min(h / ih, w / iw)
    nh, nw = max(1, int(round(ih * scale))), max(1, int(round(iw * scale)))
    rows = (np.arange(nh) * ih // nh).astype(int)
    cols = (np.arange(nw) * iw // nw).astype(int)
    cell = np.full((h, w, 3), 255, dtype=np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    cell[top:top + nh, left:left + nw] = img[rows][:, cols]
    return cell


def _mosaic(rows: list[list[np.ndarray]], side, gap: int = 2, group: int = 0, group_gap: int = 6):
    """Images in rows on white, each in a cell of `side` (an int, or (h, w)); `group` > 0 adds a
    wider gap every `group` columns."""
    ch, cw = (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))
    ncols = max((len(r) for r in rows), default=0)
    col_x = []
    x = 0
    for c in range(ncols):
        col_x.append(x)
        x += cw + (group_gap if group and (c + 1) % group == 0 else gap)
    width = max(x - gap, 1)
    height = len(rows) * (ch + gap) - gap
    canvas = np.full((max(height, 1), width, 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        y = r * (ch + gap)
        for c, img in enumerate(images):
            canvas[y:y + ch, col_x[c]:col_x[c] + cw] = _fit(img, ch, cw)
    return canvas, [r * (ch + gap) + ch / 2 for r in range(len(rows))], [cx + cw / 2 for cx in col_x]


def sample_grid(sheet, class_keys, class_names, per_class: int = 8):
    """Fig. 15: the first `per_class` images of each class in the sheet, one row per class."""
    classes = _sheet_classes(sheet, class_keys)
    images = sheet["images"]  # (M, H, W, 3) at the translator's native size
    side = (images.shape[1], images.shape[2])
    rows = [[images[i] for i, c in enumerate(classes) if c == k][:per_class] for k in class_keys]
    canvas, ys, _ = _mosaic(rows, side)
    fig = _image_figure(canvas, label_in=1.0, top_in=0.2)
    ax = fig.subplots()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks(ys, list(class_names))
    ax.set_xticks([])
    _bare(ax)
    return fig


def _image_figure(canvas: np.ndarray, label_in: float, top_in: float):
    """A figure whose height follows the mosaic's aspect (no empty bands), at most full width."""
    h, w = canvas.shape[:2]
    image_w = min(FULL_IN - label_in, 0.55 * w / 48)  # about 0.55 in per 48-px image at most
    return _figure(image_w + label_in, image_w * h / w + top_in + 0.1)


def _bare(ax) -> None:
    ax.grid(False)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)


def originals_beside(sheet, store, class_keys, class_names, pairs: int = 4):
    """Fig. 16: each test segment's centre frame beside the image translated from its sound.
    The real frames come from the sheet (`frames`) or, when it has none, from the store."""
    if "frames" in sheet:
        originals = list(sheet["frames"])
    else:
        index = {s: i for i, s in enumerate(store.segment_ids.tolist())}
        originals = [np.asarray(store.frames[index[s]]) if s in index else None for s in sheet["segment_ids"]]
        if all(o is None for o in originals):
            raise UserError(f"{sheet['path']}: none of its segment ids is in the store {store.path}; pass with "
                            "--data the store the run was scored on")
    classes = _sheet_classes(sheet, class_keys, store)
    # square cells as large as the larger of the frames and the (native-size) translations
    side = max([int(o.shape[0]) for o in originals if o is not None] + list(sheet["images"].shape[1:3]))
    rows = []
    for k in class_keys:
        row = []
        for i, c in enumerate(classes):
            if c != k or originals[i] is None:
                continue
            row += [originals[i], sheet["images"][i]]
            if len(row) >= 2 * pairs:
                break
        rows.append(row)
    canvas, ys, xs = _mosaic(rows, side, group=2, group_gap=10)
    fig = _image_figure(canvas, label_in=1.0, top_in=0.3)
    ax = fig.subplots()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks(ys, list(class_names))
    ax.set_xticks(xs, ["original" if c % 2 == 0 else "generated" for c in range(len(xs))], fontsize=6)
    ax.xaxis.tick_top()
    _bare(ax)
    return fig


# -- beyond the paper -------------------------------------------------------------------------------
def raw_vs_corrected(analyses, class_keys, class_names, per_row: int = 3):
    """At the last scored epoch: raw share, corrected share with its interval, true share."""
    from matplotlib.lines import Line2D

    colours = class_colours(class_keys)
    n = len(analyses)
    ncols = min(n, per_row)
    nrows = -(-n // ncols)
    fig = _figure(FULL_IN, 0.6 + 2.0 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    keys = (*class_keys, "mean")
    labels = [*class_names, "mean"]
    for ax, a in zip(axes, analyses):
        for i, k in enumerate(keys):
            v = a.last.get(k) or {}
            c = colours[k]
            if v.get("raw_share") is not None:
                ax.plot([i - 0.15], [100 * v["raw_share"]], marker="o", mfc="none", mec=c, ls="none", ms=4)
            if v.get("corrected_share") is not None:
                ci = v.get("corrected_ci")
                yerr = None
                if ci and None not in ci:
                    yerr = [[100 * (v["corrected_share"] - ci[0])], [100 * (ci[1] - v["corrected_share"])]]
                ax.errorbar([i + 0.1], [100 * v["corrected_share"]], yerr=yerr, marker="o", color=c, ms=4,
                            capsize=2, lw=1)
            if v.get("true_share") is not None:
                ax.plot([i + 0.3], [100 * v["true_share"]], marker="*", color="k", ls="none", ms=5)
        ax.set_xticks(range(len(keys)), labels, rotation=40, ha="right", rotation_mode="anchor")
        epoch = f"\nepoch {a.last_epoch}" if a.last_epoch is not None else ""
        ax.set_title(_run_title(a.run) + epoch, loc="left")
    axes[0].set_ylim(bottom=0)  # after plotting: the shared y range covers every panel
    for ax in axes[n:]:
        ax.set_visible(False)
    for r in range(nrows):
        axes[r * ncols].set_ylabel("informative (%)")
    handles = [Line2D([], [], marker="o", mfc="none", mec="0.3", ls="none", label="raw (classifier)"),
               Line2D([], [], marker="o", color="0.3", label="corrected, 95% interval"),
               Line2D([], [], marker="*", color="k", ls="none", label="judge's truth")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    return fig


def class_match(analyses, class_keys, class_names, paper):
    """Class-match rate against informativity, every scored epoch and class."""
    colours = class_colours(class_keys)
    fig = _figure(COLUMN_IN, 3.0)
    ax = fig.subplots()
    for k, name in zip(class_keys, class_names):
        xs, ys = [], []
        for a in analyses:
            for r in a.run.records:
                raw, matched = r.share(k, "raw_share"), r.share(k, "class_match_rate")
                if matched is not None and raw is not None:
                    xs.append(100 * raw)
                    ys.append(100 * matched)
        ax.scatter(xs, ys, s=8, color=colours[k], alpha=0.7, lw=0, label=name)
    ax.plot([0, 100], [0, 100], color="0.5", lw=0.8, ls="--", label="class match = informativity")
    if paper is not None and "class_match.share" in paper.index:
        p = paper.loc["class_match.share"]
        ax.axhline(100 * float(p["value"]), color=PAPER_COLOUR, lw=0.8, ls=":")
        ax.text(1, 100 * float(p["value"]) + 1.5, f"paper: > {100 * float(p['value']):.0f}% matched ({p['source']})",
                fontsize=6, color=PAPER_COLOUR)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("informative, raw (%)")
    ax.set_ylabel("class-match rate (%)")
    ax.legend(loc="lower right", fontsize=5.5)
    return fig


def judge_truth(analyses, class_keys, class_names):
    """Raw and corrected informativity against the judge's true share (synthetic data)."""
    colours = class_colours(class_keys)
    fig = _figure(FULL_IN, 3.0)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, measure, label in ((axes[0], "raw_share", "raw (classifier)"),
                               (axes[1], "corrected_share", "corrected (Rogan–Gladen)")):
        for k, name in zip(class_keys, class_names):
            xs, ys = [], []
            for a in analyses:
                for r in a.run.records:
                    truth, value = r.share(k, "true_share"), r.share(k, measure)
                    if truth is not None and value is not None:
                        xs.append(100 * truth)
                        ys.append(100 * value)
            ax.scatter(xs, ys, s=8, color=colours[k], alpha=0.7, lw=0, label=name)
        ax.plot([0, 100], [0, 100], color="0.5", lw=0.8, ls="--")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
        ax.set_xlabel("judge's true share (%)")
        ax.set_title(label, loc="left")
    axes[0].set_ylabel("estimated informative (%)")
    axes[1].legend(loc="lower right", fontsize=5.5)
    return fig


def split_policy(analyses):
    """Mean informativity of random-split runs against video-disjoint runs, per embedding size."""
    measures = [("raw_share", "classifier (raw)")]
    if any("true_share" in a.summaries for a in analyses):
        measures.append(("true_share", "judge's truth"))
    fig = _figure(COLUMN_IN * len(measures), 2.5)
    axes = np.atleast_1d(fig.subplots(1, len(measures), sharey=True, squeeze=False)).ravel()
    dims = sorted({a.run.embedding_dim for a in analyses if a.run.embedding_dim is not None}) or [None]
    colours = {"video": (0.2, 0.45, 0.7), "random": (0.8, 0.3, 0.2)}
    for ax, (measure, label) in zip(axes, measures):
        for j, policy in enumerate(("video", "random")):
            xs, ys = [], []
            for i, d in enumerate(dims):
                vals = [a.summaries[measure]["mean"].get("window_average") for a in analyses
                        if a.run.split_policy == policy and a.run.embedding_dim == d and measure in a.summaries]
                vals = [v for v in vals if v is not None]
                if vals:
                    xs.append(i + (j - 0.5) * 0.38)
                    ys.append(100 * float(np.mean(vals)))
            ax.bar(xs, ys, width=0.36, color=colours[policy], label=f"{policy} split")
        ax.set_xticks(range(len(dims)), ["?" if d is None else str(d) for d in dims])
        ax.set_xlabel("embedding size f (dimensions)")
        ax.set_title(label, loc="left")
    axes[0].set_ylabel("mean informative, window avg. (%)")
    axes[-1].legend(loc="upper right")
    return fig
