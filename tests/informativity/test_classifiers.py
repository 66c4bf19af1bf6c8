"""The informativity CNN, its training loop, statistics, fingerprint probe, bundle and card."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from fakes import install_fake_generators, square_labels, write_fake_models, write_label_csv
from s2i_bench.informativity.authors import import_authors_classifiers
from s2i_bench.informativity.bundle import InformativityCNN, load_bundle
from s2i_bench.informativity.classifiers import (_probe_card, fingerprint_probe, fit_classifier, train_class_match,
                                                 train_classifiers)
from s2i_bench.stats import binary_summary, wilson_interval
from s2i_bench.cli import main
from s2i_bench.errors import UserError
from s2i_bench.images import uint8_to_net
from s2i_bench.protocol import load_protocol

CLASSES = load_protocol("tiny").class_keys




# -- the network ------------------------------------------------------------------------------
def test_architecture_has_33610_parameters_and_log_softmax_output():
    model = InformativityCNN(2)
    assert sum(p.numel() for p in model.parameters()) == 33_610
    model.eval()
    out = model(torch.rand(4, 3, 96, 96) * 2 - 1)
    assert out.shape == (4, 2)
    assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)  # log-probabilities
    assert (out <= 0).all()
    # the class-match variant: the same body with five outputs (32*5 + 5 instead of 32*2 + 2)
    assert sum(p.numel() for p in InformativityCNN(5).parameters()) == 33_610 + 32 * 3 + 3
    assert len([m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]) == 5
    assert len([m for m in model.modules() if isinstance(m, torch.nn.Linear)]) == 2


def test_dropout_rates_follow_the_spec():
    model = InformativityCNN(2)
    rates = [getattr(model, f"conv{i}_drop").p for i in range(1, 6)]
    assert rates == [0.1, 0.2, 0.3, 0.4, 0.5] and model.fc2_drop.p == 0.5
    assert isinstance(model.conv1_drop, torch.nn.Dropout2d) and isinstance(model.fc2_drop, torch.nn.Dropout)


# -- statistics -------------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(160, 200), (0, 10), (10, 10), (3, 7), (81, 100)])
def test_wilson_interval_solves_the_score_equation(k, n):
    # Independent reference: the Wilson bounds are the roots p of (p_hat - p)^2 = z^2 p (1 - p) / n.
    z = 1.959963984540054
    p_hat = k / n
    a, b, c = 1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat
    roots = np.sort(np.roots([a, b, c]).real)
    low, high = wilson_interval(k, n, 0.95)
    assert low == pytest.approx(max(0.0, roots[0]), abs=1e-9)
    assert high == pytest.approx(min(1.0, roots[1]), abs=1e-9)
    assert low <= p_hat <= high
    assert wilson_interval(0, 0) is None


def test_binary_summary_matches_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    preds = np.where(rng.random(200) < 0.8, labels, 1 - labels)
    s = binary_summary(labels, preds)
    tn, fp, fn, tp = confusion_matrix(labels, preds, labels=[0, 1]).ravel()
    assert s["confusion"] == {"tp": tp, "fn": fn, "tn": tn, "fp": fp}
    assert s["test_accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert s["sensitivity"] == pytest.approx(recall_score(labels, preds, pos_label=1))
    assert s["specificity"] == pytest.approx(recall_score(labels, preds, pos_label=0))
    only_negatives = binary_summary(np.zeros(5), np.zeros(5))
    assert only_negatives["sensitivity"] is None and only_negatives["specificity"] == 1.0


# -- training ---------------------------------------------------------------------------------
def _bright_dark(n, seed):
    """Images whose label is whether the centre square is bright: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.normal(100, 20, size=(n, 96, 96, 3))
    x[labels == 1, 30:66, 30:66] += 120
    return np.clip(x, 0, 255).astype(np.uint8), labels


