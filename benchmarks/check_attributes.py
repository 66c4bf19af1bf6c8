"""Do the attribute scores measure what they claim? (`score --attributes`, docs/metrics.md)

1. The estimators (`synth.attributes`) on real frames, where the true attributes are known: the
   world is written and prepared like the demo's (protocol synth, 40 videos per class by default),
   and every frame of the store is estimated: mean absolute error and Spearman's rho per class.
2. The four reference translators' attribute scores on the test sounds (the demo's split) and, for
   tighter intervals, on the training sounds (retrieval is left out there: a training sound
   retrieves itself). Acceptance: real frames >= 0.8 on tone and on size, class prototypes within
   +-0.1 of 0 (a constant picture counts 0, noted).
3. The coverage of the intervals, measured: 95% percentile bootstrap over videos for a video-level
   Spearman's rho, on simulated classes of 5, 8, 15 and 30 videos at population rho from 0 to ~1.

    .venv/bin/python -m benchmarks.check_attributes [--videos-per-class 40] [--work DIR] [--sims 200]

Writes results/benchmarks/attributes.json and attributes.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import OUT, machine
from s2i_bench.provenance import code_version

os.environ.setdefault("S2I_BENCH_QUIET", "1")
REFERENCES = ("real-frame", "retrieval", "class-prototype", "random-frame")
# (name, spread of the video-level estimate around the attribute): the population rho goes from ~1 to 0
SCENARIOS = (("near-perfect", 0.02), ("strong", 0.2), ("moderate", 0.5), ("none", None))


def build(work: Path, videos_per_class: int):
    from s2i_bench.data.prepare import prepare_store
    from s2i_bench.data.store import open_store
    from s2i_bench.protocol import load_protocol
    from s2i_bench.synth import write_world

    started = time.perf_counter()
    world = write_world(work / "world", "synth", videos_per_class=videos_per_class, overwrite=True)
    with contextlib.redirect_stdout(io.StringIO()):
        store = prepare_store(world, work / "store", load_protocol("synth"), overwrite=True)
    return open_store(store), time.perf_counter() - started


def estimator_error(store) -> dict:
    """Every frame of the store against its video's attributes."""
    from s2i_bench.scoring.attributes import rho_or_zero, sound_attributes
    from s2i_bench.synth.attributes import estimate

    rows = np.arange(len(store))
    truth = sound_attributes(store, rows)
    classes = store.manifest["class"].to_numpy()
    out = {"n_frames": int(len(rows)), "classes": {}}
    started = time.perf_counter()
    for key in store.protocol.class_keys:
        mine = rows[classes == key]
        e = estimate(np.asarray(store.frames[mine]), key)
        out["classes"][key] = {
            d: {"mae": float(np.abs(e[d] - truth[d][mine]).mean()), "rho": rho_or_zero(truth[d][mine], e[d]),
                "max_abs_error": float(np.abs(e[d] - truth[d][mine]).max())} for d in ("tone", "size")}
    out["seconds_per_1000_frames"] = 1000 * (time.perf_counter() - started) / len(rows)
    for d in ("tone", "size"):
        out[d] = {"mae": float(np.mean([c[d]["mae"] for c in out["classes"].values()])),
                  "rho_min": float(min(c[d]["rho"] for c in out["classes"].values()))}
    return out


def references(store, split: str, names) -> dict:
    from s2i_bench.scoring.attributes import attribute_scores
    from s2i_bench.translators.reference import load_reference

    out = {}
    for name in names:
        started = time.perf_counter()
        block = attribute_scores(load_reference(f"reference:{name}", store), store, store.protocol, split=split,
                                 seed=store.protocol.scoring.seed)
        out[name] = {"seconds": round(time.perf_counter() - started, 2), "dimensions": block["dimensions"]}
    return out


def coverage(sims: int, replicates: int = 300, seed: int = 0) -> list[dict]:
    """Per (videos, scenario): the share of 95% intervals that hold the population rho."""
    from s2i_bench.scoring.attributes import correlation_entry, spearman

    rng = np.random.default_rng(seed)
    rows = []
    for name, spread in SCENARIOS:
        big = rng.uniform(size=200_000)
        other = rng.uniform(size=big.size) if spread is None else big + rng.normal(0, spread, big.size)
        population = spearman(big, other)
        for n in (5, 8, 15, 30):
            hits, widths = 0, []
            for s in range(sims):
                x = rng.uniform(size=n)
                y = rng.uniform(size=n) if spread is None else x + rng.normal(0, spread, n)
                entry, _ = correlation_entry(x, y, replicates, seed=s, confidence=0.95)
                if entry["ci"] is not None:
                    hits += entry["ci"][0] <= population <= entry["ci"][1]
                    widths.append(entry["ci"][1] - entry["ci"][0])
            rows.append({"scenario": name, "population_rho": round(population, 4), "videos": n,
                         "coverage": hits / sims, "mean_width": float(np.mean(widths))})
    return rows


