"""Training the informativity classifiers (SPEC section 5) and the class-match classifier.

`train-classifiers` reads a labelled pool (`pool.py`, `labels.py`) and trains, per class, the
paper's small binary CNN: informative (1) vs non-informative (0) generated images of that class.
The epoch is chosen on a validation part carved from the training images; accuracy,
sensitivity and specificity are measured on the held-out test images only, and the per-image
test outcomes are kept in the bundle so scoring can bootstrap the prevalence correction.

It also trains a 5-class classifier on REAL training frames of the store (same architecture,
five outputs): the class-match rate the paper rejected (section 5.3), shown beside
informativity so its inflation is visible.

The result is one bundle (`bundle.py` reads it back; `authors.py` imports the authors' five
classifiers into the same format).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_torch_save, atomic_write_json, dig, progress, sha256_file
from s2i_bench.images import uint8_to_net
from s2i_bench.informativity.bundle import (BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, CARD_ONLY_KEYS, IMAGE_SIZE,
                                            InformativityCNN, card_path, decide)
from s2i_bench.informativity.labels import read_sets
from s2i_bench.informativity.pool import open_pool
from s2i_bench.informativity.recipe import (BINNING, augmenter, is_paper_recipe, real_frame_rows, recipe_of,
                                            reliability, with_recipe)
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.seeding import item_seed
from s2i_bench.stats import binary_summary, wilson_interval
from s2i_bench.text import percent

logger = logging.getLogger(__name__)


# -- images -----------------------------------------------------------------------------------
def _check_uint8_images(images: np.ndarray, where: str) -> None:
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        raise UserError(f"{where}: images have shape {images.shape} {images.dtype}, "
                        f"expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) uint8")


# -- training ---------------------------------------------------------------------------------
@dataclass
class FitResult:
    state_dict: dict[str, torch.Tensor]
    epoch_chosen: int
    history: list[dict[str, float]]


@torch.no_grad()
def _predict_log_probs(model: nn.Module, images_uint8: np.ndarray, device, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(images_uint8), batch_size):
        out.append(model(uint8_to_net(images_uint8[start:start + batch_size], device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.num_outputs)


def fit_classifier(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                   val_images: np.ndarray, val_labels: np.ndarray, *, epochs: int, batch_size: int,
                   lr: float, momentum: float, weight_decay: float, seed: int, device="cpu",
                   desc: str = "train", augment: str = "none") -> FitResult:
    """One plain SGD loop from freshly initialised weights. After each epoch the model is scored
    on the validation images; the state of the best epoch (highest validation accuracy, ties:
    lower validation loss, then the earlier epoch) is returned. The test images are never seen
    here. `augment` (recipe.augmenter) transforms the training batches; "none" draws nothing."""
    if len(train_images) < 2 or len(val_images) < 1:
        raise UserError(f"{desc}: too few images to train ({len(train_images)} train, {len(val_images)} validation)")
    torch.manual_seed(seed)  # weight init and dropout masks both come from the seed
    for module in model.modules():  # (re)initialise here, so the seed fixes the starting weights
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model.to(device)
    shuffle_rng = np.random.default_rng(seed)
    augmented = augmenter(augment, seed)  # None for the paper's recipe
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    train_y = torch.tensor(np.asarray(train_labels), dtype=torch.long)
    val_y = torch.tensor(np.asarray(val_labels), dtype=torch.long)
    best = None  # (accuracy, -loss, -epoch) to maximise
    best_state, best_epoch, history = None, -1, []
    for epoch in progress(range(epochs), desc=desc, unit="epoch"):
        model.train()
        order = shuffle_rng.permutation(len(train_images))
        total_loss, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start:start + batch_size])
            if len(idx) < 2:  # BatchNorm1d cannot normalise a batch of one in training mode
                continue
            x = uint8_to_net(train_images[idx], device)  # (B, 3, 96, 96)
            if augmented is not None:
                x = augmented(x)
            y = train_y[idx].to(device)  # (B,)
            loss = F.nll_loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
        log_probs = _predict_log_probs(model, val_images, device)
        val_loss = F.nll_loss(log_probs, val_y).item()
        val_acc = (log_probs.argmax(1) == val_y).float().mean().item()
        history.append({"epoch": epoch, "train_loss": total_loss / max(seen, 1), "val_loss": val_loss,
                        "val_accuracy": val_acc})
        key = (val_acc, -val_loss, -epoch)
        if best is None or key > best:
            best, best_epoch = key, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return FitResult(state_dict=best_state, epoch_chosen=best_epoch, history=history)


# -- fingerprint probe ------------------------------------------------------------------------
def fingerprint_probe(images_uint8: np.ndarray, model_ids: np.ndarray, seed: int,
                      pool_side: int = 12, folds: int = 5) -> dict[str, Any] | None:
    """How well the source model can be told from images of ONE label: a cross-validated linear
    probe on block-averaged pixels (linear discriminant analysis with Ledoit-Wolf shrinkage:
    closed form, made for fewer images than features). None when fewer than two models, or
    fewer than three images of a model (every training fold must hold two of each), make a
    probe meaningless."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    models, counts = np.unique(np.asarray(model_ids), return_counts=True)
    if len(models) < 2 or counts.min() < 3:
        return None
    n_folds = int(min(folds, counts.min()))
    block = IMAGE_SIZE // pool_side
    x = images_uint8.astype(np.float32).reshape(len(images_uint8), pool_side, block, pool_side, block, 3)
    features = x.mean(axis=(2, 4)).reshape(len(images_uint8), -1)  # (N, 12*12*3)
    probe = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed % (2**32))
    # One BLAS thread: these matrices are small, and threads fighting for busy cores were ~10x
    # slower. A model with few images in a training fold can make sklearn warn about its
    # covariance; the pooled, shrunk covariance is still fine, so the warning is noise here.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Only one sample available", category=UserWarning)
        predicted = cross_val_predict(probe, features, np.asarray(model_ids), cv=cv)
    accuracy = float((predicted == np.asarray(model_ids)).mean())
    chance = float(counts.max() / counts.sum())  # majority-class rate (1 / models when balanced)
    return {"accuracy": accuracy, "chance": chance, "n_models": int(len(models)), "n_images": int(counts.sum()),
            "folds": n_folds}


