"""Label audits: draw -> blind set -> labels (judge or people) -> audited records; the numbers
against `scoring.ppi` on the same inputs, the invariants, blindness and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from fakes import make_fake_store, run_cli, write_bundle
from s2i_bench import synth
from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A
from s2i_bench.informativity.blind_set import open_blind_set, open_label_set
from s2i_bench.informativity.label_server import Session
from s2i_bench.protocol import load_protocol
from s2i_bench.scoring import ppi
from s2i_bench.scoring import records as R
from s2i_bench.scoring.audit.draw import draw_audit
from s2i_bench.scoring.audit.estimate import estimate_audit
from s2i_bench.scoring.audit.folder import AuditFolder
from s2i_bench.scoring.audit.labelling import judge_labels, label_with_judge
from s2i_bench.scoring.audit.planner import labels_needed, plan_rows, residual_variance_from_card
from s2i_bench.training import train_baseline

SAMPLES = 4  # images per sound: N = 6 test sounds x 4 = 24 per class


def bright_judge(images, class_key):
    """A stand-in for the synthetic world's judge: deterministic in the image alone."""
    total = np.asarray(images, dtype=np.int64).reshape(len(images), -1).sum(axis=1)
    return total % 3 == 0  # about a third, image by image (never depends on the batch)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store that says it is the synthetic world, a tiny run with two random checkpoints scored
    with K = 4 images per sound, and its bundle: (root, store, run, bundle)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(synth, "judge", bright_judge)
    root = tmp_path_factory.mktemp("audit")
    store = make_fake_store(root / "store", synthetic_world={"seed": 0, "version": "test", "path": "none"})
    run = root / "runs" / "zeta-run"
    train_baseline(store, run, epochs=2, save_every=1, seed=0)
    bundle = write_bundle(root / "bundle.pt", load_protocol("tiny"))
    run_cli("score", run, "--data", store, "--classifiers", bundle, "--samples", SAMPLES).ok()
    yield root, store, run, bundle
    mp.undo()


@pytest.fixture
def judged(world, monkeypatch):
    monkeypatch.setattr(synth, "judge", bright_judge)
    return world


def _last_record(run):
    return R.read(run / R.RECORDS_NAME)[-1]


def test_draw_label_estimate_equals_ppi_on_the_same_inputs(judged, tmp_path):
    root, store, run, bundle = judged
    audit = tmp_path / "audit"
    draw_audit([run], audit, store=store, classifiers=bundle, per_class=7, seed=3)
    plan, key = AuditFolder(audit).read()
    assert len(key) == 7 * 5 and {s["epoch"] for s in plan["systems"]} == {1}
    # the regenerated images are the record's: the classifier and the judge agree with it image by image
    assert all(c["decision_mismatch"] == 0 and c["truth_mismatch"] == 0 for c in plan["systems"][0]["checks"].values())
    label_with_judge(audit)
    (rec,) = estimate_audit(audit)
    scored = _last_record(run)
    assert rec.audited_of == scored.data["checksum"] and rec.data["format_version"] == R.FORMAT_VERSION
    d = scored.decisions()
    # the classifier's probability where the record keeps it, else its decision
    f = (d["probability"] if rec.audit["score"] == "probability" else d["informative"]).astype(float).ravel()
    truth = d["truth"].astype(float).ravel()
    ests = []
    for c, (k, sl) in enumerate(scored.class_slices().items()):
        everyone = (np.arange(SAMPLES)[:, None] * d["shape"][1] + np.arange(sl.start, sl.stop)).ravel()
        pos = key[key["class"] == k]["position"].to_numpy()
        want = ppi.finite_population(truth[pos], f[pos], f[everyone])  # the judge's labels are the record's truth
        ests.append(want)
        assert rec.share(k, "audited_share") == pytest.approx(want.estimate, abs=1e-12)
        assert rec.audited_ci(k) == pytest.approx(list(want.ci), abs=1e-12)
        assert rec.audit["classes"][k]["n_audited"] == 7 and rec.audit["classes"][k]["n_images"] == 24
    mean = ppi.mean_of(ests)
    assert rec.mean("audited_share") == pytest.approx(mean.estimate, abs=1e-12)
    assert rec.audited_ci() == pytest.approx(list(mean.ci), abs=1e-12)
    assert rec.audit["annotators"] == ["judge"]
    assert rec.audit["score"] == ("probability" if d.get("probability") is not None else "decision")


