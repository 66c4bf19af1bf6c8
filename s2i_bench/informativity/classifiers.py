"""The informativity classifiers (SPEC section 5) and the class-match classifier, as one bundle.

`train-classifiers` reads a labelled pool (`pool.py`, `labels.py`) and trains, per class, the
paper's small binary CNN: informative (1) vs non-informative (0) generated images of that class.
The epoch is chosen on a validation part carved from the training images; accuracy,
sensitivity and specificity are measured on the held-out test images only, and the per-image
test outcomes are kept in the bundle so scoring can bootstrap the prevalence correction.

It also trains a 5-class classifier on REAL training frames of the store (same architecture,
five outputs): the class-match rate the paper rejected (section 5.3), shown beside
informativity so its inflation is visible.

The bundle is one `.pt` file (a dict of tensors and plain values, loadable with
`weights_only=True`) plus a JSON card beside it (docs/architecture.md). `load_bundle` reads it.
`import_authors_classifiers` turns the authors' five state dicts into the same format.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_torch_save, atomic_write_json, progress, sha256_file
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.seeding import item_seed

BUNDLE_FORMAT = "s2i-bench-classifiers"
BUNDLE_FORMAT_VERSION = 1
IMAGE_SIZE = 96  # the architecture reduces exactly 96x96 to (32, 1, 1)
DEFAULT_DROPOUT = (0.1, 0.2, 0.3, 0.4, 0.5)
DEFAULT_FC_DROPOUT = 0.5


# -- the network ------------------------------------------------------------------------------
class InformativityCNN(nn.Module):
    """SPEC section 5: five convs and two FC layers; 33,610 parameters with two outputs.

    Layer names follow the authors' code (`conv1`..`conv5`, `fc2`, `fc3`, with `_bn` / `_drop`
    suffixes; their `fc1` is defined but never used, so it is absent here), so their state
    dicts load by name. With `num_outputs=5` the same network is the class-match classifier.
    """

    def __init__(self, num_outputs: int = 2, dropout=DEFAULT_DROPOUT, fc_dropout: float = DEFAULT_FC_DROPOUT):
        super().__init__()
        assert len(dropout) == 5, "one dropout rate per conv layer"
        # (in, out, kernel): every conv has stride 2 and no padding: 96 -> 46 -> 22 -> 10 -> 4 -> 1
        convs = [(3, 12, 5), (12, 32, 3), (32, 32, 3), (32, 32, 3), (32, 32, 3)]
        for i, ((c_in, c_out, k), p) in enumerate(zip(convs, dropout), start=1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, k, stride=2))
            setattr(self, f"conv{i}_bn", nn.BatchNorm2d(c_out))
            setattr(self, f"conv{i}_drop", nn.Dropout2d(p))
        self.fc2 = nn.Linear(32, 32)
        self.fc2_bn = nn.BatchNorm1d(32)
        self.fc2_drop = nn.Dropout(fc_dropout)
        self.fc3 = nn.Linear(32, num_outputs)
        self.num_outputs = num_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 96, 96) in [-1, 1]
        for i in range(1, 6):
            conv, bn, drop = (getattr(self, f"conv{i}{s}") for s in ("", "_bn", "_drop"))
            x = drop(F.relu(bn(conv(x))))  # (B,12,46,46) (B,32,22,22) (B,32,10,10) (B,32,4,4) (B,32,1,1)
        x = x.flatten(1)  # (B, 32)
        x = self.fc2_drop(F.relu(self.fc2_bn(self.fc2(x))))  # (B, 32)
        return F.log_softmax(self.fc3(x), dim=1)  # (B, num_outputs) log-probabilities


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- images -----------------------------------------------------------------------------------
def _to_net(images_uint8: np.ndarray, device) -> torch.Tensor:
    """(N, 96, 96, 3) uint8 -> (N, 3, 96, 96) float in [-1, 1] on device (SPEC section 3)."""
    t = torch.from_numpy(np.array(images_uint8, dtype=np.uint8)).to(device)  # a writable copy
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


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
        out.append(model(_to_net(images_uint8[start:start + batch_size], device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.num_outputs)


def fit_classifier(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                   val_images: np.ndarray, val_labels: np.ndarray, *, epochs: int, batch_size: int,
                   lr: float, momentum: float, weight_decay: float, seed: int, device="cpu",
                   desc: str = "train") -> FitResult:
    """One plain SGD loop from freshly initialised weights. After each epoch the model is scored on the validation images; the
    state of the best epoch (highest validation accuracy, ties: lower validation loss, then the
    earlier epoch) is returned. The test images are never seen here."""
    if len(train_images) < 2 or len(val_images) < 1:
        raise UserError(f"{desc}: too few images to train ({len(train_images)} train, {len(val_images)} validation)")
    torch.manual_seed(seed)  # weight init and dropout masks both come from the seed
    for module in model.modules():  # (re)initialise here, so the seed fixes the starting weights
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model.to(device)
    shuffle_rng = np.random.default_rng(seed)
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
            x = _to_net(train_images[idx], device)  # (B, 3, 96, 96)
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


# -- statistics -------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (None when n = 0)."""
    if n == 0:
        return None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def binary_summary(labels: np.ndarray, predictions: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy with its Wilson interval, sensitivity, specificity and the confusion counts."""
    labels = np.asarray(labels).astype(int)
    predictions = np.asarray(predictions).astype(int)
    tp = int(((labels == 1) & (predictions == 1)).sum())
    fn = int(((labels == 1) & (predictions == 0)).sum())
    tn = int(((labels == 0) & (predictions == 0)).sum())
    fp = int(((labels == 0) & (predictions == 1)).sum())
    n = tp + fn + tn + fp
    return {
        "test_accuracy": (tp + tn) / n if n else None,
        "accuracy_ci": wilson_interval(tp + tn, n, confidence),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
    }


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
                      overwrite: bool = True) -> Path:
    """Train the per-class informativity CNNs on a labelled pool and the class-match CNN on the
    store's real frames; write the bundle (`out`, .pt) and its card (`out` with .json)."""
    from s2i_bench.informativity.labels import read_sets
    from s2i_bench.informativity.pool import open_pool

    out = Path(out)
    card_path = _card_path(out)
    pool = open_pool(pool_dir)
    protocol = pool.protocol
    spec = protocol.classifiers
    sets, labels_meta = read_sets(pool)
    epochs = epochs or spec.epochs
    class_match_epochs = class_match_epochs if class_match_epochs is not None else spec.class_match_epochs
    confidence = protocol.metrics.confidence

    state_dicts: dict[str, Any] = {}
    classes_card: dict[str, Any] = {}
    warning_lines: list[str] = []
    untrained: dict[str, str] = {}
    for class_key in progress(protocol.class_keys, desc="informativity classifiers", unit="class"):
        rows = sets[sets["class"] == class_key]
        if rows.empty:  # `label` found too few balanced images: this class gets no classifier
            reason = (labels_meta.get("classes", {}).get(class_key, {}).get("reason")
                      or "no images of this class in sets.csv")
            untrained[class_key] = reason
            msg = f"warning: class {class_key}: no classifier ({reason})"
            print(msg)
            warning_lines.append(msg)
            continue
        parts = {p: rows[rows["part"] == p] for p in ("train", "val", "test")}
        imgs = {p: pool.images[pool.index_of(df["image_id"])] for p, df in parts.items()}
        labs = {p: df["label"].to_numpy(dtype=np.int64) for p, df in parts.items()}
        class_seed = item_seed(seed, f"informativity|{class_key}")
        model = InformativityCNN(2, spec.dropout, spec.fc_dropout)
        fit = fit_classifier(model, imgs["train"], labs["train"], imgs["val"], labs["val"], epochs=epochs,
                             batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum,
                             weight_decay=spec.weight_decay, seed=class_seed, device=device,
                             desc=f"classifier {class_key}")
        model.load_state_dict(fit.state_dict)
        test_pred = _predict_log_probs(model, imgs["test"], device).argmax(1).numpy()
        summary = binary_summary(labs["test"], test_pred, confidence)

        counts = (rows.groupby(["model_id", "label"]).size().unstack(fill_value=0)
                  .reindex(columns=[0, 1], fill_value=0))
        counts_per_model = {str(m): {"informative": int(r[1]), "non_informative": int(r[0])}
                            for m, r in counts.iterrows()}
        probe = {}
        for label_value, label_name in ((1, "informative"), (0, "non_informative")):
            same = rows[rows["label"] == label_value]
            probe[label_name] = fingerprint_probe(pool.images[pool.index_of(same["image_id"])],
                                                  same["model_id"].to_numpy(), seed=class_seed)
        probe_card = _probe_card(probe, spec.fingerprint_warn_ratio)
        if probe_card["warning"]:
            msg = (f"warning: class {class_key}: the source model is predictable from images of one label "
                   f"(probe accuracy {probe_card['accuracy']:.2f}, chance {probe_card['chance']:.2f}); "
                   f"counts per model are balanced across labels, but check the classifier does not key on "
                   f"model artefacts")
            print(msg)
            warning_lines.append(msg)

        class_label = labels_meta.get("classes", {}).get(class_key, {})
        classes_card[class_key] = {
            "name": protocol.classes[protocol.class_index(class_key)].name,
            **summary,
            "n_train": int(len(parts["train"])), "n_val": int(len(parts["val"])), "n_test": int(len(parts["test"])),
            "n_informative": int((rows["label"] == 1).sum()), "n_non_informative": int((rows["label"] == 0).sum()),
            "shortfall": class_label.get("shortfall"),
            "epoch_chosen": fit.epoch_chosen,
            "epochs": epochs,
            "val_accuracy_chosen": fit.history[fit.epoch_chosen]["val_accuracy"],
            "seed": class_seed,
            "counts_per_model": counts_per_model,
            "fingerprint_probe": probe_card,
        }
        state_dicts[class_key] = {
            "state_dict": fit.state_dict,
            "test_labels": torch.tensor(labs["test"], dtype=torch.int64),
            "test_predictions": torch.tensor(test_pred, dtype=torch.int64),
            "test_image_ids": [str(i) for i in parts["test"]["image_id"]],
            "history": [dict(h) for h in fit.history],
        }

    if not classes_card:
        raise UserError(f"{pool.path}: no class has a labelled set to train on: {untrained}")

    # The class-match classifier learns the five classes from REAL frames of the store.
    from s2i_bench.data.store import open_store

    store_path = Path(store) if store is not None else Path(pool.meta["store"]["path"])
    class_match, class_match_card = None, None
    if class_match_epochs > 0:
        real = open_store(store_path)
        if tuple(real.protocol.class_keys) != tuple(protocol.class_keys):
            raise UserError(f"{store_path}: classes {real.protocol.class_keys} differ from the pool's "
                            f"{protocol.class_keys}")
        if real.store_hash != pool.meta["store"]["hash"]:
            print(f"note: class-match classifier trained on store {real.store_hash}, the pool came from "
                  f"{pool.meta['store']['hash']}")
        class_match, class_match_card = train_class_match(real, epochs=class_match_epochs, seed=seed,
                                                          device=device, spec=spec, confidence=confidence)

    card = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
        "protocol": protocol.ref(),
        "pool_hash": pool.meta["pool_hash"],
        "labels": {"source": labels_meta.get("source"), "sets_hash": labels_meta.get("sets_hash")},
        "store": {"hash": pool.meta["store"]["hash"], "path": pool.meta["store"]["path"]},
        "source": "trained",
        "classes": classes_card,
        "untrained": untrained,
        "class_match": class_match_card,
        "warnings": warning_lines,
        "seed": seed, "device": str(device),
        "code_version": code_version(), "created": now_iso(),
    }
    bundle = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "source": "trained",
        "class_keys": list(classes_card),  # the trained classes (see card "untrained" for the others)
        "architecture": {"dropout": list(spec.dropout), "fc_dropout": float(spec.fc_dropout), "image_size": IMAGE_SIZE},
        "informativity": state_dicts,
        "class_match": class_match,
        "card": card,
    }
    _write_bundle(out, card_path, bundle, card, overwrite=overwrite)
    _print_summary(card)
    return out


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


