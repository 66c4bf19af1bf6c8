"""`s2i-bench leaderboard`: systems side by side, on boards of what they were scored with.

    build_leaderboard([RUN, RECORDS.jsonl, BUNDLE.zip, ...], out=BOARD)  -> BOARD/index.html

Inputs: run folders, folders of seed-S run folders, records files (or folders of them; one
system per run the records name) and submission bundles (`results_bundle`: verified before
anything is read; a refused bundle stops the command, or with `skip_refused` is listed on the
page with its reason).

A system's entry is its last scored checkpoint on the split (the final model; never one chosen by
its test score). Systems stand on one board only when their numbers mean the same thing: the same
protocol (fingerprint), classifiers (sha256), store (hash), split, images per sound, and, for the
image metrics, the same feature space (a system without image metrics joins the board of the one
feature space its other identities have). Systems scored otherwise go to another board, and the
page says in which identity the boards differ.

BOARD (owned by a manifest, as the report's folder is: `s2i_bench.publish`):

    index.html, leaderboard.js, leaderboard.css    the page (offline: no network, strict CSP)
    board.json                                    every number, identity, test and refusal
    tables/board-N-{systems,win-rates,pairs}.{csv,md,tex}
    systems/<system>.json                         each system's provenance

No time stamp and no code version in BOARD: the same inputs give the same bytes.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2i_bench import defaults
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_text, to_jsonable
from s2i_bench.locks import exclusive_lock
from s2i_bench.protocol import available_protocols, load_protocol
from s2i_bench.publish import check_publishable, publish_folder, staged_folder
from s2i_bench.report import leaderboard_stats as S
from s2i_bench.report.leaderboard_page import number, write_page
from s2i_bench.report.tables import Column, Table
from s2i_bench.report.plan import slug
from s2i_bench.report.results_bundle import identity, open_results_bundle
from s2i_bench.runs import RunFolder, is_run_folder, record_files_in
from s2i_bench.scoring import records as R
from s2i_bench.scoring.records import Record
from s2i_bench.seeding import item_seed

logger = logging.getLogger(__name__)

KIND = "s2i-bench-leaderboard"
FORMAT_VERSION = 1
CORE = ("protocol", "classifiers_sha256", "store_hash", "split", "samples")
SEED_RUN = re.compile(r"^seed-\d+$")  # a run of a group of seeds (`train-baseline --seeds`)
FIELD_NAMES = {"protocol": "protocol", "classifiers_sha256": "classifiers", "store_hash": "store", "split": "split",
               "samples": "images per sound", "feature_space": "feature space of the image metrics"}


@dataclass
class Entrant:
    """One system as read: its records and where they come from."""

    names: list[str]  # preferred name first, then ways to tell it apart
    origin: str  # "run folder", "records", "bundle"
    source: str  # the input as given
    records: list[Record]
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str = ""


# -- reading the inputs --------------------------------------------------------------------------------
def _from_run(folder: Path, prefix: str = "") -> Entrant:
    run = RunFolder(folder)
    options = run.read_options()
    recs = [r for p in run.record_files() for r in R.read(p, follow_links=False)]
    shown = {k: v for k, v in options.items() if k != "protocol_full"}
    names = [f"{prefix}{folder.name}", f"{folder.parent.name}/{folder.name}"]
    if not prefix and SEED_RUN.match(folder.name):  # seed-0 says little alone: f64/seed-0
        names.reverse()
    return Entrant(names, "run folder", str(folder), recs, {"run_options": shown})


def _from_records(files: list[Path], follow: bool) -> list[Entrant]:
    by_run: dict[str, list[Record]] = {}
    where: dict[str, Path] = {}
    for f in files:
        for r in R.read(f, follow_links=follow):
            by_run.setdefault(r.run, []).append(r)
            where.setdefault(r.run, f)
    return [Entrant([name, f"{name} ({where[name].parent.name})"], "records", str(where[name]), recs)
            for name, recs in by_run.items()]


def _from_bundle(path: Path) -> Entrant:
    b = open_results_bundle(path)
    manifest = {k: v for k, v in b.manifest.items() if k != "files"}
    prov = {"bundle": {"file": path.name, "sha256": b.sha256, "verified": b.checks, "notes": b.notes,
                       "manifest": manifest, "files": b.manifest["files"], "sample_sheets": b.sheets}}
    if b.options is not None:
        prov["run_options"] = {k: v for k, v in b.options.items() if k != "protocol_full"}
    return Entrant([b.system, f"{b.system} ({path.stem})"], "bundle", str(path), b.records, prov)


def gather(inputs: list[Path], skip_refused: bool = False) -> tuple[list[Entrant], list[dict], list[str]]:
    """(the systems, the refused bundles {input, reason}, notes) of the inputs."""
    entrants, refused, notes = [], [], []
    for p in inputs:
        p = Path(p)
        if p.is_file() and p.suffix.lower() == ".zip":
            try:
                entrants.append(_from_bundle(p))
            except UserError as e:
                if not skip_refused:
                    raise
                reason = str(e)[len(f"{p}: "):] if str(e).startswith(f"{p}: ") else str(e)
                refused.append({"input": p.name, "reason": reason})
                logger.warning("%s", e)
        elif p.is_file() and p.suffix == ".jsonl":
            entrants += _from_records([p], True)
        elif p.is_dir() and is_run_folder(p):
            entrants.append(_from_run(p))
        elif p.is_dir() and record_files_in(p):
            entrants += _from_records(record_files_in(p), False)
        elif p.is_dir() and any(is_run_folder(c) for c in p.iterdir() if c.is_dir()):
            entrants += [_from_run(c, f"{p.name}/") for c in sorted(p.iterdir()) if c.is_dir() and is_run_folder(c)]
        elif p.exists():
            raise UserError(f"{p}: not a run folder, a folder of runs, a metric-*.jsonl records file or a results "
                            "bundle (.zip from `s2i-bench bundle-results`)")
        else:
            raise UserError(f"{p}: not found")
    _name(entrants)
    return entrants, refused, notes


def _name(entrants: list[Entrant]) -> None:
    """Unique names: the preferred one when no other system prefers it, else the next one that
    tells the system apart (its parent folder, its file), else numbered."""
    preferred = [e.names[0] for e in entrants]
    taken: set[str] = set()
    for e in entrants:
        options = e.names[:1] if preferred.count(e.names[0]) == 1 else e.names[1:]
        e.name = next((n for n in options if n not in taken), "")
        i = 2
        while not e.name or e.name in taken:
            e.name, i = f"{e.names[0]} #{i}", i + 1
        taken.add(e.name)


# -- boards --------------------------------------------------------------------------------------------
@dataclass
class Board:
    identity: dict[str, Any]
    entries: list[tuple[Entrant, Record]]
    why: list[str] = field(default_factory=list)


def _core(ident: dict[str, Any]) -> str:
    return json.dumps(to_jsonable({k: ident[k] for k in CORE}), sort_keys=True)


def _last(records: list[Record]) -> Record:
    """The last scored checkpoint (the highest epoch; records without epochs: the last written)."""
    with_epoch = [r for r in records if r.epoch is not None]
    if with_epoch:
        top = max(r.epoch for r in with_epoch)
        return [r for r in with_epoch if r.epoch == top][-1]
    return records[-1]


def make_boards(entrants: list[Entrant], split: str, notes: list[str]) -> list[Board]:
    """Each system's last record per identity on `split`, grouped into boards (module docstring)."""
    groups: dict[str, dict[Any, list[tuple[Entrant, Record]]]] = {}
    for e in entrants:
        by_ident: dict[str, list[Record]] = {}
        for r in e.records:
            if r.split == split:
                by_ident.setdefault(json.dumps(to_jsonable(identity(r)), sort_keys=True), []).append(r)
        if not by_ident:
            notes.append(f"{e.name}: no records on the {split} split; not on any board")
        for recs in by_ident.values():
            r = _last(recs)
            groups.setdefault(_core(identity(r)), {}).setdefault(r.feature_space, []).append((e, r))
    boards = []
    for core in sorted(groups):
        spaces = groups[core]
        named = [fs for fs in spaces if fs is not None]
        if len(named) == 1 and None in spaces:  # no image metrics: the one feature space's board
            spaces[named[0]] = spaces.pop(None) + spaces[named[0]]
        for fs in sorted(spaces, key=lambda x: (x is None, str(x))):
            entries = spaces[fs]
            ident = identity(next((r for _, r in entries if r.feature_space is not None), entries[0][1]))
            boards.append(Board(ident, entries))
    for b in boards:
        b.why = _why(b, boards)
    return boards


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return " ".join(str(v.get(k)) for k in ("name", "version", "fingerprint") if v.get(k) is not None)
    return "none" if v is None else str(v)[:12]


