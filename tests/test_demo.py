"""The whole study end to end on the `tiny` protocol: the same `run_demo` that `make demo` runs,
so a broken link between two steps (a renamed column, a moved file) fails CI.

A tiny translator trained for a few epochs never draws anything the synthetic world's judge
accepts, so the labelling step would have no informative images to balance. The test replaces
the judge with a deterministic stand-in (a coin flipped by each image's bytes) for the whole
chain: it tests that the steps fit together, not what the translators learn (`make demo` does).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest


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
        index = run_demo(out=work / "work", report_dir=work / "report", protocol="tiny")
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
    assert steps == {"synth", "prepare", "train", "pool", "label", "train-classifiers", "score", "report"}
    # one record per epoch for every run, scored with the bundle the chain trained
    bundle = json.loads((work / "work" / "classifiers" / "bundle.json").read_text())
    from s2i_bench.protocol import load_protocol

    p = load_protocol("tiny")
    for f in p.training.embedding_dims:
        run = work / "work" / "runs" / f"f{f}"
        records = [json.loads(line) for line in (run / "metric-informativity.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == list(range(p.training.epochs))
        assert all(r["protocol"]["name"] == "tiny" for r in records)
        assert records[0]["classifiers"]["protocol"] == bundle["protocol"]
        log = pd.read_csv(run / "log.csv")
        assert log["d_updated"].tolist() == [int(e % p.training.d_every_epochs == 0) for e in range(p.training.epochs)]
    prov = json.loads((report / "demo.json").read_text())
    assert prov["protocol"]["name"] == "tiny" and prov["headline"]
    assert {"synth", "prepare", "train", "score", "report"} <= set(prov["step_seconds"])
    assert prov["machine"]["cpu_count"] >= 1 and prov["machine"]["torch"]


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
    assert out.count("up to date, skipped") == 8, out
    after = {p: p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert after == before
