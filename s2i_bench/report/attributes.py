"""The report's attribute scores (synthetic data, beyond the paper): does the picture follow the sound?

One table and one figure per dimension (`scoring.attributes`: tone, size, mixture_louder,
mixture_both, out_of_protocol), each showing the last record with attribute scores of every run
and every reference translator, and one table of the estimators' error on real frames. Nothing
is aggregated across dimensions: each has its own number, direction and interval.

    attribute_table_jobs(runs, references) -> [Job]        the tables (render's table jobs)
    attribute_figure_jobs(ctx, runs, references, formats)  the figures
"""

from __future__ import annotations

from s2i_bench.report.figures import COLUMN_IN, FULL_IN, _figure, class_colours, save, style
from s2i_bench.report.plan import Item, Job
from s2i_bench.report.tables import Column, Table, pct, pct_interval
from s2i_bench.scoring.attributes import CORRELATIONS, LABELS

DIMENSIONS = tuple(LABELS)  # the record's dimensions, in scoring's order
TITLES = {"tone": "Tone → hue: does the colour follow the pitch?",
          "size": "Loudness → size: does the object grow with the sound?",
          "mixture_louder": "Two sources: does the image show the louder one?",
          "mixture_both": "Two sources: does the image show both?",
          "out_of_protocol": "Sounds outside the protocol: does the image show a class anyway? (lower is better)"}
ORDER = {"real-frame": 0, "retrieval": 1, "class-prototype": 2, "random-frame": 3}


def scored(runs, references=()) -> list[tuple[str, object]]:
    """(label, record) of the latest record with attribute scores of every run, then every
    reference translator (ceiling to chance)."""
    out = []
    for run in runs:
        recs = [r for r in run.records if r.attributes]
        if recs:
            last = max(recs, key=lambda r: -1 if r.epoch is None else r.epoch)
            out.append((run.label + ("" if last.epoch is None else f" (epoch {last.epoch})"), last))
    refs = []
    for run in references:
        recs = [r for r in run.records if r.attributes]
        if recs:
            name = str(recs[-1].translator_name or run.name)
            refs.append((ORDER.get(name, 9), name, recs[-1]))
    return out + [(f"reference:{name}", r) for _, name, r in sorted(refs, key=lambda t: t[:2])]


def _rho(entry) -> str:
    v, ci = entry.get("value"), entry.get("ci")
    if v is None:
        return "–"
    return f"{v:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def correlation_table(dim: str, rows, class_keys, class_names) -> Table:
    table_rows = []
    notes: dict[str, list[str]] = {}  # note -> where it applies (one line per note, not per cell)
    for label, r in rows:
        e = r.attribute(dim)
        row = {"translator": label, "mean": e.get("value"), "mean_ci_low": (e.get("ci") or [None])[0],
               "mean_ci_high": (e.get("ci") or [None, None])[1], "_mean": e}
        for k in class_keys:
            c = (e.get("classes") or {}).get(k) or {}
            row[k], row[f"{k}_ci_low"], row[f"{k}_ci_high"] = c.get("value"), *(c.get("ci") or [None, None])
            row[f"{k}_videos"], row[f"_{k}"] = c.get("n_videos"), c
            if c.get("note"):
                notes.setdefault(c["note"], []).append(f"{label} ({class_names[class_keys.index(k)]})")
        table_rows.append(row)
    columns = [Column("translator", "run / reference"),
               Column("mean", "mean ρ [95% CI]", lambda r: _rho(r["_mean"])),
               Column("mean_ci_low", "", in_text=False), Column("mean_ci_high", "", in_text=False)]
    for k, name in zip(class_keys, class_names):
        columns += [Column(k, name, lambda r, k=k: _rho(r[f"_{k}"])), Column(f"{k}_ci_low", "", in_text=False),
                    Column(f"{k}_ci_high", "", in_text=False), Column(f"{k}_videos", "", in_text=False)]
    what = "pitch or band centre → hue of the class's tone region" if dim == "tone" else "loudness → object size"
    return Table(f"attributes-{dim}", TITLES[dim],
                 f"Per class, Spearman's ρ over the scored test videos between the sound's attribute ({what}) and "
                 "the mean attribute its images show (estimated from the picture alone), with a 95% bootstrap "
                 "interval over the videos; the mean is the unweighted mean of the classes. Real frames give the "
                 "ceiling, class prototypes and random frames about 0, retrieval what copying achieves.",
                 columns, table_rows,
                 [f"{note[0].upper()}{note[1:]}: {', '.join(where)}." for note, where in notes.items()])


def share_table(dim: str, rows) -> Table:
    parts = list(dict.fromkeys(k for _, r in rows for k in (r.attribute(dim).get("parts") or {})))
    table_rows = []
    notes = set()
    for label, r in rows:
        e = r.attribute(dim)
        ci = e.get("ci") or [None, None]
        row = {"translator": label, "share": e.get("value"), "ci_low": ci[0], "ci_high": ci[1], "n": e.get("n")}
        for p in parts:
            pe = (e.get("parts") or {}).get(p) or {}
            row[p], row[f"_{p}"] = pe.get("value"), pe
            if pe.get("note"):
                notes.add(f"{p}: {pe['note']}.")
        if e.get("note"):
            notes.add(f"{label}: {e['note']}.")
        table_rows.append(row)
    columns = [Column("translator", "run / reference"),
               Column("share", "share [95% CI]", lambda r: pct_interval(r["share"], [r["ci_low"], r["ci_high"]])),
               Column("ci_low", "", in_text=False), Column("ci_high", "", in_text=False), Column("n", "images")]
    columns += [Column(p, p.replace("_", " "), lambda r, p=p: pct(r.get(p))) for p in parts]
    captions = {
        "mixture_louder": "Two-source probe sounds (two classes, the quieter 6 or 12 dB below): the share of images "
                          "the judge calls a picture of the louder source, with a Wilson interval; the single-source "
                          "probes, rendered the same way, are the control.",
        "mixture_both": "Two-source probe sounds: the share of images that pass the judge's distance and layout tests "
                        "for both sources (no picture of the world holds two scenes: real frames show the louder).",
        "out_of_protocol": "Silence, white noise and a class the protocol does not know (a siren): the share of "
                           "images the judge calls informative of any class, with a Wilson interval. Lower is better."}
    return Table(f"attributes-{dim}", TITLES[dim], captions[dim], columns, table_rows, sorted(notes))