def _why(board: Board, boards: list[Board]) -> list[str]:
    out = []
    for i, other in enumerate(boards, start=1):
        if other is board:
            continue
        differ = [f"{FIELD_NAMES[k]} ({_short(board.identity[k])} here, {_short(other.identity[k])} there)"
                  for k in (*CORE, "feature_space") if board.identity.get(k) != other.identity.get(k)]
        out.append(f"not with board {i}: they differ in " + "; ".join(differ))
    return out


def protocol_check(ref: dict[str, Any]) -> str:
    """Whether the board's protocol is the one this s2i-bench ships under that name."""
    name, version, fp = ref.get("name"), ref.get("version"), ref.get("fingerprint")
    if name not in available_protocols():
        return f"protocol {name!r} is not shipped with this s2i-bench (fingerprint {fp}, not checked against a file)"
    here = load_protocol(name)
    if here.fingerprint == fp:
        return f"pinned: identical to protocols/{name}.toml {here.version} shipped with this s2i-bench"
    if here.version == version:
        return f"differs from protocols/{name}.toml {version} shipped with this s2i-bench (fingerprint {fp} vs " \
               f"{here.fingerprint})"
    return f"version {version} (fingerprint {fp}); this s2i-bench ships {name} {here.version}"


# -- the numbers of a board ----------------------------------------------------------------------------
def board_data(board: Board, number: int, *, seed: int, n_boot: int) -> dict[str, Any]:
    """Everything a board shows (board.json's entry), systems best first by mean win rate."""
    recs = {e.name: r for e, r in board.entries}
    metrics = [m for m in S.board_metrics() if any(m.value(r) is not None for r in recs.values())]
    values = {n: {m.key: m.value(r) for m in metrics} for n, r in recs.items()}
    cis = {n: {m.key: S.interval(r, m, seed=item_seed(seed, f"leaderboard/interval/{n}/{m.key}"), n_boot=n_boot)
               for m in metrics if values[n][m.key] is not None} for n, r in recs.items()}
    wins = S.win_rates(values, metrics)
    pairs = S.pairwise(recs, values, cis, metrics, seed=seed, n_boot=n_boot)
    order = sorted(recs, key=lambda n: (-(wins[n].get("mean") if wins[n].get("mean") is not None else -1), n))
    systems = []
    for n in order:
        e, r = next((e, r) for e, r in board.entries if e.name == n)
        systems.append({"name": n, "slug": slug(n), "origin": e.origin, "epoch": r.epoch, "verified": e.origin ==
                        "bundle", "provenance": f"systems/{slug(n)}.json", "values": values[n], "intervals": cis[n],
                        "win_rates": {k: v for k, v in wins[n].items() if k != "mean"},
                        "win_rate": wins[n].get("mean"), "record_checksum": r.to_dict().get("checksum")})
    h2h = {}
    for a in order:
        h2h[a] = {}
        for b in order:
            if a != b:
                share, n = S.head_to_head(values, metrics, a, b)
                sig = sum(1 for p in pairs if p["significant"] and p["better"] == a and {p["a"], p["b"]} == {a, b})
                h2h[a][b] = {"share": share, "metrics": n, "significant_wins": sig}
    return {"id": f"board-{number}", "number": number, "identity": board.identity,
            "protocol_check": protocol_check(board.identity["protocol"]), "why": board.why,
            "metrics": [{"key": m.key, "label": m.label, "lower_is_better": m.lower_is_better, "share": m.is_share}
                        for m in metrics],
            "systems": systems, "pairs": pairs, "head_to_head": h2h}


