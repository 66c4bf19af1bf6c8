"""torchrun, from the toolkit's side: which rank this process is, its process group, barriers.

Commands that deal work out over processes (`score` over checkpoints, `pool` over models, a
translator plugin's trainer over batches) call `current(device)`: None outside torchrun
(WORLD_SIZE unset or 1), else this process's `Shard` with its process group started (gloo on
CPU, NCCL on CUDA, one GPU per local rank). The work itself and how the ranks' results are
merged belong to each command. `SOLO` stands for the one process outside torchrun.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from s2i_bench.errors import UserError


def check_device(device: str) -> str:
    """`cpu`, `cuda` or `cuda:N` that exists here, else a one-line refusal."""
    device = str(device)
    if device != "cpu" and device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes shared files and prints the answer."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def device(self, device: str) -> str:
        """`cuda` becomes this rank's GPU; an explicit `cuda:N` or `cpu` stays."""
        if str(device).startswith("cuda") and ":" not in str(device):
            return f"cuda:{self.local_rank}"
        return str(device)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mine(self, items: list) -> list:
        """This rank's share, round-robin: items rank, rank + world, ..."""
        return items[self.rank::self.world]


SOLO = Shard(0, 1, 0)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def current(device: str = "cpu", timeout_s: float | None = None) -> Shard | None:
    """The torchrun rank of this process (its process group started), or None outside torchrun.
    `timeout_s`: how long a collective may wait (a trainer's ranks wait while rank 0 trains the
    autoencoder, say); torch's default otherwise."""
    world = world_size()
    if world <= 1:
        return None
    shard = Shard(rank(), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(shard.local_rank)
        kwargs = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
        dist.init_process_group(backend="nccl" if cuda else "gloo", **kwargs)
    return shard


def is_main() -> bool:
    """Rank 0, or not under torchrun: the process that prints the answer."""
    return rank() == 0


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
