"""torchrun, from the toolkit's side: which rank this process is, its process group, barriers.

Commands that deal work out over processes (`score` over checkpoints, `pool` over models) call
`current(device)`: None outside torchrun (WORLD_SIZE unset or 1), else this process's `Shard`
with its process group started (gloo on CPU, NCCL on CUDA, one GPU per local rank). The work
itself and how the ranks' results are merged belong to each command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int

    def device(self, device: str) -> str:
        """`cuda` becomes this rank's GPU; an explicit `cuda:N` or `cpu` stays."""
        if str(device).startswith("cuda") and ":" not in str(device):
            return f"cuda:{self.local_rank}"
        return str(device)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def mine(self, items: list) -> list:
        """This rank's share, round-robin: items rank, rank + world, ..."""
        return items[self.rank::self.world]


def current(device: str = "cpu") -> Shard | None:
    """The torchrun rank of this process (its process group started), or None outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch
    import torch.distributed as dist

    shard = Shard(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(shard.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return shard


def is_main() -> bool:
    """Rank 0, or not under torchrun: the process that prints the answer."""
    return int(os.environ.get("RANK", "0")) == 0


def close() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
