"""The whole study end to end on the `tiny` protocol: the same `run_demo` that `make demo` runs,
so a broken link between two steps (a renamed column, a moved file) fails CI.

A tiny translator trained for a few epochs never draws anything the synthetic world's judge
accepts, so the labelling step would have no informative images to balance. The test replaces
the judge with a deterministic stand-in (a coin flipped by each image's bytes) for the whole
chain: it tests that the steps fit together, not what the translators learn (`make demo` does).
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from s2i_bench.demo.pipeline import IMAGE_METRICS_EVERY


def _coin_judge(images, class_key):
    """Stand-in judge: a fair coin per image, flipped by the image's own bytes (deterministic,
    about half of every model's images in each label, so the balanced sets can be built)."""
    images = np.asarray(images)
    return np.array([hashlib.sha256(im.tobytes()).digest()[0] % 2 == 1 for im in images], dtype=bool)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import s2i_bench.synth as synth
    from s2i_bench.demo import run_demo

    mp = pytest.MonkeyPatch()
    mp.setattr(synth, "judge", _coin_judge)
    mp.setattr("os.cpu_count", lambda: 1)  # no worker processes: the stand-in judge stays in force
    work = tmp_path_factory.mktemp("demo")
    try:
        index = run_demo(out=work / "work", report_dir=work / "report", protocol="tiny", reference=None)
    finally:
        mp.undo()
    return work, index


@pytest.mark.slow
def test_demo_runs_every_step_and_writes_the_report(demo_run):
    work, index = demo_run
    report = work / "report"
    assert index == report / "index.md" and index.is_file()
    text = index.read_text()
    for fig in ("fig07", "fig12", "fig13", "fig14", "fig15"):
        assert fig in text.lower(), fig
    # every step left its stamp, in pipeline order of the data
    steps = {p.stem for p in (work / "work" / ".steps").glob("*.json")}
    assert steps == {"synth", "prepare", "train", "pool", "label", "train-classifiers", "score", "references",
                     "audit", "report"}
    # one record per epoch for every run, scored with the bundle the chain trained
    bundle = json.loads((work / "work" / "classifiers" / "bundle.json").read_text())
    from s2i_bench.protocol import load_protocol

    p = load_protocol("tiny")
    for f, seed in itertools.product(p.training.embedding_dims, (0, 1)):  # two seeds per embedding size
        run = work / "work" / "runs" / f"f{f}" / f"seed-{seed}"
        assert json.loads((run / "options.json").read_text())["seed"] == p.training.seed + seed
        every = [json.loads(line) for line in (run / "metric-informativity.jsonl").read_text().splitlines()]
        records = [r for r in every if r["split"] == "test"]
        assert [r["epoch"] for r in records] == list(range(p.training.epochs))
        # the validation sounds too: the window is chosen on them
        assert [r["epoch"] for r in every if r["split"] == "val"] == list(range(p.training.epochs))
        assert all(r["protocol"]["name"] == "tiny" for r in records)
        # image metrics every IMAGE_METRICS_EVERY epochs and at both ends; informativity at every one
        last = p.training.epochs - 1
        assert [r["epoch"] for r in records if "fid" in r["metrics"]] == \
            [e for e in range(p.training.epochs) if e % IMAGE_METRICS_EVERY == 0 or e == last]
        assert records[0]["classifiers"]["protocol"] == bundle["protocol"]
        log = pd.read_csv(run / "log.csv")
        assert log["d_updated"].tolist() == [int(e % p.training.d_every_epochs == 0) for e in range(p.training.epochs)]
    prov = json.loads((report / "demo.json").read_text())
    assert prov["protocol"]["name"] == "tiny" and prov["headline"]
    # the four reference translators, with the judge's truth (here a coin: the test's judge)
    refs = {r["reference"]: r for r in prov["references"]}
    assert list(refs) == ["real-frame", "retrieval", "class-prototype", "random-frame"]
    assert all(0 <= r["true_share"] <= 1 and r["n_images"] > 0 for r in refs.values())
    assert (report / "tables" / "references.csv").is_file()
    # the attribute scores of each run's last epoch and of the references, with the estimators' error
    for name in ("attributes-tone", "attributes-size", "attributes-estimators"):
        assert len(pd.read_csv(report / "tables" / f"{name}.csv")) >= 1, name
    assert len(pd.read_csv(report / "tables" / "attributes-tone.csv")) == 2 * len(p.training.embedding_dims) + 4
    # the label audit: each run's last checkpoint and the four references, judged, beside the truth
    audited = prov["audited"]
    assert len(audited) == 2 * len(p.training.embedding_dims) + 4
    assert all(a["n_audited"] > 0 and a["audited_ci"][0] <= a["audited_share"] <= a["audited_ci"][1]
               and a["true_share"] is not None for a in audited)
    table = pd.read_csv(report / "tables" / "audited-informativity.csv")
    assert len(table) == len(audited)
    assert (report / "figures" / "beyond-audited-truth.png").is_file()
    # the sizes compared (both seeds of each), the seeds' spread, and the headline says so
    pairs = prov["size_comparison"]
    assert {(c["a"], c["b"]) for c in pairs} == {("f16", "f32")} and {c["measure"] for c in pairs} == {"raw", "true"}
    assert all(isinstance(c["significant"], bool) and c["ci"] for c in pairs)
    for name in ("comparison", "seeds"):
        assert (report / "tables" / f"{name}.csv").is_file(), name
    assert (report / "figures" / "beyond-comparison.png").is_file()
    env = prov["depends_on"]
    assert env["cpu_model"] and env["torch_threads_per_process"] >= 1 and env["libraries"]["torch"]
    assert prov["store_hash"] == json.loads((work / "work" / "store" / "store.json").read_text())["store_hash"]
    # same bytes every run
    assert not {"finished", "created", "step_seconds", "machine", "seconds_this_run"} & set(prov)
    timings = json.loads((work / "work" / "timings.json").read_text())
    assert {"synth", "prepare", "train", "score", "report"} <= set(timings["step_seconds"])
    assert timings["machine"]["cpu_count"] >= 1


