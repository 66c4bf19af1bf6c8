"""A run's records as a series: which records belong together, one record per epoch, which
epochs followed a discriminator update, and the per-epoch frames the paper's series metrics
(`scoring.metrics`) are computed on.

    select(records, classifiers_sha256=..., store_hash=..., split=..., seed=..., samples=...)
    last_per_epoch(records) -> {epoch: record}
    d_update_flags(epochs, by_epoch, d_update_epochs, d_every_epochs) -> (E,) bool
    series_frame(records, class_keys, measure=...) -> DataFrame (epoch, d_update, <class keys>)
    summarise(records, protocol) -> {measure: summary}

Every reader of a series (the report, `compare`, the series intervals, `score RUN`) takes the
D-update epochs from `d_update_flags`, the one statement of the rule: the run's log.csv when
given, else each record's `d_update`, else `epoch % d_every_epochs == 0`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from s2i_bench.errors import UserError
from s2i_bench.scoring import metrics
from s2i_bench.scoring.records import MEASURES, Record


def select(records: Iterable[Record], *, classifiers_sha256: str | None, store_hash: str, split: str, seed: int,
           samples: int, protocol_fingerprint: str | None = None) -> list[Record]:
    """The records scored with these classifiers on this store, split, seed and samples (and
    protocol, when given)."""
    wanted = (classifiers_sha256, store_hash, split, seed, samples)
    return [r for r in records if r.series_key[:5] == wanted and protocol_fingerprint in (None, r.series_key[5])]


def last_per_epoch(records: Iterable[Record]) -> dict[int, Record]:
    """epoch -> its record; an epoch scored twice (a resumed run): the last record wins."""
    by_epoch: dict[int, Record] = {}
    for r in records:
        if r.epoch is not None:
            by_epoch[int(r.epoch)] = r
    return by_epoch


def d_update_flags(epochs: Sequence[int], by_epoch: dict[int, Record], d_update_epochs: Iterable[int] | None,
                   d_every_epochs: int | None) -> np.ndarray:
    """(E,) bool: which of `epochs` followed a discriminator update (the module docstring's rule)."""
    known = set(int(e) for e in d_update_epochs) if d_update_epochs is not None else None
    flags = []
    for e in epochs:
        if known is not None:
            flags.append(e in known)
        elif by_epoch[e].d_update is not None:
            flags.append(by_epoch[e].d_update)
        elif d_every_epochs:
            flags.append(e % d_every_epochs == 0)
        else:
            raise UserError(f"epoch {e}: no record of whether the discriminator was updated")
    return np.array(flags, dtype=bool)


def series_frame(records: Iterable[Record], class_keys: Sequence[str], *, measure: str = "raw_share",
                 d_update_epochs: Iterable[int] | None = None, d_every_epochs: int | None = None) -> pd.DataFrame:
    """A per-epoch frame (epoch, d_update, <class keys>) of one measure (NaN where a record has no
    value)."""
    by_epoch = last_per_epoch(records)
    epochs = sorted(by_epoch)
    flags = d_update_flags(epochs, by_epoch, d_update_epochs, d_every_epochs)
    rows = []
    for e, d in zip(epochs, flags):
        row = {"epoch": e, "d_update": int(d)}
        for key in class_keys:
            v = by_epoch[e].share(key, measure)
            row[key] = np.nan if v is None else v
        rows.append(row)
    return pd.DataFrame(rows, columns=["epoch", "d_update", *class_keys])


def summarise(records: Sequence[Record], protocol, *, d_update_epochs=None,
              measures: Sequence[str] = MEASURES) -> dict[str, Any]:
    """The paper's series metrics of a run's records for each measure the records have:
    {measure: summary (scoring.metrics.summarise_classes)}."""
    out: dict[str, Any] = {}
    keys = protocol.class_keys
    for measure in measures:
        df = series_frame(records, keys, measure=measure, d_update_epochs=d_update_epochs,
                          d_every_epochs=protocol.training.d_every_epochs)
        if df.empty or df[list(keys)].isna().all().all():
            continue
        summary, _ = metrics.summarise_frame(df, keys, protocol.metrics)
        out[measure] = summary
    return out
