"""The comparison table and figure (`s2i-bench compare --out`, and the report's own comparison of
its runs by embedding size): one row per pair, class and measure, from `scoring.compare`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import s2i_bench.report.figures as F
from s2i_bench.fileio import dig
from s2i_bench.errors import UserError
from s2i_bench.locks import exclusive_lock
from s2i_bench.protocol import load_protocol
from s2i_bench.publish import check_publishable, publish_folder, staged_folder
from s2i_bench.report.figures import FULL_IN, _figure
from s2i_bench.report.tables import Column, Table, pct
from s2i_bench.scoring.compare import compare_systems, write_json
from s2i_bench.scoring.systems import Member, System, common_series, named_bundle

MEASURE_COLOURS = {"raw": (0.12, 0.47, 0.71), "corrected": (1.0, 0.5, 0.05), "true": (0.17, 0.63, 0.17)}
KIND = "s2i-bench-comparison"


def _signed(v) -> str:
    return "–" if v is None else f"{100 * v:+.1f} pp"


def comparison_table(result: dict, class_names: dict[str, str]) -> Table:
    columns = [Column("a", "A"), Column("b", "B"), Column("metric", "Metric"), Column("measure", "Measure"),
               Column("class", "Class", lambda r: class_names.get(r["class"], r["class"])),
               Column("difference", "A − B", lambda r: _signed(r["difference"])),
               Column("ci_low", "95% CI", lambda r: "–" if r.get("ci_low") is None else
                      f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"),
               Column("ci_high", "", in_text=False),
               Column("p_value", "p", lambda r: f"{r['p_value']:.3g}"),
               Column("p_adjusted", "p (Holm)", lambda r: f"{r['p_adjusted']:.3g}"),
               Column("significant", "Significant", lambda r: "yes" if r["significant"] else "no"),
               Column("mde", "MDE", lambda r: "–" if r.get("mde") is None else pct(r["mde"])),
               Column("test", "Test", in_text=False)]
    rows = []
    for r in result["pairs"]:
        ci = r.get("ci") or [None, None]
        rows.append({**r, "ci_low": ci[0], "ci_high": ci[1]})
    caption = (f"{result['mode']}, {result['split']} sounds: the difference A − B with its 95% interval, the p-value "
               f"and the p-value adjusted by Holm ({result['multiple_comparisons']}); significant at adjusted p < "
               f"{result['alpha']}. MDE: the smallest difference detectable with 80% power with these sounds.")
    return Table("comparison", "Comparison of translators (beyond the paper)", caption, columns, rows)


def comparison_figure(result: dict, class_keys, class_names):
    """One panel per pair: per class and the mean, each measure's difference with its interval;
    filled markers are significant after Holm's adjustment."""
    pairs = list(dict.fromkeys((r["a"], r["b"], r["metric"]) for r in result["pairs"]))
    fig = _figure(FULL_IN, 0.9 + 1.5 * len(pairs))
    axes = fig.subplots(len(pairs), 1, squeeze=False)[:, 0]
    labels = [*class_keys, "mean"]
    names = dict(zip(class_keys, class_names)) | {"mean": "mean"}
    for ax, (a, b, metric) in zip(axes, pairs):
        rows = [r for r in result["pairs"] if (r["a"], r["b"], r["metric"]) == (a, b, metric)]
        measures = [m for m in MEASURE_COLOURS if any(r["measure"] == m for r in rows)]
        for mi, measure in enumerate(measures):
            for r in rows:
                if r["measure"] != measure or r["class"] not in labels:
                    continue
                y = labels.index(r["class"]) + (mi - (len(measures) - 1) / 2) * 0.22
                x = 100 * r["difference"]
                ci = r.get("ci")
                if ci:
                    ax.plot([100 * ci[0], 100 * ci[1]], [y, y], color=MEASURE_COLOURS[measure], lw=1.2)
                ax.plot([x], [y], marker="o", ms=4, color=MEASURE_COLOURS[measure],
                        mfc=MEASURE_COLOURS[measure] if r["significant"] else "white")
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_yticks(range(len(labels)), [names[k] for k in labels], fontsize=6)
        ax.invert_yaxis()
        ax.set_title(f"{a} − {b} ({metric})", loc="left")
        ax.set_xlabel("difference (percentage points)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ms=4, label=m) for m, c in MEASURE_COLOURS.items()]
    handles.append(Line2D([], [], color="0.3", marker="o", ms=4, mfc="white", ls="none", label="not significant"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=6)
    return fig


def write_comparison(result: dict, out) -> Path:
    """comparison.json, tables/comparison.{csv,md,tex} and figures/comparison.png into OUT (new,
    empty, or an earlier comparison: the files it wrote are replaced, nothing else)."""
    out = Path(out)
    check_publishable(out, KIND, what="`s2i-bench compare --out`")
    out.mkdir(parents=True, exist_ok=True)
    try:
        protocol = load_protocol(result["protocol"]["name"])
        keys, class_names = list(protocol.class_keys), list(protocol.class_names)
    except UserError:  # a protocol file elsewhere: the class keys stand for their names
        keys = list(dict.fromkeys(r["class"] for r in result["pairs"] if r["class"] != "mean"))
        class_names = keys
    names = dict(zip(keys, class_names))
    with exclusive_lock(out / ".lock", f"comparison folder {out}"), staged_folder(out) as stage:
        write_json(result, stage / "comparison.json")
        comparison_table(result, names).write(stage / "tables")
        with F.style():
            F.save(comparison_figure(result, keys, class_names), stage / "figures" / "comparison", ["png"])
        publish_folder(stage, out, KIND, what="`s2i-bench compare --out`")
    return out


def runs_by_size(runs) -> list:
    """The report's runs as systems of the comparison: one per embedding size (and split policy),
    a group when several training seeds share it."""
    groups: dict[tuple, list] = {}
    for run in runs:
        if run.embedding_dim is None or not any(r.has_decisions for r in run.records):
            continue
        groups.setdefault((run.embedding_dim, run.split_policy), []).append(run)
    systems = []
    for (dim, policy), members in sorted(groups.items()):
        name = f"f{dim}" + ("" if policy == "video" else f" ({policy})")
        mem = []
        for run in members:
            d_epochs = None
            if run.log is not None and "d_updated" in run.log.columns:
                d_epochs = run.log.loc[run.log["d_updated"].astype(bool), "epoch"].tolist()
            mem.append(Member(run.label, run.folder, dict(run.options), list(run.records), d_epochs))
        systems.append(System(name, mem))
    return systems


def size_comparison(runs, protocol, bundle=None, n_boot: int | None = None) -> dict | None:
    """Every pair of embedding sizes at the last common epoch, or None when fewer than two sizes
    have records with per-image decisions (or they were not scored alike)."""
    systems = runs_by_size(runs)
    if len(systems) < 2:
        return None
    try:
        key = common_series(systems, protocol.scoring.split, None, None)
    except UserError:
        return None
    bun, note = (bundle, None) if bundle is not None else named_bundle(systems, key)
    result = compare_systems(systems, key, protocol, bun, n_boot=n_boot)
    result["notes"] += [note] if note else []
    return result


def seed_table(summaries: list[dict], class_keys, confidence: float = 0.95) -> Table | None:
    """Per configuration trained with several seeds: mean, standard deviation and a t interval
    over the seeds of the mean informativity's window average and maximum moving average (raw,
    and the judge's truth when known)."""
    from scipy.stats import t as student_t

    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        if s.get("embedding_dim") is not None and s.get("train_seed") is not None:
            groups.setdefault((s["embedding_dim"], s.get("split_policy")), []).append(s)
    rows = []
    for (dim, policy), members in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if len({m["train_seed"] for m in members}) < 2:
            continue
        row = {"embedding_dim": dim, "split_policy": policy, "seeds": " ".join(str(m["train_seed"]) for m in members),
               "n_seeds": len(members)}
        for prefix, field in (("raw", "raw_share"), ("true", "true_share")):
            for metric in ("window_average", "max_moving_average"):
                values = [dig(m, "metrics", field, "mean", metric) for m in members]
                values = [v for v in values if v is not None]
                key = f"{prefix}_{metric}"
                if len(values) < 2:
                    row.update({key: None, f"{key}_sd": None, f"{key}_ci_low": None, f"{key}_ci_high": None})
                    continue
                mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
                half = float(student_t.ppf(0.5 + confidence / 2, len(values) - 1)) * sd / np.sqrt(len(values))
                # a share's mean lies in [0, 1]: with two or three seeds the t interval reaches past
                # both ends, and the part outside says nothing
                row.update({key: mean, f"{key}_sd": sd, f"{key}_ci_low": max(0.0, mean - half),
                            f"{key}_ci_high": min(1.0, mean + half)})
        rows.append(row)
    if not rows:
        return None

    def fmt(key):
        return lambda r: ("–" if r.get(key) is None else
                          f"{pct(r[key])} ± {100 * r[key + '_sd']:.1f} [{100 * r[key + '_ci_low']:.1f}, "
                          f"{100 * r[key + '_ci_high']:.1f}]")

    columns = [Column("embedding_dim", "f"), Column("split_policy", "split", in_text=False), Column("seeds", "seeds"),
               Column("n_seeds", "", in_text=False)]
    for prefix, label in (("raw", "raw"), ("true", "judge's truth")):
        for metric, mlabel in (("window_average", "window avg."), ("max_moving_average", "max MA")):
            key = f"{prefix}_{metric}"
            shown = any(r.get(key) is not None for r in rows)
            columns += [Column(key, f"{label} {mlabel}: mean ± SD [95% CI]", fmt(key), in_text=shown),
                        Column(f"{key}_sd", "", in_text=False), Column(f"{key}_ci_low", "", in_text=False),
                        Column(f"{key}_ci_high", "", in_text=False)]
    return Table("seeds", "Training seeds (beyond the paper)",
                 "Per embedding size trained with several seeds: the mean informativity's window average and maximum "
                 "moving average over the seeds: mean ± standard deviation and a 95% t interval clipped to [0, 100]% "
                 "(seed-to-seed spread, beside the per-sound intervals of the informativity table; "
                 "with two seeds it is wide by construction).", columns, rows)
