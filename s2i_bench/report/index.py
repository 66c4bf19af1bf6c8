"""The report's index (index.md, index.html) and its manifest (report.json)."""

from __future__ import annotations

import html
from pathlib import Path

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.report.plan import Context, Item


def write_index(ctx: Context, items: list[Item], notes: list[str]) -> None:
    title = "s2i-bench report"
    head = ctx.title_lines()
    md = [f"# {title}", ""]
    for line in head:
        md += [f"**{line}**" if line.startswith("WARNING") else line, ""]
    if notes:
        md += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    for it in items:
        md += [f"## {it.title}", "", it.caption, "", f"*From:* {it.provenance}", ""]
        if it.kind == "figure":
            png = [f for f in it.files if f.suffix == ".png"] or it.files[:1]
            if png and png[0].suffix in (".png", ".svg"):
                md += [f"![{it.title}]({png[0].as_posix()})", ""]
        else:
            md += [it.table.markdown_block()]
        md += ["Files: " + ", ".join(f"[{f.name}]({f.as_posix()})" for f in it.files), ""]
    atomic_write_text(ctx.out / "index.md", "\n".join(md).rstrip() + "\n")

    e = html.escape
    h = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%}.warn{color:#a00;font-weight:bold}"
         ".from{color:#555;font-size:90%}</style></head><body>", f"<h1>{e(title)}</h1>"]
    h += [f"<p class=\"{'warn' if line.startswith('WARNING') else 'head'}\">{e(line)}</p>" for line in head]
    if notes:
        h.append("<p>Notes:</p><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    for it in items:
        h += [f"<h2>{e(it.title)}</h2>", f"<p>{e(it.caption)}</p>",
              f"<p class=\"from\"><em>From:</em> {e(it.provenance)}</p>"]
        if it.kind == "figure":
            img = [f for f in it.files if f.suffix in (".png", ".svg")]
            if img:
                h.append(f"<img src=\"{e(img[0].as_posix())}\" alt=\"{e(it.title)}\">")
        else:
            headers, body = it.table.text_cells()
            h.append("<table><thead><tr>" + "".join(f"<th>{e(x)}</th>" for x in headers) + "</tr></thead><tbody>")
            h += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in row) + "</tr>" for row in body]
            h.append("</tbody></table>")
            h += [f"<p>{e(n)}</p>" for n in it.table.notes]
        h.append("<p>Files: " + ", ".join(f"<a href=\"{e(f.as_posix())}\">{e(f.name)}</a>" for f in it.files) + "</p>")
    h.append("</body></html>")
    atomic_write_text(ctx.out / "index.html", "\n".join(h) + "\n")


def write_manifest(ctx: Context, written: list[Path], formats, figures: bool, notes: list[str]) -> None:
    """OUT/report.json: what was read (by name and hash) and written. No time, no absolute path."""
    runs = []
    for r in ctx.runs:
        runs.append({"name": r.label, "embedding_dim": r.embedding_dim, "split_policy": r.split_policy,
                     "train_seed": r.train_seed, "score_seeds": r.score_seeds, "records": len(r.records),
                     "record_files": [p.name for p in r.record_files],
                     "sample_sheets": [p.name for p in r.sample_sheets]})
    manifest = {
        "format": "s2i-bench-report", "format_version": 1,
        "protocol": ctx.protocol.ref(), "runs": runs,
        "references": [{"name": lv["name"], "sha256": lv["run"].records[-1].translator_sha256,
                        "record_files": [p.name for p in lv["run"].record_files]} for lv in (ctx.references or [])],
        "store": None if ctx.store is None else {"hash": ctx.store.store_hash, "split_policy": ctx.store.split_policy},
        "classifiers": None if ctx.card is None else {"pool_hash": ctx.card.get("pool_hash"),
                                                      "seed": ctx.card.get("seed")},
        "scored_with_bundles": ctx.bundle_hashes(),
        "figures": figures, "formats": formats, "notes": notes,
        "files": sorted(p.as_posix() for p in written),
    }
    atomic_write_json(ctx.out / "report.json", manifest)