def _provenance(e: Entrant, boards: list[dict], rec_of: dict) -> dict[str, Any]:
    chosen = []
    for b in boards:
        for s in b["systems"]:
            if s["name"] == e.name:
                r = rec_of[(e.name, b["id"])]
                chosen.append({"board": b["id"], "epoch": r.epoch, "split": r.split, "checksum": s["record_checksum"],
                               "translator": dict(r.translator), "classifiers": dict(r.classifiers),
                               "store": dict(r.store), "protocol": dict(r.protocol), "seed": r.seed,
                               "samples": r.samples, "code_version": r.code_version, "seconds": r.seconds,
                               "created": r.to_dict().get("created"), "sample_sheet": r.sample_sheet})
    return {"system": e.name, "origin": e.origin, "source": e.source, "records": len(e.records),
            "on_boards": chosen, **e.provenance}


# -- tables (CSV, Markdown, LaTeX) ---------------------------------------------------------------------
def _cell(share: bool, v, ci) -> str:
    if v is None:
        return "–"
    return number(v, share) + (f" [{number(ci[0], share)}, {number(ci[1], share)}]" if ci else "")


def board_tables(d: dict[str, Any]) -> list[Table]:
    """The board's systems x metrics (with intervals), win rates and pairs, as report tables."""
    metrics, n = d["metrics"], d["number"]
    rows, win_rows = [], []
    for rank, s in enumerate(d["systems"], start=1):
        row = {"rank": rank, "system": s["name"], "origin": s["origin"], "epoch": s["epoch"],
               "win_rate": s["win_rate"]}
        for m in metrics:
            ci = s["intervals"].get(m["key"]) or [None, None]
            row.update({m["key"]: s["values"].get(m["key"]), f"{m['key']}_low": ci[0], f"{m['key']}_high": ci[1]})
        rows.append(row)
        win_rows.append({"system": s["name"], "win_rate": s["win_rate"], **s["win_rates"]})
    cols = [Column("rank", "#"), Column("system", "system"), Column("origin", "from"), Column("epoch", "epoch"),
            Column("win_rate", "mean win rate", lambda r: _rate(r["win_rate"]))]
    for m in metrics:
        k, arrow = m["key"], " ↓" if m["lower_is_better"] else ""
        cols += [Column(k, m["label"] + (" (%)" if m["share"] else "") + arrow,
                        lambda r, k=k, sh=m["share"]: _cell(sh, r[k], [r[f"{k}_low"], r[f"{k}_high"]]
                                                            if r[f"{k}_low"] is not None else None)),
                 Column(f"{k}_low", "", in_text=False), Column(f"{k}_high", "", in_text=False)]
    ident = d["identity"]
    caption = (f"Protocol {_short(ident['protocol'])}, classifiers {_short(ident['classifiers_sha256'])}, store "
               f"{_short(ident['store_hash'])}, split {ident['split']}: each system's last scored checkpoint, 95% "
               "intervals in brackets; ↓ lower is better")
    systems = Table(f"board-{n}-systems", f"Board {n}: systems x metrics", caption, cols, rows)
    win_cols = [Column("system", "system"), Column("win_rate", "mean", lambda r: _rate(r["win_rate"]))]
    win_cols += [Column(m["key"], m["label"], lambda r, k=m["key"]: _rate(r.get(k))) for m in metrics]
    wins = Table(f"board-{n}-win-rates", f"Board {n}: win rates (HEIM)",
                 "Per metric, the share of the other systems each system beats (ties half); the mean over metrics",
                 win_cols, win_rows)
    pair_cols = [Column("a", "A"), Column("b", "B"), Column("label", "metric"),
                 Column("difference", "A - B"), Column("better", "better"), Column("p_value", "p"),
                 Column("p_holm", "p (Holm)"), Column("significant", "significant",
                                                        lambda r: "yes" if r["significant"] else "no"),
                 Column("test", "test")]
    pairs = Table(f"board-{n}-pairs", f"Board {n}: pairwise differences",
                  "Every pair on every metric both have; Holm's adjustment across the pairs within each metric; "
                  f"significant: adjusted p < {S.ALPHA}", pair_cols, d["pairs"])
    return [systems, wins, pairs]