# -- training all classifiers -----------------------------------------------------------------
def train_classifiers(pool_dir: str | Path, out: str | Path, store: str | Path | None = None, seed: int = 0,
                      device: str = "cpu", epochs: int | None = None, class_match_epochs: int | None = None,
                      overwrite: bool = False, recipe: Mapping[str, Any] | None = None) -> Path:
    """Train the per-class informativity CNNs on a labelled pool and the class-match CNN on the
    store's real frames; write the bundle (`out`, .pt) and its card (`out` with .json).
    `recipe`: `[classifiers]` recipe keys (recipe.RECIPE_KEYS) to use instead of the pool
    protocol's, e.g. {"augment": "flip"}."""
    out = Path(out)
    card_file = card_path(out)
    if out.exists() and not overwrite:  # before any work: records scored with it name its hash
        raise UserError(f"{out}: exists; pass --overwrite to replace it (records scored with it keep its sha256)")
    pool = open_pool(pool_dir)
    protocol = with_recipe(pool.protocol, recipe)
    sets, labels_meta = read_sets(pool)
    epochs = epochs or protocol.classifiers.epochs
    real_store = _real_frame_store(pool, protocol, store)
    state_dicts: dict[str, Any] = {}
    classes_card: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    real_frames: dict[str, int] = {}
    warning_lines: list[str] = []
    untrained: dict[str, str] = {}
    for class_key in progress(protocol.class_keys, desc="informativity classifiers", unit="class"):
        rows = sets[sets["class"] == class_key]
        if rows.empty:  # `label` found too few balanced images: this class gets no classifier
            reason = (labels_meta.get("classes", {}).get(class_key, {}).get("reason")
                      or "no images of this class in sets.csv")
            untrained[class_key] = reason
            warning_lines.append(f"warning: class {class_key}: no classifier ({reason})")
            print(warning_lines[-1])
            continue
        state_dicts[class_key], classes_card[class_key], calibration[class_key], warning = _train_class(
            pool, rows, class_key, protocol, labels_meta, seed=seed, epochs=epochs, device=device,
            real_store=real_store)
        real_frames[class_key] = calibration[class_key].pop("n_real_frames")
        if warning:
            print(warning)
            warning_lines.append(warning)
    if not classes_card:
        raise UserError(f"{pool.path}: no class has a labelled set to train on: {untrained}")
    class_match, class_match_card = _class_match_for_pool(pool, protocol, store, seed, device, class_match_epochs)
    spec = protocol.classifiers
    card = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
        "protocol": pool.protocol.ref(),  # the images' and labels' protocol; a recipe given here is in "recipe"
        "pool_hash": pool.pool_hash,
        "labels": {"source": labels_meta.get("source"), "sets_hash": labels_meta.get("sets_hash"),
                   # how many people (or the judge) labelled the images, and how well they agreed
                   "num_annotators": dig(labels_meta, "source", "num_annotators"),
                   "agreement": labels_meta.get("agreement")},
        "store": {"hash": pool.store_hash, "path": str(pool.store_path) if pool.store_path else None},
        "source": "trained",
        "classes": classes_card,
        "untrained": untrained,
        "class_match": class_match_card,
        "warnings": warning_lines,
        "seed": seed, "device": str(device),
        "code_version": code_version(), "created": now_iso(),
        # JSON card only (bundle.CARD_ONLY_KEYS): on each classifier's held-out test images
        "calibration": {"binning": BINNING, "on": "each classifier's held-out test images (the pool's test part)",
                        "classes": calibration},
    }
    if not is_paper_recipe(spec):  # only then: the paper's recipe leaves the bundle's bytes as they were
        card["recipe"] = {**recipe_of(spec), "real_frames": real_frames}
    bundle = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "source": "trained",
        "class_keys": list(classes_card),  # the trained classes (see card "untrained" for the others)
        "architecture": {"dropout": list(spec.dropout), "fc_dropout": float(spec.fc_dropout), "image_size": IMAGE_SIZE},
        "informativity": state_dicts,
        "class_match": class_match,
        "card": card,
    }
    write_bundle(out, card_file, bundle, card, overwrite=overwrite)
    _print_summary(card)
    return out


