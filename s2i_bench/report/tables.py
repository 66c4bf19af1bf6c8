"""Tables of the report: one `Table` written three ways (CSV, Markdown, LaTeX).

A table keeps machine values in its rows (shares in 0..1, integers, None for unknown). The CSV
holds those values as they are (a fixed number format, so a rerun gives the same bytes); the
Markdown and LaTeX versions show them for people (percentages, intervals, "> 14.0%").

The builders below take plain data (store metadata, the bundle card, run summaries, the paper's
numbers) so they can be tested without any figure or file around them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from s2i_bench.fileio import atomic_write_text, dig
from s2i_bench.text import percent

SPLIT_NAMES = {"train": "Training", "val": "Validation", "test": "Test"}
RELATION_SIGN = {"eq": "", "gt": "> ", "lt": "< ", "approx": "≈ ", "": ""}


@dataclass
class Column:
    key: str  # row key and CSV header
    header: str  # what people read (Markdown, LaTeX)
    fmt: Callable[[dict], str] | None = None  # row -> text; default: `format_value(row[key])`
    in_csv: bool = True  # False: a display-only column (its values are in other CSV columns)
    in_text: bool = True  # False: CSV only


@dataclass
class Table:
    name: str  # file stem: OUT/tables/<name>.{csv,md,tex}
    title: str
    caption: str  # one line: what it shows
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    # -- the three renderings ----------------------------------------------------------------
    def to_csv(self) -> str:
        cols = [c for c in self.columns if c.in_csv]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([c.key for c in cols])
        for row in self.rows:
            writer.writerow([csv_value(row.get(c.key)) for c in cols])
        return buf.getvalue()

    def text_cells(self) -> tuple[list[str], list[list[str]]]:
        cols = [c for c in self.columns if c.in_text]
        headers = [c.header for c in cols]
        body = [[(c.fmt(row) if c.fmt else format_value(row.get(c.key))) for c in cols] for row in self.rows]
        return headers, body

    def to_markdown(self) -> str:
        headers, body = self.text_cells()
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
                 "| " + " | ".join("---" for _ in headers) + " |"]
        lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in body]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        headers, body = self.text_cells()
        align = "l" + "r" * (len(headers) - 1)
        lines = [f"% {self.title}: {self.caption}", "% needs \\usepackage{booktabs}",
                 "\\begin{tabular}{" + align + "}", "\\toprule",
                 " & ".join(latex_escape(h) for h in headers) + " \\\\", "\\midrule"]
        lines += [" & ".join(latex_escape(v) for v in r) + " \\\\" for r in body]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def markdown_block(self) -> str:
        """The table with its notes, as it appears in index.md."""
        notes = "".join(f"\n{n}\n" for n in self.notes)
        return self.to_markdown() + notes

    def write(self, folder: str | Path) -> dict[str, Path]:
        folder = Path(folder)
        paths = {ext: folder / f"{self.name}.{ext}" for ext in ("csv", "md", "tex")}
        atomic_write_text(paths["csv"], self.to_csv())
        atomic_write_text(paths["md"], f"# {self.title}\n\n{self.caption}\n\n" + self.markdown_block())
        atomic_write_text(paths["tex"], self.to_latex())
        return paths


# -- value formatting ---------------------------------------------------------------------------
def csv_value(v: Any) -> str:
    """Machine form: '' for unknown, integers as they are, floats with 6 significant digits."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if v != v:  # NaN
            return ""
        return format(v, ".6g")
    if isinstance(v, (list, tuple)):
        return " ".join(csv_value(x) for x in v)
    return str(v)


def format_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float):
        return format(v, ".4g")
    return str(v)


def pct(v: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'; unknown -> '–' (the shared `s2i_bench.text.percent`)."""
    return percent(v, digits)


def pct_interval(v: Any, interval: Any, digits: int = 1) -> str:
    """'12.3% [8.0, 17.1]' (interval bounds in %)."""
    text = pct(v, digits)
    if interval is None or text == "–" or any(b is None for b in interval):
        return text
    lo, hi = interval
    return f"{text} [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def paper_text(value: Any, relation: str | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return RELATION_SIGN.get(relation or "", "") + pct(value, digits)


LATEX_CHARS = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
               "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\^{}", "≈": "$\\approx$",
               "–": "--", "§": "\\S{}", "×": "$\\times$"}


def latex_escape(s: str) -> str:
    """One pass over the characters, so what a replacement inserts is never escaped again."""
    return "".join(LATEX_CHARS.get(ch, ch) for ch in str(s))


