"""Data parallelism inside one training process: torch.distributed does all the talking.

Rank 0 opens a `TCPStore` on a free port and prints it (its worker publishes host:port in
Redis, where the other ranks' workers read it); every rank then joins the process group
(gloo on CPU, nccl on CUDA) through that store, with a bounded timeout. DDP all-reduces the
gradients; one more small all-reduce per step sums the global batch's loss and agrees on
stopping, so every rank stops at the same step. No home-made collective anywhere.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._C._distributed_c10d import TCPStore
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Replica:
    """This process's place in the job: rank of world_size (1 = not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        """Rank 0 checkpoints, reports and writes the result."""
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: DDP around the model when distributed, else the model."""
        if not self.is_distributed:
            return model
        ids = [device.index if device.index is not None else torch.cuda.current_device()
               ] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (sizes differ by at most 1)."""
        return idx.tensor_split(self.world_size)[self.rank] if self.is_distributed else idx

    def reduce_step(self, loss_sum: float, stop: bool) -> tuple[float, bool]:
        """(the global batch's loss sum, whether any rank wants to stop), agreed by all."""
        if not self.is_distributed:
            return loss_sum, stop
        values = torch.tensor([loss_sum, 1.0 if stop else 0.0], dtype=torch.float64)
        dist.all_reduce(values)
        return float(values[0]), bool(values[1] > 0)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def open_store(rank: int, world_size: int, master: str, timeout_s: float) -> TCPStore:
    """Rank 0 (master ""): a store on a free port of this host; others: rank 0's host:port."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if rank == 0:
        return TCPStore("0.0.0.0", 0, world_size, is_master=True, timeout=timeout,
                             wait_for_workers=False)
    host, _, port = master.rpartition(":")
    return TCPStore(host.strip("[]"), int(port), world_size, is_master=False,
                         timeout=timeout)


def join_group(replica: Replica, store: TCPStore, device: torch.device,
               timeout_s: float) -> None:
    """Joins the job's process group; raises when the others do not come within timeout_s."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), store=store, rank=replica.rank,
                            world_size=replica.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