def test_every_image_audited_gives_the_truth_and_a_point(judged, tmp_path):
    _, store, run, bundle = judged
    audit = tmp_path / "audit"
    draw_audit([run], audit, store=store, classifiers=bundle, per_class=10_000, seed=0)
    label_with_judge(audit)
    (rec,) = estimate_audit(audit)
    for k in rec.class_keys:
        assert rec.share(k, "audited_share") == pytest.approx(rec.share(k, "true_share"), abs=1e-12)
        lo, hi = rec.audited_ci(k)
        assert lo == hi == pytest.approx(rec.share(k, "true_share"), abs=1e-12)


def test_the_blind_set_reveals_no_system(judged, tmp_path):
    _, store, run, bundle = judged
    audit = tmp_path / "audit"
    draw_audit([run], audit, store=store, classifiers=bundle, per_class=6, seed=1)
    blind = open_blind_set(audit / "blind")
    assert sorted(p.name for p in blind.path.iterdir()) == ["blind.json", "images.npy", "items.csv"]
    assert list(blind.table.columns) == ["image_id", "class", "image_sha256"]
    ids = blind.table["image_id"].tolist()
    assert ids == sorted(ids) and all(len(i) == 13 and i.startswith("b") for i in ids)
    text = " ".join(p.read_text(errors="replace") for p in (blind.path / "blind.json", blind.path / "items.csv"))
    for secret in (run.name, "runs", "epoch", "generator", "checkpoint", "seed", "decision", str(store)):
        assert secret not in text, secret
    # the key's order (system, class, position) is not the set's order
    key = AuditFolder(audit).read()[1]
    assert key["image_id"].tolist() != ids
    # what the labelling page sends for an image: class, question, position; nothing else
    session = Session(open_label_set(audit / "blind"), "alice")
    view = json.dumps(session.view(session.ids[0]))
    for secret in (run.name, "epoch", "checkpoint", "s00", "decision"):
        assert secret not in view, secret


def test_people_and_a_noisy_judge(judged, tmp_path):
    _, store, run, bundle = judged
    audit = tmp_path / "audit"
    draw_audit([run], audit, store=store, classifiers=bundle, per_class=12, seed=2)
    label_with_judge(audit, annotator="judge-noisy", noise=0.25)
    blind = open_blind_set(audit / "blind")
    # a person who says "informative" for every image
    A.append_many(blind.path, "alice", [{"op": "label", "image_id": i, "label": 1, "image_sha256": h}
                                        for i, h in zip(blind.table["image_id"], blind.table["image_sha256"])])
    (rec,) = estimate_audit(audit)
    assert rec.audit["annotators"] == ["alice", "judge-noisy"]
    assert rec.audit["agreement"]["annotators"] == 2
    votes = [v for c in rec.audit["classes"].values() for v in c["votes"]]
    assert all(v[1] == 2 and v[0] >= 1 for v in votes)  # alice's 1 plus the judge's 0/1
    # the noise is seeded: the same audit gives the same flipped labels
    a = judge_labels(blind.images, blind.table["class"].to_numpy(), 0.25, 7)
    b = judge_labels(blind.images, blind.table["class"].to_numpy(), 0.25, 7)
    clean = judge_labels(blind.images, blind.table["class"].to_numpy(), 0.0, 7)
    assert (a == b).all() and 0.1 < (a != clean).mean() < 0.4


def test_flip_rate_is_the_noise_on_many_images():
    images = np.random.default_rng(0).integers(0, 256, size=(4000, 4, 4, 3), dtype=np.uint8)
    classes = np.array(["baby"] * 4000)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth, "judge", bright_judge)
        noisy = judge_labels(images, classes, 0.1, 5)
        clean = judge_labels(images, classes, 0.0, 5)
    assert abs((noisy != clean).mean() - 0.1) < 0.015