def _train_class(pool, rows, class_key: str, protocol, labels_meta: dict, *, seed: int, epochs: int,
                 device, real_store=None) -> tuple[dict, dict, dict, str | None]:
    """One class's CNN: (bundle entry, card entry, calibration on its test images with the
    number of real frames it was trained with, warning or None)."""
    spec = protocol.classifiers
    parts = {p: rows[rows["part"] == p] for p in ("train", "val", "test")}
    imgs = {p: pool.images[pool.index_of(df["image_id"])] for p, df in parts.items()}
    labs = {p: df["label"].to_numpy(dtype=np.int64) for p, df in parts.items()}
    real_rows = real_frame_rows(real_store, class_key, spec.real_frames_per_class, seed) \
        if real_store is not None else np.zeros(0, dtype=np.int64)
    if len(real_rows):  # real frames join the informative training images (recipe.py)
        imgs["train"] = np.concatenate([imgs["train"], np.asarray(real_store.frames[real_rows])])
        labs["train"] = np.concatenate([labs["train"], np.ones(len(real_rows), dtype=np.int64)])
    class_seed = item_seed(seed, f"informativity|{class_key}")
    model = InformativityCNN(2, spec.dropout, spec.fc_dropout)
    fit = fit_classifier(model, imgs["train"], labs["train"], imgs["val"], labs["val"], epochs=epochs,
                         batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum,
                         weight_decay=spec.weight_decay, seed=class_seed, device=device,
                         desc=f"classifier {class_key}", augment=spec.augment)
    model.load_state_dict(fit.state_dict)
    test_log_probs = _predict_log_probs(model, imgs["test"], device)  # (n_test, 2)
    test_pred = test_log_probs.argmax(1).numpy()
    calibration = reliability(labs["test"], decide(test_log_probs)[1]) | {"n_real_frames": int(len(real_rows))}
    summary = binary_summary(labs["test"], test_pred, protocol.metrics.confidence)
    counts = (rows.groupby(["model_id", "label"]).size().unstack(fill_value=0).reindex(columns=[0, 1], fill_value=0))
    probe = {}
    for label_value, label_name in ((1, "informative"), (0, "non_informative")):
        same = rows[rows["label"] == label_value]
        probe[label_name] = fingerprint_probe(pool.images[pool.index_of(same["image_id"])],
                                              same["model_id"].to_numpy(), seed=class_seed)
    probe_card = _probe_card(probe, spec.fingerprint_warn_ratio)
    warning = None
    if probe_card["warning"]:
        warning = (f"warning: class {class_key}: the source model is predictable from images of one label "
                   f"(probe accuracy {probe_card['accuracy']:.2f}, chance {probe_card['chance']:.2f}); "
                   f"counts per model are balanced across labels, but check the classifier does not key on "
                   f"model artefacts")
    card = {
        "name": protocol.classes[protocol.class_index(class_key)].name,
        **summary,
        "n_train": int(len(parts["train"])), "n_val": int(len(parts["val"])), "n_test": int(len(parts["test"])),
        "n_informative": int((rows["label"] == 1).sum()), "n_non_informative": int((rows["label"] == 0).sum()),
        "shortfall": labels_meta.get("classes", {}).get(class_key, {}).get("shortfall"),
        "epoch_chosen": fit.epoch_chosen,
        "epochs": epochs,
        "val_accuracy_chosen": fit.history[fit.epoch_chosen]["val_accuracy"],
        "seed": class_seed,
        "counts_per_model": {str(m): {"informative": int(r[1]), "non_informative": int(r[0])}
                             for m, r in counts.iterrows()},
        "fingerprint_probe": probe_card,
    }
    entry = {
        "state_dict": fit.state_dict,
        "test_labels": torch.tensor(labs["test"], dtype=torch.int64),
        "test_predictions": torch.tensor(test_pred, dtype=torch.int64),
        "test_image_ids": [str(i) for i in parts["test"]["image_id"]],
        "history": [dict(h) for h in fit.history],
    }
    return entry, card, calibration, warning


