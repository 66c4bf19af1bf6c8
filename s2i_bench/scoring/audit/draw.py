"""`s2i-bench label-audit draw`: a seeded random sample of each audited system's scored images, made
again from the record (its translator, the store's sounds and the per-image seeds), checked
against the record, and mixed into one blind label set.

    draw_audit(["runs/f32/seed-0", "references/metric-informativity.jsonl"], "audit/", per_class=8)

A system is a run folder (its record at the last epoch, or `epoch`) or a records file (every
record in it, e.g. the four reference translators). Every record must have been scored with the
audit's classifiers on the audit's store and split, with per-image decisions; anything else is
refused naming the field that differs.

Positions are drawn per class and per plan (the records' `decisions.order` and shape), so
systems scored on the same sounds are audited at the same positions: `compare` can pair them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from s2i_bench import defaults, synth
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.fileio import file_sha256, progress
from s2i_bench.images import net_to_uint8
from s2i_bench.informativity.blind_set import blind_id, write_blind_set
from s2i_bench.informativity.bundle import load_bundle
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.publish import built_aside, check_replaceable
from s2i_bench.runs import RunFolder, is_run_folder
from s2i_bench.scoring import records as R
from s2i_bench.scoring.audit.folder import BLIND, FORMAT, FORMAT_VERSION, NAMES, PLAN, AuditFolder
from s2i_bench.scoring.collect import make_plan
from s2i_bench.scoring.command import load_spec, translator_kind
from s2i_bench.scoring.decisions import order_of
from s2i_bench.scoring.series import last_per_epoch
from s2i_bench.seeding import item_seed
from s2i_bench.translators import batch_for_rows, translate_checked
from s2i_bench.translators.folder import load_folder

logger = logging.getLogger(__name__)

MAX_MISMATCH = 0.01  # share of regenerated images whose classifier decision may differ from the record's


# -- which records ---------------------------------------------------------------------------------
def _identity_problem(r: R.Record, *, bundle_sha: str, store_hash: str, split: str) -> str | None:
    """The first field in which a record differs from the audit, said with both values."""
    for field, have, want in (("classifiers.sha256", r.classifiers_sha256, bundle_sha),
                              ("store.hash", r.store_hash, store_hash), ("split", r.split, split)):
        if have != want:
            return f"{field} is {str(have)[:16]!r}, the audit's is {str(want)[:16]!r}"
    if not r.has_decisions:
        return "it has no per-image decisions (format 1-2): score it again"
    return None


def _records_of(spec: Path, *, epoch, bundle_sha: str, store_hash: str, split: str) -> list[tuple[R.Record, Path]]:
    """The records a system spec stands for, each with the file it came from."""
    if is_run_folder(spec):
        run = RunFolder(spec)
        found = [(r, p) for p in run.record_files() for r in R.read(p, follow_links=False)]
    elif spec.is_file():
        found = [(r, spec) for r in R.read(spec)]
    else:
        raise UserError(f"{spec}: not a run folder or a records file (score it first: `s2i-bench score`)")
    ok = [(r, p) for r, p in found if _identity_problem(r, bundle_sha=bundle_sha, store_hash=store_hash,
                                                       split=split) is None]
    if not ok:
        why = _identity_problem(found[0][0], bundle_sha=bundle_sha, store_hash=store_hash, split=split) if found \
            else "no informativity records"
        raise UserError(f"{spec}: no record the audit can use: {why}")
    if not is_run_folder(spec):
        return ok
    source = {id(r): p for r, p in ok}
    by_epoch = last_per_epoch(r for r, _ in ok)
    chosen = max(by_epoch) if epoch in (None, "last") else int(epoch)
    if chosen not in by_epoch:
        raise UserError(f"{spec}: no record at epoch {chosen} (scored epochs {min(by_epoch)}..{max(by_epoch)})")
    return [(by_epoch[chosen], source[id(by_epoch[chosen])])]


# -- which positions ---------------------------------------------------------------------------------
def draw_positions(record: R.Record, per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Per class, `per_class` flat positions (k * N + n) of the record's (K, N) images, a seeded
    sample without replacement, sorted; the same for every record of the same plan."""
    k, n = record.decisions()["shape"]
    order = record.decisions()["order"]
    out = {}
    for key, sl in record.class_slices().items():
        if record.share(key, "raw_share") is None:
            continue  # no classifier for this class: nothing to correct
        flat = (np.arange(k)[:, None] * n + np.arange(sl.start, sl.stop)[None, :]).ravel()
        take = min(per_class, flat.size)
        if take < per_class:
            logger.warning(f"{key}: only {flat.size} scored images, all of them audited (asked {per_class})")
        rng = np.random.default_rng(item_seed(seed, f"audit/{order}/{key}"))
        out[key] = np.sort(rng.choice(flat, size=take, replace=False))
    return out


