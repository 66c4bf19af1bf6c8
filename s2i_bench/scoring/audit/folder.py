"""The audit folder: the one owner of its layout.

    AUDIT/audit.json     what was drawn: seed, labels per class, store, classifiers, split, and
                         per system the record it audits (file, checksum, translator, plan order)
    AUDIT/key.csv        the key: which blind image is which system's image at which position
    AUDIT/blind/         the blind label set (`informativity.blind_set`): all an annotator sees
    AUDIT/records.jsonl  the audited records (`s2i-bench label-audit estimate`)

The key stays outside `blind/`: serve `blind/` to people, never the audit folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json, atomic_write_text, sha256_file
from s2i_bench.informativity.blind_set import open_blind_set

FORMAT = "s2i-bench-audit"
FORMAT_VERSION = 1
PLAN, KEY, BLIND, RECORDS = "audit.json", "key.csv", "blind", "records.jsonl"
NAMES = (PLAN, KEY, BLIND, RECORDS, ".records.jsonl.lock")  # everything `audit` writes here
KEY_COLUMNS = ["image_id", "system", "class", "position", "draw", "sound", "image_seed", "decision"]


@dataclass
class AuditFolder:
    path: Path

    @property
    def plan_path(self) -> Path:
        return self.path / PLAN

    @property
    def key_path(self) -> Path:
        return self.path / KEY

    @property
    def blind_path(self) -> Path:
        return self.path / BLIND

    @property
    def records_path(self) -> Path:
        return self.path / RECORDS

    def write(self, plan: dict[str, Any], key: pd.DataFrame) -> None:
        """The key first, then the plan naming the key's sha256 (the plan is the folder's marker)."""
        atomic_write_text(self.key_path, key[KEY_COLUMNS].to_csv(index=False))
        atomic_write_json(self.plan_path, {**plan, "key_sha256": sha256_file(self.key_path)})

    def read(self) -> tuple[dict[str, Any], pd.DataFrame]:
        """audit.json and key.csv, checked: every problem names the file."""
        if not self.plan_path.is_file():
            raise UserError(f"{self.path}: not an audit folder (no {PLAN}; make one with `s2i-bench label-audit draw`)")
        try:
            plan = json.loads(self.plan_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{self.plan_path}: not valid JSON ({e})") from None
        if not isinstance(plan, dict) or plan.get("format") != FORMAT or plan.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.plan_path}: not an s2i-bench audit of format version {FORMAT_VERSION}")
        if sha256_file(self.key_path) != plan.get("key_sha256"):
            raise UserError(f"{self.key_path}: changed since the audit was drawn (its sha256 is not the one "
                            f"{PLAN} records)")
        key = pd.read_csv(self.key_path, dtype={"image_id": str, "class": str, "sound": str})
        if list(key.columns) != KEY_COLUMNS:
            raise UserError(f"{self.key_path}: columns {list(key.columns)}, expected {KEY_COLUMNS}")
        systems = plan.get("systems")
        if not isinstance(systems, list) or not systems:
            raise UserError(f"{self.plan_path}: no systems")
        if key["system"].min() < 0 or key["system"].max() >= len(systems):
            raise UserError(f"{self.key_path}: a system index outside 0..{len(systems) - 1}")
        return plan, key

    def blind_set(self):
        return open_blind_set(self.blind_path)


def positions_of(key: pd.DataFrame, system: int, class_key: str) -> np.ndarray:
    """The audited flat positions (k * N + n) of one system's class, in the key's order."""
    rows = key[(key["system"] == system) & (key["class"] == class_key)]
    return rows["position"].to_numpy(dtype=np.int64)
