"""One run on several processes: ``TrainConfig.nproc`` ranks train it together with
DistributedDataParallel (NCCL, one GPU per rank, on CUDA; gloo on CPU).

The worker (``tl_core.jobs.worker``) takes its queue slot(s), then starts ``torch.distributed.run``
with ``nproc`` ranks of ``tl_core.jobs.worker_rank``; each rank calls ``tl_core.training.trainer.train`` with a
``Group``. With ``nproc`` 1 nothing here is used: no torchrun, no process group.

How a rank's share is chosen, so that N processes give the result of one:

- Every rank draws the same global batches as one process would (the same seeded order, the same
  batch size: ``batch_size`` is the total per step) and trains on its slice ``[rank::world]`` of
  each (``shard_batch``); each rank's loss is weighted by its share of the global batch, so the
  gradient DDP averages is the one process's gradient exactly. (``DistributedSampler`` pads the
  shards and draws its own order per rank: a different run from one process's.) On images the
  whole batch is decoded and augmented on every rank, so the random crops are the same as one
  process's; the forward and backward passes, the costly part, are split.
- Backbone features (a frozen body) are computed in shards ``[rank::world]`` and gathered
  (``gather_rows``), so every rank holds all of them; validation logits likewise.
- Metrics are sums and counts all-reduced per step, never means of means.
- BatchNorm: on CUDA, a body that trains in train mode has its BatchNorm layers turned into
  SyncBatchNorm (``wrap``), so each step normalises over the global batch as one process does. On
  CPU torch has no SyncBatchNorm: each rank normalises over its own shard and DDP hands rank 0's
  running statistics to all (close to one process, not equal). A frozen body's BatchNorm is in
  eval mode (the default plans) and needs neither.
- Rank 0 imports and decodes the dataset first; the others then read what it wrote
  (``training.Trainer.fit``): two processes filling the same folders would trip over each other.
- Only rank 0 writes to the run folder (events, status, checkpoints, evaluation): the others get a
  ``ReadOnlyRun``. Rank 0 reads the stop flag and the decision is all-reduced (``stop_requested``),
  so every rank stops after the same step.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tl_core.config import RunConfig
from tl_core.errors import ConfigError


def check_nproc(config: RunConfig) -> None:
    """ConfigError when the machine cannot give the run its ``nproc`` processes: at most one per
    GPU on CUDA, at most one per core on CPU; not on Apple's MPS."""
    n, device = config.train.nproc, config.train.device
    if n <= 1:
        return
    if device.startswith("mps"):
        raise ConfigError("Several processes per run need CUDA GPUs or the CPU; on Apple's MPS set the "
                          "number of processes to 1.")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda") or (device == "auto" and gpus):
        if n > gpus:
            raise ConfigError(f"This run asks for {n} GPUs but the machine has {gpus}: choose at most {gpus}.")
    else:
        cores = os.cpu_count() or 1
        if n > cores:
            raise ConfigError(f"This run asks for {n} CPU processes but the machine has {cores} cores: "
                              f"choose at most {cores}.")


@dataclass
class Group:
    """This process's place among the ranks of one run; the collectives the trainer needs."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This rank's share of ``indices``: every ``world``-th, from position ``rank``."""
        return list(indices)[self.rank::self.world]

    def shard_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[self.rank::self.world], y[self.rank::self.world]

    def barrier(self) -> None:
        dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the ranks (float64: counts stay exact)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def stop_requested(self, poll: Callable[[], bool]) -> bool:
        """Rank 0's ``poll()``, the same answer on every rank (a collective: all ranks call it at
        the same points)."""
        flag = torch.tensor([1 if self.is_main and poll() else 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def gather_rows(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """All ``total`` rows, in order, from each rank's ``shard`` of them (on CPU)."""
        longest = math.ceil(total / self.world)
        padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[:local.shape[0]] = local.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
        for rank, part in enumerate(parts):
            rows = len(range(rank, total, self.world))
            out[rank::self.world] = part[:rows].cpu()
        return out

    def sync_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every rank: each rank's last forward
        updated its own from its shard, and validation on every rank must use the model rank 0 saves."""
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` for training across the ranks: DDP over its trainable parameters (BatchNorm
        in train mode made SyncBatchNorm first, see the module's docstring). A module with nothing
        to train is returned as it is."""
        if not any(p.requires_grad for p in module.parameters()):
            return module
        if self.device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
                                              for m in module.modules()):
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def init_group(device_preference: str) -> Group:
    """Join the run's process group from torchrun's environment: NCCL with GPU ``LOCAL_RANK`` on
    CUDA, gloo on CPU."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device_preference.startswith("cuda") or (device_preference == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return Group(rank=rank, world=world, device=device)


def close_group() -> None:
    with contextlib.suppress(Exception):  # ending anyway: a broken group must not hide the run's own error
        dist.destroy_process_group()


class ReadOnlyRun:
    """A run folder as ranks other than 0 see it: reads pass through, writes do nothing (rank 0
    alone writes events, status, checkpoints and the evaluation)."""

    _WRITES = frozenset({"append_event", "mark_running", "mark_queued", "write_classes", "record_dataset",
                         "record_epoch", "mark_finished", "mark_cancelled", "mark_failed", "write_metrics",
                         "write_evaluation", "request_stop", "clear_stop", "rename"})

    def __init__(self, run: Any) -> None:
        self._run = run

    def save_checkpoint(self, kind: str, state: dict[str, Any]) -> Path:
        return self._run.checkpoint_path(kind)

    def __getattr__(self, name: str) -> Any:
        if name in self._WRITES:
            return lambda *args, **kwargs: None
        return getattr(self._run, name)