# -- the paper's numbers --------------------------------------------------------------------------
def paper_value(paper, key: str) -> tuple[float | None, str | None, str | None]:
    """(value, relation, source) of one row of s2i_bench/paper/paper-numbers.csv, or Nones."""
    if paper is None or key not in paper.index:
        return None, None, None
    row = paper.loc[key]
    return float(row["value"]), str(row["relation"]), str(row["source"])


# -- Table 1 --------------------------------------------------------------------------------------
def table1(counts: dict[str, dict[str, int]], videos: dict[str, int], class_keys, class_names,
           paper, split_policy: str) -> Table:
    """Segments per class and split (and source videos per class), beside the paper's Table 1."""
    rows = []
    totals = {"videos": 0, "train": 0, "val": 0, "test": 0}
    for key, name in zip(class_keys, class_names):
        row = {"class": key, "name": name, "videos": int(videos.get(key, 0))}
        for split in SPLIT_NAMES:
            row[split] = int(counts.get(key, {}).get(split, 0))
        for k in totals:
            totals[k] += row[k]
        row["paper_videos"] = paper_value(paper, f"table1.videos.{key}")[0]
        for split in SPLIT_NAMES:
            row[f"paper_{split}"] = paper_value(paper, f"table1.segments.{key}.{split}")[0]
        rows.append(row)
    total = {"class": "total", "name": "Total", **totals,
             "paper_videos": paper_value(paper, "table1.videos.total")[0]}
    for split in SPLIT_NAMES:
        total[f"paper_{split}"] = paper_value(paper, f"table1.segments.total.{split}")[0]
    rows.append(total)
    as_int = lambda k: (lambda r: "–" if r.get(k) is None else f"{int(r[k]):,}")  # noqa: E731
    columns = [Column("class", "class", in_text=False), Column("name", "Sound class"),
               Column("videos", "videos", as_int("videos"))]
    columns += [Column(s, SPLIT_NAMES[s], as_int(s)) for s in SPLIT_NAMES]
    columns += [Column("paper_videos", "paper videos", as_int("paper_videos"))]
    columns += [Column(f"paper_{s}", f"paper {SPLIT_NAMES[s]}", as_int(f"paper_{s}")) for s in SPLIT_NAMES]
    n = sum(totals[s] for s in SPLIT_NAMES) or 1
    notes = [f"Split policy: {split_policy}. Ratios here: "
             + " / ".join(f"{totals[s] / n:.3f}" for s in SPLIT_NAMES)
             + "; paper: 0.802 / 0.091 / 0.112. Paper columns: Table 1 of the paper."]
    return Table("table1-segments", "Table 1: segments per class and split",
                 "1-s segments per class in each split and source videos per class (this store), "
                 "beside the paper's Table 1.",
                 columns, rows, notes)


