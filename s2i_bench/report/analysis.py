"""The report's analysis: each run's series and summaries (scoring.metrics), and the protocol
every run is read under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from s2i_bench.fileio import dig
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol, protocol_from_dict
from s2i_bench.report.inputs import Run
from s2i_bench.scoring import metrics
from s2i_bench.scoring.series import series_frame
from s2i_bench.scoring.series_stats import series_intervals, validation_choice

MEASURES = ("raw_share", "corrected_share", "true_share")


def resolve_protocols(runs: list[Run], store) -> Any:
    """Give every run its full protocol and check that they agree on what the metrics need."""
    for run in runs:
        ref = run.options.get("protocol") or next((r.protocol for r in run.records if r.protocol), None)
        full = run.options.get("protocol_full")
        if full is None and isinstance(ref, dict) and "classes" in ref:
            full = ref
        if isinstance(full, dict):
            try:
                run.protocol = protocol_from_dict(full)
                continue
            except UserError as e:
                run.protocol_note = f"the protocol in options.json could not be rebuilt ({e})"
        if not isinstance(ref, dict) or not ref.get("name"):
            raise UserError(f"run {run.name}: no protocol recorded in options.json or the metric records")
        if store is not None and store.protocol_ref.get("fingerprint") == ref.get("fingerprint"):
            run.protocol = store.protocol
            continue
        try:
            run.protocol = load_protocol(str(ref["name"]))
        except UserError as e:
            raise UserError(f"run {run.name}: protocol {ref['name']!r} is recorded but cannot be loaded ({e}); "
                            "pass --data STORE made with it") from None
        if ref.get("fingerprint") and ref["fingerprint"] != run.protocol.fingerprint:
            run.protocol_note = (f"recorded protocol {ref['name']} has fingerprint {ref['fingerprint']}; the installed "
                                 f"protocols/{ref['name']}.toml has {run.protocol.fingerprint} "
                                 f"(its metric settings are used)")
    first = runs[0].protocol
    for run in runs[1:]:
        p = run.protocol
        for what, a, b in (("classes", first.class_keys, p.class_keys), ("metrics", first.metrics, p.metrics),
                           ("training.d_every_epochs", first.training.d_every_epochs, p.training.d_every_epochs)):
            if a != b:
                raise UserError(f"runs {runs[0].name} and {run.name} were made with different {what} "
                                f"({first.name} vs {p.name}); report them separately")
    return first


@dataclass
class Analysis:
    """The series of one run and their summaries, from `s2i_bench.scoring.metrics`."""

    run: Run
    summaries: dict[str, dict]  # measure -> summarise_classes summary
    frames: dict[str, Any]  # measure -> replaced frame (epoch, d_update, replaced, left_out, classes, mean)
    moving: dict[str, dict[str, np.ndarray]]  # measure -> column -> moving average aligned with frame
    last: dict[str, dict]  # class key or "mean" -> values of the last scored epoch's record
    last_epoch: int | None
    pixel_ma: np.ndarray | None = None  # moving average of log.pixel_loss
    intervals: dict | None = None  # measure -> class/mean -> {window_average, max_moving_average}: [lo, hi]
    choice: dict | None = None  # the window chosen on the validation sounds, and the test values there


def analyse(run: Run, protocol) -> Analysis:
    keys = protocol.class_keys
    spec = protocol.metrics
    d_epochs = None
    if run.log is not None and "d_updated" in run.log.columns:
        d_epochs = run.log.loc[run.log["d_updated"].astype(bool), "epoch"].tolist()
    summaries, frames, moving = {}, {}, {}
    scored = [r for r in run.records if r.epoch is not None]
    for measure in MEASURES:
        if not any(r.share(k, measure) is not None for r in scored for k in keys):
            continue
        series = series_frame(scored, keys, measure=measure, d_update_epochs=d_epochs,
                              d_every_epochs=protocol.training.d_every_epochs)
        summary, frame = metrics.summarise_frame(series, keys, spec)
        summaries[measure], frames[measure] = summary, frame
        moving[measure] = {c: metrics.moving_average(frame["epoch"].to_numpy(), frame[c].to_numpy(dtype=float),
                                                     spec.moving_average) for c in (*keys, "mean")}
    last_epoch, last = None, {}
    if scored:
        last_epoch = max(r.epoch for r in scored)
        record = [r for r in scored if r.epoch == last_epoch][-1]
    elif run.records:
        record = run.records[-1]
    else:
        record = None
    if record is not None:
        last = {k: dict(record.cls(k)) for k in keys}
        last["mean"] = record.mean_result()
    pixel_ma = None
    if run.log is not None and len(run.log):
        pixel_ma = metrics.moving_average(run.log["epoch"].to_numpy(), run.log["pixel_loss"].to_numpy(dtype=float),
                                          spec.moving_average)
    intervals = series_intervals(scored, keys, protocol, d_epochs) if scored else None
    choice = validation_choice(scored, [r for r in run.selection_records if r.epoch is not None], keys,
                               protocol, d_epochs) if scored else None
    return Analysis(run, summaries, frames, moving, last, last_epoch, pixel_ma, intervals, choice)


def summary_row(a: Analysis) -> dict:
    """The per-run dict `tables.informativity_table` reads."""
    metrics_by_measure = {}
    for measure, s in a.summaries.items():
        metrics_by_measure[measure] = {**s["classes"], "mean": s["mean"]}
    n_epochs = a.summaries.get("raw_share", {}).get("num_epochs")
    seeds = a.run.score_seeds
    return {"run": a.run.label, "embedding_dim": a.run.embedding_dim, "split_policy": a.run.split_policy,
            "seed": seeds[0] if len(seeds) == 1 else (" ".join(map(str, seeds)) or None),
            "train_seed": a.run.train_seed,
            "n_epochs": n_epochs, "last_epoch": a.last_epoch, "last": a.last, "metrics": metrics_by_measure,
            "intervals": a.intervals or {}, "choice": a.choice}


def best_run(analyses: list[Analysis]) -> Analysis | None:
    """The analysis with the highest maximum moving average of mean raw informativity (then
    window average, then last mean share); the first on a tie."""
    def score(a: Analysis):
        mean = dig(a.summaries, "raw_share", "mean") or {}
        last = dig(a.last, "mean", "raw_share")
        return tuple(-1.0 if v is None else float(v)
                     for v in (mean.get("max_moving_average"), mean.get("window_average"), last))
    return max(analyses, key=score) if analyses else None
