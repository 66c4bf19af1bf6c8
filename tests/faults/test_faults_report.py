"""Fault catalogue, sections 6, 7 and 9.2: records and series that `report` and `metrics` read.
A record is checked (range, epochs, checksum), records of different settings are never merged,
sample sheets are never shared or adopted, and a report never destroys a user's file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from fakes import make_fake_store, run_cli, write_bundle
from s2i_bench.protocol import load_protocol

PROTO = load_protocol("tiny")


@pytest.fixture(scope="module")
def env(tmp_path_factory, fake_store):
    """Two trained tiny runs and a bundle; run a is scored into its folder."""
    from s2i_bench.training import train_baseline

    root = tmp_path_factory.mktemp("faults6")
    runs = {}
    for name, seed in (("a", 0), ("ref", 1)):
        runs[name] = root / "runs" / name
        train_baseline(fake_store, runs[name], epochs=3, save_every=1, seed=seed)
    bundle = write_bundle(root / "bundle.pt", PROTO)
    run_cli("score", runs["a"], "--data", fake_store, "--classifiers", bundle).ok()
    return {"root": root, "store": fake_store, "runs": runs, "bundle": bundle}


def line(env) -> dict:
    return json.loads((env["runs"]["a"] / "metric-informativity.jsonl").read_text().splitlines()[0])


def test_edited_or_impossible_records_are_refused_naming_the_line(env, tmp_path):  # 6.7, 6.8, tamper
    for name, edit, needle in (
            ("neg", lambda r: r.update(epoch=-5), "epoch must be a whole number"),
            ("huge", lambda r: r.update(epoch=10**12), "epoch must be a whole number"),
            ("edited", lambda r: r["classes"]["dog"].update(raw_share=0.99),
             "changed or damaged after `s2i-bench score` wrote it"),
            ("share", lambda r: r["classes"]["dog"].update(raw_share=1.7), "not a share in [0, 1]")):
        r = line(env)
        edit(r)
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(r) + "\n")
        run_cli("report", path, "--out", tmp_path / f"rep_{name}").refused(f"{name}.jsonl: line 1", needle)


def test_records_of_two_protocols_are_two_series(env, tmp_path):  # 6.2
    synth_store = make_fake_store(tmp_path / "synth_store", "synth")
    ckpt = env["runs"]["a"] / "checkpoints" / "generator-000002.pt"
    out = tmp_path / "mixp.jsonl"
    shutil.copyfile(env["runs"]["a"] / "metric-informativity.jsonl", out)
    run_cli("score", ckpt, "--data", synth_store, "--classifiers", env["bundle"], "--out", out).ok()
    # once merged silently into one series; now two series, and these two protocols' metric
    # windows differ, so the report refuses to put them side by side, naming both
    run_cli("report", out, "--out", tmp_path / "rep").refused(f"protocol {PROTO.fingerprint[:8]}",
                                                              "different metrics (", "tiny", "synth")


def test_sample_sheets_are_never_shared_or_adopted(env, tmp_path):  # 6.9, 6.10
    out = tmp_path / "res" / "m.jsonl"
    for name in ("a", "ref"):
        ckpt = env["runs"][name] / "checkpoints" / "generator-000002.pt"
        run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"], "--out", out).ok()
    sheets = sorted(p.name for p in out.parent.glob("samples-*.npz"))
    assert len(sheets) == 2 and sheets[0] != sheets[1], sheets  # run and epoch and hash in the name
    stray = out.parent / "samples-writes_file.npz"
    shutil.copyfile(out.parent / sheets[0], stray)
    run_cli("report", out, "--out", tmp_path / "rep", "--figures", "--data", env["store"]).ok()
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    for run in report["runs"]:
        assert run["sample_sheets"] == [s for s in sheets if f"-{run['name']}-" in s], report["runs"]
        assert "samples-writes_file.npz" not in run["sample_sheets"]


def test_a_report_never_destroys_the_users_files(env, tmp_path):  # 6.11, 6.12
    paper = tmp_path / "paper"
    (paper / "figures").mkdir(parents=True)
    (paper / "index.md").write_text("my notes")
    (paper / "figures" / "my-figure.png").write_bytes(b"png")
    run_cli("report", env["runs"]["a"], "--out", paper).refused("did not write", "--overwrite")
    assert (paper / "index.md").read_text() == "my notes"
    paper2 = tmp_path / "paper2"
    (paper2 / "figures").mkdir(parents=True)
    (paper2 / "report.json").write_text("{}")  # any file named report.json no longer makes it "ours"
    (paper2 / "figures" / "keep-me.pdf").write_bytes(b"pdf")
    run_cli("report", env["runs"]["a"], "--out", paper2).refused("did not write")
    # --overwrite writes over what is in the way, and still deletes nothing of the user's
    run_cli("report", env["runs"]["a"], "--out", paper2, "--overwrite").ok()
    assert (paper2 / "figures" / "keep-me.pdf").read_bytes() == b"pdf"
    # an earlier report: its own unchanged files are replaced, a file of it the user edited is refused
    mine = tmp_path / "mine"
    run_cli("report", env["runs"]["a"], "--out", mine).ok()
    run_cli("report", env["runs"]["a"], "--out", mine).ok()
    (mine / "tables" / "table-informativity.csv").write_text("edited by hand")
    run_cli("report", env["runs"]["a"], "--out", mine).refused("changed since")
    assert (mine / "tables" / "table-informativity.csv").read_text() == "edited by hand"


def test_a_card_of_another_bundle_is_noted(env, tmp_path):  # 9.2
    other = write_bundle(tmp_path / "other.pt", PROTO, seed=1)
    res = run_cli("report", env["runs"]["a"], "--out", tmp_path / "rep", "--classifiers", other)
    res.ok()
    assert "the records were scored with" in (tmp_path / "rep" / "index.md").read_text()


def test_a_replaced_bundle_no_longer_matches_its_card(env, tmp_path):
    import torch

    bundle = tmp_path / "b.pt"
    shutil.copyfile(env["bundle"], bundle)
    bundle.with_suffix(".json").write_text(json.dumps({"bundle_sha256": "0" * 64}))
    ckpt = env["runs"]["a"] / "checkpoints" / "generator-000002.pt"
    run_cli("score", ckpt, "--data", env["store"], "--classifiers", bundle).refused(str(bundle),
                                                                                    "not the bundle its card")
    assert torch is not None and write_bundle is not None


# -- 7.x: per-epoch series CSVs ---------------------------------------------------------------------------
@pytest.mark.parametrize("last_epoch", [10**12, 10**19, 2**63 - 1])
def test_huge_epochs_in_a_series_are_refused_without_allocating(tmp_path, last_epoch):  # 6.8, 7.7-7.9
    keys = PROTO.class_keys
    df = pd.DataFrame({"epoch": [0, 1, last_epoch], "d_update": [1, 0, 0], **{k: [0.1, 0.2, 0.3] for k in keys}})
    path = tmp_path / "huge.csv"
    df.to_csv(path, index=False)
    run_cli("metrics", path, "--protocol", "tiny").refused("epoch must be whole numbers in 0..")


def test_a_long_gap_between_epochs_costs_nothing():
    from s2i_bench.scoring import metrics

    epochs = np.array([0, 1, 2, 900_000, 900_001])
    ma = metrics.moving_average(epochs, np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 2)
    assert np.isnan(ma[0]) and ma[1] == pytest.approx(0.15) and np.isnan(ma[3]) and ma[4] == pytest.approx(0.45)
    assert len(metrics.missing_epochs(epochs)) == 900_000 - 3
