"""`s2i-bench compare`: is translator A better than B, and by how much?

    result = compare([A, B, ...], store=STORE, bundle=BUNDLE, epoch=None | E, window=False)

Each system is a run folder, a records file, or a group of run folders that differ only in their
training seed (a folder of `seed-S/` run folders, as `train-baseline --seeds` writes them). Every
pair is compared on the same test sounds with the same classifiers: records scored on other
stores, splits, scoring seeds, bundles or protocols are refused, naming the field.

At one checkpoint (`--epoch E`, default the last epoch all have) per class and for the mean:

    raw        share of images the class's classifier calls informative (the paper's metric)
    corrected  the difference of the Rogan-Gladen corrected shares, each clipped to [0, 1] as the
               records give them (the same classifiers score both), its interval carrying the
               classifiers' own uncertainty (their test set resampled with the sounds)
    true       the synthetic world judge's share (synthetic stores only)

Single translators: exact McNemar on the paired per-image decisions for a class's raw and true
shares (the corrected difference has the raw one's p-value: before clipping it is the raw
difference scaled by a positive factor, so both shares are equal exactly when the raw ones
are); the mean over classes and every group of seeds: a bootstrap over the test sounds
(stratified by class; groups also resample their seeds), two-sided. Intervals: the
percentile interval of the same bootstrap. Series metrics (`--window`: the window average and the
maximum moving average): a paired bootstrap over the test sounds that recomputes the whole
metric, post-update replacement included, for each replicate.

p-values are adjusted by Holm's method across classes (and the mean) and pairs, within each
metric and measure. `mde` is the smallest difference a test at 5% finds with 80% power given
this many sounds and the observed discordance (normal approximation of McNemar's test), so a
"no significant difference" has a size.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_text, file_sha256, to_jsonable
from s2i_bench.informativity.bundle import load_bundle
from s2i_bench.provenance import code_version
from s2i_bench.scoring.audit.paired import audited_of_systems, audited_pairs
from s2i_bench.scoring.paired import ALPHA, POWER, _distribution_rows, compare_checkpoint, compare_series
from s2i_bench.scoring.systems import (FIELDS, System, check_recipes, common_series, decisions_at, load_system,
                                      named_bundle, protocol_of)
from s2i_bench.stats import holm
from s2i_bench.text import percent


# -- the command's core ----------------------------------------------------------------------------------
def compare(specs, *, store=None, bundle=None, epoch: int | None = None, window: bool = False, split: str | None = None,
            n_boot: int | None = None, seed: int = 0, audits=()) -> dict[str, Any]:
    """Every pair of `specs` compared (see the module docstring); the result as JSON-ready data.
    With `audits` (label-audit folders), also the paired audited differences of the systems they
    audited at the same images (`scoring.audit.paired`), Holm-adjusted as their own family."""
    if len(specs) < 2:
        raise UserError("a comparison needs two systems or more (run folders, records files or groups of seeds)")
    systems = [load_system(s) for s in specs]
    names = [s.name for s in systems]
    if len(set(names)) < len(names):
        for i, s in enumerate(systems):
            s.name = f"{s.name}#{i + 1}" if names.count(s.name) > 1 else s.name
    st = open_store(store) if store is not None else None
    bun = bundle if hasattr(bundle, "test_outcomes") else (load_bundle(bundle) if bundle is not None else None)
    protocol = st.protocol if st is not None else protocol_of(systems)
    split = split or protocol.scoring.split
    key = common_series(systems, split, file_sha256(Path(bun.path)) if bun is not None else None,
                        st.store_hash if st is not None else None)
    notes = []
    if bun is None:
        bun, note = named_bundle(systems, key)
        notes += [note] if note else []
    if key[5] != protocol.fingerprint:
        raise UserError(f"the records were scored under protocol {key[5]}, the store is {protocol.fingerprint}")
    check_recipes(systems, key, epoch, window)  # image metrics of two recipes never meet in one table
    result = compare_systems(systems, key, protocol, bun, epoch=epoch, window=window, n_boot=n_boot, seed=seed)
    if audits:
        audited, audit_notes = audited_of_systems(audits, systems)
        rows = audited_pairs(audited)
        for row, p in zip(rows, holm([r["p_value"] for r in rows])):
            row |= {"p_adjusted": float(p), "significant": bool(p < ALPHA)}
        result["pairs"] += rows
        notes += audit_notes
    result["notes"] = notes + result["notes"]
    return result


def compare_systems(systems: list[System], key: tuple, protocol, bundle, *, epoch: int | None = None,
                    window: bool = False, n_boot: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Every pair of loaded systems on the series `key` (see `compare`)."""
    keys = list(protocol.class_keys)
    n_boot = n_boot or protocol.metrics.bootstrap_samples
    confidence = protocol.metrics.confidence
    pairs = []
    for i, j in itertools.combinations(range(len(systems)), 2):
        a, b = systems[i], systems[j]
        pair_seed = seed * 1_000_003 + i * 1009 + j
        if window:
            rows = compare_series(a, b, key, keys, protocol, bundle, n_boot=n_boot, seed=pair_seed,
                                  confidence=confidence)
        else:
            da = decisions_at(a, key, epoch, keys)
            db = decisions_at(b, key, epoch, keys)
            rows = compare_checkpoint(a, b, da, db, keys, bundle, n_boot=n_boot, seed=pair_seed, confidence=confidence)
            for r in rows:
                r["metric"] = "share at epoch " + ("last" if epoch is None else str(epoch))
        if not window:
            rows += _distribution_rows(a, b, key, epoch)
        for r in rows:
            pairs.append({"a": a.name, "b": b.name, **r})
    families: dict[tuple, list[int]] = {}
    for idx, r in enumerate(pairs):
        families.setdefault((r["metric"], r["measure"]), []).append(idx)
    for members in families.values():
        adjusted = holm([pairs[i]["p_value"] for i in members])
        for i, p in zip(members, adjusted):
            pairs[i]["p_adjusted"] = float(p)
            pairs[i]["significant"] = bool(p < ALPHA)
    return {
        "kind": "s2i-bench-comparison", "format_version": 1,
        "systems": [{"name": s.name, "members": [{"name": m.name, "seed": m.seed, "folder": str(m.folder) if m.folder
                                                  else None} for m in s.members]} for s in systems],
        "mode": "series (window average, maximum moving average)" if window else
                f"one checkpoint (epoch {'last common' if epoch is None else epoch})",
        "epoch": epoch, "split": key[2], "series": {f: str(v) for f, v in zip(FIELDS, key)},
        "protocol": protocol.ref(), "bootstrap": {"replicates": n_boot, "seed": seed, "confidence": confidence},
        "alpha": ALPHA, "power_for_mde": POWER,
        "multiple_comparisons": "Holm across classes (and the mean) and pairs, within each metric and measure",
        "pairs": pairs, "notes": [], "code_version": code_version(),
    }