# -- the command ---------------------------------------------------------------------------------------
def render(gathered, out: Path, *, split: str, seed: int, n_boot: int) -> dict[str, Any]:
    """Every file of the leaderboard of `gather`'s systems into `out` (a staging folder); returns
    board.json's content."""
    entrants, refused, notes = gathered
    boards = make_boards(entrants, split, notes)
    if not boards:
        raise UserError(f"no system has records on the {split} split: nothing to put on a board")
    data = [board_data(b, i, seed=seed, n_boot=n_boot) for i, b in enumerate(boards, start=1)]
    rec_of = {(e.name, d["id"]): r for b, d in zip(boards, data) for e, r in b.entries}
    for e in entrants:
        atomic_write_text(out / "systems" / f"{slug(e.name)}.json",
                          json.dumps(to_jsonable(_provenance(e, data, rec_of)), indent=2) + "\n")
    for d in data:
        for table in board_tables(d):
            table.write(out / "tables")
    doc = {"kind": KIND, "format_version": FORMAT_VERSION, "split": split,
           "bootstrap": {"replicates": n_boot, "seed": seed, "confidence": S.CONFIDENCE},
           "win_rate": "HEIM (Lee et al. 2023) = HELM (Liang et al. 2022): per metric, the share of the other "
                       "systems beaten (ties half), averaged over the metrics",
           "significance": f"Holm across the pairs within each metric; significant: adjusted p < {S.ALPHA}",
           "boards": data, "refused": refused, "notes": notes}
    atomic_write_text(out / "board.json", json.dumps(to_jsonable(doc), indent=2) + "\n")
    write_page(out, doc)
    return doc