def estimator_table(rows) -> Table:
    """The estimators' error on the real frames of the scored sounds (the same for every record
    of one store and split: one row per store and split)."""
    seen, table_rows = set(), []
    for _, r in rows:
        err = r.attributes.get("estimator_error") or {}
        key = (r.store_hash, err.get("split"))
        if key in seen or not err.get("tone"):
            continue
        seen.add(key)
        row = {"store": r.store_hash, "split": err.get("split"), "frames": err.get("n_frames")}
        for dim in CORRELATIONS:
            classes = err[dim].get("classes") or {}
            rhos = [c["rho"] for c in classes.values() if c.get("rho") is not None]
            row[f"{dim}_mae"], row[f"{dim}_rho_min"] = err[dim].get("mae"), min(rhos) if rhos else None
        table_rows.append(row)

    def num(key, digits):
        return lambda r: "–" if r.get(key) is None else f"{r[key]:.{digits}f}"

    columns = [Column("store", "store"), Column("split", "split"), Column("frames", "real frames"),
               Column("tone_mae", "tone MAE", num("tone_mae", 3)),
               Column("tone_rho_min", "tone ρ (worst class)", num("tone_rho_min", 2)),
               Column("size_mae", "size MAE", num("size_mae", 3)),
               Column("size_rho_min", "size ρ (worst class)", num("size_rho_min", 2))]
    return Table("attributes-estimators", "The attribute estimators on real frames",
                 "The tone and size estimators (synth.attributes) on the real centre frames of the scored sounds, "
                 "whose true attributes are known: mean absolute error (attributes in [0, 1]) and the lowest "
                 "per-class Spearman ρ over the frames.", columns, table_rows)


def attribute_table_jobs(runs, references, class_keys, class_names) -> list[Job]:
    rows = scored(runs, references)
    if not rows:
        return []
    jobs = [Job("attributes-estimators", lambda: estimator_table(rows), runs, is_table=True)]
    for dim in DIMENSIONS:
        if not any(r.attribute(dim) for _, r in rows):
            continue
        make = (lambda d=dim: correlation_table(d, rows, list(class_keys), list(class_names))) \
            if dim in CORRELATIONS else (lambda d=dim: share_table(d, rows))
        jobs.append(Job(f"attributes-{dim}", make, runs, is_table=True))
    return jobs


def attribute_figure(dim: str, rows, class_keys, class_names):
    """One row per run / reference: the dimension's value with its interval; for the correlations,
    each class's rho as a coloured dot."""
    fig = _figure(FULL_IN if dim in CORRELATIONS else COLUMN_IN, 0.7 + 0.25 * len(rows))
    ax = fig.subplots()
    colours = class_colours(class_keys)
    for i, (_, r) in enumerate(rows):
        e = r.attribute(dim)
        if dim in CORRELATIONS:
            for k in class_keys:
                c = (e.get("classes") or {}).get(k) or {}
                if c.get("value") is not None:
                    ax.plot([c["value"]], [i], "o", ms=3, color=colours[k], alpha=0.8)
        if e.get("ci"):
            ax.plot(e["ci"], [i, i], color="0.2", lw=1.4)
        if e.get("value") is not None:
            ax.plot([e["value"]], [i], "D", ms=4, color="0.1")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=6)
    ax.invert_yaxis()
    if dim in CORRELATIONS:
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("Spearman ρ (diamond: mean of the classes, with its 95% interval; dots: classes)")
        handles = [ax.plot([], [], "o", ms=3, color=colours[k])[0] for k in class_keys]
        fig.legend(handles, list(class_names), loc="outside lower center", ncol=len(class_keys), fontsize=6)
    else:
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("share of images" + (" (lower is better)" if dim == "out_of_protocol" else "")
                      + ", 95% Wilson interval")
    return fig


def attribute_figure_jobs(ctx, runs, references, formats) -> list[Job]:
    rows = scored(runs, references)
    keys, names = list(ctx.protocol.class_keys), list(ctx.protocol.class_names)
    jobs = []
    for dim in DIMENSIONS:
        if not any(r.attribute(dim).get("value") is not None for _, r in rows):
            continue
        stem = f"beyond-attributes-{dim}"

        def job(dim=dim, stem=stem):
            with style():
                files = save(attribute_figure(dim, rows, keys, names), ctx.out / "figures" / stem, formats)
            return Item("figure", TITLES[dim] + " (beyond the paper)",
                        f"Attribute scores ({dim}) of the last scored epoch of each run and of each reference "
                        "translator, with 95% intervals (docs/metrics.md, \"Attribute scores\").",
                        ctx.provenance(runs), [f.relative_to(ctx.out) for f in files])
        jobs.append(Job(stem, job, runs))
    return jobs