@pytest.mark.slow
def test_second_demo_skips_every_step_and_changes_nothing(demo_run, capsys):
    import s2i_bench.synth as synth
    from s2i_bench.demo import run_demo

    work, index = demo_run
    report = work / "report"
    before = {p: p.read_bytes() for p in report.rglob("*") if p.is_file()}
    mp = pytest.MonkeyPatch()
    mp.setattr(synth, "judge", _coin_judge)
    mp.setattr("os.cpu_count", lambda: 1)
    try:
        capsys.readouterr()
        run_demo(out=work / "work", report_dir=report, protocol="tiny")
    finally:
        mp.undo()
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == 10, out
    after = {p: p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_headline_is_compared_with_the_reference_and_updated_only_on_request(demo_run, tmp_path):
    from s2i_bench.demo import update_reference
    from s2i_bench.demo.headline import compare_with_reference

    work, _ = demo_run
    report = work / "report"
    prov = json.loads((report / "demo.json").read_text())
    reference = tmp_path / "reference"
    assert "no committed reference" in compare_with_reference(prov, reference)[0]
    update_reference(report, reference)
    assert (reference / "demo.json").read_bytes() == (report / "demo.json").read_bytes()
    assert compare_with_reference(prov, reference) == [
        f"headline identical to the committed reference {reference / 'demo.json'}"]
    # another CPU: the numbers and the cause are named
    other = json.loads((reference / "demo.json").read_text())
    other["headline"][0]["last"]["true_share"] = 0.123
    other["depends_on"]["torch_cpu_capability"] = "AVX2"
    (reference / "demo.json").write_text(json.dumps(other))
    lines = compare_with_reference(prov, reference)
    assert "differs" in lines[0] and any("12.3%" in ln for ln in lines)
    assert any("torch_cpu_capability" in ln and "AVX2" in ln for ln in lines)
    # the user's own file in the reference is never overwritten; a changed report file is refused
    from s2i_bench.errors import UserError

    with pytest.raises(UserError, match="changed since"):
        update_reference(report, reference)
    (reference / "demo.json").write_bytes((report / "demo.json").read_bytes())
    (reference / "mine.txt").write_text("keep")
    update_reference(report, reference)
    assert (reference / "mine.txt").read_text() == "keep"


def test_bare_commands_say_what_to_build_first(tmp_path, monkeypatch):
    """No --data, no default built yet: one line naming `make demo`, not a usage error."""
    from click.testing import CliRunner

    from s2i_bench.cli import main

    monkeypatch.setenv("S2I_BENCH_DEMO_WORK", str(tmp_path / "nothing"))
    for args in (["score", "reference:real-frame"], ["train-baseline"], ["report", "--figures"],
                 ["export-sounds", "--out", str(tmp_path / "s")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "make demo" in res.output and "Traceback" not in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "nothing").exists()


@pytest.mark.slow
def test_bare_commands_use_the_embedded_default(demo_run, tmp_path, monkeypatch):
    """`train-baseline`, `score` and `report --figures` bare: the default's store, classifiers and
    runs, said in one line each; the new run joins the default's report."""
    import shutil

    from click.testing import CliRunner

    from s2i_bench.cli import main

    work, _ = demo_run
    default = tmp_path / "work"
    shutil.copytree(work / "work", default, ignore=shutil.ignore_patterns("videos"))
    monkeypatch.setenv("S2I_BENCH_DEMO_WORK", str(default))
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    runner = CliRunner()
    res = runner.invoke(main, ["train-baseline", "--epochs", "2", "--save-every", "1"])
    assert res.exit_code == 0, res.output
    assert "using the embedded default store" in res.output and "using the embedded default classifiers" in res.output
    run = default / "runs" / "train-1"
    assert (run / "options.json").is_file() and (run / "metric-informativity.jsonl").is_file()
    res = runner.invoke(main, ["score", "reference:random-frame", "--json"])
    assert res.exit_code == 0, res.output
    assert (default / "scores" / "metric-informativity.jsonl").is_file()
    res = runner.invoke(main, ["report", "--figures"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((default / "report-all" / "report.json").read_text())
    assert {r["name"] for r in manifest["runs"]} == {"f16/seed-0", "f16/seed-1", "f32/seed-0", "f32/seed-1", "train-1"}
    assert [r["name"] for r in manifest["references"]] == ["real-frame", "retrieval", "class-prototype", "random-frame"]
