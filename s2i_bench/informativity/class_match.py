"""A class-match-only bundle: the real-frame classifier alone, for stores where no per-class
pools of labelled generated images exist (VGGSound's 309 classes).

    s2i-bench train-classifiers --class-match-only --data STORE --out BUNDLE.pt

The bundle has the usual format (`bundle.py`) with no informativity classifiers: every class is
listed under the card's `untrained` with the reason, and `class_match_only` is true. Scoring with
it gives the class-match rate and the image metrics (their default feature space, the bundle's
domain extractor, is this classifier); raw and corrected shares are null.
"""

from __future__ import annotations

from pathlib import Path

from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.informativity.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, IMAGE_SIZE, card_path
from s2i_bench.informativity.classifiers import train_class_match, write_bundle
from s2i_bench.provenance import code_version, now_iso

REASON = "class-match-only bundle: no informativity classifier was trained"


def train_class_match_bundle(store, out, *, seed: int = 0, device: str = "cpu", epochs: int | None = None,
                             overwrite: bool = False) -> Path:
    """Train the class-match classifier on `store`'s real frames and write it as a bundle."""
    out = Path(out)
    card_file = card_path(out)
    if out.exists() and not overwrite:  # before any work: records scored with it name its hash
        raise UserError(f"{out}: exists; pass --overwrite to replace it (records scored with it keep its sha256)")
    real = open_store(store)
    protocol = real.protocol
    spec = protocol.classifiers
    epochs = spec.class_match_epochs if epochs is None else int(epochs)
    entry, cm_card = train_class_match(real, epochs=epochs, seed=seed, device=device, spec=spec,
                                       confidence=protocol.metrics.confidence)
    card = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
        "protocol": protocol.ref(), "pool_hash": None,
        "labels": None, "store": {"hash": real.store_hash, "path": str(Path(store))},
        "source": "trained", "class_match_only": True,
        "classes": {}, "untrained": {k: REASON for k in protocol.class_keys},
        "class_match": cm_card, "warnings": [],
        "seed": seed, "device": str(device), "code_version": code_version(), "created": now_iso(),
    }
    bundle = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "source": "trained",
        "class_keys": [],
        "architecture": {"dropout": list(spec.dropout), "fc_dropout": float(spec.fc_dropout), "image_size": IMAGE_SIZE},
        "informativity": {}, "class_match": entry, "card": card,
    }
    write_bundle(out, card_file, bundle, card, overwrite=overwrite)
    print(f"class-match classifier ({len(protocol.class_keys)} classes, real frames of {real.path}): test accuracy "
          f"{cm_card['test_accuracy']:.1%} on {cm_card['n_test']} frames -> {out} (no informativity classifiers)")
    return out
