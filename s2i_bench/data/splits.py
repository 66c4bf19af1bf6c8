"""Splits: video-disjoint (or random, to measure leakage) assignment, class balance, and the
normalisation range fitted on the training split (SPEC sections 2-3)."""

from __future__ import annotations

import math

import numpy as np

from s2i_bench.data.store import SPLITS
from s2i_bench.errors import UserError
from s2i_bench.fileio import release_pages

# Normalisation: the clip range [low, high] is these percentiles of every training log-Mel value,
# read from a histogram with this bin width (exact up to one bin, memory-flat at VEGAS scale).
NORM_PERCENTILES = (0.1, 99.9)
NORM_BIN = 0.01


def video_split(group_counts: dict[str, dict[str, int]], ratios: dict[str, float], seed: int) -> dict[str, str]:
    """Assign whole groups (videos and their near-duplicates) to splits, stratified by class.

    group_counts: group -> {class: segments}. Groups are visited in a seeded random order; each
    goes to the split that most lacks its classes' segments (target ratio minus share so far).
    A split that has no group of a class yet is served first (so a class with at least three
    videos is present in every split), train before test before val.
    """
    rng = np.random.default_rng(seed)
    groups = sorted(group_counts)
    order = [groups[i] for i in rng.permutation(len(groups))]
    totals: dict[str, int] = {}
    n_groups: dict[str, int] = {}
    for g in groups:
        for c, n in group_counts[g].items():
            totals[c] = totals.get(c, 0) + n
            n_groups[c] = n_groups.get(c, 0) + 1
    active = [s for s in ("train", "test", "val") if ratios[s] > 0]
    seg = {c: {s: 0 for s in SPLITS} for c in totals}
    grp = {c: {s: 0 for s in SPLITS} for c in totals}
    out = {}
    for g in order:
        def score(s):
            total = 0.0
            for c, n in group_counts[g].items():
                total += ratios[s] - seg[c][s] / totals[c]
                if grp[c][s] == 0 and n_groups[c] >= len(active):
                    total += 1.0  # starved split: serve it first
            return total
        best = max(active, key=lambda s: (score(s), -active.index(s)))
        out[g] = best
        for c, n in group_counts[g].items():
            seg[c][best] += n
            grp[c][best] += 1
    return out


