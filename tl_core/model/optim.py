"""Optimisers and learning-rate schedules by name, keyed by the config's choices.

Optimisers are described as data in ``config.OPTIMIZERS`` (adding one is a change there only);
schedules need code, so their builders are here, keyed by ``config.Schedule``'s names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer as TorchOptimizer
from torch.optim.lr_scheduler import LRScheduler

from tl_core.config import OPTIMIZERS, Optimizer, Schedule, check_choice

ScheduleBuilder = Callable[[TorchOptimizer, int], LRScheduler]  # (optimizer, total steps >= 1)


def _onecycle(optimizer: TorchOptimizer, total_steps: int) -> LRScheduler:
    max_lrs = [g["lr"] for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total_steps)


SCHEDULES: dict[str, ScheduleBuilder] = {
    "cosine": lambda opt, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps),
    "onecycle": _onecycle,
    # x0.1 after each third of the run
    "step": lambda opt, steps: torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1),
    "constant": lambda opt, steps: torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
}


def make_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float) -> TorchOptimizer:
    """The optimiser ``name`` over parameter groups (each may carry its own ``lr``)."""
    check_choice("optimizer", name, Optimizer)
    spec = OPTIMIZERS[name]
    return getattr(torch.optim, spec.torch_class)(groups, lr=lr, weight_decay=weight_decay, **dict(spec.options))


def make_scheduler(name: str, optimizer: TorchOptimizer, total_steps: int) -> LRScheduler:
    """Stepped once per batch."""
    check_choice("schedule", name, Schedule)
    return SCHEDULES[name](optimizer, max(1, total_steps))
