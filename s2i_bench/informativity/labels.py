"""Labels for a pool, and the balanced per-class sets the classifiers learn from (SPEC section 5).

`label_pool` takes exactly one source of labels:
- the synthetic world's judge (`--judge`; only for pools translated from a synthetic store), or
- a CSV (`--from-csv`) with columns `image_id,label[,annotator]`: 1 = informative, 0 = not.
  Several annotators per image are allowed; an image's label is the majority, and a tie leaves
  the image out (reported).

Then, per class, it builds the balanced set: `informative_per_class` informative and as many
non-informative images, where every model contributes the same number of images to both labels
(a model's fingerprint must not give the label away). Models contribute as evenly as their
labelled images allow ("water filling"). When the class cannot be filled, the set is smaller
and the shortfall is printed and recorded; nothing is filled in. The set is split per class into
train / val / test in the protocol's proportions, stratified by label and model, with the same
per-model counts in both labels in every part.

Writes into the pool folder: labels.csv (image_id, class, model_id, label, n_votes,
n_informative), sets.csv (image_id, class, label, model_id, part), labels.json (source, seed,
pool hash, per-class counts and shortfall, ties, sets hash).
"""

from __future__ import annotations

import logging
import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s2i_bench import synth  # the synthetic-world engineer's package: its `judge`, looked up when called
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json, atomic_write_text, sha256_file
from s2i_bench.informativity.annotations import agreement as measure_agreement
from s2i_bench.informativity.annotations import collected_votes
from s2i_bench.informativity.pool import open_pool
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.seeding import item_seed

logger = logging.getLogger(__name__)

MAX_SHOWN = 5  # offending CSV lines quoted in an error message


def label_pool(pool_dir: str | Path, use_judge: bool = False, csv_path: str | Path | None = None,
               seed: int = 0, from_annotations: bool = False) -> Path:
    """Label the pool with one source (the judge, a CSV, or the annotators' logs of
    `label-server`), build the balanced sets, write labels.csv / sets.csv / labels.json."""
    if int(bool(use_judge)) + int(csv_path is not None) + int(bool(from_annotations)) != 1:
        raise UserError("give exactly one label source: --judge, --from-csv FILE or --from-annotations")
    pool = open_pool(pool_dir)
    protocol = pool.protocol
    spec = protocol.classifiers
    _check_set_sizes(spec, protocol.source or protocol.name)

    votes, source, agreement = _votes_from_source(pool, use_judge, csv_path, from_annotations, seed)
    table = pool.table.set_index("image_id")
    labels, ties = _pool_majority(votes, table, protocol.class_keys, csv_path)
    sets_df, per_class = _balanced_sets(labels, ties, table, spec, protocol.class_keys, seed)
    pool_path = Path(pool_dir)
    _write_label_files(pool_path, pool, labels, sets_df, source=source, seed=seed, ties=ties, per_class=per_class,
                       agreement=agreement)
    _print_summary(per_class)
    return pool_path / "sets.csv"


def _votes_from_source(pool, use_judge: bool, csv_path, from_annotations: bool, seed: int) -> tuple[Any, dict, Any]:
    """The votes of the one label source, what the source is (for labels.json), and the
    annotators' agreement (annotations only)."""
    agreement = None
    if use_judge:
        votes = judge_votes(pool)
        source = {"kind": "judge"}
    elif from_annotations:
        votes = collected_votes(pool)
        classes = dict(zip(pool.table["image_id"].astype(str), pool.table["class"].astype(str)))
        agreement = measure_agreement(votes, classes, seed=seed)
        source = {"kind": "annotations", "annotators": sorted(votes["annotator"].unique().tolist()),
                  "rule": "majority of the annotators' labels; ties left out and counted"}
    else:
        votes = read_label_csv(csv_path, pool)
        source = {"kind": "csv", "path": str(csv_path), "sha256": sha256_file(csv_path)}
    source["num_annotators"] = int(votes["annotator"].nunique()) if "annotator" in votes else 1
    return votes, source, agreement


def _pool_majority(votes, table, class_keys, csv_path) -> tuple[Any, list[str]]:
    """One label per image by majority, with its class and model; every class must keep some."""
    labels, ties = majority_labels(votes)
    labels["class"] = table.loc[labels["image_id"], "class"].to_numpy()
    labels["model_id"] = table.loc[labels["image_id"], "model_id"].to_numpy()
    unlabelled = [c for c in class_keys if not (labels["class"] == c).any()]
    if unlabelled:
        tied = [t for t in ties if table.loc[t, "class"] in unlabelled]
        why = (f": all {len(tied)} of their labelled images are ties between annotators (as many 1 as 0 votes; "
               f"add a deciding vote)" if tied else "")
        raise UserError(f"no labelled images for class(es) {', '.join(unlabelled)}"
                        + (f" in {csv_path}" if csv_path else "") + why)
    if ties:
        logger.info(f"note: {len(ties)} images have tied votes and are left out (first: {', '.join(ties[:MAX_SHOWN])})")
    return labels, ties


