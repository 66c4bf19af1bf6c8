"""Scoring across processes and GPUs with torchrun (the engine PyTorch users already have).

    torchrun --nproc_per_node N -m s2i_bench.cli score RUN --data STORE --classifiers BUNDLE

Under torchrun (WORLD_SIZE > 1) the checkpoints that need a record are dealt out round-robin
over the ranks; each rank appends its records to its own partial file beside the records file
(`.<records>.rank-R.partial`, one line per record under the record writer's lock), and after a
barrier rank 0 moves them into the records file in epoch order, in one atomic replace (a record
already there, by checksum, is not added twice, so an interrupted merge can be rerun): the records are those a
single process writes (but for the time stamps). A rank killed mid-way loses nothing already
written: its partial file stays, and the next run (any number of ranks) merges it first and
scores only what is still missing. Process groups: gloo on CPU, NCCL on CUDA, one GPU per local
rank.
"""

from __future__ import annotations

import logging
from pathlib import Path

from s2i_bench.scoring import records

logger = logging.getLogger(__name__)


def partial_path(out: Path, rank: int) -> Path:
    return out.with_name(f".{out.name}.rank-{rank}.partial")


def merge_partials(out: Path) -> int:
    """Move every rank's partial records (of this run or an interrupted one) into `out`, in
    epoch order; returns how many moved. Only rank 0 calls this."""
    parts = sorted(out.parent.glob(f".{out.name}.rank-*.partial"))
    moved = []
    for p in parts:
        moved += records.read(p)
    moved.sort(key=lambda r: (-1 if r.epoch is None else r.epoch, r.split or ""))
    added = records.extend(out, moved)  # one atomic replace; records already there are not doubled
    for p in parts:
        p.unlink()
    if parts:
        logger.info(f"score: {added} record(s) of {len(parts)} rank file(s) merged into {out}")
    return added