# -- the images again ---------------------------------------------------------------------------------
def _translator_of(record: R.Record, source: Path, store, device: str):
    """The record's translator, loaded again and checked to be the same file (sha256)."""
    t = record.translator
    path = str(t.get("path") or "")
    if t.get("kind") == "checkpoint" and is_run_folder(source.parent) and record.epoch is not None:
        path = str(RunFolder(source.parent).checkpoint_path(record.epoch))
    kind = translator_kind(path)
    if kind == "images":
        loaded, _, _ = load_folder(Path(path), store, split=record.split, samples=record.samples, allow_missing=True,
                                   size=store.protocol.image.size)
    else:
        loaded = load_spec(kind, path, store, store.protocol, device)
    have = (getattr(loaded, "info", None) or {}).get("sha256")
    if record.translator_sha256 and have != record.translator_sha256:
        raise UserError(f"{path}: translator.sha256 is {str(have)[:16]}, the record's is "
                        f"{record.translator_sha256[:16]}: not the translator the record scored")
    return loaded


def plan_of(record: R.Record, store):
    """The record's plan (sounds, order, per-image seeds), rebuilt from the store and checked."""
    d = record.decisions()
    plan = make_plan(store, tuple(record.class_keys), record.split, record.seed, record.samples)
    if d["order"] != order_of(plan.segment_ids) or (plan.samples, len(plan.indices)) != tuple(d["shape"]):
        raise UserError(f"{record.source}: the store's plan is not the record's (decisions.order differs): "
                        f"the store changed or the record scored only some sounds")
    return plan


def regenerate(record: R.Record, source: Path, store, plan, positions: np.ndarray,
               device: str = "cpu") -> tuple[np.ndarray, torch.Tensor]:
    """The record's images at flat `positions` (k * N + n), made again: (P, S, S, 3) uint8 (what
    people and the judge see) and (P, 3, S, S) float in [-1, 1] (what the classifier saw)."""
    translator = _translator_of(record, source, store, device)
    draws, sounds = np.divmod(positions, len(plan.indices))
    inputs = tuple(getattr(translator, "inputs", ("log_mel",)))
    size = store.protocol.image.size
    out = np.zeros((len(positions), size, size, 3), dtype=np.uint8)
    net = torch.zeros((len(positions), 3, size, size), dtype=torch.float32)
    for k in np.unique(draws):
        at = np.flatnonzero(draws == k)
        rows = plan.indices[sounds[at]]
        batch = batch_for_rows(store, rows, plan.seeds[k, sounds[at]], device, inputs=inputs, draw=int(k))
        _, images = translate_checked(translator, batch, size=size, rows=rows)  # (B, 3, S, S)
        out[at] = net_to_uint8(images)
        net[torch.from_numpy(at)] = images.float().cpu()
    return out, net


def check_against_record(record: R.Record, positions: np.ndarray, images: np.ndarray, net: torch.Tensor, bundle,
                         store, class_key: str) -> dict[str, int]:
    """The regenerated images must be the record's: its classifier decisions (and, on the
    synthetic world, the judge's truth) at those positions. A few differences may come from
    floating-point sums in another batch; more than MAX_MISMATCH means another translator,
    store or classifier, and is refused."""
    d = record.decisions()
    flat = lambda a: a.reshape(-1)[positions]  # noqa: E731
    out = {"images": int(len(positions))}
    out["decision_mismatch"] = int((np.asarray(bundle.predict_informative(net, class_key), bool)
                                    != flat(d["informative"])).sum())
    if store.synthetic and d["truth"] is not None:
        out["truth_mismatch"] = int((np.asarray(synth.judge(images, class_key), bool) != flat(d["truth"])).sum())
    worst = max(out.get("decision_mismatch", 0), out.get("truth_mismatch", 0))
    if worst > max(1, MAX_MISMATCH * len(positions)):
        raise UserError(f"{record.source}: {worst} of {len(positions)} regenerated {class_key} images differ from the "
                        f"record's decisions: not the record's images (another translator, store or classifiers)")
    return out