def _balanced_sets(labels, ties: list[str], table, spec, class_keys, seed: int) -> tuple[Any, dict[str, dict]]:
    """Per class the balanced set split into train / val / test; a class that cannot be
    balanced gets no set (and no classifier), its reason recorded."""
    sets, per_class = [], {}
    for class_key in class_keys:
        rows = labels[labels["class"] == class_key]
        chosen, info = balanced_set(rows, spec.informative_per_class, seed=item_seed(seed, f"sets|{class_key}"))
        n_per_label = int(sum(info["per_model"].values()))
        n_inf = int((rows["label"] == 1).sum())
        info.update({
            "labelled": int(len(rows)), "informative": n_inf, "non_informative": int(len(rows) - n_inf),
            "ties": int(sum(1 for t in ties if table.loc[t, "class"] == class_key)),
            "usable": n_per_label >= 3, "reason": None,
        })
        per_class[class_key] = info
        if n_per_label < 3:
            # No set for this class (it gets no classifier); the other classes go on.
            info["reason"] = (f"only {n_per_label} image(s) per label can be balanced across models (need at "
                              f"least 3: train, validation, test; labelled: {n_inf} informative, "
                              f"{len(rows) - n_inf} not); label more images or add models")
            info.update(parts={"train": 0, "val": 0, "test": 0}, selected=0, per_model={})
            logger.warning(f"class {class_key}: {info['reason']}; it gets no classifier")
            continue
        parts = assign_parts(chosen, spec.train_per_class, spec.test_per_class, spec.val_fraction,
                             seed=item_seed(seed, f"parts|{class_key}"))
        sets.append(parts)
        info["parts"] = {p: int((parts["part"] == p).sum()) for p in ("train", "val", "test")}
        if info["shortfall"]:
            s = info["shortfall"]
            logger.warning(f"class {class_key}: {s['got']} of {s['wanted']} images per label can be balanced "
                           f"across models ({s['missing']} short); models without a usable pair: "
                           f"{', '.join(s['models_without_pairs']) or 'none'}")
    if not sets:
        raise UserError("no class can be trained: " + "; ".join(f"{k}: {v['reason']}" for k, v in per_class.items()))
    return pd.concat(sets, ignore_index=True)[["image_id", "class", "label", "model_id", "part"]], per_class


def _write_label_files(pool_path: Path, pool, labels, sets_df, *, source: dict, seed: int, ties: list[str],
                       per_class: dict, agreement) -> None:
    """labels.csv, sets.csv, then labels.json (last: it marks the other two as complete)."""
    labels_out = labels[["image_id", "class", "model_id", "label", "n_votes", "n_informative"]]
    atomic_write_text(pool_path / "labels.csv", labels_out.to_csv(index=False))
    sets_text = sets_df.to_csv(index=False)
    atomic_write_text(pool_path / "sets.csv", sets_text)
    meta = {
        "format": "s2i-bench-labels", "format_version": 1,
        "pool_hash": pool.pool_hash, "protocol": pool.protocol.ref(), "source": source, "seed": seed,
        "num_labelled": int(len(labels)), "ties": ties, "classes": per_class, "agreement": agreement,
        "sets_hash": hashlib.sha256(sets_text.encode()).hexdigest()[:16],
        "code_version": code_version(), "created": now_iso(),
    }
    atomic_write_json(pool_path / "labels.json", meta)  # last: marks labels.csv / sets.csv as complete


def _print_summary(per_class: dict) -> None:
    for key, info in per_class.items():
        print(f"  {key:16s} labelled {info['labelled']:5d} (informative {info['informative']:5d})  set "
              f"{info['selected']:4d}+{info['selected']:<4d} from {len(info['per_model'])} models  "
              f"train/val/test {info['parts']['train']}/{info['parts']['val']}/{info['parts']['test']}")


def _check_set_sizes(spec, where: str) -> None:
    if spec.informative_per_class != spec.non_informative_per_class:
        raise UserError(f"{where}: classifiers.informative_per_class and non_informative_per_class must be equal "
                        f"(every model contributes the same number of images to both labels)")
    if spec.train_per_class + spec.test_per_class != spec.informative_per_class + spec.non_informative_per_class:
        raise UserError(f"{where}: classifiers.train_per_class + test_per_class must equal the set size "
                        f"informative_per_class + non_informative_per_class")
    if not 0 < spec.val_fraction < 1:
        raise UserError(f"{where}: classifiers.val_fraction must be in (0, 1)")


