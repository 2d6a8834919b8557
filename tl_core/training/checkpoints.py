"""Checkpoints: what a run has learnt so far (``TrainState``), saved after each epoch and loaded to
resume. ``best`` holds the weights of the best epoch by the monitored metric; ``last`` also the
optimiser and schedule, so a resumed run continues where it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tl_core.runs import Run


@dataclass
class TrainState:
    """The run's progress; saved in every checkpoint and restored on resume."""

    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    best_metric: float | None = None  # the monitored metric at the best epoch
    best_epoch: int | None = None
    global_step: int = 0  # optimiser steps taken: the schedule's position

    def best_val_acc(self) -> float | None:
        for row in self.history:
            if row["epoch"] == self.best_epoch:
                return row["val_acc"]
        return None

    def is_better(self, monitor: str, val_loss: float, val_acc: float) -> bool:
        if self.best_metric is None:
            return True
        if monitor == "val_loss":
            return val_loss < self.best_metric
        return val_acc > self.best_metric

    def record_best(self, monitor: str, epoch: int, val_loss: float, val_acc: float) -> None:
        self.best_metric = val_loss if monitor == "val_loss" else val_acc
        self.best_epoch = epoch


def save_checkpoint(run: Run, kind: str, epoch: int, model: nn.Module, state: TrainState, batch_size: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None) -> Path:
    """Write checkpoint ``kind`` (``best`` or ``last``); ``last`` also keeps the optimiser and schedule."""
    checkpoint: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch, "best_metric": state.best_metric, "best_epoch": state.best_epoch,
        "history": state.history, "global_step": state.global_step,
        "batch_size": batch_size,
    }
    if kind == "last" and optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
        checkpoint["scheduler"] = scheduler.state_dict()
    return run.save_checkpoint(kind, checkpoint)


def resume_from_last(run: Run, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     state: TrainState, device: torch.device) -> int:
    """Load the ``last`` checkpoint into the model, optimiser, schedule and ``state``; returns the
    epoch it ended (0 when there is none)."""
    if not run.checkpoint_path("last").exists():
        return 0
    checkpoint = run.load_checkpoint("last", map_location=device)
    model.load_state_dict(checkpoint["model"])
    if "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    state.best_metric, state.best_epoch = checkpoint["best_metric"], checkpoint["best_epoch"]
    state.history = list(checkpoint["history"])
    state.global_step = checkpoint.get("global_step", 0)
    return int(checkpoint["epoch"])


def load_best(run: Run, model: nn.Module, device: torch.device) -> None:
    model.load_state_dict(run.load_checkpoint("best", map_location=device)["model"])
