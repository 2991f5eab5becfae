"""Process group setup from torchrun's environment, and a SyncBatchNorm that also runs on the CPU."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    local_world_size: int = 1  # ranks on this node (they share its cores)
    # A gloo group for host-side agreement (the stop flag) when the main group is NCCL, whose collectives
    # on CPU tensors are not possible and on GPU tensors would make the host wait; None: the main group.
    control: object | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """One process (plain `python train.py`) or torchrun's group: NCCL on GPUs, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # torchrun --max-restarts keeps its store across restarts: a restarted group would read the
        # dead processes' addresses (gloo: 'connection refused'), so each attempt gets its own keys.
        store, _, _ = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.PrefixStore(
            f"mseg-fast/attempt-{attempt}", store), rank=rank, world_size=world)
    control = dist.new_group(backend="gloo") if world > 1 and device.type == "cuda" else None
    return DistInfo(rank, world, local, device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), control)


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose batch statistics are over all ranks, on any device.

    torch.nn.SyncBatchNorm refuses CPU tensors; this is its CPU twin (sums through an
    autograd-aware all_reduce), so that a gloo run matches a single process on the same global
    batch. Running statistics use the unbiased variance, as BatchNorm does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        stats = all_reduce(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels:2 * channels] / total - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            # momentum None: a cumulative average, as BatchNorm does (recalibrate.py uses it)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
            self.running_var.mul_(1 - factor).add_(factor * var.detach() * total / (total - 1))
        scale = self.weight / torch.sqrt(var + self.eps)
        return (x - mean[None, :, None, None]) * scale[None, :, None, None] + self.bias[None, :, None, None]


def sync_batchnorm(model: nn.Module, info: DistInfo) -> nn.Module:
    """SyncBatchNorm when the world has more than one rank (torch's on GPUs, ours on the CPU)."""
    if info.world_size == 1:
        return model
    if info.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            sync_batchnorm(child, info)
    return model


def release_group() -> None:
    """End the process group, every rank together, once the caller has dropped its DistributedDataParallel
    wrapper and the model under it (the model's parameters keep DDP's reducer alive).

    Freed only after the group was destroyed (a function's locals, when it returns), the reducer now and then
    blocked its process for good at exit on gloo: about one 3-rank run in thirty under CPU load, found as a
    hung test. Here the last references (cycles) are collected while the group is alive, and a barrier lines
    the ranks up before it ends.
    """
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