def test_fit_learns_and_returns_the_epoch_best_on_validation():
    train_x, train_y = _bright_dark(64, 0)
    val_x, val_y = _bright_dark(24, 1)
    test_x, test_y = _bright_dark(48, 2)
    model = InformativityCNN(2)
    fit = fit_classifier(model, train_x, train_y, val_x, val_y, epochs=8, batch_size=8, lr=0.001,
                         momentum=0.9, weight_decay=5e-5, seed=0)
    h = fit.history
    assert [e["epoch"] for e in h] == list(range(8))
    best = max(h, key=lambda e: (e["val_accuracy"], -e["val_loss"], -e["epoch"]))
    assert fit.epoch_chosen == best["epoch"]
    model.load_state_dict(fit.state_dict)
    model.eval()
    with torch.no_grad():
        val_acc = (model(uint8_to_net(val_x)).argmax(1).numpy() == val_y).mean()
        test_acc = (model(uint8_to_net(test_x)).argmax(1).numpy() == test_y).mean()
    assert val_acc == pytest.approx(best["val_accuracy"])  # the returned weights are that epoch's
    assert test_acc >= 0.9


def test_fit_is_reproducible_from_its_seed():
    x, y = _bright_dark(40, 0)
    kw = dict(epochs=2, batch_size=16, lr=0.001, momentum=0.9, weight_decay=5e-5)
    a = fit_classifier(InformativityCNN(2), x, y, x[:8], y[:8], seed=5, **kw)
    b = fit_classifier(InformativityCNN(2), x, y, x[:8], y[:8], seed=5, **kw)
    c = fit_classifier(InformativityCNN(2), x, y, x[:8], y[:8], seed=6, **kw)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not torch.equal(a.state_dict["conv1.weight"], c.state_dict["conv1.weight"])


# -- fingerprint probe ------------------------------------------------------------------------
def test_fingerprint_probe_sees_model_artefacts_and_not_noise():
    rng = np.random.default_rng(0)
    models = np.repeat(np.array(["a", "b", "c"]), 20)
    base = rng.normal(120, 30, size=(60, 96, 96, 3))
    marked = base.copy()
    marked[models == "b", ::4] += 25  # a stripe artefact only model b leaves
    marked[models == "c"] *= 0.7  # a darker model
    strong = fingerprint_probe(np.clip(marked, 0, 255).astype(np.uint8), models, seed=0)
    weak = fingerprint_probe(np.clip(base, 0, 255).astype(np.uint8), models, seed=0)
    assert strong["chance"] == pytest.approx(1 / 3) and strong["n_models"] == 3
    assert strong["accuracy"] >= 0.9
    assert weak["accuracy"] < 0.6
    card = _probe_card({"informative": strong, "non_informative": weak}, warn_ratio=2.0)
    assert card["warning"] and card["accuracy"] == strong["accuracy"]
    assert not _probe_card({"informative": weak, "non_informative": None}, warn_ratio=2.0)["warning"]
    assert fingerprint_probe(base[:5].astype(np.uint8), np.array(["a"] * 5), seed=0) is None


# -- the whole command on a fake labelled pool ------------------------------------------------
@pytest.fixture(scope="module")
def labelled_pool(tmp_path_factory, fake_store):
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool, open_pool

    mp = pytest.MonkeyPatch()
    install_fake_generators(mp)
    work = tmp_path_factory.mktemp("clf")
    models = write_fake_models(work / "models", 4)
    build_pool(models, fake_store, work / "pool", per_model=6, seed=0)
    pool = open_pool(work / "pool")
    write_label_csv(work / "labels.csv", pool.table["image_id"], square_labels(np.asarray(pool.images)))
    label_pool(work / "pool", csv_path=work / "labels.csv")
    mp.undo()
    return work / "pool"


