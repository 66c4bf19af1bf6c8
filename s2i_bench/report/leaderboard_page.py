"""The leaderboard's page: one static HTML document, its script and its style, from board.json's
content (`leaderboard.render`).

Offline by construction: every resource is a file beside the page (`leaderboard.js`,
`leaderboard.css`, `systems/*.json`), and the page's Content-Security-Policy (a meta tag, so it
holds when the file is opened from disk) allows nothing else: no network, no inline script or
style, no form. Every name and identity (a bundle's are a stranger's) is escaped as text. The
tables sort by any column (a click on its header; missing values stay last) and work, unsorted,
without the script.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from s2i_bench.fileio import atomic_write_text

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; "
       "form-action 'none'")
SCRIPT, STYLE = "leaderboard.js", "leaderboard.css"
e = html.escape


def _num(v: Any) -> str:
    return "" if v is None else repr(float(v))


def number(v: float | None, share: bool) -> str:
    """How the page and the tables show a metric: shares in percent, one decimal; other numbers
    with fixed decimals by size (no exponents: a distance of 4e-12 shows as 0.0000)."""
    if v is None:
        return "–"
    if share:
        return f"{100 * v:.1f}"
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"



def _short(v: Any, n: int = 12) -> str:
    s = "none" if v is None else str(v)
    return s if len(s) <= n else s[:n] + "…"


def _code(v: Any) -> str:
    return f'<code title="{e(str(v))}">{e(_short(v))}</code>'


def _th(label: str, kind: str, first: str, title: str = "") -> str:
    """A sortable header: `kind` num or text; `first` the order of the first click."""
    t = f' title="{e(title)}"' if title else ""
    c = ' class="text"' if kind == "text" else ""
    return (f'<th scope="col"{t}{c}><button type="button" class="sort" data-type="{kind}" data-first="{first}">'
            f"{e(label)}</button></th>")


def _scroll(table: str) -> str:
    return f'<div class="scroll">{table}</div>'



def _bar(v: float | None) -> str:
    """A win rate as text with a bar (widths by class: the policy allows no inline style)."""
    if v is None:
        return '<td data-sort="">–</td>'
    return f'<td data-sort="{_num(v)}"><span class="bar w{int(round(10 * v))}"></span>{v:.2f}</td>'


def _identity(b: dict[str, Any]) -> str:
    i = b["identity"]
    p = i["protocol"]
    fs = "no image metrics" if i.get("feature_space") is None else \
        f"{e(str(i.get('feature_space_name') or ''))} {_code(i['feature_space'])}"
    rows = [("protocol", f"{e(str(p.get('name')))} {e(str(p.get('version')))} {_code(p.get('fingerprint'))}"
                         f'<br><span class="check">{e(b["protocol_check"])}</span>'),
            ("classifiers", _code(i.get("classifiers_sha256"))), ("store", _code(i.get("store_hash"))),
            ("split", f"{e(str(i.get('split')))}, {e(str(i.get('samples')))} image(s) per sound"),
            ("image metrics on", fs)]
    return '<dl class="identity">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _systems_table(b: dict[str, Any]) -> str:
    metrics = b["metrics"]
    head = [_th("#", "num", "ascending"), _th("system", "text", "ascending"), _th("from", "text", "ascending"),
            _th("epoch", "num", "descending"), _th("mean win rate", "num", "descending")]
    for m in metrics:
        arrow = " ↓" if m["lower_is_better"] else ""
        head.append(_th(m["label"] + (" (%)" if m["share"] else "") + arrow, "num",
                        "ascending" if m["lower_is_better"] else "descending",
                        "lower is better" if m["lower_is_better"] else "higher is better"))
    body = []
    for rank, s in enumerate(b["systems"], start=1):
        badge = '<span class="badge ok" title="bundle verified">bundle ✓</span>' if s["verified"] else ""
        cells = [f'<td data-sort="{rank}">{rank}</td>',
                 f'<td data-sort="{e(s["name"])}" class="name"><a href="{e(s["provenance"])}">{e(s["name"])}</a>'
                 f"{badge}</td>",
                 f'<td data-sort="{e(s["origin"])}" class="text">{e(s["origin"])}</td>',
                 f'<td data-sort="{_num(s["epoch"])}">{"–" if s["epoch"] is None else s["epoch"]}</td>',
                 _bar(s["win_rate"])]
        for m in metrics:
            v, ci = s["values"].get(m["key"]), s["intervals"].get(m["key"])
            shown = e(number(v, m["share"])) + (f'<span class="ci">[{e(number(ci[0], m["share"]))}, '
                                             f'{e(number(ci[1], m["share"]))}]</span>' if ci and v is not None else "")
            cells.append(f'<td data-sort="{_num(v)}">{shown}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return _scroll(f'<table class="sortable" id="{b["id"]}-systems"><thead><tr>{"".join(head)}</tr></thead>'
                   f'<tbody>{"".join(body)}</tbody></table>')


def _win_table(b: dict[str, Any]) -> str:
    metrics = b["metrics"]
    head = [_th("system", "text", "ascending"), _th("mean", "num", "descending")]
    head += [_th(m["label"], "num", "descending") for m in metrics]
    body = []
    for s in b["systems"]:
        cells = [f'<td data-sort="{e(s["name"])}" class="name">{e(s["name"])}</td>', _bar(s["win_rate"])]
        cells += [_bar(s["win_rates"].get(m["key"])) for m in metrics]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return _scroll(f'<table class="sortable" id="{b["id"]}-win-rates"><thead><tr>{"".join(head)}</tr></thead>'
                   f'<tbody>{"".join(body)}</tbody></table>')


def _h2h_table(b: dict[str, Any]) -> str:
    names = [s["name"] for s in b["systems"]]
    head = '<th scope="col">A \\ B</th>' + "".join(f'<th scope="col">{e(n)}</th>' for n in names)
    body = []
    for a in names:
        cells = [f'<th scope="row">{e(a)}</th>']
        for o in names:
            if o == a:
                cells.append('<td class="self">·</td>')
                continue
            c = b["head_to_head"][a][o]
            if c["share"] is None:
                cells.append("<td>–</td>")
                continue
            cls = "win" if c["share"] > 0.5 else "loss" if c["share"] < 0.5 else "tie"
            star = f' <span class="sig" title="significantly better on {c["significant_wins"]} metric(s)">' \
                   f'★{c["significant_wins"]}</span>' if c["significant_wins"] else ""
            cells.append(f'<td class="{cls}" title="{e(a)} beats {e(o)} on {c["share"]:.2f} of {c["metrics"]} '
                         f'metrics">{c["share"]:.2f}{star}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return _scroll(f'<table class="h2h"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _significant(b: dict[str, Any]) -> str:
    pairs = b["pairs"]
    share = {m["key"]: m["share"] for m in b["metrics"]}
    sig = [p for p in pairs if p["significant"]]
    tested = sum(1 for p in pairs if p["p_holm"] is not None)
    text = f"{len(sig)} of {tested} tested differences are significant after Holm's adjustment (adjusted p &lt; 0.05)"
    csv = f'tables/{b["id"]}-pairs.csv'
    link = f'<p class="hint">Every pair, tested or not: <a href="{csv}">{b["id"]}-pairs.csv</a>.</p>'
    if not sig:
        return f"<p>{text}.</p>{link}"
    head = "".join(_th(h, k, f) for h, k, f in (("better", "text", "ascending"), ("than", "text", "ascending"),
                                                ("metric", "text", "ascending"), ("by", "num", "descending"),
                                                ("p (Holm)", "num", "ascending"), ("test", "text", "ascending")))
    rows = []
    for p in sig:
        worse = p["b"] if p["better"] == p["a"] else p["a"]
        by = abs(p["difference"])
        shown = f"{100 * by:.1f} pp" if share.get(p["metric"]) else number(by, False)
        rows.append(f'<tr><td data-sort="{e(p["better"])}" class="text">{e(p["better"])}</td>'
                    f'<td data-sort="{e(worse)}" class="text">{e(worse)}</td>'
                    f'<td data-sort="{e(p["label"])}" class="text">{e(p["label"])}</td>'
                    f'<td data-sort="{_num(by)}">{shown}</td>'
                    f'<td data-sort="{_num(p["p_holm"])}">{_p(p["p_holm"])}</td>'
                    f'<td data-sort="{e(p["test"])}" class="test">{e(p["test"])}</td></tr>')
    table = _scroll(f'<table class="sortable" id="{b["id"]}-significant"><thead><tr>{head}</tr></thead>'
                    f'<tbody>{"".join(rows)}</tbody></table>')
    return f"<details><summary>{text}: show them</summary>{table}</details>{link}"


def _board(b: dict[str, Any]) -> str:
    why = "".join(f'<p class="why">{e(w)}</p>' for w in b["why"])
    n = b["id"]
    return (f'<section id="{n}" class="board"><h2>Board {b["number"]}</h2>{_identity(b)}{why}'
            f"<h3>Systems × metrics</h3><p class=\"hint\">Each system's last scored checkpoint; 95% intervals in "
            f"brackets; ↓ lower is better. Click a column header to sort; the system's name links to its "
            f'provenance. Tables: <a href="tables/{n}-systems.csv">CSV</a>, <a href="tables/{n}-systems.tex">'
            f"LaTeX</a>.</p>{_systems_table(b)}"
            f"<h3>Win rates</h3><p class=\"hint\">HEIM's win rate: per metric, the share of the other systems a "
            f"system beats (ties count half); the mean over the metrics ranks the board.</p>{_win_table(b)}"
            f"<h3>Head to head</h3><p class=\"hint\">The share of the metrics both have on which the row's system "
            f"beats the column's; ★k: significantly better on k metrics after Holm.</p>{_h2h_table(b)}"
            f"<h3>Significant differences</h3>{_significant(b)}</section>")


def page_html(doc: dict[str, Any]) -> str:
    boards = doc["boards"]
    n_systems = len({s["name"] for b in boards for s in b["systems"]})
    nav = "".join(f'<li><a href="#{b["id"]}">Board {b["number"]}</a>: {e(str(b["identity"]["protocol"].get("name")))}'
                  f' {e(str(b["identity"]["protocol"].get("version")))}, {len(b["systems"])} systems</li>'
                  for b in boards)
    refused = ""
    if doc["refused"]:
        refused = ('<section class="refused"><h2>Refused bundles</h2><ul>' + "".join(
            f"<li><b>{e(r['input'])}</b>: {e(r['reason'])}</li>" for r in doc["refused"]) + "</ul></section>")
    notes = "".join(f"<li>{e(n)}</li>" for n in doc["notes"])
    notes = f'<section class="notes"><h2>Notes</h2><ul>{notes}</ul></section>' if notes else ""
    bs = doc["bootstrap"]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="referrer" content="no-referrer">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>s2i-bench leaderboard</title>\n<link rel="stylesheet" href="{STYLE}">\n'
            f'<script src="{SCRIPT}" defer></script>\n</head><body>\n'
            f"<header><h1>s2i-bench leaderboard</h1><p>{n_systems} systems on {len(boards)} board"
            f"{'s' if len(boards) != 1 else ''}, {e(doc['split'])} split. Systems share a board only when scored "
            f"with the same protocol, classifiers, store, split and feature space.</p></header>\n<main>"
            f"<nav><ul>{nav}</ul></nav>{refused}{''.join(_board(b) for b in boards)}{notes}</main>\n"
            f"<footer><p>Win rate: {e(doc['win_rate'])}. Significance: {e(doc['significance'])}; paired bootstrap "
            f"over the same sounds where the records pair image by image, else unpaired from the intervals. "
            f"Intervals: 95%, bootstrap over the test sounds ({bs['replicates']} replicates, seed {bs['seed']}) or the "
            f'records\' own. Everything on this page: <a href="board.json">board.json</a>.</p></footer>\n'
            f"</body></html>\n")


SCRIPT_TEXT = """'use strict';
// Sorts the tables of the leaderboard by a click on a column header. Cells carry their value in
// data-sort (empty: missing, always last); the first click sorts in the column's data-first order.
(function () {
  function sortTable(table, col, button) {
    const th = button.closest('th');
    const now = th.getAttribute('aria-sort');
    const dir = now ? (now === 'ascending' ? 'descending' : 'ascending') : button.dataset.first;
    for (const other of table.tHead.rows[0].cells) other.removeAttribute('aria-sort');
    th.setAttribute('aria-sort', dir);
    const numeric = button.dataset.type === 'num';
    const tbody = table.tBodies[0];
    const rows = Array.from(tbody.rows);
    rows.sort(function (a, b) {
      const x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
      if (x === '' || x === undefined) return (y === '' || y === undefined) ? 0 : 1;
      if (y === '' || y === undefined) return -1;
      const c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return dir === 'ascending' ? c : -c;
    });
    for (const r of rows) tbody.appendChild(r);
  }
  for (const table of document.querySelectorAll('table.sortable')) {
    const cells = table.tHead.rows[0].cells;
    for (let i = 0; i < cells.length; i++) {
      const button = cells[i].querySelector('button.sort');
      if (button) button.addEventListener('click', function () { sortTable(table, i, button); });
    }
  }
  document.documentElement.classList.add('sorting');
})();
"""

STYLE_TEXT = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330}
body{background:#f5f6f8}
header{background:#1f2a44;color:#eef1f7;padding:14px 28px}
header h1{margin:0 0 4px;font-size:1.45em}header p{margin:0;color:#c5cbe0;font-size:.92em}
main{padding:8px 28px 24px;max-width:1500px}
nav ul{list-style:none;padding:0;display:flex;gap:18px;flex-wrap:wrap;font-size:.92em}
a{color:#1d4fa8}
section.board{background:#fff;border:1px solid #d9dde6;border-radius:8px;padding:6px 20px 18px;margin:14px 0}
h2{margin:12px 0 6px;font-size:1.25em}h3{margin:20px 0 4px;font-size:1.05em}
dl.identity{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:.9em;margin:6px 0}
dl.identity dt{color:#5b6478}dl.identity dd{margin:0}
.check{color:#2d6b32;font-size:.92em}
.why{color:#8a4b00;font-size:.9em;margin:4px 0}
.hint{color:#5b6478;font-size:.85em;margin:2px 0 6px}
code{font-size:.92em;background:#eef1f6;padding:0 3px;border-radius:3px}
table{border-collapse:collapse;font-size:.86em;margin:4px 0 8px}
th,td{border-bottom:1px solid #e3e6ed;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#f0f2f7;font-weight:600;vertical-align:bottom;white-space:normal;max-width:7.5em}
td.name,td.text,th.text{text-align:left}
.scroll{overflow-x:auto}
tbody tr:hover{background:#f7f9fd}
button.sort{font:inherit;font-weight:600;background:none;border:0;padding:0;color:inherit;cursor:pointer;text-align:inherit}
th[aria-sort="ascending"] button.sort::after{content:" ▲";color:#1d4fa8}
th[aria-sort="descending"] button.sort::after{content:" ▼";color:#1d4fa8}
.ci{display:block;color:#6b7385;font-size:.82em}
.badge{display:inline-block;margin-left:6px;padding:0 5px;border-radius:8px;font-size:.8em}
.badge.ok{background:#dff2e1;color:#22642a}
.bar{display:inline-block;height:8px;background:#6a8fd8;border-radius:2px;margin-right:6px;vertical-align:middle}
.w0{width:0}.w1{width:4px}.w2{width:8px}.w3{width:12px}.w4{width:16px}.w5{width:20px}.w6{width:24px}.w7{width:28px}
.w8{width:32px}.w9{width:36px}.w10{width:40px}
table.h2h td{text-align:center;min-width:3.4em}table.h2h th{text-align:center}
table.h2h th[scope=row]{text-align:left}
td.win{background:#e3f3e5}td.loss{background:#f9e3e1}td.tie{background:#f3f3f3}td.self{color:#aab}
.sig{color:#8a5a00;font-weight:600}
td.test{text-align:left;color:#5b6478}
section.refused{background:#fdf0ee;border:1px solid #e6b8b0;border-radius:8px;padding:4px 20px;margin:14px 0}
section.notes{font-size:.88em;color:#5b6478}
details summary{cursor:pointer;margin:4px 0 6px}
footer{padding:6px 28px 24px;color:#5b6478;font-size:.82em;max-width:1200px}
"""


def write_page(out: Path, doc: dict[str, Any]) -> None:
    """index.html, leaderboard.js and leaderboard.css into `out`."""
    atomic_write_text(out / "index.html", page_html(doc))
    atomic_write_text(out / SCRIPT, SCRIPT_TEXT)
    atomic_write_text(out / STYLE, STYLE_TEXT)
