"""Training on several processes and machines through ``torch.distributed``, launched by torchrun.

``torchrun --nproc-per-node N -m lvmkit train CONFIG`` starts N copies of the one training loop;
torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ...) makes
them one process group (gloo on the CPU, nccl on GPUs). What each process does:

- every process holds the whole model and draws the same shuffled global batch of
  ``train.batch_size`` examples; process r trains on its share ``tensor_split(batch, N)[r]``;
- the gradients are averaged over the processes, weighted by share, before clipping and the
  optimizer step, inside :meth:`lvmkit.core.optim.Optimizers.minimize`, the one place every
  family's ``training_step`` changes its weights: so the weights stay identical everywhere and
  equal to one process on the global batch (up to float summation order). This is what
  ``DistributedDataParallel`` does, without its single-``forward`` contract, which a family
  stepping several networks (a GAN) or chains (an RBM) does not fit;
- the model's own noise is seeded per process from the run seed; batch-norm statistics are
  taken from process 0 at every epoch's end; rank 0 alone validates' result decides for all
  (its record is broadcast), and rank 0 alone writes the run directory.

Chains and replay buffers (RBM, EBM) are per process; a checkpoint keeps process 0's, so a
resume on N processes starts all N from them.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from lvmkit.core.errors import ConfigError

#: how long a collective waits for a process that died or hangs before failing
TIMEOUT_SECONDS = int(os.environ.get("LVMKIT_DIST_TIMEOUT", "120"))


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one run."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()


def from_env() -> World:
    """The world torchrun describes in the environment (one process when it does not)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size) if size > 1 else SINGLE


def init(device_type: str) -> World:
    """Join the process group torchrun set up (gloo on the CPU, nccl on GPUs)."""
    world = from_env()
    if not world.active:
        return world
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("This PyTorch build has no torch.distributed; run lvmkit train without torchrun.")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
    return world


def local_device(name: str) -> str:
    """A CUDA device request becomes this process's GPU (``LOCAL_RANK``) under torchrun."""
    if name.startswith("cuda") and ":" not in name and from_env().active:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return name


def check_batch(world: World, batch_size: int) -> None:
    if world.active and batch_size % world.size:
        raise ConfigError(f"train.batch_size = {batch_size} does not divide among the {world.size} processes; set it to a "
                          f"multiple of {world.size} (each process trains on batch_size / {world.size} examples).")


def share(world: World, x: Tensor) -> Tensor:
    """This process's part of a global batch (parts differ in size by at most one example)."""
    return x if not world.active else torch.tensor_split(x, world.size)[world.rank]


def all_finite(world: World, value: Tensor) -> bool:
    """Whether ``value`` is finite in every process (so all of them stop together)."""
    ok = torch.isfinite(value.detach()).all()
    if not world.active:
        return bool(ok)
    import torch.distributed as dist

    flag = ok.to(torch.float32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def average_gradients(world: World, params: Iterable[nn.Parameter], weight: float) -> None:
    """Replace each gradient by the sum over processes of ``weight`` x gradient, where weight
    is this process's share of the global batch: the gradient of the global batch's mean loss.
    One flat all-reduce for all of them."""
    if not world.active:
        return
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:  # a parameter unused on this step: zeros, so every process sends the same layout
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]) * weight
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def sync_norm_buffers(world: World, model: nn.Module) -> None:
    """Batch-norm running statistics from process 0 to all (they saw different shares)."""
    if not world.active:
        return
    import torch.distributed as dist

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for buf in m.buffers():
                dist.broadcast(buf, 0)


def broadcast(world: World, obj: Any) -> Any:
    """Process 0's ``obj`` in every process."""
    if not world.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        dist.barrier()


def shutdown(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