def _card_path(out: Path) -> Path:
    if out.suffix == ".json":
        raise UserError(f"{out}: the bundle is the .pt file; its .json card is written beside it")
    return out.with_suffix(".json")


def _write_bundle(out: Path, card_path: Path, bundle: dict, card: dict, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    # The .pt first, then the card: a card always describes a complete bundle file.
    atomic_torch_save(out, bundle)
    card = dict(card, bundle_sha256=sha256_file(out))
    atomic_write_json(card_path, card)


def _print_summary(card: dict) -> None:
    def pct(v):
        return "  n/a " if v is None else f"{100 * v:5.1f}%"

    print(f"classifiers ({card['source']}):")
    for key, c in card["classes"].items():
        ci = c.get("accuracy_ci")
        ci_text = f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else ""
        print(f"  {key:16s} accuracy {pct(c.get('test_accuracy'))} {ci_text}  Se {pct(c.get('sensitivity'))}  "
              f"Sp {pct(c.get('specificity'))}  n_test {c.get('n_test')}")
    if card.get("class_match"):
        print(f"  class-match (real frames) accuracy {pct(card['class_match']['test_accuracy'])}")


# -- reading a bundle -------------------------------------------------------------------------
@dataclass
class Bundle:
    """A loaded bundle. Predictions run in eval mode on `device`, in batches."""

    path: Path
    card: dict[str, Any]
    class_keys: tuple[str, ...]
    source: str
    device: Any
    _informative: dict[str, InformativityCNN] = field(repr=False)
    _class_match: InformativityCNN | None = field(repr=False)
    _outcomes: dict[str, tuple[np.ndarray, np.ndarray] | None] = field(repr=False)
    batch_size: int = 256

    def _images(self, images) -> torch.Tensor:
        t = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
        if t.ndim != 4 or tuple(t.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must be (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in [-1, 1], got {tuple(t.shape)}")
        return t

    @torch.no_grad()
    def _run(self, model: nn.Module, images) -> np.ndarray:
        t = self._images(images)
        out = []
        for start in range(0, t.shape[0], self.batch_size):
            x = t[start:start + self.batch_size].to(self.device, dtype=torch.float32)
            out.append(model(x).argmax(1).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)

    def _model(self, class_key: str) -> InformativityCNN:
        if class_key not in self._informative:
            raise UserError(f"{self.path}: no classifier for class {class_key!r} (has: {', '.join(self.class_keys)})")
        return self._informative[class_key]

    def predict_informative(self, images, class_key: str) -> np.ndarray:
        """(N, 3, 96, 96) float in [-1, 1] -> bool (N,): True where classifier `class_key` says informative."""
        return self._run(self._model(class_key), images) == 1

    def predict_class(self, images) -> np.ndarray | None:
        """(N, 3, 96, 96) float in [-1, 1] -> class index (N,) int64 by the real-frame classifier, or None."""
        if self._class_match is None:
            return None
        return self._run(self._class_match, images).astype(np.int64)

    def test_outcomes(self, class_key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(labels, predictions), int (n_test,), on the held-out test images; None when unknown."""
        self._model(class_key)
        return self._outcomes.get(class_key)

    def sensitivity(self, class_key: str) -> float | None:
        self._model(class_key)
        return self.card["classes"][class_key].get("sensitivity")

    def specificity(self, class_key: str) -> float | None:
        self._model(class_key)
        return self.card["classes"][class_key].get("specificity")


def load_bundle(path: str | Path, device: str = "cpu") -> Bundle:
    """Read a bundle (the .pt file, or its .json card with the .pt beside it). Loaded with
    `weights_only=True`; every problem names the file."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".pt")
    if not path.is_file():
        raise UserError(f"{path}: classifier bundle not found (make one with `s2i-bench train-classifiers`)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code, a truncated file, not a torch file at all
        raise UserError(f"{path}: cannot load as a classifier bundle with weights_only=True "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{path}: not an s2i-bench classifier bundle")
    if raw.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise UserError(f"{path}: bundle format version {raw.get('format_version')} is not supported "
                        f"(this s2i-bench reads version {BUNDLE_FORMAT_VERSION})")
    try:
        class_keys = tuple(raw["class_keys"])
        arch = raw["architecture"]
        entries = raw["informativity"]
        card = raw["card"]
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: bundle is missing {e}") from None
    informative, outcomes = {}, {}
    for key in class_keys:
        if key not in entries:
            raise UserError(f"{path}: no classifier for class {key!r}")
        model = InformativityCNN(2, tuple(arch["dropout"]), float(arch["fc_dropout"]))
        _load_state(model, entries[key]["state_dict"], f"{path} [{key}]")
        informative[key] = model.to(device).eval()
        labels, preds = entries[key].get("test_labels"), entries[key].get("test_predictions")
        if labels is None or preds is None:
            outcomes[key] = None
        else:
            labels, preds = labels.numpy().astype(np.int64), preds.numpy().astype(np.int64)
            if labels.shape != preds.shape or not set(np.unique(labels)) | set(np.unique(preds)) <= {0, 1}:
                raise UserError(f"{path} [{key}]: test labels/predictions must be two equal-length 0/1 vectors")
            outcomes[key] = (labels, preds)
    class_match = None
    if raw.get("class_match") is not None:
        cm = raw["class_match"]
        class_match = InformativityCNN(int(cm["num_classes"]), tuple(arch["dropout"]), float(arch["fc_dropout"]))
        _load_state(class_match, cm["state_dict"], f"{path} [class_match]")
        class_match = class_match.to(device).eval()
    return Bundle(path=path, card=card, class_keys=class_keys, source=str(raw.get("source")), device=device,
                  _informative=informative, _class_match=class_match, _outcomes=outcomes)


def _load_state(model: nn.Module, state: Any, where: str) -> None:
    if not isinstance(state, dict):
        raise UserError(f"{where}: state dict is not a dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise UserError(f"{where}: state dict does not fit the classifier (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(expected[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise UserError(f"{where}: {k} has shape {shape}, expected {tuple(expected[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UserError(f"{where}: {k} contains NaN or infinity")
    model.load_state_dict(state)


# -- the authors' classifiers -----------------------------------------------------------------
def import_authors_classifiers(files: dict[str, str | Path], out: str | Path, protocol,
                               store: str | Path | None = None, seed: int = 0, device: str = "cpu",
                               overwrite: bool = True) -> Path:
    """Wrap the authors' five classifier state dicts (one per class) into a bundle.

    Their layer names match `InformativityCNN` (`conv1`..`conv5`, `fc2`, `fc3`, `_bn`
    suffixes); `fc1` is defined in their code but unused, so its weights are dropped. A
    `module.` prefix (DataParallel) is stripped. Sensitivity, specificity and test outcomes are
    unknown (null). With `store`, the class-match classifier is trained on its real frames.
    """
    from s2i_bench.protocol import load_protocol

    protocol = load_protocol(protocol)
    out = Path(out)
    card_path = _card_path(out)
    unknown = sorted(set(files) - set(protocol.class_keys))
    if unknown:
        raise UserError(f"unknown class {unknown[0]!r} for the authors' classifiers "
                        f"(valid: {', '.join(protocol.class_keys)})")
    missing = [k for k in protocol.class_keys if k not in files]
    if missing:
        raise UserError(f"the authors' classifiers: no file for class(es) {', '.join(missing)} "
                        f"(give one per class as CLASS=FILE)")
    spec = protocol.classifiers
    entries, classes_card = {}, {}
    for key in protocol.class_keys:
        path = Path(files[key])
        state = _read_authors_state(path)
        model = InformativityCNN(2, spec.dropout, spec.fc_dropout)
        _load_state(model, state, str(path))
        entries[key] = {"state_dict": model.state_dict(), "test_labels": None, "test_predictions": None,
                        "test_image_ids": None, "history": []}
        classes_card[key] = {
            "name": protocol.classes[protocol.class_index(key)].name,
            "test_accuracy": None, "accuracy_ci": None, "sensitivity": None, "specificity": None,
            "confusion": None, "n_train": None, "n_val": None, "n_test": None, "epoch_chosen": None,
            "counts_per_model": None, "fingerprint_probe": None,
            "file": {"path": str(path), "sha256": sha256_file(path)},
        }
    class_match, class_match_card = None, None
    if store is not None:
        from s2i_bench.data.store import open_store

        real = open_store(store)
        class_match, class_match_card = train_class_match(real, epochs=spec.class_match_epochs, seed=seed,
                                                          device=device, spec=spec,
                                                          confidence=protocol.metrics.confidence)
    card = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
        "protocol": protocol.ref(), "pool_hash": None,
        "store": {"hash": class_match_card["store_hash"]} if class_match_card else None,
        "source": "authors", "classes": classes_card, "class_match": class_match_card, "warnings": [],
        "seed": seed, "code_version": code_version(), "created": now_iso(),
    }
    bundle = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "source": "authors",
        "class_keys": list(protocol.class_keys),
        "architecture": {"dropout": list(spec.dropout), "fc_dropout": float(spec.fc_dropout), "image_size": IMAGE_SIZE},
        "informativity": entries, "class_match": class_match, "card": card,
    }
    _write_bundle(out, card_path, bundle, card, overwrite=overwrite)
    print(f"imported the authors' classifiers into {out} (sensitivity and specificity unknown)")
    return out


def _read_authors_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: cannot load with weights_only=True ({type(e).__name__}); save the model's "
                        f"state_dict() rather than the pickled model") from None
    if isinstance(raw, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if isinstance(raw.get(wrapper), dict):
                raw = raw[wrapper]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    state = {}
    for k, v in raw.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.split(".")[0] in ("fc1", "fc1_bn"):  # defined but unused in the authors' network
            continue
        state[k] = v
    return state
