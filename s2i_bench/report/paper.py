"""What the report shows beside the runs: the paper's numbers and the classifiers' card."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

from s2i_bench.errors import UserError
from s2i_bench.fileio import sha256_file
from s2i_bench.informativity.bundle import load_bundle

# s2i_bench/paper/paper-numbers.csv, shipped as package data (s2i_bench.paper)
PAPER_NUMBERS = Path(str(importlib.resources.files("s2i_bench.paper"))) / "paper-numbers.csv"


def _load_json(path: Path, made_by: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing (written by `{made_by}`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def load_paper_numbers(path: Path = PAPER_NUMBERS):
    """s2i_bench/paper/paper-numbers.csv indexed by key (None when the file is not shipped)."""
    import pandas as pd

    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"key": str, "relation": str, "source": str})
    return table.set_index("key")


def load_card(bundle: Path) -> dict:
    """The classifiers' card, checked: with the bundle file (.pt) at hand, the card inside it
    (what its sha256 covers; a JSON card beside it that says anything else is refused by
    `load_bundle`) plus that sha256; a JSON card alone cannot be checked and says so
    (`verified` false)."""
    bundle = Path(bundle)
    pt = bundle.with_suffix(".pt") if bundle.suffix == ".json" else bundle
    if pt.is_file():
        loaded = load_bundle(pt)  # weights_only=True; card beside it checked against the one inside
        beside = pt.with_suffix(".json")
        extra = _load_json(beside, "s2i-bench train-classifiers") if beside.is_file() else {}
        # the calibration block lives in the JSON card only (bundle.CARD_ONLY_KEYS), so it is unverified
        return {**loaded.card, "created": extra.get("created"), "calibration": extra.get("calibration"),
                "bundle_sha256": sha256_file(pt), "verified": True}
    card_path = bundle if bundle.suffix == ".json" else bundle.with_suffix(".json")
    card = _load_json(card_path, "s2i-bench train-classifiers")
    if card.get("format") != "s2i-bench-classifiers":
        raise UserError(f"{card_path}: not a classifier bundle card (format={card.get('format')!r}; written by "
                        "`s2i-bench train-classifiers`)")
    return {**card, "verified": False}