# -- sources ----------------------------------------------------------------------------------
def judge_votes(pool) -> Any:
    """One vote per image from the synthetic world's deterministic judge."""
    if not pool.synthetic:
        raise UserError(f"{pool.path}: --judge needs a pool translated from a store made from the synthetic "
                        f"world (this store records no synthetic world); use --from-csv")
    out = []
    for class_key in pool.protocol.class_keys:
        rows = np.flatnonzero(pool.table["class"].to_numpy() == class_key)
        if len(rows) == 0:
            continue
        verdict = np.asarray(synth.judge(np.asarray(pool.images[rows]), class_key), dtype=bool)
        if verdict.shape != (len(rows),):
            raise RuntimeError(f"judge returned shape {verdict.shape} for {len(rows)} images")
        out.append(pd.DataFrame({"image_id": pool.table["image_id"].to_numpy()[rows],
                                 "label": verdict.astype(int), "annotator": "judge"}))
    return pd.concat(out, ignore_index=True)


def read_label_csv(csv_path: str | Path, pool) -> Any:
    """Read and check `image_id,label[,annotator]`. Any problem fails with the first offending lines."""
    csv_path = Path(csv_path)
    known = set(pool.table["image_id"])
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "image_id" not in header or "label" not in header:
                raise UserError(f"{csv_path}: needs columns image_id,label[,annotator] (found: {','.join(header)})")
            rows = []
            for row in reader:
                rows.append((reader.line_num, (row.get("image_id") or "").strip(), (row.get("label") or "").strip(),
                             (row.get("annotator") or "").strip()))
    except UnicodeDecodeError as e:
        raise UserError(f"{csv_path}: not UTF-8 text ({e})") from None
    if not rows:
        raise UserError(f"{csv_path}: no labels")

    def fail(problem: str, bad: list[tuple]) -> None:
        shown = "; ".join(f"line {ln}: {iid},{lab}" + (f",{ann}" if ann else "")
                          for ln, iid, lab, ann in bad[:MAX_SHOWN])
        more = f" (and {len(bad) - MAX_SHOWN} more)" if len(bad) > MAX_SHOWN else ""
        raise UserError(f"{csv_path}: {len(bad)} line(s) with {problem}: {shown}{more}")

    bad_label = [r for r in rows if r[2] not in ("0", "1")]
    if bad_label:
        fail("a label other than 0 or 1", bad_label)
    unknown = [r for r in rows if r[1] not in known]
    if unknown:
        fail(f"an image id not in the pool {pool.path}", unknown)
    seen, duplicates = set(), []
    for r in rows:
        key = (r[1], r[3])
        if key in seen:
            duplicates.append(r)
        seen.add(key)
    if duplicates:
        fail("an image id labelled twice by the same annotator", duplicates)
    return pd.DataFrame({"image_id": [r[1] for r in rows], "label": [int(r[2]) for r in rows],
                         "annotator": [r[3] for r in rows]})


def majority_labels(votes) -> tuple[Any, list[str]]:
    """Votes (image_id, label, annotator) -> one label per image by majority; ties listed apart."""
    g = votes.groupby("image_id", sort=True)["label"].agg(["size", "sum"]).reset_index()
    g.columns = ["image_id", "n_votes", "n_informative"]
    tie = 2 * g["n_informative"] == g["n_votes"]
    ties = g.loc[tie, "image_id"].tolist()
    labels = g[~tie].copy()
    labels["label"] = (2 * labels["n_informative"] > labels["n_votes"]).astype(int)
    return labels.reset_index(drop=True), ties


# -- balanced sets ----------------------------------------------------------------------------
def water_fill(capacity: dict[str, int], target: int, rng: np.random.Generator) -> dict[str, int]:
    """Per-model counts k_m <= capacity_m summing to min(target, sum capacity), as even as the
    capacities allow: every model gets min(capacity, L) for the highest level L that fits, and
    the remainder goes one each to a seeded choice of the models that can take more."""
    total = sum(capacity.values())
    if total <= target:
        return dict(capacity)
    level = 0
    while sum(min(c, level + 1) for c in capacity.values()) <= target:
        level += 1
    counts = {m: min(c, level) for m, c in capacity.items()}
    remainder = target - sum(counts.values())
    can_take = sorted(m for m, c in capacity.items() if c > level)
    for m in rng.choice(can_take, size=remainder, replace=False):
        counts[str(m)] += 1
    return counts