def _real_frame_store(pool, protocol, store):
    """The store whose training frames join the informative examples (the pool's, or `store`),
    or None when the recipe adds none."""
    if protocol.classifiers.real_frames_per_class <= 0:
        return None
    store_path = Path(store) if store is not None else pool.store_path
    if store_path is None:
        raise UserError(f"{pool.path}: real_frames_per_class needs the store the pool came from; pass --data STORE")
    real = open_store(store_path)
    if tuple(real.protocol.class_keys) != tuple(protocol.class_keys):
        raise UserError(f"{store_path}: classes {real.protocol.class_keys} differ from the pool's "
                        f"{protocol.class_keys}")
    _check_uint8_images(np.asarray(real.frames[:1]), str(real.path / "frames.npy"))
    if real.store_hash != pool.store_hash:
        logger.info(f"note: real training frames from store {real.store_hash}, the pool came from {pool.store_hash}")
    return real


def _class_match_for_pool(pool, protocol, store, seed: int, device, epochs: int | None):
    """The class-match classifier learns the five classes from REAL frames of the store."""
    epochs = epochs if epochs is not None else protocol.classifiers.class_match_epochs
    if epochs <= 0:
        return None, None
    store_path = Path(store) if store is not None else pool.store_path
    real = open_store(store_path)
    if tuple(real.protocol.class_keys) != tuple(protocol.class_keys):
        raise UserError(f"{store_path}: classes {real.protocol.class_keys} differ from the pool's "
                        f"{protocol.class_keys}")
    if real.store_hash != pool.store_hash:
        logger.info(f"note: class-match classifier trained on store {real.store_hash}, the pool came from "
                    f"{pool.store_hash}")
    return train_class_match(real, epochs=epochs, seed=seed, device=device, spec=protocol.classifiers,
                             confidence=protocol.metrics.confidence)


