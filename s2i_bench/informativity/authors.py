"""The authors' five informativity classifiers (state dicts) imported into a bundle, and
`s2i-bench train-classifiers`, which trains the classifiers or imports the authors' ones."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.fileio import sha256_file
from s2i_bench.informativity.bundle import (BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, IMAGE_SIZE, InformativityCNN,
                                            _load_state, card_path)
from s2i_bench.informativity.classifiers import train_class_match, train_classifiers, write_bundle
from s2i_bench.protocol import load_protocol
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.safeload import load_weights_only


def classifiers_command(pool_dir, out, *, authors: Iterable[str] = (), protocol=None, store=None, seed: int = 0,
                        device: str = "cpu", overwrite: bool = False) -> None:
    """`s2i-bench train-classifiers`: train on the labelled pool `pool_dir`, or import the
    authors' classifiers given as `--authors CLASS=FILE` items (`protocol`: a name, a file or a
    Protocol; default vegas5)."""
    if authors:
        if pool_dir is not None:
            raise UserError("give either POOL_DIR (train) or --authors (import), not both")
        files = parse_authors(authors)
        import_authors_classifiers(files, out=out, protocol=load_protocol(protocol or "vegas5"), store=store,
                                   seed=seed, device=device, overwrite=overwrite)
        return
    if pool_dir is None:
        raise UserError("missing POOL_DIR (a labelled pool), "
                        "or --authors CLASS=FILE to import the authors' classifiers")
    train_classifiers(pool_dir, out=out, store=store, seed=seed, device=device, overwrite=overwrite)


def parse_authors(items: Iterable[str]) -> dict[str, Path]:
    """`--authors CLASS=FILE` items as {class key: file}."""
    files = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--authors {item!r}: expected CLASS=FILE")
        files[key.strip()] = Path(path)
    return files


def import_authors_classifiers(files: dict[str, str | Path], out: str | Path, protocol,
                               store: str | Path | None = None, seed: int = 0, device: str = "cpu",
                               overwrite: bool = False) -> Path:
    """Wrap the authors' five classifier state dicts (one per class) into a bundle.

    Their layer names match `InformativityCNN` (`conv1`..`conv5`, `fc2`, `fc3`, `_bn`
    suffixes); `fc1` is defined in their code but unused, so its weights are dropped. A
    `module.` prefix (DataParallel) is stripped. Sensitivity, specificity and test outcomes are
    unknown (null). With `store`, the class-match classifier is trained on its real frames.
    """
    protocol = load_protocol(protocol)
    out = Path(out)
    card_file = card_path(out)
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
    write_bundle(out, card_file, bundle, card, overwrite=overwrite)
    print(f"imported the authors' classifiers into {out} (sensitivity and specificity unknown)")
    return out


def _read_authors_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: not found")
    raw = load_weights_only(path, "classifier state dict")
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