def random_split(classes: np.ndarray, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Segment-level split (leaky by design): per class, shuffle and cut by the ratios."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(classes), dtype=object)
    for c in sorted(set(classes)):
        idx = np.flatnonzero(classes == c)
        idx = idx[rng.permutation(len(idx))]
        n_train = int(round(ratios["train"] * len(idx)))
        n_val = int(round(ratios["val"] * len(idx)))
        out[idx[:n_train]] = "train"
        out[idx[n_train:n_train + n_val]] = "val"
        out[idx[n_train + n_val:]] = "test"
    return out


def balance(manifest, seed: int) -> np.ndarray:
    """Indices kept when every class is subsampled (seeded) to the smallest class count of its split."""
    rng = np.random.default_rng([seed, 1])  # its own stream: balancing never moves the split
    keep = []
    classes = sorted(manifest["class"].unique())
    for split in SPLITS:
        per_class = {c: np.flatnonzero((manifest["split"] == split).to_numpy() & (manifest["class"] == c).to_numpy())
                     for c in classes}
        m = min(len(v) for v in per_class.values())
        for c in classes:
            idx = per_class[c]
            keep.append(np.sort(rng.choice(idx, size=m, replace=False)) if m < len(idx) else idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


# -- normalisation ----------------------------------------------------------------------------
def fit_normalisation(spectrograms: np.ndarray, train_idx: np.ndarray, log_floor: float, chunk: int = 512) -> dict:
    """[low, high] = percentiles 0.1 / 99.9 of all training log-Mel values (histogram, bin 0.01)."""
    lo_edge = math.floor(math.log(log_floor) / NORM_BIN) * NORM_BIN - NORM_BIN
    hi_val = -math.inf
    for i in range(0, len(train_idx), chunk):
        hi_val = max(hi_val, float(np.max(spectrograms[train_idx[i:i + chunk]])))
        release_pages(spectrograms)  # memory-mapped: read in passes, never all resident
    n_bins = int(math.ceil((hi_val - lo_edge) / NORM_BIN)) + 2
    edges = lo_edge + NORM_BIN * np.arange(n_bins + 1)
    counts = np.zeros(n_bins, np.int64)
    for i in range(0, len(train_idx), chunk):
        block = np.asarray(spectrograms[train_idx[i:i + chunk]], dtype=np.float32).ravel()
        counts += np.histogram(block, bins=edges)[0]
        release_pages(spectrograms)
    cum = np.cumsum(counts)
    total = cum[-1]
    low_bin = int(np.searchsorted(cum, total * NORM_PERCENTILES[0] / 100.0, side="left"))
    high_bin = int(np.searchsorted(cum, total * NORM_PERCENTILES[1] / 100.0, side="left"))
    low, high = float(edges[low_bin]), float(edges[high_bin + 1])
    if not high - low > 10 * NORM_BIN:
        raise UserError(f"training log-Mel values span only [{low:.3f}, {high:.3f}]: is all the audio silent?")
    return {"low": round(low, 6), "high": round(high, 6), "fitted_on": "train",
            "method": f"percentiles {NORM_PERCENTILES[0]} / {NORM_PERCENTILES[1]} of every training log-Mel value "
                      f"(histogram with bins of {NORM_BIN}; low = lower bin edge, high = upper bin edge); "
                      f"network input = 2 (x - low) / (high - low) - 1, clipped to [-1, 1]"}


# -- what the split looks like ----------------------------------------------------------------
def group_list(manifest, groups: dict[str, str]) -> list[dict]:
    """Near-duplicate groups with more than one video: ids, classes, splits."""
    members: dict[str, list[str]] = {}
    for v, g in groups.items():
        members.setdefault(g, []).append(v)
    out = []
    by_video = manifest.groupby("video_id")
    for g, vids in sorted(members.items()):
        if len(vids) < 2:
            continue
        out.append({"group": g, "videos": sorted(vids),
                    "splits": sorted({s for v in vids for s in by_video.get_group(v)["split"].dropna().unique()}),
                    "classes": sorted({c for v in vids for c in by_video.get_group(v)["class"].unique()})})
    return out


def table1_frame(manifest, protocol):
    """Table 1 of the paper for this store: videos and segments per class and split."""
    import pandas as pd

    rows = []
    for key, name in zip(protocol.class_keys, protocol.class_names):
        part = manifest[manifest["class"] == key]
        row = {"class": name, "videos": int(part["video_id"].nunique())}
        row.update({s: int((part["split"] == s).sum()) for s in SPLITS})
        rows.append(row)
    table = pd.DataFrame(rows)
    total = {"class": "Total", "videos": int(manifest["video_id"].nunique())}
    total.update({s: int(table[s].sum()) for s in SPLITS})
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def carve_val(manifest, ratios: dict[str, float], seed: int) -> None:
    """A manifest that gives train and test only (VGGSound's CSV): its train groups split
    video-disjointly into train and val, val / (train + val) of the segments, by class (seeded);
    the given test rows stay test."""
    train = (manifest["split"] == "train").to_numpy()
    group_counts: dict[str, dict[str, int]] = {}
    for (g, c), n in manifest[train].groupby(["group", "class"]).size().items():
        group_counts.setdefault(g, {})[c] = int(n)
    share = ratios["val"] / (ratios["train"] + ratios["val"]) if ratios["train"] + ratios["val"] > 0 else 0.0
    chosen = video_split(group_counts, {"train": 1.0 - share, "val": share, "test": 0.0}, seed)
    manifest.loc[train, "split"] = manifest.loc[train, "group"].map(chosen).to_numpy()
