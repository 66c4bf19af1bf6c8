"""The leakage audit: `s2i-bench audit STORE`, also run by `prepare` before it writes a store.

Leakage is
  - the same video id in two splits (whatever the class: AudioSet is multi-label), or
  - near-duplicate segments (see `s2i_bench.data.dedup`) of different videos in different splits:
    the same content uploaded twice.
Reported but not leakage: near-duplicates within one split, video ids in several classes.
On a store the audit also checks that the files agree (hash, row counts, unique ids, finite
values) and whether the classes are balanced per split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from s2i_bench.data.dedup import fingerprints, near_duplicate_pairs
from s2i_bench.data.store import SPLITS, open_store, store_problems
from s2i_bench.fileio import to_jsonable
from s2i_bench.provenance import code_version, now_iso


def _video_pairs(manifest, pairs: dict[str, np.ndarray]) -> list[dict]:
    """Segment pairs -> one entry per video pair (its closest segment pair)."""
    import pandas as pd

    if len(pairs["i"]) == 0:
        return []
    i, j = pairs["i"], pairs["j"]
    vid = manifest["video_id"].to_numpy()
    split = manifest["split"].to_numpy()
    seg = manifest["segment_id"].to_numpy()
    swap = vid[i] > vid[j]  # order each pair by video id so (a, b) and (b, a) are one pair
    a = np.where(swap, j, i)
    b = np.where(swap, i, j)
    table = pd.DataFrame({"video_a": vid[a], "video_b": vid[b], "split_a": split[a], "split_b": split[b],
                          "segment_a": seg[a], "segment_b": seg[b], "phash_distance": pairs["phash_distance"],
                          "spectrogram_distance": np.round(pairs["spectrogram_distance"], 4)})
    table["segment_pairs"] = table.groupby(["video_a", "video_b"])["segment_a"].transform("size")
    table = table.sort_values(["video_a", "video_b", "spectrogram_distance", "phash_distance"])
    return table.drop_duplicates(["video_a", "video_b"]).to_dict("records")


def audit_segments(manifest, fp, protocol, pairs: dict[str, np.ndarray] | None = None) -> dict:
    """Leakage report for segments with a `split` column (fp: `dedup.Fingerprints` of the rows)."""
    sp = protocol.split
    if pairs is None:
        codes = manifest["video_id"].astype("category").cat.codes.to_numpy()
        pairs = near_duplicate_pairs(fp, codes, sp.phash_max_distance, sp.spectrogram_max_distance)
    video_pairs = _video_pairs(manifest, pairs)
    across = [p for p in video_pairs if p["split_a"] != p["split_b"]]
    within = [p for p in video_pairs if p["split_a"] == p["split_b"]]

    several_splits = []
    for v, part in manifest.groupby("video_id"):
        counts = part["split"].value_counts()
        if len(counts) > 1:
            several_splits.append({"video_id": v, "splits": {s: int(n) for s, n in counts.items()},
                                   "classes": sorted(part["class"].unique())})
    multi_class = [{"video_id": v, "classes": sorted(part["class"].unique()),
                    "splits": sorted(part["split"].unique())}
                   for v, part in manifest.groupby("video_id") if part["class"].nunique() > 1]
    counts = {c: {s: int(((manifest["class"] == c) & (manifest["split"] == s)).sum()) for s in SPLITS}
              for c in protocol.class_keys}
    balanced = all(len({counts[c][s] for c in counts}) == 1 for s in SPLITS)
    leakage = bool(several_splits or across)
    summary = (f"{len(several_splits)} video ids in several splits, {len(across)} near-duplicate video pairs "
               f"across splits" if leakage else "no video id in two splits, no near-duplicates across splits")
    return {
        "kind": "audit",
        "leakage": leakage,
        "summary": summary,
        "num_segments": int(len(manifest)),
        "video_ids_in_several_splits": several_splits,
        "near_duplicates_across_splits": across,
        "near_duplicates_within_split": within,
        "multi_class_videos": multi_class,
        "counts": counts,
        "balanced": balanced,
        "thresholds": {"phash_max_distance": sp.phash_max_distance,
                       "spectrogram_max_distance": sp.spectrogram_max_distance},
        "code_version": code_version(),
        "created": now_iso(),
    }


def audit_store(store) -> dict:
    """Audit an opened store (`s2i_bench.data.store.Store`): leakage plus every consistency
    check `open_store` makes (hashes, shapes, manifest, finite values), each named."""
    protocol = store.protocol
    problems = store.problems if store.problems else store_problems(store, fresh=True)
    fp = fingerprints(store.spectrograms, store.frames, protocol.audio)
    report = audit_segments(store.manifest, fp, protocol)
    meta_counts = store.counts
    counts_agree = all(meta_counts.get(c, {}).get(s, 0) == n for c, d in report["counts"].items() for s, n in d.items())
    text = " ".join(p for _, p in problems)
    checks = {
        "hash_matches_store_json": "store_hash" not in text and "was changed" not in text,
        "rows_match_arrays": len(store.manifest) == len(store.spectrograms) == len(store.frames),
        "segment_ids_unique": bool(store.manifest["segment_id"].is_unique),
        "spectrograms_finite": "NaN" not in text,
        "counts_match_store_json": counts_agree,
        "store_json_consistent": not problems,
    }
    report.update(store=str(store.path), store_hash=store.store_hash, split_policy=store.split_policy,
                  declared_leaky=store.leaky, checks=checks,
                  problems=[{"file": f, "problem": p} for f, p in problems])
    report["clean"] = not report["leakage"] and all(checks.values())
    return report


def format_report(report: dict, limit: int = 10) -> str:
    """Human-readable report: a verdict line, then the first `limit` offenders of each kind."""
    lines = [f"audit: {'LEAKAGE' if report['leakage'] else 'no leakage'}: {report['summary']} "
             f"({report['num_segments']} segments)"]
    for item in report["video_ids_in_several_splits"][:limit]:
        lines.append(f"  video {item['video_id']} in splits {item['splits']} (classes {', '.join(item['classes'])})")
    for p in report["near_duplicates_across_splits"][:limit]:
        lines.append(f"  near-duplicate across splits: {p['video_a']} ({p['split_a']}) ~ "
                     f"{p['video_b']} ({p['split_b']}): {p['segment_a']} ~ {p['segment_b']}, "
                     f"hash distance {p['phash_distance']}, spectrogram distance {p['spectrogram_distance']}")
    hidden = max(0, len(report["video_ids_in_several_splits"]) - limit) + \
        max(0, len(report["near_duplicates_across_splits"]) - limit)
    if hidden:
        lines.append(f"  ... and {hidden} more (see the JSON report)")
    if report["near_duplicates_within_split"]:
        lines.append(f"  {len(report['near_duplicates_within_split'])} near-duplicate video pairs within one split "
                     f"(not leakage)")
    if report["multi_class_videos"]:
        lines.append(f"  {len(report['multi_class_videos'])} video ids in several classes "
                     f"(one video: kept in one split)")
    lines.append("  balanced: " + ("yes" if report["balanced"] else "no") + "; " +
                 ", ".join(f"{s} {sum(d[s] for d in report['counts'].values())}" for s in SPLITS))
    for name, ok in report.get("checks", {}).items():
        if not ok:
            lines.append(f"  CHECK FAILED: {name}")
    for p in report.get("problems", []):
        lines.append(f"  {p['file']}: {p['problem']}")
    return "\n".join(lines)


def audit_command(store, as_json: bool = False) -> int:
    """`s2i-bench audit STORE`: print the report; exit code 0 when clean, 1 otherwise."""
    opened = open_store(Path(store), verify=False)  # the audit reports what is wrong, it does not refuse
    report = audit_store(opened)
    if as_json:
        print(json.dumps(to_jsonable(report), indent=2))
    else:
        print(format_report(report))
        if opened.leaky:
            print(f"  store.json marks this store leaky (split policy {opened.split_policy})")
    return 0 if report["clean"] else 1