def test_refusals_name_the_field(judged, tmp_path):
    root, store, run, bundle = judged
    other = write_bundle(tmp_path / "other.pt", load_protocol("tiny"), seed=1)
    with pytest.raises(UserError, match=r"classifiers\.sha256"):
        draw_audit([run], tmp_path / "x", store=store, classifiers=other, per_class=3)
    other_store = make_fake_store(tmp_path / "store2", seed=5, synthetic_world={"seed": 0, "version": "t"})
    with pytest.raises(UserError, match=r"store\.hash"):
        draw_audit([run], tmp_path / "y", store=other_store, classifiers=bundle, per_class=3)
    with pytest.raises(UserError, match="split"):
        draw_audit([run], tmp_path / "z", store=store, classifiers=bundle, per_class=3, split="val")
    assert not any((tmp_path / n).exists() for n in "xyz")
    # an audit whose record has gone, or whose key was edited
    audit = tmp_path / "audit"
    copy = tmp_path / "run-copy"
    shutil.copytree(run, copy)
    draw_audit([copy], audit, store=store, classifiers=bundle, per_class=3)
    label_with_judge(audit)
    key_path = audit / "key.csv"
    key_path.write_text(key_path.read_text().replace(",1,", ",0,", 1))
    with pytest.raises(UserError, match="changed since the audit was drawn"):
        estimate_audit(audit)


def test_an_edited_audited_record_is_refused(judged, tmp_path):
    _, store, run, bundle = judged
    audit = tmp_path / "audit"
    draw_audit([run], audit, store=store, classifiers=bundle, per_class=5)
    label_with_judge(audit)
    estimate_audit(audit)
    path = AuditFolder(audit).records_path
    data = json.loads(path.read_text())
    k = next(iter(data["audit"]["classes"]))
    data["audit"]["classes"][k]["audited_share"] = 0.99
    data["checksum"] = R.checksum(data)  # anyone can recompute the checksum: the numbers are checked too
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(UserError, match="its labels and the record's decisions give"):
        R.read(path)


def test_cli_workflow_and_one_line_errors(judged, tmp_path):
    _, store, run, bundle = judged
    audit = tmp_path / "audit"
    run_cli("label-audit", "draw", run, "--out", audit, "--data", store, "--classifiers", bundle,
            "--per-class", 4).ok()
    run_cli("label-audit", "draw", run, "--out", audit, "--data", store, "--classifiers", bundle).refused(
        "exists", "--overwrite")
    run_cli("label-audit", "estimate", audit).refused("no annotations yet")
    run_cli("label-audit", "label", audit, "--judge").ok()
    out = run_cli("label-audit", "estimate", audit).ok().output
    assert "audited [95% CI]" in out and "epoch 1" in out
    plan = run_cli("label-audit", "plan", audit, "--half-width", "0.05").ok().output
    assert "labels" in plan and "audit" in plan
    run_cli("label-audit", "label", audit, "--judge").refused("has labels already")
    run_cli("label-audit", "plan", tmp_path).refused()


def test_planner_numbers():
    # worst case over p of Var(y - f) with Se 0.8, Sp 0.7, against a direct grid
    p = np.linspace(0, 1, 100_001)
    a, b = p * 0.2, (1 - p) * 0.3
    assert residual_variance_from_card(0.8, 0.7) == pytest.approx(np.max(a + b - (a - b) ** 2), abs=1e-6)
    rec = R.Record({"classes": {"baby": {"n_images": 400, "n_sounds": 400, "sensitivity": 0.8, "specificity": 0.7}},
                    "translator": {"name": "x"}})
    (row,) = plan_rows([rec], 0.05)
    assert row["from"] == "card" and row["needed"] == labels_needed(row["S2"], 400, 0.05)


def test_label_server_serves_a_blind_set(judged, tmp_path):
    _, store, run, bundle = judged
    audit = tmp_path / "audit"
    draw_audit([run], audit, store=store, classifiers=bundle, per_class=2)
    session = Session(open_label_set(audit / "blind"), "bob")
    first = session.ids[0]
    session.act("label", first, 1)
    assert A.state(A.read_log(A.log_path(audit / "blind", "bob"))).labels == {first: 1}
    assert session.png(first)[:4] == b"\x89PNG"
    # images of the set may not change under the labels
    (audit / "blind" / "items.csv").write_text(pd.read_csv(audit / "blind" / "items.csv").iloc[::-1]
                                               .to_csv(index=False))
    with pytest.raises(UserError, match="changed since the audit wrote them"):
        open_label_set(audit / "blind")


def _epoch0_records(run, folder):
    """A records file holding only the run's epoch-0 record: a second system on the same sounds."""
    folder.mkdir()
    lines = (run / R.RECORDS_NAME).read_text().splitlines(keepends=True)
    first = next(line for line in lines if json.loads(line).get("epoch") == 0)
    (folder / R.RECORDS_NAME).write_text(first)
    return folder / R.RECORDS_NAME