@pytest.fixture(scope="module")
def bundle_path(labelled_pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "classifiers.pt"
    train_classifiers(labelled_pool, out, seed=0)
    return out


def test_bundle_card_and_outcomes_agree(bundle_path, labelled_pool):
    import pandas as pd

    from s2i_bench.informativity.pool import open_pool

    bundle = load_bundle(bundle_path)
    card = json.loads(bundle_path.with_suffix(".json").read_text())
    pool = open_pool(labelled_pool)
    sets = pd.read_csv(labelled_pool / "sets.csv", dtype={"image_id": str})
    assert bundle.class_keys == CLASSES and card["source"] == "trained"
    assert card["pool_hash"] == pool.pool_hash and card["protocol"] == pool.protocol.ref()
    assert card["store"]["hash"] == pool.meta["store"]["hash"]
    from s2i_bench.fileio import sha256_file

    assert card["bundle_sha256"] == sha256_file(bundle_path)
    for key in CLASSES:
        c = card["classes"][key]
        labels, preds = bundle.test_outcomes(key)
        test_ids = sets[(sets["class"] == key) & (sets["part"] == "test")]["image_id"]
        assert len(labels) == c["n_test"] == len(test_ids)
        conf = c["confusion"]
        assert conf["tp"] + conf["fn"] + conf["tn"] + conf["fp"] == c["n_test"]
        assert conf["tp"] == int(((labels == 1) & (preds == 1)).sum())
        assert c["test_accuracy"] == pytest.approx((labels == preds).mean())
        assert bundle.sensitivity(key) == pytest.approx(conf["tp"] / (conf["tp"] + conf["fn"]))
        assert bundle.specificity(key) == pytest.approx(conf["tn"] / (conf["tn"] + conf["fp"]))
        assert c["accuracy_ci"][0] <= c["test_accuracy"] <= c["accuracy_ci"][1]
        assert 0 <= c["epoch_chosen"] < c["epochs"]
        # the stored outcomes are what the bundle predicts on the held-out images, in order
        images = uint8_to_net(pool.images[pool.index_of(test_ids)])
        np.testing.assert_array_equal(bundle.predict_informative(images, key), preds == 1)
        np.testing.assert_array_equal(labels, sets.set_index("image_id").loc[test_ids, "label"].to_numpy())
        # each model contributes equally to both labels
        assert all(v["informative"] == v["non_informative"] for v in c["counts_per_model"].values())
        assert "fingerprint_probe" in c
    assert card["class_match"]["n_test"] == 30 and card["class_match"]["trained_on"] == "real frames"
    pred = bundle.predict_class(torch.zeros(3, 3, 96, 96))
    assert pred.shape == (3,) and pred.dtype == np.int64
    # the .pt is plain data
    raw = torch.load(bundle_path, weights_only=True)
    assert raw["card"]["classes"].keys() == card["classes"].keys()


def test_bundle_predictions_are_bool_and_checked(bundle_path):
    bundle = load_bundle(bundle_path)
    out = bundle.predict_informative(np.zeros((2, 3, 96, 96), dtype=np.float32), "dog")
    assert out.dtype == bool and out.shape == (2,)
    with pytest.raises(ValueError):
        bundle.predict_informative(torch.zeros(2, 3, 48, 48), "dog")
    with pytest.raises(UserError, match="no classifier for class"):
        bundle.predict_informative(torch.zeros(2, 3, 96, 96), "cat")


def test_load_bundle_refuses_code_and_bad_shapes(tmp_path, bundle_path):
    import collections

    evil = tmp_path / "evil.pt"
    torch.save({"format": "s2i-bench-classifiers", "x": collections.Counter(a=1)}, evil)
    with pytest.raises(UserError, match="evil.pt"):
        load_bundle(evil)
    raw = torch.load(bundle_path, weights_only=True)
    raw["informativity"]["dog"]["state_dict"]["fc3.weight"] = torch.zeros(3, 32)
    bad = tmp_path / "bad.pt"
    torch.save(raw, bad)
    with pytest.raises(UserError, match=r"bad.pt \[dog\]: fc3.weight has shape"):
        load_bundle(bad)
    raw = torch.load(bundle_path, weights_only=True)
    raw["informativity"]["dog"]["state_dict"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(raw, bad)
    with pytest.raises(UserError, match="NaN"):
        load_bundle(bad)
    with pytest.raises(UserError, match="not found"):
        load_bundle(tmp_path / "missing.pt")


def test_training_is_reproducible(labelled_pool, bundle_path, tmp_path):
    again = tmp_path / "again.pt"
    train_classifiers(labelled_pool, again, seed=0, class_match_epochs=0)
    a, b = load_bundle(bundle_path), load_bundle(again)
    for key in CLASSES:
        np.testing.assert_array_equal(a.test_outcomes(key)[1], b.test_outcomes(key)[1])
    assert b.predict_class(torch.zeros(1, 3, 96, 96)) is None and b.card["class_match"] is None


def test_class_match_learns_real_frames(fake_store):
    from s2i_bench.data.store import open_store

    # batches of 8 so that 10 epochs of 60 frames are enough SGD steps at lr 0.001
    spec = dataclasses.replace(load_protocol("tiny").classifiers, batch_size=8)
    entry, card = train_class_match(open_store(fake_store), epochs=10, seed=0, device="cpu", spec=spec)
    # fake frames are flat class colours plus noise: easy, if the loop works
    assert card["test_accuracy"] >= 0.6 and card["n_test"] == 30  # chance: 0.2 and card["n_train"] == 60
    assert entry["num_classes"] == 5


def test_unlabelled_pool_is_refused(tmp_path, fake_store, monkeypatch):
    from s2i_bench.informativity.pool import build_pool

    install_fake_generators(monkeypatch)
    models = write_fake_models(tmp_path / "m", 2)
    build_pool(models, fake_store, tmp_path / "pool", per_model=2)
    with pytest.raises(UserError, match="not labelled yet"):
        train_classifiers(tmp_path / "pool", tmp_path / "b.pt")


# -- the authors' classifiers -----------------------------------------------------------------
def _authors_files(tmp_path, prefix=""):
    files, models = {}, {}
    for i, key in enumerate(CLASSES):
        torch.manual_seed(i)
        model = InformativityCNN(2)
        state = {prefix + k: v for k, v in model.state_dict().items()}
        state[prefix + "fc1.weight"] = torch.zeros(32, 32)  # defined, never used, by the authors
        state[prefix + "fc1.bias"] = torch.zeros(32)
        path = tmp_path / f"classifier_{key}.pth"
        torch.save(state, path)
        files[key], models[key] = path, model.eval()
    return files, models


def test_import_authors_classifiers(tmp_path):
    files, models = _authors_files(tmp_path, prefix="module.")
    out = import_authors_classifiers(files, tmp_path / "authors.pt", protocol="vegas5")
    bundle = load_bundle(out)
    assert bundle.source == "authors" and bundle.card["source"] == "authors"
    images = torch.rand(6, 3, 96, 96) * 2 - 1
    for key, model in models.items():
        with torch.no_grad():
            expected = model(images).argmax(1).numpy() == 1
        np.testing.assert_array_equal(bundle.predict_informative(images, key), expected)
        assert bundle.sensitivity(key) is None and bundle.specificity(key) is None
        assert bundle.test_outcomes(key) is None
        assert bundle.card["classes"][key]["test_accuracy"] is None
    assert bundle.predict_class(images) is None


def test_import_authors_errors_name_the_file(tmp_path):
    files, _ = _authors_files(tmp_path)
    with pytest.raises(UserError, match="no file for class"):
        import_authors_classifiers({k: v for k, v in files.items() if k != "dog"}, tmp_path / "a.pt", "vegas5")
    state = torch.load(files["dog"], weights_only=True)
    state["conv2.weight"] = torch.zeros(32, 12, 5, 5)
    torch.save(state, files["dog"])
    with pytest.raises(UserError, match=r"classifier_dog.pth: conv2.weight has shape"):
        import_authors_classifiers(files, tmp_path / "a.pt", "vegas5")
    torch.save(InformativityCNN(2), files["dog"])  # a pickled module, not a state dict
    with pytest.raises(UserError, match=("classifier_dog.pth: refused: not loadable with weights_only=True"
                                         ".*InformativityCNN")):
        import_authors_classifiers(files, tmp_path / "a.pt", "vegas5")


def test_cli_imports_authors_classifiers(tmp_path):
    files, _ = _authors_files(tmp_path)
    args = ["train-classifiers", "--out", str(tmp_path / "a.pt"), "--protocol", "vegas5"]
    for key, path in files.items():
        args += ["--authors", f"{key}={path}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.json").read_text())["source"] == "authors"
    bad = CliRunner().invoke(main, ["train-classifiers", "--out", str(tmp_path / "b.pt")])
    assert bad.exit_code == 2 and "POOL_DIR" in bad.output


# -- the real chain on the tiny protocol ------------------------------------------------------
class _Oracle(torch.nn.Module):
    """A translator that remembers the validation sounds: for an even per-image seed it returns
    the real frame of the nearest remembered sound (informative to the judge), for an odd one a
    flat image of its own tint (not informative; the tint is this model's fingerprint)."""

    def __init__(self, spectrograms: torch.Tensor, frames: torch.Tensor, tint: float):
        super().__init__()
        self.register_buffer("spectrograms", spectrograms.flatten(1))  # (M, 12800)
        self.register_buffer("frames", frames)  # (M, 3, 96, 96) in [-1, 1]
        self.tint = tint

    def forward(self, spectrograms: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(spectrograms.flatten(1), self.spectrograms).argmin(1)  # (B,)
        real = self.frames[nearest]  # (B, 3, 96, 96)
        keep = (seeds % 2 == 0).view(-1, 1, 1, 1)
        return torch.where(keep, real, torch.full_like(real, self.tint))


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    from s2i_bench.data.prepare import prepare_store
    from s2i_bench.synth import write_world

    work = tmp_path_factory.mktemp("chain")
    world = write_world(work / "world", "tiny")
    with contextlib.redirect_stdout(io.StringIO()):
        return prepare_store(world, work / "store", load_protocol("tiny"))


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_whole_chain_on_the_synthetic_world(synthetic_store, tmp_path, capsys):
    """synth -> prepare -> checkpoints + programs -> pool -> label --judge -> train-classifiers
    -> load_bundle -> score, through the real loaders, judge and store."""
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import build_pool, open_pool
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators import load_translator
    from s2i_bench.data.store import open_store
    from s2i_bench.synth import judge
    from s2i_translator.checkpoint import make_checkpoint, save_checkpoint
    from s2i_translator.models import AudioEncoder, DenseGenerator

    store = open_store(synthetic_store)
    protocol = store.protocol
    assert store.synthetic
    # two real (untrained) checkpoints of the tiny protocol's translator, in a run folder
    f = protocol.training.embedding_dim
    for epoch in (0, 1):
        torch.manual_seed(epoch)
        ckpt = make_checkpoint(epoch=epoch, embedding_dim=f, spec=protocol.model, protocol_ref=protocol.ref(),
                               store_ref=store.ref(), normalisation=store.meta["normalisation"],
                               encoder=AudioEncoder(f, protocol.model), generator=DenseGenerator(f, protocol.model),
                               run="run")
        save_checkpoint(tmp_path / "run" / "checkpoints" / f"generator-{epoch:06d}.pt", ckpt)
    # four oracle programs (TorchScript) that know the validation sounds
    val = store.split_indices("val")
    specs = torch.from_numpy(store.normalise(np.asarray(store.spectrograms[val], dtype=np.float32)))
    frames = uint8_to_net(np.asarray(store.frames[val]))
    oracles = []
    for i in range(4):
        path = tmp_path / f"oracle{i}.pt"
        torch.jit.script(_Oracle(specs, frames, tint=-0.6 + 0.3 * i)).save(str(path))
        oracles.append(path)

    build_pool([tmp_path / "run", *oracles], synthetic_store, tmp_path / "pool", per_model=8, draws_per_sound=4)
    pool = open_pool(tmp_path / "pool")
    assert pool.meta["num_models"] == 6 and pool.meta["store"]["synthetic_world"]
    label_pool(tmp_path / "pool", use_judge=True)
    labels = pd.read_csv(tmp_path / "pool" / "labels.csv", dtype={"image_id": str})
    # the labels are the judge's, image by image
    for key in CLASSES:
        rows = labels[labels["class"] == key]
        verdict = judge(np.asarray(pool.images[pool.index_of(rows["image_id"])]), key)
        np.testing.assert_array_equal(rows["label"].to_numpy() == 1, verdict)
    # untrained translators never fool the judge; only oracles supply informative images
    informative_models = set(labels.loc[labels["label"] == 1, "model_id"])
    assert informative_models and informative_models <= {p.stem for p in oracles}
    sets = pd.read_csv(tmp_path / "pool" / "sets.csv")
    assert set(sets["model_id"]) <= {p.stem for p in oracles}

    out = train_classifiers(tmp_path / "pool", tmp_path / "bundle.pt", seed=0)
    bundle = load_bundle(out)
    card = bundle.card
    assert card["pool_hash"] == pool.pool_hash and card["store"]["hash"] == store.store_hash
    for key in CLASSES:
        c = card["classes"][key]
        assert c["n_test"] == len(bundle.test_outcomes(key)[0]) > 0
        # grey non-informative images carry each oracle's tint: the probe must notice
        assert c["fingerprint_probe"]["by_label"]["non_informative"] is None or \
            c["fingerprint_probe"]["by_label"]["non_informative"]["accuracy"] > 0.9
    assert card["class_match"]["trained_on"] == "real frames"

    # the scoring function accepts the bundle (the contract between the two commands)
    record = score_translator(load_translator(oracles[0]), store, bundle, protocol=protocol, split="test", seed=0)
    for key in CLASSES:
        assert record.share(key, "true_share") is not None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_and_bundle(labelled_pool, bundle_path, tmp_path):
    out = train_classifiers(labelled_pool, tmp_path / "cuda.pt", seed=0, device="cuda", class_match_epochs=1)
    on_gpu = load_bundle(out, device="cuda")
    on_cpu = load_bundle(out, device="cpu")
    images = torch.rand(16, 3, 96, 96) * 2 - 1
    for key in CLASSES:  # same weights, same answers (one flip allowed for numerics at the boundary)
        gpu, cpu = on_gpu.predict_informative(images.cuda(), key), on_cpu.predict_informative(images, key)
        assert (gpu != cpu).sum() <= 1
    assert on_gpu.predict_class(images).shape == (16,)


def test_cli_trains_a_bundle(labelled_pool, tmp_path):
    result = CliRunner().invoke(main, ["train-classifiers", str(labelled_pool), "--out", str(tmp_path / "b.pt")])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and (tmp_path / "b.json").is_file()
    assert load_bundle(tmp_path / "b.json").class_keys == CLASSES  # the card path finds the .pt
    both = CliRunner().invoke(main, ["train-classifiers", str(labelled_pool), "--out", str(tmp_path / "c.pt"),
                                     "--authors", "dog=x.pt"])
    assert both.exit_code == 2 and "not both" in both.output


def test_class_without_a_set_gets_no_classifier(labelled_pool, tmp_path):
    import shutil

    from s2i_bench.informativity.pool import open_pool

    pool_dir = tmp_path / "pool"
    shutil.copytree(labelled_pool, pool_dir)
    pool = open_pool(pool_dir)
    labels = square_labels(np.asarray(pool.images))
    labels[(pool.table["class"] == "fireworks").to_numpy()] = 0  # no informative fireworks image
    write_label_csv(tmp_path / "l.csv", pool.table["image_id"], labels)
    from s2i_bench.informativity.labels import label_pool

    label_pool(pool_dir, csv_path=tmp_path / "l.csv")
    out = train_classifiers(pool_dir, tmp_path / "b.pt", class_match_epochs=1)
    bundle = load_bundle(out)
    assert bundle.class_keys == tuple(k for k in CLASSES if k != "fireworks")
    assert "fireworks" not in bundle.card["classes"] and "0 informative" in bundle.card["untrained"]["fireworks"]
    with pytest.raises(UserError, match="no classifier for class 'fireworks'"):
        bundle.predict_informative(torch.zeros(1, 3, 96, 96), "fireworks")
    assert bundle.predict_class(torch.zeros(2, 3, 96, 96)).shape == (2,)  # still five real-frame classes
    assert bundle.card["class_match"]["class_keys"] == list(CLASSES)


def test_the_same_training_gives_the_same_bundle_bytes(labelled_pool, tmp_path):
    """Records and reports name the bundle's sha256: a second training with the same seed must
    give the same file (the creation time lives in the JSON card only)."""
    import time

    a = train_classifiers(labelled_pool, tmp_path / "a.pt", seed=0, class_match_epochs=1)
    time.sleep(1.1)
    b = train_classifiers(labelled_pool, tmp_path / "b.pt", seed=0, class_match_epochs=1)
    assert a.read_bytes() == b.read_bytes()
    assert (json.loads(a.with_suffix(".json").read_text())["created"]
            != json.loads(b.with_suffix(".json").read_text())["created"])
