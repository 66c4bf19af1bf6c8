"""`s2i-bench label-audit label AUDIT --judge`: the synthetic world's judge labels the blind set, as an
annotator among people (its log beside theirs, in the blind set's `annotations/`).

`noise` makes it an imperfect annotator: each label is flipped with that probability, by a draw
seeded from the audit's seed and the annotator's name (the same call gives the same labels). The
audited share then estimates what these annotators would say (their truth), not the judge's:
`benchmarks/check_audit.py` shows both.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from s2i_bench import synth
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A
from s2i_bench.scoring.audit.folder import AuditFolder
from s2i_bench.seeding import item_seed

logger = logging.getLogger(__name__)


def judge_labels(images: np.ndarray, classes: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """(M,) 0/1: the judge's verdict on each (S, S, 3) uint8 image for its class, each flipped with
    probability `noise` (one uniform draw per image, in the given order)."""
    labels = np.zeros(len(images), dtype=np.int64)
    for key in np.unique(classes):
        at = np.flatnonzero(classes == key)
        labels[at] = np.asarray(synth.judge(np.asarray(images[at]), str(key)), dtype=np.int64)
    flips = np.random.default_rng(seed).random(len(images)) < noise
    return np.where(flips, 1 - labels, labels)


def label_with_judge(audit_dir, *, annotator: str = "judge", noise: float = 0.0) -> Path:
    """Write the judge's labels of every blind image into `annotator`'s log; returns the log."""
    folder = AuditFolder(Path(audit_dir))
    plan, _ = folder.read()
    if not 0.0 <= float(noise) <= 0.5:
        raise UserError(f"--judge-noise {noise}: the share of labels flipped, in [0, 0.5]")
    A.check_annotator(annotator)
    store = open_store(plan["store"]["path"])
    if store.store_hash != plan["store"]["hash"]:
        raise UserError(f"{store.path}: store.hash is {store.store_hash}, the audit's is {plan['store']['hash']}")
    if not store.synthetic:
        raise UserError(f"{store.path}: the judge knows only the synthetic world; label {folder.blind_path} with "
                        f"`s2i-bench label-server`")
    blind = folder.blind_set()
    log = A.log_path(blind.path, annotator)
    if log.exists() and A.state(A.read_log(log)).labels:
        raise UserError(f"{log}: {annotator} has labels already; choose another --annotator name")
    ids = blind.table["image_id"].to_numpy()
    labels = judge_labels(blind.images, blind.table["class"].to_numpy(), float(noise),
                          item_seed(int(plan["seed"]), f"judge-noise/{annotator}"))
    sha = blind.table["image_sha256"].to_numpy()
    A.append_many(blind.path, annotator, [{"op": "label", "image_id": str(i), "label": int(v), "image_sha256": str(h)}
                                          for i, v, h in zip(ids, labels, sha)])
    logger.info(f"audit: {annotator} labelled {len(ids)} images ({int(labels.sum())} informative"
                + (f", each label flipped with probability {noise}" if noise else "") + f") -> {log}")
    return log
