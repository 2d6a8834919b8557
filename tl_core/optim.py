"""Optimisers and learning-rate schedules by name: one registry each, keyed by the config's choices.

Adding an optimiser: its name in ``config.Optimizer`` (and a label in ``OPTIMIZER_LABELS``), its builder
here; ``tests/core/test_optim.py`` checks that the two lists agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer as TorchOptimizer
from torch.optim.lr_scheduler import LRScheduler

from .config import Optimizer, Schedule, check_choice

OptimizerBuilder = Callable[[list[dict], float, float], TorchOptimizer]  # (param groups, lr, weight decay)
ScheduleBuilder = Callable[[TorchOptimizer, int], LRScheduler]  # (optimizer, total steps >= 1)


def _onecycle(optimizer: TorchOptimizer, total_steps: int) -> LRScheduler:
    max_lrs = [g["lr"] for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total_steps)


OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "adamw": lambda groups, lr, wd: torch.optim.AdamW(groups, lr=lr, weight_decay=wd),
    "sgd": lambda groups, lr, wd: torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd),
    "rmsprop": lambda groups, lr, wd: torch.optim.RMSprop(groups, lr=lr, weight_decay=wd),
}

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
    return OPTIMIZERS[name](groups, lr, weight_decay)


def make_scheduler(name: str, optimizer: TorchOptimizer, total_steps: int) -> LRScheduler:
    """Stepped once per batch."""
    check_choice("schedule", name, Schedule)
    return SCHEDULES[name](optimizer, max(1, total_steps))