def test_report_shows_audited_beside_raw_corrected_and_truth(judged, tmp_path):
    root, store, run, bundle = judged
    audit = tmp_path / "audit"
    draw_audit([run], audit, store=store, classifiers=bundle, per_class=8, seed=4)
    label_with_judge(audit)
    (rec,) = estimate_audit(audit)
    out = tmp_path / "report"
    run_cli("report", run, "--out", out, "--audit", audit, "--figures").ok()
    table = pd.read_csv(out / "tables" / "audited-informativity.csv")
    assert len(table) == 1  # the CSV keeps 6 decimals
    assert table["audited"].iloc[0] == pytest.approx(rec.mean(R.AUDITED), abs=1e-6)
    assert table["truth"].iloc[0] == pytest.approx(rec.mean("true_share"), abs=1e-6)
    assert table["raw"].iloc[0] == pytest.approx(rec.mean("raw_share"), abs=1e-6)
    assert (out / "figures" / "beyond-audited-truth.png").is_file()
    assert "Audited informativity" in (out / "index.md").read_text()
    # an audit of a record the report does not show is refused, never mixed in
    other = _epoch0_records(run, tmp_path / "epoch0")
    run_cli("report", other, "--out", tmp_path / "r2", "--audit", audit).refused("none of the report's inputs")


def test_compare_gives_paired_audited_differences(judged, tmp_path):
    root, store, run, bundle = judged
    early = _epoch0_records(run, tmp_path / "epoch0")
    audit = tmp_path / "audit"
    draw_audit([run, early], audit, store=store, classifiers=bundle, per_class=9, seed=5)
    label_with_judge(audit)
    late_rec, early_rec = estimate_audit(audit)
    assert late_rec.epoch == 1 and early_rec.epoch == 0
    out = run_cli("compare", run, early, "--data", store, "--classifiers", bundle, "--audit", audit, "--json",
                  "--bootstrap", "100").ok().output
    rows = [r for r in json.loads(out)["pairs"] if r["metric"] == "audited share"]
    text = run_cli("compare", run, early, "--data", store, "--classifiers", bundle, "--audit", audit,
                   "--bootstrap", "100", "--out", tmp_path / "comparison").ok().output
    assert text.count("audited share") == len(rows)  # the plain table and the written comparison take them too
    assert [r["class"] for r in rows] == [*late_rec.audit["classes"], "mean"]
    # each class: scoring.ppi.paired_difference on the same labels and classifier outputs
    da, db = late_rec.decisions(), early_rec.decisions()
    score = late_rec.audit["score"]
    fa = (da["probability"] if score == "probability" else da["informative"]).astype(float).ravel()
    fb = (db["probability"] if score == "probability" else db["informative"]).astype(float).ravel()
    k, n = da["shape"]
    start = 0
    for row, key in zip(rows, late_rec.audit["classes"]):
        size = late_rec.n_sounds(key)
        everyone = (np.arange(k)[:, None] * n + np.arange(start, start + size)[None, :]).ravel()
        start += size
        ca, cb = late_rec.audit["classes"][key], early_rec.audit["classes"][key]
        assert ca["positions"] == cb["positions"]
        va, vb = np.array(ca["votes"], float), np.array(cb["votes"], float)
        pos = np.array(ca["positions"])
        want = ppi.paired_difference(va[:, 0] / va[:, 1], vb[:, 0] / vb[:, 1], fa[pos], fb[pos], fa[everyone],
                                     fb[everyone], units=size)
        assert row["difference"] == pytest.approx(want.estimate.estimate, abs=1e-12)
        assert row["ci"] == pytest.approx(list(want.estimate.ci), abs=1e-12)
        assert row["p_value"] == pytest.approx(want.p_value, abs=1e-12)
    assert rows[-1]["difference"] == pytest.approx(np.mean([r["difference"] for r in rows[:-1]]))
    # audited at other images (another draw): refused, naming the field
    other = tmp_path / "audit2"
    draw_audit([early], other, store=store, classifiers=bundle, per_class=9, seed=6)
    label_with_judge(other)
    estimate_audit(other)
    lone = tmp_path / "audit3"
    draw_audit([run], lone, store=store, classifiers=bundle, per_class=9, seed=7)
    label_with_judge(lone)
    estimate_audit(lone)
    run_cli("compare", run, early, "--data", store, "--classifiers", bundle, "--audit", lone, "--audit", other,
            "--bootstrap", "100").refused("positions differ")