# -- the command ------------------------------------------------------------------------------------------
def _system_entry(i: int, record: R.Record, source: Path, checks: dict) -> dict[str, Any]:
    return {"id": f"s{i:02d}", "record": {"file": str(source.resolve()), "source": record.source,
                                            "checksum": record.data.get("checksum")},
            "translator": dict(record.translator), "run": record.run, "epoch": record.epoch,
            "order": record.decisions()["order"], "shape": list(record.decisions()["shape"]), "checks": checks}


def draw_audit(systems, out, *, store=None, classifiers=None, per_class: int = 10, seed: int = 0, epoch=None,
               split: str | None = None, device: str = "cpu", overwrite: bool = False) -> Path:
    """Draw, make again, check and blind (module docstring); returns the audit folder."""
    out = Path(out)
    check_replaceable(out, PLAN, "audit folder", overwrite, NAMES)
    if not isinstance(per_class, int) or not 1 <= per_class <= 100_000:
        raise UserError(f"--per-class {per_class!r}: labels per class and system must be a whole number >= 1")
    st = open_store(store if store is not None else defaults.store())
    bun = load_bundle(classifiers if classifiers is not None else defaults.bundle(), device=device)
    bundle_sha, split = file_sha256(bun.path), split or st.protocol.scoring.split
    chosen = [rs for spec in systems for rs in _records_of(Path(spec), epoch=epoch, bundle_sha=bundle_sha,
                                                              store_hash=st.store_hash, split=split)]
    sums = [r.data.get("checksum") for r, _ in chosen]
    if len(set(sums)) < len(sums):
        raise UserError("the same record is named twice (a run folder and its records file?)")
    names = st.protocol.class_keys
    entries, key_rows, images = [], [], []
    for i, (record, source) in enumerate(progress(chosen, desc="audit: draw and make again", unit="system")):
        positions = draw_positions(record, per_class, seed)
        checks = {}
        plan = plan_of(record, st)
        for class_key, pos in positions.items():
            made, net = regenerate(record, source, st, plan, pos, device)
            checks[class_key] = check_against_record(record, pos, made, net, bun, st, class_key)
            images.append(made)
            key_rows.append(_key_rows(record, plan, i, class_key, pos, seed))
        entries.append(_system_entry(i, record, source, checks))
    key = pd.concat(key_rows, ignore_index=True)
    plan = {"format": FORMAT, "format_version": FORMAT_VERSION, "seed": int(seed), "per_class": int(per_class),
            "split": split, "store": {"path": str(st.path), "hash": st.store_hash},
            "classifiers": {"path": str(bun.path), "sha256": bundle_sha}, "protocol": st.protocol.ref(),
            "systems": entries, "classes": [k for k in names if k in set(key["class"])],
            "code_version": code_version(), "created": now_iso()}
    with built_aside(out) as tmp:  # no half-written audit is left behind
        write_blind_set(tmp / BLIND, key["image_id"].tolist(), key["class"].tolist(), np.concatenate(images),
                        {k: n for k, n in zip(names, st.protocol.class_names)})
        AuditFolder(tmp).write(plan, key)
    logger.info(f"audit: {len(key)} images of {len(entries)} systems -> {out / BLIND} (label it: `s2i-bench "
                f"label-server {out / BLIND}`, or `s2i-bench label-audit label {out} --judge` on the synthetic world)")
    return out


def _key_rows(record: R.Record, plan, system: int, class_key: str, positions: np.ndarray, seed: int) -> pd.DataFrame:
    draws, sounds = np.divmod(positions, len(plan.indices))
    return pd.DataFrame({
        "image_id": [blind_id(seed, f"{system}|{p}") for p in positions], "system": system, "class": class_key,
        "position": positions, "draw": draws, "sound": plan.segment_ids[sounds],
        "image_seed": plan.seeds[draws, sounds],
        "decision": record.decisions()["informative"].reshape(-1)[positions].astype(int)})
