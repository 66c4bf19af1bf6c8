"""`s2i-bench report`: figures, tables and index from files fabricated exactly per the contracts of
docs/architecture.md (run folder, metric records, sample sheets, store, bundle card).

The informativity numbers in the tables are checked against an independent reference written
here (plain Python loops and pandas rolling means), not against `s2i_bench.scoring.metrics`.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from fakes import REPORT_EPOCHS, REPORT_PROTOCOL, make_card, make_fake_store, make_run, true_series, write_bundle
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_bench.report import build_report

# The fabricated inputs (run folders, records, sample sheets, the bundle card): tests/fakes.py.
PROTOCOL = REPORT_PROTOCOL  # synth: window 10-60, 10-epoch moving average, D every 5 epochs, skip 2, fill 5
EPOCHS = REPORT_EPOCHS
DIMS = (32, 64, 128)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    store = make_fake_store(root / "store", protocol_name=PROTOCOL, per_class={"train": 8, "val": 4, "test": 6})
    runs = [make_run(root / "runs", store, d) for d in DIMS]
    # Two runs trained and scored on a random (segment-level, leaky) split, for the comparison.
    random_runs = [make_run(root / "random", store, DIMS[0], policy="random", samples=False)]
    card = make_card(root / "bundle.json")
    return {"root": root, "store": store, "runs": runs, "random_runs": random_runs, "card": card}


REPORT_ARGS = dict(figures=True, formats=["png", "pdf", "svg"])


@pytest.fixture(scope="module")
def report(study):
    out = study["root"] / "report"
    build_report(study["runs"] + study["random_runs"], out, store=study["store"], bundle=study["card"], **REPORT_ARGS)
    return out


# -- an independent reference of SPEC section 6 ----------------------------------------------------------
def reference_replace(values: dict[int, float], d_epochs: set[int], skip: int = 2, fill: int = 5):
    out = dict(values)
    targets = sorted({u + i for u in d_epochs for i in range(skip)} & set(values))
    for t in targets:
        prev = [out[e] for e in range(t - fill, t) if e in out and not math.isnan(out[e])]
        out[t] = sum(prev) / len(prev) if prev else math.nan
    return out


def reference_metrics(series: pd.Series, window, length):
    inside = series[(series.index >= window[0]) & (series.index <= window[1])].dropna()
    ma = series.rolling(length, min_periods=length).mean()
    best = ma.max()
    return inside.mean(), best, int(ma[ma >= best - 1e-12].index[0])


# -- tests --------------------------------------------------------------------------------------------
def test_every_figure_and_table_exists_and_shows_data(report):
    import matplotlib.image as mpimg

    expected_figures = ["fig07-11-informativity", "fig12-embedding-size", "fig13-pixel-loss-moving-average",
                        "fig14-pixel-loss", "beyond-raw-vs-corrected", "beyond-class-match", "beyond-judge-truth",
                        "beyond-split-policy"]
    expected_figures += ["fig15-samples", "fig16-originals"]
    for stem in expected_figures:
        for fmt in ("png", "pdf", "svg"):
            path = report / "figures" / f"{stem}.{fmt}"
            assert path.is_file() and path.stat().st_size > 1000, path
        img = mpimg.imread(report / "figures" / f"{stem}.png")
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
        assert img[..., :3].std() > 0.02, f"{stem}.png looks blank"
        assert (report / "figures" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert b"<svg" in (report / "figures" / f"{stem}.svg").read_bytes()[:2000]
    for stem in ("table1-segments", "table-classifiers", "table-informativity"):
        for ext in ("csv", "md", "tex"):
            assert (report / "tables" / f"{stem}.{ext}").stat().st_size > 100
    index = (report / "index.md").read_text()
    html = (report / "index.html").read_text()
    for f in sorted((report / "figures").glob("*.png")) + sorted((report / "tables").glob("*.csv")):
        rel = f.relative_to(report).as_posix()
        assert rel in index and rel in html, rel
    assert "protocol synth" in index and "train seed 0" in index and "score seed 0" in index
    assert index.count("*From:*") == len(expected_figures) + 3
    # runs made with --split-policy random: the title lines say so, in both index pages
    head = index.splitlines()[:4]
    assert any("RANDOM" in line and "leaky" in line and "random/f32" in line for line in head)
    assert "RANDOM" in html.split("<h2>")[0]
    assert b"split: RANDOM" in (report / "figures" / "fig07-11-informativity.svg").read_bytes()  # figure titles
    table = pd.read_csv(report / "tables" / "table-informativity.csv")
    assert set(table["split_policy"].dropna()) == {"video", "random"}
    assert {"random/f32", "runs/f32", "f64", "f128"} <= set(table["run"])
    # Figs. 15/16 show the best run (f64 informativity grows fastest in the fabricated series)
    assert "Fig. 15: generated images per class (f64)" in index


def test_informativity_table_matches_an_independent_reference(study, report):
    proto = load_protocol(PROTOCOL)
    spec = proto.metrics
    table = pd.read_csv(report / "tables" / "table-informativity.csv")
    runs = table[(table["source"] == "run") & (table["split_policy"] == "video")]
    assert len(runs) == len(DIMS) * (len(proto.class_keys) + 1)
    for dim in DIMS:
        replaced = {}
        for i, k in enumerate(proto.class_keys):
            values = dict(enumerate(true_series(dim, i, EPOCHS, 0).tolist()))
            replaced[k] = pd.Series(reference_replace(values, set(range(0, EPOCHS, 5)),
                                                      skip=spec.skip_after_d_update, fill=spec.skip_fill))
        frame = pd.DataFrame(replaced).sort_index()
        frame["mean"] = frame[list(proto.class_keys)].mean(axis=1, skipna=False)
        for key in (*proto.class_keys, "mean"):
            avg, best, best_epoch = reference_metrics(frame[key], (spec.window_start, spec.window_end),
                                                      spec.moving_average)
            row = runs[(runs["embedding_dim"] == dim) & (runs["class"] == key)].iloc[0]
            assert row["raw_window_average"] == pytest.approx(avg, rel=1e-5)
            assert row["raw_max_moving_average"] == pytest.approx(best, rel=1e-5)
            assert int(row["raw_max_moving_average_epoch"]) == best_epoch
            assert int(row["last_epoch"]) == EPOCHS - 1
        # the post-update bump (+0.15) is gone: the window average is far below the bumped level
        assert runs[(runs["embedding_dim"] == dim) & (runs["class"] == "mean")].iloc[0]["raw_window_average"] < 0.25
    # the paper's rows, from results/paper/paper-numbers.csv
    paper = table[table["run"] == "paper"].set_index("class")
    assert paper.loc["mean", "raw_max_moving_average"] == pytest.approx(0.14)
    assert paper.loc["mean", "relation"] == "gt" and int(paper.loc["mean", "embedding_dim"]) == 512
    assert paper.loc["water_flowing", "raw_max_moving_average"] == pytest.approx(0.18)
    assert paper.loc["dog", "raw_max_moving_average"] == pytest.approx(0.06)
    md = (report / "tables" / "table-informativity.md").read_text()
    assert "> 14.0%" in md and "≈ 18.0%" in md
    tex = (report / "tables" / "table-informativity.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\%" in tex and "$\\approx$" in tex
    # the replaced series behind Figs. 7-11 is written as data, with epochs 0 and 1 left out
    series = pd.read_csv(report / "series" / "f64-raw.csv")
    assert list(series["epoch"]) == list(range(EPOCHS))
    assert series.loc[:1, "mean"].isna().all() and series["replaced"].sum() == 2 * (EPOCHS // 5)


def test_table1_and_classifier_table(study, report):
    proto = load_protocol(PROTOCOL)
    t1 = pd.read_csv(report / "tables" / "table1-segments.csv").set_index("class")
    manifest = pd.read_csv(study["store"] / "manifest.csv")
    counts = manifest.groupby(["class", "split"]).size()
    for k in proto.class_keys:
        for split in ("train", "val", "test"):
            assert t1.loc[k, split] == counts[(k, split)]
        assert t1.loc[k, "videos"] == manifest[manifest["class"] == k]["video_id"].nunique()
        assert t1.loc[k, "paper_train"] == 9789 and t1.loc[k, "paper_test"] == 1365
    assert t1.loc["total", "train"] == (manifest["split"] == "train").sum()
    assert t1.loc["total", "paper_videos"] == 14142 and t1.loc["total", "paper_val"] == 5575
    cl = pd.read_csv(report / "tables" / "table-classifiers.csv").set_index("class")
    paper_acc = {"baby_cry": 0.80, "dog": 0.80, "rail_transport": 0.84, "fireworks": 0.82, "water_flowing": 0.815}
    card = json.loads(study["card"].read_text())
    for k, acc in paper_acc.items():
        assert cl.loc[k, "paper_accuracy"] == pytest.approx(acc)
        assert cl.loc[k, "sensitivity"] == pytest.approx(card["classes"][k]["sensitivity"], rel=1e-5)
        assert cl.loc[k, "difference"] == pytest.approx(card["classes"][k]["test_accuracy"] - acc, abs=1e-5)
    assert cl.loc["class_match", "test_accuracy"] == pytest.approx(0.97)
    assert "81.5%" in (report / "tables" / "table-classifiers.md").read_text()


def test_rerun_gives_the_same_bytes(study, report, tmp_path):
    files = sorted(p.relative_to(report) for p in report.rglob("*") if p.is_file())
    before = {rel: (report / rel).read_bytes() for rel in files}
    build_report(study["runs"] + study["random_runs"], report, store=study["store"], bundle=study["card"],
                 **REPORT_ARGS)
    assert sorted(p.relative_to(report) for p in report.rglob("*") if p.is_file()) == files
    for rel in files:  # tables, index, series; and the figures too (fixed metadata)
        assert (report / rel).read_bytes() == before[rel], rel
    # a later report into the same folder leaves nothing stale behind
    again = tmp_path / "again"
    shutil.copytree(report, again)
    build_report(study["runs"][:1], again)
    assert not (again / "figures").exists()  # emptied folders go too
    assert not (again / "tables" / "table1-segments.csv").exists()
    assert (again / "tables" / "table-informativity.csv").is_file()
    # a folder that is not a report keeps its files
    foreign = tmp_path / "foreign"
    (foreign / "figures").mkdir(parents=True)
    (foreign / "figures" / "mine.png").write_bytes(b"x")
    with pytest.raises(UserError, match="did not write"):
        build_report(study["runs"][:1], foreign)
    assert sorted(p.name for p in foreign.rglob("*") if p.is_file()) == ["mine.png"]
    build_report(study["runs"][:1], foreign, overwrite=True)  # writes beside it, never deletes it
    assert (foreign / "figures" / "mine.png").read_bytes() == b"x"


def test_records_given_alone(study, tmp_path):
    records = tmp_path / "scores" / "metric-informativity.jsonl"
    records.parent.mkdir()
    shutil.copy(study["runs"][1] / "metric-informativity.jsonl", records)
    out = tmp_path / "out"
    build_report([records], out, figures=True, formats=["png"])
    table = pd.read_csv(out / "tables" / "table-informativity.csv")
    mean = table[(table["run"] == "f64") & (table["class"] == "mean")].iloc[0]
    assert int(mean["embedding_dim"]) == 64
    assert (out / "figures" / "fig12-embedding-size.png").is_file()
    assert not (out / "figures" / "fig13-pixel-loss.png").exists()  # no log.csv given
    assert "RANDOM" not in (out / "index.md").read_text()
    # tables only (no --figures): no figure folder, the index says how to get them
    out2 = tmp_path / "out2"
    build_report([records], out2)
    assert not (out2 / "figures").exists() and "pass --figures" in (out2 / "index.md").read_text()
    # records from an older protocol file (another fingerprint): reported, with a note, not refused;
    # a video split kept despite a leaky audit is flagged in the title lines
    lines = records.read_text().splitlines()
    changed = []
    for line in lines:
        r = json.loads(line)
        r["protocol"]["fingerprint"] = "0123456789abcdef"
        r["store"]["leaky"] = True
        changed.append(json.dumps(r))
    records.write_text("\n".join(changed) + "\n")
    build_report([records], out2)
    index = (out2 / "index.md").read_text()
    assert "fingerprint 0123456789abcdef" in index and "LEAKY split" in index.splitlines()[2]


def test_missing_and_bad_inputs_are_named(study, tmp_path):
    with pytest.raises(UserError, match="train-classifiers"):
        build_report(study["runs"], tmp_path / "o", bundle=tmp_path / "nope.pt")
    with pytest.raises(UserError, match="prepare"):
        build_report(study["runs"], tmp_path / "o", store=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="train-baseline"):
        build_report([empty], tmp_path / "o")
    # a run folder without metric records anywhere: say which command makes them
    bare = tmp_path / "bare"
    shutil.copytree(study["runs"][0], bare)
    (bare / "metric-informativity.jsonl").unlink()
    with pytest.raises(UserError, match="s2i-bench score"):
        build_report([bare], tmp_path / "o")
    bad = tmp_path / "bad.jsonl"
    record = json.loads((study["runs"][0] / "metric-informativity.jsonl").read_text().splitlines()[0])
    record["classes"]["dog"]["raw_share"] = 1.7
    bad.write_text(json.dumps(record) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: line 1: classes.dog.raw_share"):
        build_report([bad], tmp_path / "o")
    bad.write_text(json.dumps(record) + "\n{not json\n" + json.dumps(record) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: line 2 is not valid JSON"):
        build_report([bad], tmp_path / "o")
    with pytest.raises(UserError, match="--format"):
        build_report(study["runs"], tmp_path / "o", formats=["gif"])
    sheet_run = tmp_path / "sheet"
    shutil.copytree(study["runs"][0], sheet_run)
    np.savez(sheet_run / "samples-e000059.npz", images=np.zeros((2, 8, 8, 3), np.float32),
             segment_ids=np.array(["a", "b"]))
    lines = (sheet_run / "metric-informativity.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["sample_sheet"] = "samples-e000059.npz"  # a record names its sheet; a stray file is never adopted
    (sheet_run / "metric-informativity.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    with pytest.raises(UserError, match="samples-e000059.npz: images must be uint8"):
        build_report([sheet_run], tmp_path / "o", figures=True)


def test_cli_one_line_error_and_success(study, tmp_path):
    from click.testing import CliRunner

    from s2i_bench.cli import main

    result = CliRunner().invoke(main, ["report", str(study["runs"][0]), "--out", str(tmp_path / "o"),
                                       "--classifiers", str(study["root"])])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "train-classifiers" in result.output
    result = CliRunner().invoke(main, ["report", *map(str, study["runs"]), "--out", str(tmp_path / "ok"),
                                       "--data", str(study["store"])])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ok" / "tables" / "table1-segments.md").is_file()


def test_paper_numbers_are_sourced():
    from s2i_bench.report import PAPER_NUMBERS

    paper = pd.read_csv(PAPER_NUMBERS)
    assert paper["key"].is_unique
    assert paper["source"].str.match(r"^(Table \d|§\d|Figs?\. \d|Abstract)").all()
    assert set(paper["relation"]) <= {"eq", "gt", "lt", "approx", "estimated_from_figure"}
    p = paper.set_index("key")["value"]
    assert sum(p[f"table1.videos.{k}"] for k in ("baby_cry", "dog", "fireworks", "rail_transport",
                                                  "water_flowing")) == p["table1.videos.total"]
    for split, total in (("train", 48945), ("val", 5575), ("test", 6825)):
        assert p[f"table1.segments.total.{split}"] == total == 5 * p[f"table1.segments.dog.{split}"]
    assert p["classifier.accuracy.water_flowing"] == 0.815 and p["classifier.models"] == 17
    assert p["classifier.images_total"] == 5000


def test_fig16_takes_frames_from_the_store_when_the_sheet_has_none(study):
    from s2i_bench.report import figures as F
    from s2i_bench.report.inputs import _run_from_folder, pick_sample_sheet
    from s2i_bench.data.store import open_store

    store = open_store(study["store"])
    keys, names = store.protocol.class_keys, store.protocol.class_names
    sheet = pick_sample_sheet(_run_from_folder(study["runs"][0]))  # f32: no frames in its sheet
    assert "frames" not in sheet and sheet["path"].name == "samples-e000059.npz"
    with F.style():
        fig = F.originals_beside(sheet, store, keys, names)
    canvas = fig.axes[0].images[0].get_array()
    first_frame = np.asarray(store.frames[list(store.segment_ids).index(sheet["segment_ids"][0])])
    assert np.array_equal(np.asarray(canvas[:96, :96]), first_frame)  # top-left: the original frame
    sheet["segment_ids"] = ["nowhere_dog_000"] * len(sheet["segment_ids"])
    with pytest.raises(UserError, match="none of its segment ids is in the store"):
        F.originals_beside(sheet, store, keys, names)


def test_class_colours_are_fixed_across_figures():
    from s2i_bench.report.figures import class_colours

    keys = load_protocol(PROTOCOL).class_keys
    a, b = class_colours(keys), class_colours(list(keys))
    assert a == b and len(set(a.values())) == len(keys) + 1


def test_reference_translators_are_levels_in_the_figures_and_a_table(study, tmp_path):
    """Records of `score reference:NAME` are not series: a table of their levels, grey lines in
    Figs. 7-12, and report.json names them."""
    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring import records
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators.reference import NAMES, load_reference

    store = open_store(study["store"])
    proto = load_protocol(PROTOCOL)
    bundle = load_bundle(write_bundle(tmp_path / "bundle.pt", proto))
    refs = tmp_path / "refs" / "metric-informativity.jsonl"
    refs.parent.mkdir()
    for name in reversed(NAMES):  # any order in the file: the table orders them ceiling to chance
        records.append(refs, score_translator(load_reference(name, store), store, bundle, protocol=proto,
                                              split="test", seed=0))
    out = tmp_path / "report"
    build_report(study["runs"][:1] + [refs], out, figures=True, store=study["store"])
    table = pd.read_csv(out / "tables" / "references.csv")
    assert table["reference"].tolist() == list(NAMES)
    assert table["mean_raw"].between(0, 1).all()
    manifest = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in manifest["references"]] == list(NAMES)
    assert [r["name"] for r in manifest["runs"]] == [study["runs"][0].name]  # not series
    assert (out / "figures" / "fig07-11-informativity.png").is_file()
    assert "Reference translators" in (out / "index.md").read_text()
    # references alone still make a report (their table)
    alone = build_report([refs], tmp_path / "alone")
    assert (tmp_path / "alone" / "tables" / "references.csv").is_file() and alone.is_file()


def test_seed_table_intervals_stay_within_shares():
    """Two seeds far apart: the t interval (df = 1) reaches past 0 and 100%; the table clips it."""
    from s2i_bench.report.comparison import seed_table

    def summary(seed, v):
        return {"embedding_dim": 64, "train_seed": seed, "split_policy": "video",
                "metrics": {"raw_share": {"mean": {"window_average": v, "max_moving_average": v}}}}

    table = seed_table([summary(0, 0.1), summary(1, 0.6)], ["a"])
    row = table.rows[0]
    assert row["raw_window_average"] == pytest.approx(0.35)
    assert row["raw_window_average_ci_low"] == 0.0 and row["raw_window_average_ci_high"] == 1.0
    table = seed_table([summary(0, 0.30), summary(1, 0.31), summary(2, 0.32)], ["a"])
    low, high = table.rows[0]["raw_window_average_ci_low"], table.rows[0]["raw_window_average_ci_high"]
    assert 0.0 < low < 0.31 < high < 1.0  # a tight interval is left as it is
