"""The classifiers' probabilities, their calibration in the card, and the training recipe beyond
the paper's (real frames among the informative examples, augmentation): informativity/recipe.py,
bundle.decide, classifiers.train_classifiers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import install_fake_generators, square_labels, write_bundle, write_fake_models, write_label_csv
from s2i_bench.errors import UserError
from s2i_bench.images import uint8_to_net
from s2i_bench.informativity import classifiers as C
from s2i_bench.informativity.bundle import HALF_UP, decide, load_bundle
from s2i_bench.informativity.recipe import (augment_batch, augmenter, real_frame_rows, reliability, with_recipe)
from s2i_bench.protocol import load_protocol

ROOT = Path(__file__).resolve().parents[2]
CLASSES = load_protocol("tiny").class_keys


# -- calibration arithmetic ---------------------------------------------------------------------------------
def direct_reliability(y, p, bins=10):
    """The definition, bin by bin: (lo, hi] with the first bin [0, hi]."""
    rows, gap = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (p > lo) & (p <= hi) if b else (p >= 0) & (p <= hi)
        rows.append((int(inside.sum()), p[inside].mean() if inside.any() else None,
                     y[inside].mean() if inside.any() else None))
        if inside.any():
            gap += inside.sum() / len(p) * abs(y[inside].mean() - p[inside].mean())
    return rows, gap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reliability_matches_sklearn_and_the_definition(seed):
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(seed)
    p = rng.beta(0.7, 0.7, size=300)
    p[:6] = [0.0, 0.1, 0.5, 0.7, 0.9, 1.0]  # on the edges: the lower bin
    y = (rng.random(300) < p ** 1.5).astype(int)  # over-confident on purpose
    got = reliability(y, p)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    filled = [b for b in got["bins"] if b["count"]]
    np.testing.assert_allclose([b["share_informative"] for b in filled], prob_true, atol=1e-12)
    np.testing.assert_allclose([b["mean_probability"] for b in filled], prob_pred, atol=1e-12)
    rows, ece = direct_reliability(y, p)
    assert [b["count"] for b in got["bins"]] == [r[0] for r in rows] and sum(r[0] for r in rows) == 300
    assert got["ece"] == pytest.approx(ece, abs=1e-12) and got["ece"] > 0.02
    assert got["brier"] == pytest.approx(np.mean((p - y) ** 2)) and got["n"] == 300


def test_a_calibrated_classifier_has_a_small_ece_and_empty_bins_are_none():
    rng = np.random.default_rng(5)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)  # calibrated by construction
    assert reliability(y, p)["ece"] < 0.02
    few = reliability([1, 0], [0.95, 0.05])
    assert few["bins"][5] == {"low": 0.5, "high": 0.6, "count": 0, "mean_probability": None,
                              "share_informative": None}
    assert few["ece"] == pytest.approx(0.05) and reliability([], [])["ece"] is None


# -- the threshold rule -------------------------------------------------------------------------------------
def test_decide_is_the_argmax_and_exactly_the_half_rule():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(0, 3, size=(20000, 2))).float()
    near = torch.tensor([[0.0, 0.0], [0.0, 1e-7], [1e-7, 0.0], [-0.6931472, -0.6931471], [5.0, 5.0]])
    lp = torch.log_softmax(torch.cat([logits, near]), dim=1)
    lp[-2:] = torch.tensor([[-0.6931472, -0.6931472], [-0.6931472, -0.6931471]])  # a tie, a near-tie
    decision, p = decide(lp)
    assert p.dtype == np.float64 and decision.dtype == bool
    np.testing.assert_array_equal(decision, (lp.argmax(1) == 1).numpy())
    np.testing.assert_array_equal(decision, p > 0.5)  # exactly, image by image
    assert not decision[-2] and p[-2] == 0.5 and decision[-1] and p[-1] >= HALF_UP
    np.testing.assert_allclose(p, torch.exp(lp[:, 1]).double().numpy(), atol=1e-6)


def test_bundle_scores_agree_with_its_decisions_on_many_images(tmp_path):
    bundle = load_bundle(write_bundle(tmp_path / "b.pt", load_protocol("tiny"), seed=3))
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(600, 3, 96, 96, generator=gen) * 2 - 1
    images[:200] *= 0.02  # nearly flat images: probabilities crowd around the network's bias
    both = set()
    for key in CLASSES:
        decision, p = bundle.informative_scores(images, key)
        np.testing.assert_array_equal(decision, bundle.predict_informative(images, key))
        np.testing.assert_array_equal(decision, p > 0.5)
        with torch.no_grad():
            expected = torch.exp(bundle._informative[key](images)[:, 1]).double().numpy()
        np.testing.assert_allclose(p, expected, atol=1e-6)
        both |= {bool(d) for d in decision}
    assert both == {True, False}  # both sides of the rule were exercised


# -- a labelled pool, and the card ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tmp_path_factory, fake_store):
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool, open_pool

    mp = pytest.MonkeyPatch()
    install_fake_generators(mp)
    work = tmp_path_factory.mktemp("calib")
    build_pool(write_fake_models(work / "models", 4), fake_store, work / "pool", per_model=6, seed=0)
    opened = open_pool(work / "pool")
    write_label_csv(work / "labels.csv", opened.table["image_id"], square_labels(np.asarray(opened.images)))
    label_pool(work / "pool", csv_path=work / "labels.csv")
    mp.undo()
    return work / "pool"


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("calib-bundle") / "b.pt"
    C.train_classifiers(pool, out, seed=0, class_match_epochs=0)
    return out


def test_the_card_carries_calibration_of_the_test_images(pool, trained, capsys):
    import pandas as pd

    from s2i_bench.informativity.pool import open_pool

    card = json.loads(trained.with_suffix(".json").read_text())
    inner = torch.load(trained, weights_only=True)["card"]
    assert "calibration" not in inner and "recipe" not in inner and "recipe" not in card  # the paper's recipe
    bundle = load_bundle(trained)  # the JSON card still agrees with the one inside
    opened = open_pool(pool)
    sets = pd.read_csv(pool / "sets.csv", dtype={"image_id": str})
    assert "10 equal-width bins" in card["calibration"]["binning"]
    for key in CLASSES:
        cal = card["calibration"]["classes"][key]
        ids = sets[(sets["class"] == key) & (sets["part"] == "test")]["image_id"]
        labels, _ = bundle.test_outcomes(key)
        _, p = bundle.informative_scores(uint8_to_net(opened.images[opened.index_of(ids)]), key)
        again = reliability(labels, p)
        assert cal["n"] == card["classes"][key]["n_test"] == len(ids)
        assert cal["ece"] == pytest.approx(again["ece"], abs=1e-9) and cal["bins"] == again["bins"]


def test_calibration_does_not_touch_the_bundle_bytes(pool, trained, tmp_path):
    again = C.train_classifiers(pool, tmp_path / "again.pt", seed=0, class_match_epochs=0)
    assert again.read_bytes() == trained.read_bytes()
    card = json.loads(again.with_suffix(".json").read_text())
    card["calibration"]["classes"]["dog"]["ece"] = 0.5  # outside the sha256: an edit is not refused
    again.with_suffix(".json").write_text(json.dumps(card))
    load_bundle(again)
    card["seed"] = 7  # inside it: refused
    again.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="says seed differently"):
        load_bundle(again)


def test_the_summary_prints_the_ece(pool, tmp_path, capsys):
    C.train_classifiers(pool, tmp_path / "b.pt", seed=0, class_match_epochs=0, epochs=1)
    out = capsys.readouterr().out
    assert out.count("ECE 0.") + out.count("ECE 1.") == len(CLASSES) and "expected calibration error" in out


# -- the recipe ---------------------------------------------------------------------------------------------
def test_recipe_keys_are_protocol_keys(tmp_path):
    synth = load_protocol("synth")
    assert "real_frames_per_class" not in synth.to_dict()["classifiers"]  # absent at the paper's value
    demo = json.loads((ROOT / "results" / "demo" / "demo.json").read_text())
    assert synth.fingerprint == demo["protocol"]["fingerprint"], "the default recipe must keep the fingerprint"
    flipped = with_recipe(synth, {"augment": "flip"})
    assert flipped.classifiers.augment == "flip" and flipped.fingerprint != synth.fingerprint
    assert flipped.to_dict()["classifiers"]["augment"] == "flip"
    with pytest.raises(UserError, match="classifiers.augment"):
        with_recipe(synth, {"augment": "rotate"})
    with pytest.raises(UserError, match="real_frames_per_class = -1"):
        with_recipe(synth, {"real_frames_per_class": -1})
    with pytest.raises(UserError, match="unknown key"):
        with_recipe(synth, {"epochs": 3})
    path = tmp_path / "p.toml"
    path.write_text('extends = "tiny"\nname = "t"\n[classifiers]\nreal_frames = 3\n')
    with pytest.raises(UserError, match="real_frames"):
        load_protocol(path)
    path.write_text('extends = "tiny"\nname = "t"\n[classifiers]\nreal_frames_per_class = 3\naugment = "flip"\n')
    p = load_protocol(path)
    assert (p.classifiers.real_frames_per_class, p.classifiers.augment) == (3, "flip")


def test_real_frames_are_a_seeded_sample_of_the_class_training_frames(fake_store):
    from s2i_bench.data.store import open_store

    store = open_store(fake_store)
    rows = real_frame_rows(store, "dog", 5, seed=0)
    train = set(store.split_indices("train"))
    assert len(rows) == 5 and set(rows) <= train and (store.manifest["class"].to_numpy()[rows] == "dog").all()
    np.testing.assert_array_equal(rows, real_frame_rows(store, "dog", 5, seed=0))
    assert not np.array_equal(rows, real_frame_rows(store, "dog", 5, seed=1))
    assert len(real_frame_rows(store, "dog", 1000, seed=0)) == 12  # every training frame of the class
    assert len(real_frame_rows(store, "dog", 0, seed=0)) == 0


def test_real_frames_join_the_informative_training_images(pool, fake_store, tmp_path, monkeypatch):
    from s2i_bench.data.store import open_store

    seen = {}
    real_fit = C.fit_classifier

    def spy(model, train_images, train_labels, val_images, val_labels, **kw):
        seen[kw["desc"]] = (np.asarray(train_images), np.asarray(train_labels), len(val_images), kw["augment"])
        return real_fit(model, train_images, train_labels, val_images, val_labels, **kw)

    monkeypatch.setattr(C, "fit_classifier", spy)
    out = C.train_classifiers(pool, tmp_path / "b.pt", seed=0, class_match_epochs=0, epochs=1,
                              recipe={"real_frames_per_class": 3, "augment": "flip"})
    card = json.loads(out.with_suffix(".json").read_text())
    store = open_store(fake_store)
    assert card["recipe"] == {"real_frames_per_class": 3, "augment": "flip", "real_frames": {k: 3 for k in CLASSES}}
    assert card["protocol"] == load_protocol("tiny").ref()  # the pool's protocol; the recipe beside it
    for key in CLASSES:
        images, labels, n_val, augment = seen[f"classifier {key}"]
        assert len(labels) == card["classes"][key]["n_train"] + 3 and augment == "flip"
        assert (labels[-3:] == 1).all() and n_val == card["classes"][key]["n_val"]
        np.testing.assert_array_equal(images[-3:], store.frames[real_frame_rows(store, key, 3, seed=0)])
    assert torch.load(out, weights_only=True)["card"]["recipe"] == card["recipe"]  # part of the bundle


def test_augmentation_is_seeded_and_keeps_images_in_range():
    x = torch.rand(16, 3, 96, 96) * 2 - 1
    assert augmenter("none", 0) is None  # the paper's recipe draws nothing
    flip_a, flip_b = augmenter("flip", 3)(x), augmenter("flip", 3)(x)
    assert torch.equal(flip_a, flip_b)
    mirrored = [torch.equal(flip_a[i], x[i].flip(-1)) for i in range(16)]
    assert all(m or torch.equal(flip_a[i], x[i]) for i, m in enumerate(mirrored)) and 0 < sum(mirrored) < 16
    rng = np.random.default_rng(0)
    y = augment_batch(x, rng, "flip-crop-jitter")
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.equal(y, x)
    assert torch.equal(y, augment_batch(x, np.random.default_rng(0), "flip-crop-jitter"))
    with pytest.raises(UserError, match="augment"):
        augmenter("rotate", 0)


def test_augmented_training_is_reproducible_and_differs(pool):
    from s2i_bench.informativity.bundle import InformativityCNN
    from s2i_bench.informativity.pool import open_pool

    opened = open_pool(pool)
    images = np.asarray(opened.images[:24])
    labels = np.arange(24) % 2
    spec = load_protocol("tiny").classifiers

    def fit(augment):
        return C.fit_classifier(InformativityCNN(2, spec.dropout, spec.fc_dropout), images[:16], labels[:16],
                                images[16:], labels[16:], epochs=2, batch_size=8, lr=0.01, momentum=0.9,
                                weight_decay=0.0, seed=0, augment=augment)

    plain, a, b = fit("none"), fit("flip-crop-jitter"), fit("flip-crop-jitter")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not all(torch.equal(a.state_dict[k], plain.state_dict[k]) for k in a.state_dict)