def format_comparison(result: dict) -> str:
    """A plain-text table of the pairs."""
    def pct(x):
        return percent(x, signed=True, suffix="", missing="-")

    lines = [f"{result['mode']}; split {result['split']}; {result['multiple_comparisons']}; "
             f"significant: adjusted p < {result['alpha']}"] + [f"note: {n}" for n in result.get("notes", [])] + [""]
    header = f"{'A':<16} {'B':<16} {'metric':<22} {'measure':<9} {'class':<15} {'diff (pp)':>9} {'95% CI':>16} " \
             f"{'p':>8} {'p adj':>8} {'MDE':>6}  "
    lines += [header, "-" * len(header)]
    for r in result["pairs"]:
        ci = r.get("ci")
        cis = f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else "-"
        mde = "-" if r.get("mde") is None else f"{100 * r['mde']:.1f}"
        lines.append(f"{r['a'][:16]:<16} {r['b'][:16]:<16} {r['metric'][:22]:<22} {r['measure']:<9} "
                     f"{r['class'][:15]:<15} {pct(r['difference']):>9} {cis:>16} {r['p_value']:>8.4f} "
                     f"{r['p_adjusted']:>8.4f} {mde:>6}  {'*' if r['significant'] else ''}")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(result), indent=2) + "\n")
