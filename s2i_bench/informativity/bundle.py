"""The classifier bundle: the five informativity CNNs and the class-match CNN, read back.

This is what scoring needs of the classifiers (`load_bundle` -> `Bundle`); training them is
`classifiers.py`, importing the authors' five is `authors.py`. The bundle is one `.pt` file (a
dict of tensors and plain values, loaded with `weights_only=True`) plus a JSON card beside it
(docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i_bench.errors import UserError
from s2i_bench.fileio import dig, sha256_file, to_jsonable
from s2i_bench.safeload import load_weights_only

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


HALF_UP = float(np.nextafter(0.5, 1.0))  # the smallest probability above 1/2


def decide(log_probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) log-probabilities of an informativity CNN -> (decision bool (N,), P(informative)
    float64 (N,)). The decision is the argmax (a tie: not informative); the probability is the
    softmax of the two log-probabilities in float64, kept on its decision's side of 1/2, so that
    `decision == (probability > 0.5)` holds exactly, image by image (the one threshold rule)."""
    lp = log_probs.detach().cpu()
    decision = (lp.argmax(1) == 1).numpy()
    p = torch.sigmoid(lp[:, 1].double() - lp[:, 0].double()).numpy()  # exp(l1) / (exp(l0) + exp(l1))
    # Rounding can put a near-tie on the wrong side of 1/2 (sigmoid(0) is 1/2 for a tie the
    # argmax calls 0): the decision decides, the probability moves by at most one ulp.
    p = np.where(decision, np.maximum(p, HALF_UP), np.minimum(p, 0.5))
    return decision, p


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
    def _log_probs(self, model: InformativityCNN, images) -> torch.Tensor:
        """(N, 3, 96, 96) -> (N, outputs) float32 log-probabilities on the CPU, in batches."""
        t = self._images(images)
        out = []
        for start in range(0, t.shape[0], self.batch_size):
            x = t[start:start + self.batch_size].to(self.device, dtype=torch.float32)
            out.append(model(x).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, model.num_outputs)

    def _run(self, model: InformativityCNN, images) -> np.ndarray:
        return self._log_probs(model, images).argmax(1).numpy()

    def _model(self, class_key: str) -> InformativityCNN:
        if class_key not in self._informative:
            raise UserError(f"{self.path}: no classifier for class {class_key!r} (has: {', '.join(self.class_keys)})")
        return self._informative[class_key]

    def predict_informative(self, images, class_key: str) -> np.ndarray:
        """(N, 3, 96, 96) float in [-1, 1] -> bool (N,): True where classifier `class_key` says informative."""
        return self.informative_scores(images, class_key)[0]

    def informative_scores(self, images, class_key: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, 96, 96) float in [-1, 1] -> (decision bool (N,), P(informative) float64 (N,)),
        both from one forward pass (`decide`): the decision is exactly `probability > 0.5`."""
        return decide(self._log_probs(self._model(class_key), images))

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


# What the JSON card has beyond the card inside the .pt: its hash, the creation time, and the
# classifiers' calibration on their test sets (measured when they were trained; kept out of the
# .pt so that the bundle's bytes, which records name, stay those of the weights and outcomes).
CARD_ONLY_KEYS = ("bundle_sha256", "created", "calibration")


def _check_card_beside(path: Path, inner: dict) -> None:
    """The JSON card beside a bundle must describe this bundle file (its sha256) and say what the
    card inside the .pt says (the .pt is what its sha256 covers): a bundle replaced after
    training, or a card edited afterwards (another sensitivity, say), is refused."""
    card_file = path.with_suffix(".json")
    if not card_file.is_file():
        return
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{card_file}: cannot read the bundle's card ({e})") from None
    if not isinstance(card, dict):
        raise UserError(f"{card_file}: not a bundle card (expected a JSON object)")
    claimed = card.get("bundle_sha256")
    if claimed and claimed != sha256_file(path):
        raise UserError(f"{path}: not the bundle its card {card_file.name} describes (sha256 differs): the bundle was "
                        f"replaced or changed after training; train it again or restore the file")
    if isinstance(inner, dict) and inner:
        mine = {k: v for k, v in card.items() if k not in CARD_ONLY_KEYS}
        theirs = {k: v for k, v in to_jsonable(inner).items() if k not in CARD_ONLY_KEYS}
        if mine != theirs:
            field = _first_difference(mine, theirs)
            raise UserError(f"{card_file}: says {field} differently from the card inside {path.name}: the card was "
                            f"edited after training; restore it (or delete it: the card inside the bundle is used)")


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
    return where or "its content"


def _check_card_numbers(path: Path, card: dict, outcomes: dict) -> None:
    """Sensitivity and specificity in the card are those of the stored test outcomes."""
    for key, pair in outcomes.items():
        c = dig(card, "classes", key) or {}
        if pair is None:
            continue
        labels, preds = pair
        tp, fn = int(((labels == 1) & (preds == 1)).sum()), int(((labels == 1) & (preds == 0)).sum())
        tn, fp = int(((labels == 0) & (preds == 0)).sum()), int(((labels == 0) & (preds == 1)).sum())
        for name, value in (("sensitivity", tp / (tp + fn) if tp + fn else None),
                            ("specificity", tn / (tn + fp) if tn + fp else None)):
            if c.get(name) is not None and (value is None or abs(float(c[name]) - value) > 1e-9):
                raise UserError(f"{path} [{key}]: the card's {name} {c[name]!r} is not that of the bundle's own test "
                                f"outcomes ({value!r}): the bundle was edited")


def load_bundle(path: str | Path, device: str = "cpu") -> Bundle:
    """Read a bundle (the .pt file, or its .json card with the .pt beside it). Loaded with
    `weights_only=True`; every problem names the file."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".pt")
    if not path.is_file():
        raise UserError(f"{path}: classifier bundle not found (make one with `s2i-bench train-classifiers`)")
    raw = load_weights_only(path, "classifier bundle")
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
    if not isinstance(card, dict):
        raise UserError(f"{path}: the bundle's card is not a mapping")
    _check_card_numbers(path, card, outcomes)
    _check_card_beside(path, card)
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


def card_path(out: Path) -> Path:
    """The JSON card beside a bundle file."""
    if out.suffix == ".json":
        raise UserError(f"{out}: the bundle is the .pt file; its .json card is written beside it")
    return out.with_suffix(".json")