# -- classifiers ----------------------------------------------------------------------------------
def classifier_table(card: dict, class_keys, class_names, paper) -> Table:
    """Accuracy (95% interval), sensitivity and specificity per class, beside the paper's accuracy."""
    rows = []
    classes = card.get("classes") or {}
    for key, name in zip(class_keys, class_names):
        c = classes.get(key) or {}
        ci = c.get("accuracy_ci") or [None, None]
        fp = c.get("fingerprint_probe") or {}
        pv, _, src = paper_value(paper, f"classifier.accuracy.{key}")
        acc = c.get("test_accuracy")
        rows.append({
            "class": key, "name": name, "test_accuracy": acc, "accuracy_ci_low": ci[0], "accuracy_ci_high": ci[1],
            "sensitivity": c.get("sensitivity"), "specificity": c.get("specificity"), "n_test": c.get("n_test"),
            "epoch_chosen": c.get("epoch_chosen"),
            "fingerprint_warning": fp.get("warning"),
            "paper_accuracy": pv, "paper_source": src,
            "difference": None if acc is None or pv is None else float(acc) - pv,
        })
    cm = card.get("class_match") or {}
    if cm:
        rows.append({"class": "class_match", "name": "5-class real-frame classifier (class match)",
                     "test_accuracy": cm.get("test_accuracy"), "n_test": cm.get("n_test")})
    acc_fmt = lambda r: pct_interval(r.get("test_accuracy"), (r.get("accuracy_ci_low"), r.get("accuracy_ci_high")))  # noqa: E731
    diff_fmt = lambda r: "–" if r.get("difference") is None else f"{100 * r['difference']:+.1f} pt"  # noqa: E731
    warn_fmt = lambda r: {True: "yes", False: "no"}.get(r.get("fingerprint_warning"), "–")  # noqa: E731
    columns = [
        Column("class", "class", in_text=False), Column("name", "Classifier"),
        Column("test_accuracy", "accuracy [95% CI]", acc_fmt),
        Column("accuracy_ci_low", "", in_text=False), Column("accuracy_ci_high", "", in_text=False),
        Column("sensitivity", "sensitivity", lambda r: pct(r.get("sensitivity"))),
        Column("specificity", "specificity", lambda r: pct(r.get("specificity"))),
        Column("n_test", "test images"), Column("epoch_chosen", "epoch"),
        Column("fingerprint_warning", "model fingerprint warning", warn_fmt),
        Column("paper_accuracy", "paper accuracy", lambda r: pct(r.get("paper_accuracy"))),
        Column("paper_source", "", in_text=False),
        Column("difference", "difference", diff_fmt),
    ]
    source = card.get("source", "trained")
    notes = [f"Classifier source: {source}. Accuracy, sensitivity and specificity are measured on the held-out "
             "test images only; the paper reports accuracy alone (§5.3)."]
    if card.get("verified") is False:
        notes.append("UNVERIFIED: only the JSON card was given (no bundle file beside it), so these numbers could "
                     "not be checked against the bundle; pass the .pt file.")
    elif card.get("bundle_sha256"):
        notes.append(f"Read from the bundle file itself (sha256 {card['bundle_sha256']}).")
    if source == "authors":
        notes.append("The authors' classifiers come without their test outcomes: accuracy, sensitivity and "
                     "specificity are unknown, so the corrected shares cannot be computed.")
    return Table("table-classifiers", "Informativity classifiers",
                 "Test accuracy with its 95% interval, sensitivity and specificity of each informativity classifier, "
                 "beside the paper's accuracies (§5.3).", columns, rows, notes)


# -- informativity summary ----------------------------------------------------------------------------
SUMMARY_FIELDS = (("raw", "raw_share"), ("corrected", "corrected_share"), ("true", "true_share"))


