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

Faults: a process that dies makes the others' next collective fail (within
``LVMKIT_DIST_TIMEOUT`` seconds) and torchrun stop the group. With ``torchrun --max-restarts K``
torchrun then starts the same command again; the restarted ``lvmkit train CONFIG`` finds the run
its launch made (in ``--out``, or among the default ``runs/KIND-DATA-TIME``; ``--overwrite`` does
not clear it) by the launch recorded in its ``meta.json`` (rendezvous id and agents, see
:func:`launch`), and resumes it from its last checkpoint (written at every epoch's end): the
killed epoch is replayed from its own seed, so the run ends with the weights of an uninterrupted
one. A run another launch left in ``--out`` is never resumed this way. Without torchrun, or when
the restarts are spent, ``lvmkit train --resume RUN`` continues it on any number of processes.
A restarted group meets in torchrun's agent store under a prefix of its own attempt
(:func:`_attempt_store`): the store outlives restarts and keeps the addresses of the attempt
before, which would otherwise be read as this attempt's (pytorch/pytorch#135712).
For tests, ``LVMKIT_FAULT_KILL_AT_STEP=RANK:STEP`` makes process RANK SIGKILL itself just before
global step STEP of the first attempt (:func:`fault_point`).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from lvmkit.core.errors import ConfigError

#: how long a collective waits for a process that died or hangs before failing
TIMEOUT_SECONDS = int(os.environ.get("LVMKIT_DIST_TIMEOUT", "120"))
#: test-only fault injection, "RANK:STEP" (see fault_point); unset in normal use
FAULT_ENV = "LVMKIT_FAULT_KILL_AT_STEP"


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
        timeout = datetime.timedelta(seconds=TIMEOUT_SECONDS)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # torchrun's agent hosts the store
            dist.init_process_group(backend, store=_attempt_store(world, timeout), rank=world.rank,
                                    world_size=world.size, timeout=timeout)
        else:  # a store of this attempt's own (torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, or env://)
            dist.init_process_group(backend, timeout=timeout)
    return world


def _attempt_store(world: World, timeout: datetime.timedelta):
    """torchrun's agent store (MASTER_ADDR:MASTER_PORT) under a prefix of this attempt alone.

    The agent's store outlives a restart (so it outlives every process, as the group's store
    must), but then it also keeps the keys of the attempt before (each process's address), which
    the restarted group would read as its own and fail to connect (pytorch/pytorch#135712).
    Process 0 publishes a fresh token; every other process answers the token it reads with a
    nonce of its own and takes the token once process 0 acknowledges that nonce. A token the
    attempt before left is never acknowledged (its process 0 is gone), so it reads again."""
    import torch.distributed as dist

    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    if world.main:
        token = uuid.uuid4().hex
        agent.set("lvmkit/attempt", token)
        for r in range(1, world.size):
            nonce = agent.get(f"lvmkit/{token}/joined/{r}").decode()
            agent.set(f"lvmkit/{token}/ack/{nonce}", "")
        return dist.PrefixStore(f"lvmkit/{token}/", agent)
    nonce, deadline = uuid.uuid4().hex, time.monotonic() + timeout.total_seconds()
    while time.monotonic() < deadline:
        token = agent.get("lvmkit/attempt").decode()
        agent.set(f"lvmkit/{token}/joined/{world.rank}", nonce)
        # polled with check(): with a timed wait() here, 3 of 28 two-process runs had process 1
        # abort at exit (std::terminate); none of 12 with check()
        answer_by = time.monotonic() + 1.0
        while time.monotonic() < answer_by:
            if agent.check([f"lvmkit/{token}/ack/{nonce}"]):
                return dist.PrefixStore(f"lvmkit/{token}/", agent)
            time.sleep(0.02)
    raise RuntimeError(f"Process {world.rank} got no answer from process 0 through torchrun's store within {timeout}; "
                       "check process 0's log, or raise LVMKIT_DIST_TIMEOUT.")


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


def restart_count() -> int:
    """How many times this process's torchrun agent has restarted its processes (0: the first
    attempt). Per agent: on several machines, only the agent whose process failed counts it."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _agent() -> str:
    # torchrun's agent starts the processes as its children and stays alive across restarts
    return f"{platform.node()}:{os.getppid()}"


def launch(world: World) -> dict | None:
    """This torchrun launch: its rendezvous id and the agents (host:pid) of all its processes,
    the same in every attempt of the launch and different in any other launch (an agent is alive
    while its launch is); None outside torchrun. A collective: every process calls it."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    agents = [_agent()]
    if world.active:
        import torch.distributed as dist

        agents = [None] * world.size
        dist.all_gather_object(agents, _agent())
    return {"run_id": os.environ["TORCHELASTIC_RUN_ID"], "agents": sorted(set(agents))}


def record_launch(meta: Path, launched: dict | None) -> None:
    """Add the launch ``launched`` (:func:`launch`) to the run's metadata file ``meta`` (JSON)
    under ``"torchrun"``, so that a restart of it finds its run (process 0 calls it)."""
    if launched is not None:
        doc = json.loads(meta.read_text()) if meta.is_file() else {}
        meta.write_text(json.dumps({**doc, "torchrun": launched}, indent=2))


def made_by_this_launch(run: Path) -> bool:
    """Whether the run directory ``run`` was made by this torchrun launch, started again since:
    its ``meta.json`` records (:func:`record_launch`) this rendezvous id and this process's agent."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    try:
        recorded = json.loads((Path(run) / "meta.json").read_text()).get("torchrun")
    except (OSError, ValueError, AttributeError):  # no run there, or not one of ours
        return False
    return (isinstance(recorded, dict) and recorded.get("run_id") == os.environ["TORCHELASTIC_RUN_ID"]
            and _agent() in recorded.get("agents", ()))


def restarted_run(world: World, runs: Iterable[Path]) -> Path | None:
    """The run directory among ``runs`` that this torchrun launch made before torchrun restarted
    it (process 0 decides for all), or None: outside torchrun, in a first attempt, or when the
    launch died before making one. A collective under torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    found = next((str(path) for path in runs if made_by_this_launch(path)), None) if world.main else None
    found = broadcast(world, found)
    return None if found is None else Path(found)


def fault_point(world: World, step: int) -> None:
    """Test-only: SIGKILL this process before global step ``step`` when ``LVMKIT_FAULT_KILL_AT_STEP``
    is ``RANK:STEP`` for this rank and step, in the first attempt only
    (a torchrun restart runs on; outside torchrun every run is a first attempt).

    Raises:
        ConfigError: the variable is set but is not RANK:STEP.
    """
    text = os.environ.get(FAULT_ENV)
    if not text:
        return
    try:
        rank, at = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"{FAULT_ENV} must be RANK:STEP (e.g. 1:25), got {text!r}; unset it outside tests.") from None
    if (rank, at) == (world.rank, step) and restart_count() == 0:
        os.kill(os.getpid(), signal.SIGKILL)
