"""Training on several processes: ``torchrun --nproc_per_node N -m gdpw train ...`` on one machine,
``torchrun --nnodes M --node_rank R --master_addr HOST ...`` across machines; CPUs talk over gloo,
GPUs over NCCL.

Every rank holds the same networks (rank 0's initial weights are broadcast); each takes its own
slice of every step's global batch (``gdpw.train.trainer.StepSampler``). After each backward the
gradients are averaged over the ranks with one all-reduce, which equals one process's gradient of
the global batch's mean loss up to float32 rounding, and every BatchNorm normalises with the
statistics of the whole global batch (``GlobalBatchNorm2d``), so N processes with batch B train
as one process with batch N x B. Not DDP: the GAN step calls the discriminator several times
per backward, not every scale each time, which DDP's reducer refuses; an all-reduce after the
backward has no such rule, and it works on CPUs, where PyTorch's SyncBatchNorm does not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun (or any launcher setting RANK and WORLD_SIZE) started; joined here."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def broadcast(self, nets: Iterable[nn.Module]) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.size == 1:
            return
        for net in nets:
            for t in [*net.parameters(), *net.buffers()]:
                dist.broadcast(t.data, 0)

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Each gradient replaced by its mean over the ranks (one all-reduce of them all, flattened)."""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks; its gradient is summed over the ranks too (every rank's
    loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.clone()
        dist.all_reduce(out)
        return out


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    return _SumOverRanks.apply(x)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are those of the global batch over every rank
    (two all-reduces: the sum, then the sum of squared deviations, as BatchNorm's two passes), on
    CPUs and GPUs, with gradients through the all-reduce. One process: exactly ``nn.BatchNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        total = sum_over_ranks(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean[None, :, None, None]
        var = sum_over_ranks(centred.pow(2).sum(dims)) / n  # biased, as BatchNorm normalises
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def global_batchnorm(net: nn.Module) -> nn.Module:
    """``net`` with each ``nn.BatchNorm2d`` made a ``GlobalBatchNorm2d`` in place (same parameters,
    buffers and state-dict keys, so checkpoints are unchanged)."""
    for child in net.children():
        if type(child) is nn.BatchNorm2d:
            child.__class__ = GlobalBatchNorm2d
        else:
            global_batchnorm(child)
    return net