def build_leaderboard(inputs, out, *, split: str = "test", seed: int = 0, n_boot: int = S.N_BOOT,
                      skip_refused: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """The leaderboard of INPUTS in OUT, published as the report is (a folder it owns by a
    manifest: the user's files there are never written over or deleted)."""
    final = Path(out)
    check_publishable(final, KIND, overwrite=overwrite, what="`s2i-bench leaderboard`")
    gathered = gather([Path(p) for p in inputs], skip_refused)  # bundles verified before anything is written
    final.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(final / ".lock", f"leaderboard folder {final}"), staged_folder(final) as stage:
        doc = render(gathered, stage, split=split, seed=seed, n_boot=n_boot)
        publish_folder(stage, final, KIND, overwrite=overwrite, what="`s2i-bench leaderboard`")
    return doc


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def leaderboard_command(inputs, out=None, **options) -> None:
    """`s2i-bench leaderboard`: without INPUTS, the embedded default's runs and reference
    translators into demo-work/leaderboard. Prints where the page is and each board's ranking."""
    if not inputs:
        inputs = defaults.runs()
        refs = defaults.work().references
        inputs += [refs] if refs.is_file() else []
        logger.info(f"leaderboard: the embedded default's {len(inputs)} input(s)")
        out = out or defaults.work().root / "leaderboard"
    elif out is None:
        raise UserError("missing --out BOARD_FOLDER")
    doc = build_leaderboard(list(inputs), out, **options)
    for b in doc["boards"]:
        ranking = ", ".join(f"{s['name']} ({_rate(s['win_rate'])})" for s in b["systems"])
        print(f"board {b['number']} ({len(b['systems'])} systems, by mean win rate): {ranking}")
    for r in doc["refused"]:
        print(f"refused: {r['reason']}")
    print(f"leaderboard: {Path(out) / 'index.html'}")