def _with_ci(row: dict, key: str) -> str:
    return pct_interval(row.get(key), (row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")))


def _ci_columns(key: str) -> list[Column]:
    return [Column(f"{key}_ci_low", "", in_text=False), Column(f"{key}_ci_high", "", in_text=False)]


def informativity_table(summaries: list[dict], class_keys, class_names, paper, moving_average: int,
                        window: tuple[int, int]) -> Table:
    """Per run, per class and mean: window average, maximum moving average and its epoch.

    `summaries`: one dict per run with keys `run`, `embedding_dim`, `split_policy`, `seed`,
    `n_epochs`, `last_epoch`, and `metrics[field][class_or_mean]` = {window_average,
    max_moving_average, max_moving_average_epoch} for field in raw/corrected/true (absent when the
    field is unknown), and `last[class_or_mean]` = the last record's values.
    """
    names = dict(zip(class_keys, class_names), mean="Mean")
    rows = [_summary_row(s, key, names) for s in summaries for key in (*class_keys, "mean")]
    rows += _paper_rows(paper, class_keys, names)
    return Table("table-informativity", "Informativity summary",
                 "Per run, class and mean: window average and maximum moving average (with its epoch) of the "
                 "informativity series, raw, corrected and true, and the last scored epoch, "
                 "beside the paper's numbers.",
                 _informativity_columns(rows, moving_average, window), rows,
                 _informativity_notes(moving_average, window))


def _summary_row(s: dict, key: str, names: dict[str, str]) -> dict:
    """One run's row for one class (or the mean): its summaries flattened into columns."""
    row = {"source": "run", "run": s["run"], "embedding_dim": s.get("embedding_dim"),
           "split_policy": s.get("split_policy"), "seed": s.get("seed"), "class": key,
           "name": names[key], "n_epochs": s.get("n_epochs"), "relation": "eq"}
    for prefix, fieldname in SUMMARY_FIELDS:
        m = dig(s, "metrics", fieldname, key) or {}
        row[f"{prefix}_window_average"] = m.get("window_average")
        row[f"{prefix}_max_moving_average"] = m.get("max_moving_average")
        row[f"{prefix}_max_moving_average_epoch"] = m.get("max_moving_average_epoch")
        iv = dig(s, "intervals", fieldname, key) or {}
        for metric in ("window_average", "max_moving_average"):
            lo_hi = iv.get(metric) or [None, None]
            row[f"{prefix}_{metric}_ci_low"], row[f"{prefix}_{metric}_ci_high"] = lo_hi
    choice = s.get("choice") or {}
    row["chosen_epoch"] = choice.get("epoch")
    for prefix, fieldname in (("raw", "raw_share"), ("true", "true_share")):
        at = dig(choice, "test", fieldname, key, "at_choice")
        row[f"{prefix}_at_chosen_window"] = at
    last = dig(s, "last", key) or {}
    row["last_epoch"] = s.get("last_epoch")
    row["last_raw_share"] = last.get("raw_share")
    row["last_corrected_share"] = last.get("corrected_share")
    ci = last.get("corrected_ci") or [None, None]
    row["last_corrected_ci_low"], row["last_corrected_ci_high"] = ci[0], ci[1]
    row["last_class_match_rate"] = last.get("class_match_rate")
    row["last_true_share"] = last.get("true_share")
    return row


def _paper_rows(paper, class_keys, names: dict[str, str]) -> list[dict]:
    """The paper's rows: its headline (mean, f = 512, taken as the maximum moving average as SPEC
    section 6 does) and the per-class "at best" statements of section 5.3."""
    rows = []
    for key, pkey, f in (("mean", "informativity.best.mean", 512),
                         ("water_flowing", "informativity.best.water_flowing", None),
                         ("dog", "informativity.best.dog", None)):
        value, relation, source = paper_value(paper, pkey)
        if value is None or (key != "mean" and key not in class_keys):
            continue
        rows.append({"source": f"paper {source}", "run": "paper", "embedding_dim": f, "class": key,
                     "name": names.get(key, key), "raw_max_moving_average": value, "relation": relation})
    return rows


def _informativity_columns(rows: list[dict], moving_average: int, window: tuple[int, int]) -> list[Column]:
    """The columns: run and class, the raw summaries with their intervals, the corrected and true
    ones (CSV only when unknown), the validation-chosen window, the last scored epoch."""
    has = lambda col: any(r.get(col) is not None for r in rows)  # noqa: E731
    dim_fmt = lambda r: "–" if r.get("embedding_dim") is None else str(r["embedding_dim"])  # noqa: E731
    max_fmt = lambda r: (paper_text(r.get("raw_max_moving_average"), r.get("relation"))  # noqa: E731
                         if r["run"] == "paper" else _with_ci(r, "raw_max_moving_average"))
    epoch_fmt = lambda k: (lambda r: "–" if r.get(k) is None else str(r[k]))  # noqa: E731
    columns = [
        Column("source", "", in_text=False), Column("run", "run"), Column("embedding_dim", "f", dim_fmt),
        Column("split_policy", "split", in_text=False), Column("seed", "seed", in_text=False),
        Column("class", "", in_text=False), Column("name", "class"), Column("n_epochs", "epochs scored", in_text=False),
        Column("raw_window_average", f"window avg. {window[0]}–{window[1]} [95% CI]",
               lambda r: _with_ci(r, "raw_window_average")),
        *_ci_columns("raw_window_average"),
        Column("raw_max_moving_average", f"max {moving_average}-epoch MA [95% CI]", max_fmt),
        *_ci_columns("raw_max_moving_average"),
        Column("relation", "", in_text=False),
        Column("raw_max_moving_average_epoch", "at epoch", epoch_fmt("raw_max_moving_average_epoch")),
    ]
    for prefix, label in (("corrected", "corrected"), ("true", "judge's truth")):
        if has(f"{prefix}_window_average") or has(f"{prefix}_max_moving_average"):
            columns += [
                Column(f"{prefix}_window_average", f"{label} window avg.",
                       lambda r, p=prefix: _with_ci(r, f"{p}_window_average")),
                *_ci_columns(f"{prefix}_window_average"),
                Column(f"{prefix}_max_moving_average", f"{label} max MA",
                       lambda r, p=prefix: _with_ci(r, f"{p}_max_moving_average")),
                *_ci_columns(f"{prefix}_max_moving_average"),
                Column(f"{prefix}_max_moving_average_epoch", "", in_text=False),
            ]
        else:  # keep the CSV's columns fixed whatever the inputs
            columns += [Column(f"{prefix}_window_average", "", in_text=False),
                        *_ci_columns(f"{prefix}_window_average"),
                        Column(f"{prefix}_max_moving_average", "", in_text=False),
                        *_ci_columns(f"{prefix}_max_moving_average"),
                        Column(f"{prefix}_max_moving_average_epoch", "", in_text=False)]
    chosen = has("chosen_epoch")
    columns += [Column("chosen_epoch", "window chosen on val (ends at)", epoch_fmt("chosen_epoch"), in_text=chosen),
                Column("raw_at_chosen_window", "test MA there", lambda r: pct(r.get("raw_at_chosen_window")),
                       in_text=chosen),
                Column("true_at_chosen_window", "truth MA there", lambda r: pct(r.get("true_at_chosen_window")),
                       in_text=chosen and has("true_at_chosen_window"))]
    columns += [
        Column("last_epoch", "last epoch", epoch_fmt("last_epoch")),
        Column("last_raw_share", "raw (last)", lambda r: pct(r.get("last_raw_share"))),
        Column("last_corrected_share", "corrected (last) [95% CI]",
               lambda r: pct_interval(r.get("last_corrected_share"),
                                      (r.get("last_corrected_ci_low"), r.get("last_corrected_ci_high")))),
        Column("last_corrected_ci_low", "", in_text=False), Column("last_corrected_ci_high", "", in_text=False),
        Column("last_class_match_rate", "class match (last)", lambda r: pct(r.get("last_class_match_rate"))),
        Column("last_true_share", "truth (last)", lambda r: pct(r.get("last_true_share")),
               in_text=has("last_true_share")),
    ]
    return columns


def _informativity_notes(moving_average: int, window: tuple[int, int]) -> list[str]:
    return [
        "Intervals: 95% bootstrap over the test sounds (stratified by class) that recomputes the whole series "
        "metric; the validation-chosen window is where the validation sounds' mean moving average peaks, and 'test MA "
        "there' is the test series at that same window (the paper's maximum picks its window on the test scores, "
        "which is optimistic by construction).",
        f"Raw shares are what the classifiers report (the paper's metric), after the post-update replacement "
        f"(SPEC §6). Window average: epochs {window[0]}–{window[1]} inclusive; MA: {moving_average}-epoch moving "
        "average over full windows. Corrected: Rogan–Gladen with the classifier's sensitivity and specificity. "
        "The same summary is applied to the corrected and true series.",
        "Paper rows: §5.4.1 states more than 14% average informativity at f = 512 (taken as the maximum moving "
        "average of the class mean, the paper's headline); §5.3 states ≈ 18% for water flowing and ≈ 6% for dog "
        "at best, without the metric or the embedding size.",
    ]


def reference_table(references: list[dict], class_keys, class_names) -> Table:
    """The reference translators (beyond the paper): per class the raw share the classifiers
    report (and the judge's true share on synthetic data), then the means, one row each."""
    has_truth = any(r["true"].get("mean") is not None for r in references)
    rows, columns = [], [Column("reference", "Reference translator")]
    for key, name in zip(class_keys, class_names):
        columns.append(Column(f"{key}_raw", name, lambda row, key=key: _raw_true(row, key, has_truth)))
        if has_truth:
            columns.append(Column(f"{key}_true", f"{name} (true)", in_text=False))
    columns += [Column("mean_raw", "Mean", lambda row: _raw_true(row, "mean", has_truth)),
                Column("mean_corrected", "Mean corrected", lambda row: pct_interval(row["mean_corrected"],
                                                                                    row.get("mean_corrected_ci")))]
    if has_truth:
        columns.append(Column("mean_true", "Mean (true)", in_text=False))
    columns.append(Column("mean_corrected_ci", "", in_text=False))
    for r in references:
        row = {"reference": r["name"], "mean_raw": r["raw"].get("mean"), "mean_corrected": r["corrected"].get("mean"),
               "mean_corrected_ci": r.get("corrected_ci"), "mean_true": r["true"].get("mean")}
        for key in class_keys:
            row[f"{key}_raw"] = r["raw"].get(key)
            row[f"{key}_true"] = r["true"].get(key)
        rows.append(row)
    caption = ("The scale of the metric: the test segment's own frame (real-frame, the ceiling the classifiers "
               "allow), the training frame whose sound is nearest (retrieval), the mean training frame of the class "
               "a sound classifier predicts (class-prototype), a training frame of any class (random-frame, chance); "
               "raw share called informative" + (" / the judge's true share" if has_truth else "") + ".")
    return Table("references", "Reference translators (beyond the paper)", caption, columns, rows)


def _raw_true(row: dict, key: str, has_truth: bool) -> str:
    raw = pct(row.get(f"{key}_raw"))
    return f"{raw} / {pct(row.get(f'{key}_true'))}" if has_truth else raw