def train_class_match(store, *, epochs: int, seed: int, device, spec, confidence: float = 0.95):
    """5-class CNN on the store's real train frames; epoch chosen on val frames, accuracy on
    test frames. Returns (bundle entry, card entry)."""
    frames = store.frames
    _check_uint8_images(frames[:1], str(store.path / "frames.npy"))
    idx = {s: store.split_indices(s) for s in ("train", "val", "test")}
    for s, ix in idx.items():
        if len(ix) == 0:
            raise UserError(f"{store.path}: no {s} segments; the class-match classifier needs train, val and test")
    y = store.class_index
    class_match_seed = item_seed(seed, "class_match")
    model = InformativityCNN(len(store.protocol.class_keys), spec.dropout, spec.fc_dropout)
    fit = fit_classifier(model, np.asarray(frames[idx["train"]]), y[idx["train"]], np.asarray(frames[idx["val"]]),
                         y[idx["val"]], epochs=epochs, batch_size=spec.batch_size, lr=spec.lr,
                         momentum=spec.momentum, weight_decay=spec.weight_decay, seed=class_match_seed,
                         device=device, desc="class-match classifier")
    model.load_state_dict(fit.state_dict)
    pred = _predict_log_probs(model, np.asarray(frames[idx["test"]]), device).argmax(1).numpy()
    correct = int((pred == y[idx["test"]]).sum())
    n_test = len(idx["test"])
    entry = {"state_dict": fit.state_dict, "num_classes": len(store.protocol.class_keys),
             "class_keys": list(store.protocol.class_keys),  # output i is the store's class i
             "history": [dict(h) for h in fit.history]}
    card = {"test_accuracy": correct / n_test, "accuracy_ci": wilson_interval(correct, n_test, confidence),
            "n_train": int(len(idx["train"])), "n_val": int(len(idx["val"])), "n_test": int(n_test),
            "epoch_chosen": fit.epoch_chosen, "epochs": epochs, "seed": class_match_seed,
            "store_hash": store.store_hash, "trained_on": "real frames", "class_keys": list(store.protocol.class_keys)}
    return entry, card


def _probe_card(probe: dict[str, dict | None], warn_ratio: float) -> dict[str, Any]:
    """Per-class probe summary: the worse (higher) of the two labels, and both in detail."""
    done = {k: v for k, v in probe.items() if v is not None}
    if not done:
        return {"accuracy": None, "chance": None, "warning": False, "by_label": probe,
                "warn_ratio": warn_ratio}
    worst = max(done.values(), key=lambda v: v["accuracy"] / v["chance"])
    return {"accuracy": worst["accuracy"], "chance": worst["chance"],
            "warning": bool(worst["accuracy"] > warn_ratio * worst["chance"]),
            "by_label": probe, "warn_ratio": warn_ratio}


def write_bundle(out: Path, card_path: Path, bundle: dict, card: dict, overwrite: bool) -> None:
    if out.exists() and not out.is_file():
        raise UserError(f"{out}: exists and is not a file")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    # The .pt first, then the card: a card always describes a complete bundle file. The card
    # inside the .pt leaves out the creation time (the JSON card beside it keeps it), so the same
    # training gives the same bytes and the same sha256, which records and reports name.
    bundle = dict(bundle, card={k: v for k, v in bundle["card"].items() if k not in CARD_ONLY_KEYS}) \
        if isinstance(bundle.get("card"), dict) else bundle
    atomic_torch_save(out, bundle)
    card = dict(card, bundle_sha256=sha256_file(out))
    atomic_write_json(card_path, card)


def _print_summary(card: dict) -> None:
    def pct(v):
        return percent(v, width=5, missing="  n/a ")

    print(f"classifiers ({card['source']}):")
    for key, c in card["classes"].items():
        ci = c.get("accuracy_ci")
        ci_text = f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else ""
        ece = dig(card, "calibration", "classes", key, "ece")
        ece_text = "  ECE n/a " if ece is None else f"  ECE {ece:.3f}"
        print(f"  {key:16s} accuracy {pct(c.get('test_accuracy'))} {ci_text}  Se {pct(c.get('sensitivity'))}  "
              f"Sp {pct(c.get('specificity'))}{ece_text}  n_test {c.get('n_test')}")
    if card.get("calibration"):
        print("  ECE: expected calibration error of P(informative) on the test images, 10 equal-width bins")
    if card.get("recipe"):
        r = card["recipe"]
        print(f"  recipe: real_frames_per_class {r['real_frames_per_class']}, augment {r['augment']}")
    if card.get("class_match"):
        print(f"  class-match (real frames) accuracy {pct(card['class_match']['test_accuracy'])}")