def balanced_set(rows, per_label: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """Pick up to `per_label` informative and as many non-informative images of one class, with
    equal counts per model in both labels. Returns the chosen rows and a summary."""
    rng = np.random.default_rng(seed)
    by_model = {}
    for model_id, g in rows.groupby("model_id", sort=True):
        inf = g[g["label"] == 1]["image_id"].to_numpy()
        non = g[g["label"] == 0]["image_id"].to_numpy()
        by_model[str(model_id)] = (rng.permutation(inf), rng.permutation(non))
    capacity = {m: min(len(i), len(n)) for m, (i, n) in by_model.items()}
    counts = water_fill(capacity, per_label, rng)
    chosen = []
    for m, k in counts.items():
        inf, non = by_model[m]
        chosen += [{"image_id": i, "label": 1, "model_id": m} for i in inf[:k]]
        chosen += [{"image_id": i, "label": 0, "model_id": m} for i in non[:k]]
    got = sum(counts.values())
    shortfall = None
    if got < per_label:
        shortfall = {"wanted": per_label, "got": int(got), "missing": int(per_label - got),
                     "models_without_pairs": sorted(m for m, c in capacity.items() if c == 0)}
    chosen_df = pd.DataFrame(chosen, columns=["image_id", "label", "model_id"])
    chosen_df["class"] = rows["class"].iloc[0] if len(rows) else None
    info = {"selected": int(got), "per_model": {m: int(k) for m, k in counts.items() if k > 0},
            "capacity": {m: int(c) for m, c in capacity.items()}, "shortfall": shortfall}
    return chosen_df, info


def _systematic(n: int, take: int) -> np.ndarray:
    """Boolean mask of `take` of `n` positions spread evenly along the sequence."""
    i = np.arange(n)
    return (i + 1) * take // max(n, 1) > i * take // max(n, 1)


def assign_parts(chosen, train_per_class: int, test_per_class: int, val_fraction: float, seed: int):
    """Split one class's balanced set into train / val / test in the protocol's proportions.

    Both labels are laid out in the same model order with the same per-model counts, and the
    same positions go to each part, so every part keeps equal per-model counts in both labels
    (stratified by label and model)."""
    rng = np.random.default_rng(seed)
    models = list(rng.permutation(sorted(chosen["model_id"].unique())))
    n = int((chosen["label"] == 1).sum())  # per label (equal by construction)
    n_test = int(round(n * test_per_class / (train_per_class + test_per_class)))
    n_test = min(max(n_test, 1), n - 2)
    n_val = int(round((n - n_test) * val_fraction))
    n_val = min(max(n_val, 1), n - n_test - 1)
    test_mask = _systematic(n, n_test)
    val_mask = np.zeros(n, dtype=bool)
    val_mask[np.flatnonzero(~test_mask)[_systematic(n - n_test, n_val)]] = True
    part = np.where(test_mask, "test", np.where(val_mask, "val", "train"))
    out = []
    for label in (1, 0):
        rows = chosen[chosen["label"] == label]
        order = [rows[rows["model_id"] == m] for m in models]  # images already in seeded order
        seq = pd.concat(order, ignore_index=True)
        seq["part"] = part
        out.append(seq)
    return pd.concat(out, ignore_index=True)


def read_sets(pool) -> tuple[Any, dict]:
    """sets.csv and labels.json of a labelled pool, checked against the pool."""
    meta_path, sets_path = pool.path / "labels.json", pool.path / "sets.csv"
    if not meta_path.is_file() or not sets_path.is_file():
        raise UserError(f"{pool.path}: not labelled yet (run `s2i-bench label {pool.path} --judge` or --from-csv)")
    meta = json.loads(meta_path.read_text())
    if meta.get("pool_hash") != pool.pool_hash:
        raise UserError(f"{meta_path}: labels are for pool {meta.get('pool_hash')}, the pool is {pool.pool_hash}; "
                        f"label it again")
    text = sets_path.read_text()
    if hashlib.sha256(text.encode()).hexdigest()[:16] != meta.get("sets_hash"):
        raise UserError(f"{sets_path}: changed after labelling (hash differs from labels.json); label it again")
    sets = pd.read_csv(sets_path, dtype={"image_id": str, "class": str, "model_id": str, "part": str})
    unknown = sorted(set(sets["image_id"]) - set(pool.table["image_id"]))
    if unknown:
        raise UserError(f"{sets_path}: image ids not in the pool: {', '.join(unknown[:MAX_SHOWN])}")
    if not set(sets["label"].unique()) <= {0, 1} or not set(sets["part"].unique()) <= {"train", "val", "test"}:
        raise UserError(f"{sets_path}: labels must be 0/1 and parts train/val/test")
    return sets, meta
