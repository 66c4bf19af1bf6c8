"""`s2i-bench label-audit estimate AUDIT`: the audited share of every audited system, from the labels in
the blind set's annotation logs and the classifier's output on every scored image.

Each audited record is the scored record it was drawn from plus an `audit` block (record format
5; `scoring.records.audit_block`): per class and for the mean, `audited_share`, its interval, the
half-width reached, n and N, the classifier weight lambda, and the audited positions with their
votes, from which every read recomputes the numbers. They are written together to
`AUDIT/records.jsonl` (replaced on each estimate: the file always says what the labels say now).

A label is the mean of the annotators' 0/1 labels of the image (one annotator: the label). With
several annotators, their agreement (Cohen's kappa / Krippendorff's alpha, `informativity.annotations`)
goes into the block. Every image of the audit must have a label; `allow_partial` uses those that
have one (said in the block: it is then a sample of the drawn sample, which stays random only if
what went unlabelled does not depend on the image).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A
from s2i_bench.scoring import records as R
from s2i_bench.scoring.audit.folder import AuditFolder, positions_of
from s2i_bench.text import percent

logger = logging.getLogger(__name__)

LABEL_RULE = "the mean of the annotators' 0/1 labels of each image"


def votes_by_image(blind) -> tuple[dict[str, tuple[int, int]], list[str], dict | None]:
    """{blind image id: (informative votes, votes)}, the annotators, and their agreement (None
    with one annotator)."""
    votes = A.collected_votes(blind)
    out = {iid: (int(g["label"].sum()), int(len(g))) for iid, g in votes.groupby("image_id")}
    names = sorted(votes["annotator"].unique().tolist())
    agreement = None
    if len(names) > 1:
        classes = dict(zip(blind.table["image_id"], blind.table["class"]))
        agreement = A.agreement(votes, classes)
    return out, names, agreement


def record_of(entry: dict) -> R.Record:
    """The scored record an audit drew from, found again by its checksum in its file."""
    path = Path(entry["record"]["file"])
    if not path.is_file():
        raise UserError(f"{path}: the records file this audit drew from is gone")
    for r in R.read(path):
        if r.data.get("checksum") == entry["record"]["checksum"]:
            return r
    raise UserError(f"{path}: no longer holds the record the audit drew from (checksum "
                    f"{str(entry['record']['checksum'])[:16]}); draw a new audit")


def estimate_audit(audit_dir, *, alpha: float = 0.05, score: str = "auto",
                   allow_partial: bool = False) -> list[R.Record]:
    """Audited records of every system in the audit (module docstring), written to
    AUDIT/records.jsonl and returned in the audit's order."""
    folder = AuditFolder(Path(audit_dir))
    plan, key = folder.read()
    blind = folder.blind_set()
    votes, annotators, agreement = votes_by_image(blind)
    missing = [iid for iid in key["image_id"] if iid not in votes]
    if missing and not allow_partial:
        raise UserError(f"{blind.path}: {len(missing)} of {len(key)} images have no label yet (e.g. {missing[0]}); "
                        f"label them, or pass --allow-partial")
    out = []
    for i, entry in enumerate(plan["systems"]):
        record = record_of(entry)
        chosen = _score_of(record, score)
        positions, pairs = {}, {}
        for class_key in plan["classes"]:
            ids = key[(key["system"] == i) & (key["class"] == class_key)]["image_id"].tolist()
            pos = positions_of(key, i, class_key)
            keep = [j for j, iid in enumerate(ids) if iid in votes]
            if keep:
                positions[class_key] = [int(pos[j]) for j in keep]
                pairs[class_key] = [list(votes[ids[j]]) for j in keep]
        unlabelled = int(sum(1 for iid in key[key["system"] == i]["image_id"] if iid not in votes))
        about = {"audit": {"seed": plan["seed"], "key_sha256": plan["key_sha256"], "blind_set": blind.content_hash,
                           "system": entry["id"], "drawn_per_class": plan["per_class"], "unlabelled": unlabelled},
                 "annotators": annotators, "label_rule": LABEL_RULE, "agreement": agreement}
        block = R.audit_block(record.to_dict(), positions=positions, votes=pairs, score=chosen, alpha=float(alpha),
                              about=about)
        data = {k: v for k, v in record.to_dict().items() if k != "checksum"}
        out.append({**data, "format_version": R.FORMAT_VERSION, "audit": block})
    R.replace_all(folder.records_path, out)
    written = R.read(folder.records_path)
    logger.info(f"audit: {len(written)} audited records -> {folder.records_path}")
    return written


def _score_of(record: R.Record, score: str) -> str:
    """What the classifier contributes: its probability where the record keeps one ("auto"), else
    its decision."""
    has_p = (record.decisions() or {}).get("probability") is not None
    if score == "auto":
        return "probability" if has_p else "decision"
    if score == "probability" and not has_p:
        raise UserError(f"{record.source}: --score probability, but the record keeps no per-image probabilities "
                        f"(score it again with this s2i-bench)")
    if score not in R.AUDIT_SCORES:
        raise UserError(f"--score {score!r}: one of auto, {', '.join(R.AUDIT_SCORES)}")
    return score



def system_name(r: R.Record) -> str:
    return r.translator_name or (f"{r.run} epoch {r.epoch}" if r.epoch is not None else r.run)


def format_audited(recs: list[R.Record], as_json: bool = False) -> str:
    """The mean over classes per system: raw, corrected, audited with its interval, and the
    synthetic world's truth where there is one."""
    if as_json:
        return json.dumps([{"system": system_name(r), "of": r.audited_of, "mean": dict(r.audit["mean"]),
                            "classes": {k: {f: v for f, v in c.items() if f not in ("positions", "votes")}
                                        for k, c in r.audit["classes"].items()}} for r in recs], indent=2)
    lines = [f"{'system':<26} {'raw':>7} {'corrected':>9} {'audited [95% CI]':>26} {'truth':>7} {'labels':>6}"]
    for r in recs:
        ci = r.audited_ci()
        audited = f"{percent(r.mean(R.AUDITED))} [{percent(ci[0], suffix='')}, {percent(ci[1], suffix='')}]"
        lines.append(f"{system_name(r)[:26]:<26} {percent(r.mean('raw_share')):>7} "
                     f"{percent(r.mean('corrected_share')):>9} {audited:>26} {percent(r.mean('true_share')):>7} "
                     f"{r.audit['mean']['n_audited']:>6}")
    return "\n".join(lines)
