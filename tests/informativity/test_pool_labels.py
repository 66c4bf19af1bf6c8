"""The candidate pool, label sources (CSV, judge) and the balanced per-class sets."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from fakes import install_fake_generators, square_labels, write_fake_models, write_label_csv
from s2i_bench.cli import main
from s2i_bench.errors import UserError
from s2i_bench.informativity.labels import assign_parts, label_pool, majority_labels, water_fill
from s2i_bench.informativity.pool import build_pool, open_pool
from s2i_bench.protocol import load_protocol
from s2i_bench.data.store import open_store

CLASSES = load_protocol("tiny").class_keys


@pytest.fixture(autouse=True)
def fake_generators(monkeypatch):
    install_fake_generators(monkeypatch)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def models(tmp_path):
    return write_fake_models(tmp_path / "run", 4)


# -- pool -------------------------------------------------------------------------------------
def test_pool_keeps_provenance_and_balance(tmp_path, fake_store, models):
    build_pool(models, fake_store, tmp_path / "pool", per_model=5, seed=3)
    pool = open_pool(tmp_path / "pool")
    store = open_store(fake_store)
    t = pool.table
    assert len(t) == 4 * 5 * len(CLASSES) == pool.images.shape[0]
    assert pool.images.dtype == np.uint8 and pool.images.shape[1:] == (96, 96, 3)
    assert (t.groupby(["model_id", "class"]).size() == 5).all()
    # provenance: segments come from the requested split and class; model file hash recorded
    seg = store.manifest.set_index("segment_id")
    assert (seg.loc[t["segment_id"], "split"].to_numpy() == "val").all()
    assert (seg.loc[t["segment_id"], "class"].to_numpy() == t["class"].to_numpy()).all()
    for path in models:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert (t["model_path"] == str(path)).sum() == 5 * len(CLASSES)
        assert set(t.loc[t["model_path"] == str(path), "model_sha256"]) == {sha}
    assert sorted(t["model_epoch"].unique()) == [0, 10, 20, 30]
    assert not t.duplicated(["model_id", "segment_id", "draw"]).any()  # distinct sounds per model
    # content hash of every image
    for i in (0, len(t) - 1):
        assert t["image_sha256"][i] == hashlib.sha256(pool.images[i].tobytes()).hexdigest()
    meta = json.loads((tmp_path / "pool" / "pool.json").read_text())
    assert meta["seed"] == 3 and meta["split"] == "val" and meta["per_model"] == 5
    assert meta["store"]["hash"] == store.store_hash and meta["protocol"] == store.protocol.ref()
    assert meta["num_models"] == 4 and meta["shortfall"] == [] and meta["code_version"]
    assert meta["draws_per_sound"] == store.protocol.classifiers.pool_draws_per_sound


def test_pool_is_reproducible_and_batch_independent(tmp_path, fake_store, models):
    build_pool(models, fake_store, tmp_path / "a", per_model=4, seed=1)
    build_pool(models, fake_store, tmp_path / "b", per_model=4, seed=1, batch_size=3)
    build_pool(models, fake_store, tmp_path / "c", per_model=4, seed=2)
    a, b, c = (open_pool(tmp_path / x) for x in "abc")
    assert a.pool_hash == b.pool_hash
    np.testing.assert_array_equal(a.images, b.images)
    assert a.pool_hash != c.pool_hash
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        build_pool(models, fake_store, tmp_path / "a", per_model=4)
    build_pool(models[:2], fake_store, tmp_path / "a", per_model=4, overwrite=True)
    assert open_pool(tmp_path / "a").meta["num_models"] == 2


def test_run_folder_gives_every_checkpoint_or_the_last(tmp_path, fake_store, models):
    build_pool([models[0].parent.parent], fake_store, tmp_path / "all", per_model=2)
    build_pool([models[0].parent.parent], fake_store, tmp_path / "last", per_model=2, per_run="last")
    assert open_pool(tmp_path / "all").meta["num_models"] == 4
    last = open_pool(tmp_path / "last").meta["models"]
    assert [m["path"] for m in last] == [str(models[-1])]
    # the same file twice (directly and through its run folder) is one model
    build_pool([models[0].parent.parent, models[0]], fake_store, tmp_path / "dup", per_model=2)
    assert open_pool(tmp_path / "dup").meta["num_models"] == 4


def test_pool_split_comes_from_the_protocol_and_is_never_test(tmp_path, fake_store, models):
    store = open_store(fake_store)
    assert store.protocol.classifiers.pool_split == "val"  # tiny keeps the paper's choice
    seg = store.manifest.set_index("segment_id")
    build_pool(models[:1], fake_store, tmp_path / "train", per_model=2, split="train")
    t = open_pool(tmp_path / "train").table
    assert (seg.loc[t["segment_id"], "split"].to_numpy() == "train").all()
    assert open_pool(tmp_path / "train").meta["split"] == "train"
    with pytest.raises(UserError, match="train or val, not 'test'"):
        build_pool(models[:1], fake_store, tmp_path / "test", per_model=2, split="test")
    assert not (tmp_path / "test").exists()
    assert load_protocol("synth").classifiers.pool_split == "train"
    assert load_protocol("vegas5").classifiers.pool_split == "val"


def test_pool_reports_shortfall_and_extra_draws_fill_it(tmp_path, fake_store, models, capsys):
    # the fake store has 6 validation sounds per class
    build_pool(models[:2], fake_store, tmp_path / "short", per_model=8, draws_per_sound=1)
    captured = capsys.readouterr()
    out = captured.out + captured.err  # the summary on stdout, warnings on stderr (logging)
    meta = open_pool(tmp_path / "short").meta
    assert len(meta["shortfall"]) == 2 * len(CLASSES)
    assert all(s["got"] == 6 and s["missing"] == 2 for s in meta["shortfall"])
    assert "6 of 8 (2 missing" in out
    build_pool(models[:2], fake_store, tmp_path / "draws", per_model=8, draws_per_sound=2)
    pool = open_pool(tmp_path / "draws")
    assert pool.meta["shortfall"] == [] and set(pool.table["draw"]) == {0, 1}
    assert (pool.table.groupby(["model_id", "class"]).size() == 8).all()


def test_bad_translator_output_names_the_file(tmp_path, fake_store, models, monkeypatch):
    import fakes

    # every output `score` refuses is refused here too (it once became white images)
    for bad, message in ((lambda b: torch.zeros(len(b), 3, 96, 96) + 5.0, r"values in \[5, 5\]"),
                         (lambda b: torch.zeros(len(b), 3, 96, 96, dtype=torch.int64), "torch.int64"),
                         (lambda b: torch.zeros(1, 3, 96, 96), r"for 2 sounds"),
                         (lambda b: torch.full((len(b), 3, 96, 96), float("nan")), "NaN")):
        monkeypatch.setattr(fakes.ShadedTranslator, "translate", lambda self, batch, bad=bad: bad(batch))
        with pytest.raises(UserError, match=re.escape(str(models[0])) + ".*" + message):
            build_pool(models, fake_store, tmp_path / "pool", per_model=2)
        assert not (tmp_path / "pool").exists()


# -- CSV labels ------------------------------------------------------------------------------
@pytest.fixture
def pool_dir(tmp_path, fake_store, models):
    build_pool(models, fake_store, tmp_path / "pool", per_model=6, seed=0)
    return tmp_path / "pool"


def test_csv_errors_quote_the_first_offending_lines(tmp_path, pool_dir):
    ids = open_pool(pool_dir).table["image_id"].tolist()
    cases = {
        "bad_label": ("image_id,label\n" + f"{ids[0]},1\n{ids[1]},2\n{ids[2]},yes\n",
                      r"2 line\(s\) with a label other than 0 or 1: line 3: .*,2; line 4: .*,yes"),
        "unknown": ("image_id,label\n" + f"{ids[0]},1\nnope,0\n", r"image id not in the pool.*line 3: nope,0"),
        "dup": ("image_id,label,annotator\n" + f"{ids[0]},1,ann\n{ids[0]},0,bob\n{ids[0]},0,ann\n",
                r"labelled twice by the same annotator: line 4"),
        "header": ("id,label\nx,1\n", r"needs columns image_id,label"),
        "classes": ("image_id,label\n" + f"{ids[0]},1\n", r"no labelled images for class\(es\) dog"),
    }
    for name, (text, pattern) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        with pytest.raises(UserError, match=pattern):
            label_pool(pool_dir, csv_path=path)
    with pytest.raises(UserError, match="exactly one label source"):
        label_pool(pool_dir)
    with pytest.raises(UserError, match="exactly one label source"):
        label_pool(pool_dir, use_judge=True, csv_path=tmp_path / "dup.csv")


def test_judge_needs_a_synthetic_store(pool_dir):
    with pytest.raises(UserError, match="synthetic world"):
        label_pool(pool_dir, use_judge=True)


def test_majority_vote_and_ties():
    votes = pd.DataFrame({"image_id": ["a", "a", "a", "b", "b", "c"], "label": [1, 1, 0, 1, 0, 0],
                          "annotator": ["x", "y", "z", "x", "y", "x"]})
    labels, ties = majority_labels(votes)
    assert ties == ["b"]
    assert labels.set_index("image_id")["label"].to_dict() == {"a": 1, "c": 0}
    assert labels.set_index("image_id")["n_votes"].to_dict() == {"a": 3, "c": 1}


def test_labelled_sets_are_balanced_per_model_in_every_part(pool_dir, tmp_path):
    pool = open_pool(pool_dir)
    write_label_csv(tmp_path / "l.csv", pool.table["image_id"], square_labels(np.asarray(pool.images)))
    label_pool(pool_dir, csv_path=tmp_path / "l.csv", seed=4)
    sets = pd.read_csv(pool_dir / "sets.csv")
    spec = pool.protocol.classifiers
    labels = pd.read_csv(pool_dir / "labels.csv")
    assert list(sets.columns) == ["image_id", "class", "label", "model_id", "part"]
    assert len(labels) == len(pool.table)  # one voter: every image labelled
    truth = dict(zip(labels["image_id"], labels["label"]))
    assert all(truth[i] == lab for i, lab in zip(sets["image_id"], sets["label"]))
    assert not sets["image_id"].duplicated().any()
    for key in CLASSES:
        s = sets[sets["class"] == key]
        assert (s["label"] == 1).sum() == (s["label"] == 0).sum() == spec.informative_per_class
        counts = s.groupby(["part", "model_id", "label"]).size().unstack(fill_value=0)
        assert (counts[0] == counts[1]).all()  # every part, every model: equal in both labels
        assert (s["part"] == "test").sum() == spec.test_per_class
        n_train_all = (s["part"] != "test").sum()
        assert n_train_all == spec.train_per_class
        assert (s["part"] == "val").sum() == round(spec.train_per_class // 2 * spec.val_fraction) * 2
    meta = json.loads((pool_dir / "labels.json").read_text())
    assert meta["pool_hash"] == pool.pool_hash and meta["seed"] == 4 and meta["source"]["kind"] == "csv"


def test_shortfall_is_reported_not_filled(pool_dir, tmp_path, capsys):
    pool = open_pool(pool_dir)
    t = pool.table
    # class dog: only model fakerun-e000000 has informative images (2 of them), all else 0
    labels = np.zeros(len(t), dtype=int)
    labels[(t["class"] != "dog").to_numpy()] = square_labels(np.asarray(pool.images))[(t["class"] != "dog").to_numpy()]
    dog0 = np.flatnonzero(((t["class"] == "dog") & (t["model_id"] == "fakerun-e000000")).to_numpy())
    labels[dog0[:3]] = 1
    write_label_csv(tmp_path / "l.csv", t["image_id"], labels)
    label_pool(pool_dir, csv_path=tmp_path / "l.csv")
    captured = capsys.readouterr()
    out = captured.out + captured.err  # the summary on stdout, warnings on stderr (logging)
    meta = json.loads((pool_dir / "labels.json").read_text())
    s = meta["classes"]["dog"]["shortfall"]
    assert s == {"wanted": 6, "got": 3, "missing": 3,
                 "models_without_pairs": ["fakerun-e000010", "fakerun-e000020", "fakerun-e000030"]}
    assert "class dog: 3 of 6 images per label" in out
    sets = pd.read_csv(pool_dir / "sets.csv")
    dog = sets[sets["class"] == "dog"]
    assert len(dog) == 6 and set(dog["model_id"]) == {"fakerun-e000000"}
    assert set(dog["part"]) == {"train", "val", "test"}
    # nothing usable for dog: dog gets no set (said, recorded), the other classes go on
    labels[dog0[:3]] = 0
    write_label_csv(tmp_path / "l.csv", t["image_id"], labels)
    label_pool(pool_dir, csv_path=tmp_path / "l.csv")
    captured = capsys.readouterr()
    assert "class dog: only 0 image(s) per label" in captured.out + captured.err
    info = json.loads((pool_dir / "labels.json").read_text())["classes"]
    assert not info["dog"]["usable"] and "0 informative" in info["dog"]["reason"]
    assert all(info[k]["usable"] for k in CLASSES if k != "dog")
    assert "dog" not in set(pd.read_csv(pool_dir / "sets.csv")["class"])
    # nothing usable anywhere: a clear failure
    write_label_csv(tmp_path / "l.csv", t["image_id"], np.zeros(len(t), dtype=int))
    with pytest.raises(UserError, match="no class can be trained: baby_cry: only 0 image"):
        label_pool(pool_dir, csv_path=tmp_path / "l.csv")


def test_water_fill_is_even_and_capped():
    rng = np.random.default_rng(0)
    for _ in range(200):
        capacity = {f"m{i}": int(c) for i, c in enumerate(rng.integers(0, 12, rng.integers(1, 8)))}
        target = int(rng.integers(0, 50))
        k = water_fill(capacity, target, rng)
        assert sum(k.values()) == min(target, sum(capacity.values()))
        assert all(0 <= k[m] <= capacity[m] for m in capacity)
        # as even as possible: a model has two fewer than another only when it is at capacity
        for a in capacity:
            for b in capacity:
                assert k[a] >= k[b] - 1 or k[a] == capacity[a]


def test_assign_parts_proportions():
    chosen = pd.DataFrame({"image_id": [f"i{n}" for n in range(200)], "label": [1] * 100 + [0] * 100,
                           "model_id": [f"m{n % 10}" for n in range(100)] * 2})
    parts = assign_parts(chosen, train_per_class=160, test_per_class=40, val_fraction=0.125, seed=0)
    assert (parts["part"] == "test").sum() == 40 and (parts["part"] == "val").sum() == 20
    per_model = parts[parts["part"] == "test"].groupby(["model_id", "label"]).size().unstack()
    assert (per_model[0] == per_model[1]).all() and per_model.values.min() >= 1


def test_cli_pool_and_label(tmp_path, fake_store, models):
    runner = CliRunner()
    r = runner.invoke(main, ["pool", str(models[0].parent.parent), "--data", str(fake_store),
                             "--out", str(tmp_path / "p"), "--per-model", "6", "--seed", "0"])
    assert r.exit_code == 0, r.output
    pool = open_pool(tmp_path / "p")
    write_label_csv(tmp_path / "l.csv", pool.table["image_id"], square_labels(np.asarray(pool.images)))
    r = runner.invoke(main, ["label", str(tmp_path / "p"), "--from-csv", str(tmp_path / "l.csv")])
    assert r.exit_code == 0, r.output
    (tmp_path / "bad.csv").write_text("image_id,label\nzzz,1\n")
    r = runner.invoke(main, ["label", str(tmp_path / "p"), "--from-csv", str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "line 2: zzz,1" in r.output and "Traceback" not in r.output