def _fmt(entry, share=False) -> str:
    v, ci = entry.get("value"), entry.get("ci")
    if v is None:
        return "–"
    if share:
        return f"{100 * v:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else f"{100 * v:.1f}%"
    return f"{v:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{v:+.2f}"


def markdown(result: dict) -> list[str]:
    md = [f"# Attribute scores: estimators, references, coverage ({result['date']})", "",
          f"World: protocol synth, {result['videos_per_class']} videos per class, {result['store']['segments']} "
          f"segments (built in {result['store']['build_seconds']:.0f} s); code {result['code_version']}; "
          f"{result['machine']['cpu_model']} ({result['machine']['cores']} cores).", "",
          "## Estimators on every real frame of the store", "",
          "| class | tone MAE | tone ρ | size MAE | size ρ |", "| --- | --- | --- | --- | --- |"]
    err = result["estimators"]
    for key, c in err["classes"].items():
        md.append(f"| {key} | {c['tone']['mae']:.3f} | {c['tone']['rho']:.3f} | {c['size']['mae']:.3f} | "
                  f"{c['size']['rho']:.3f} |")
    md += ["", f"{err['n_frames']} frames; {err['seconds_per_1000_frames']:.2f} s per 1000 frames.", ""]
    for split in ("test", "train"):
        md += [f"## References on the {split} sounds", "",
               "| reference | tone ρ | size ρ | louder of two | both | out of protocol (↓) |",
               "| --- | --- | --- | --- | --- | --- |"]
        for name, r in result["references"][split].items():
            d = r["dimensions"]
            md.append(f"| {name} | {_fmt(d['tone'])} | {_fmt(d['size'])} | {_fmt(d['mixture_louder'], True)} | "
                      f"{_fmt(d['mixture_both'], True)} | {_fmt(d['out_of_protocol'], True)} |")
        md.append("")
    md += ["## Acceptance", ""] + [f"- {k}: {'PASS' if v['pass'] else 'FAIL'} ({v['detail']})"
                                   for k, v in result["acceptance"].items()]
    md += ["", "## Coverage of the 95% interval (percentile bootstrap over videos)", "",
           "| scenario | population ρ | videos | coverage | mean width |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {r['scenario']} | {r['population_rho']:.3f} | {r['videos']} | {r['coverage']:.3f} | "
           f"{r['mean_width']:.2f} |" for r in result["coverage"]]
    return md + [""]


def acceptance(refs: dict) -> dict:
    real, proto = refs["real-frame"]["dimensions"], refs["class-prototype"]["dimensions"]
    out = {}
    for d in ("tone", "size"):
        rv, pv = real[d]["value"], proto[d]["value"]  # None: fewer than two test videos per class
        out[f"real frames {d} >= 0.8"] = {"pass": rv is not None and rv >= 0.8, "detail": _fmt(real[d])}
        out[f"class prototypes {d} within 0.1 of 0"] = {"pass": pv is not None and abs(pv) <= 0.1,
                                                       "detail": _fmt(proto[d])}
    return out


def main(argv=None) -> dict:
    from s2i_bench.fileio import atomic_write_json, atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos-per-class", type=int, default=40)
    ap.add_argument("--work", type=Path, default=None, help="Where the world and store go (default: a temp folder).")
    ap.add_argument("--sims", type=int, default=200, help="Simulated classes per coverage cell.")
    args = ap.parse_args(argv)
    started = dt.datetime.now()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        store, build_s = build(work, args.videos_per_class)
        result = {"date": f"{started:%Y-%m-%d %H:%M}", "code_version": code_version(), "machine": machine(),
                  "videos_per_class": args.videos_per_class,
                  "store": {"segments": len(store), "counts": store.counts, "build_seconds": round(build_s, 1)},
                  "estimators": estimator_error(store),
                  "references": {"test": references(store, "test", REFERENCES),
                                 "train": references(store, "train", ("real-frame", "class-prototype",
                                                                      "random-frame"))}}
    result["acceptance"] = acceptance(result["references"]["test"])
    result["coverage"] = coverage(args.sims)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "attributes.json", result)
    atomic_write_text(OUT / "attributes.md", "\n".join(markdown(result)))
    print("\n".join(markdown(result)))
    return result


if __name__ == "__main__":
    main()
