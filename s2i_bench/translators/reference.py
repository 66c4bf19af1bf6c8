"""Reference translators: what the informativity scale means at its ends (beyond the paper).

    s2i-bench score reference:real-frame        the test segment's own centre frame
    s2i-bench score reference:retrieval         the training frame whose sound is nearest
    s2i-bench score reference:class-prototype   the mean training frame of the predicted class
    s2i-bench score reference:random-frame      a training frame of any class

- `real-frame` is the ceiling the classifiers allow: a real frame of the sound's own video.
- `retrieval` copies: the training segment whose sound is nearest to the test sound in a fixed
  audio embedding (per-Mel-band mean and standard deviation of the normalised log-Mel over the
  second, 256 numbers, each standardised with the training sounds' statistics; Euclidean
  distance, ties to the earlier row). The paper argues S2I must do more than retrieval.
- `class-prototype` knows the class and nothing else: a sound classifier (scikit-learn logistic
  regression on the same embedding, fitted on the training sounds) picks a class, and the image is
  the pixel-wise mean of that class's training frames.
- `random-frame` is chance: per image, a training frame drawn uniformly from all classes by the
  image's seed.

They are built from the store's training split only (never its test sounds, apart from the
test sound itself for real-frame), are deterministic given the image seeds, and are recorded
like any translator (`kind` "reference", the name, and a hash of what they were built from).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.translators.base import Batch, StoreTranslator

NAMES = ("real-frame", "retrieval", "class-prototype", "random-frame")
PREFIX = "reference:"
VERSION = "1"


def is_reference(spec: str) -> bool:
    return str(spec).startswith(PREFIX)


def parse(spec: str) -> str:
    name = str(spec)[len(PREFIX):] if is_reference(spec) else str(spec)
    if name not in NAMES:
        import difflib

        close = difflib.get_close_matches(name, NAMES, n=1)
        hint = f"; did you mean {PREFIX}{close[0]}?" if close else ""
        raise UserError(f"unknown reference translator {spec!r}{hint} (valid: {', '.join(PREFIX + n for n in NAMES)})")
    return name


def audio_embedding(log_mel) -> np.ndarray:
    """(B, 1, n_mels, frames) normalised log-Mel -> (B, 2 * n_mels) float64: each band's mean and
    standard deviation over the segment."""
    x = np.asarray(log_mel, dtype=np.float64)[:, 0]  # (B, n_mels, frames)
    return np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1)


def _train_embeddings(store, rows: np.ndarray, block: int = 1024) -> np.ndarray:
    out = []
    for i in range(0, len(rows), block):
        r = rows[i:i + block]
        out.append(audio_embedding(store.normalise(np.asarray(store.spectrograms[r], dtype=np.float32))))
    return np.concatenate(out) if out else np.zeros((0, 2 * store.spectrograms.shape[2]))


class ReferenceTranslator(StoreTranslator):
    """One of NAMES on a store (see the module docstring)."""

    def __init__(self, name: str, store, device: str = "cpu"):
        self.name = parse(name)
        self.store = store
        train = store.split_indices("train")
        if len(train) == 0:
            raise UserError(f"{store.path}: no training segments to build {PREFIX}{self.name} from")
        self.train_rows = train
        built = {"store": store.store_hash, "name": self.name, "version": VERSION}
        info = {"path": PREFIX + self.name, "kind": "reference", "name": self.name, "version": VERSION,
                "sha256": hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest(),
                "built_from": {"store": store.store_hash, "split": "train", "num_segments": int(len(train))}}
        inputs = {"real-frame": (), "random-frame": (), "retrieval": ("log_mel",),
                  "class-prototype": ("log_mel",)}[self.name]
        super().__init__(info, device=device, inputs=inputs)
        if self.name in ("retrieval", "class-prototype"):
            emb = _train_embeddings(store, train)  # (N_train, 256)
            self.mean, self.std = emb.mean(axis=0), emb.std(axis=0) + 1e-8
            self.train_embedding = (emb - self.mean) / self.std
        if self.name == "class-prototype":
            self._fit_prototypes(store, train)

    def _fit_prototypes(self, store, train: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        labels = store.class_index[train]
        # lbfgs is deterministic; the class's mean frame is what a class-only system could draw
        self.classifier = LogisticRegression(max_iter=2000, C=1.0).fit(self.train_embedding, labels)
        self.prototypes = {}
        for ci in np.unique(labels):
            rows = train[labels == ci]
            total = np.zeros(store.frames.shape[1:], dtype=np.float64)
            for i in range(0, len(rows), 1024):
                total += np.asarray(store.frames[rows[i:i + 1024]], dtype=np.float64).sum(axis=0)
            self.prototypes[int(ci)] = np.round(total / len(rows)).astype(np.uint8)  # (S, S, 3)
        self.info["built_from"]["sound_classifier"] = {
            "model": "sklearn LogisticRegression(C=1, lbfgs)", "features": "log-Mel band mean and std",
            "train_accuracy": float(self.classifier.score(self.train_embedding, labels))}

    def translate_rows(self, batch: Batch, rows):
        import torch

        rows = np.asarray(rows)
        frames = self.store.frames
        if self.name == "real-frame":
            images = np.asarray(frames[rows])
        elif self.name == "random-frame":
            seeds = batch.seeds.cpu().numpy()
            picks = [self.train_rows[np.random.default_rng(int(s) & (2**63 - 1)).integers(len(self.train_rows))]
                     for s in seeds]
            images = np.asarray(frames[np.array(picks)])
        else:
            emb = (audio_embedding(batch.log_mel.cpu().numpy()) - self.mean) / self.std  # (B, 256)
            if self.name == "retrieval":
                # squared distances to every training sound; argmin takes the earlier row on ties
                d = ((emb ** 2).sum(1)[:, None] - 2 * emb @ self.train_embedding.T
                     + (self.train_embedding ** 2).sum(1)[None])
                images = np.asarray(frames[self.train_rows[np.argmin(d, axis=1)]])
            else:
                predicted = self.classifier.predict(emb)
                images = np.stack([self.prototypes[int(c)] for c in predicted])
        return torch.from_numpy(np.ascontiguousarray(images))  # (B, S, S, 3) uint8


def load_reference(spec: str, store, device: str = "cpu") -> ReferenceTranslator:
    return ReferenceTranslator(parse(spec), store, device=device)
