"""Typed, past-tense training events. The UI, the CLI progress bar and the run log are three
subscribers to the same stream (see ``tl_core.training.trainer``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    device: str  # e.g. "cuda:0 (NVIDIA H100)" or "cpu"
    classes: list[str]
    num_train: int
    num_val: int
    epochs: int
    steps_per_epoch: int
    trainable_params: int
    total_params: int
    feature_cache: bool  # True: the frozen backbone's features are computed once
    time: float = field(default_factory=time.time)
    # Augmented views whose features a cached run needs (epoch e computes view (e - 1) % n the
    # first time); 0 when not a cached run or in logs written before views were lazy.
    feature_views: int = 0


@dataclass(frozen=True)
class BatchEnded:
    epoch: int  # 1-based
    step: int  # 1-based within the epoch
    global_step: int
    loss: float
    accuracy: float
    lr: float
    images_per_s: float
    steps: int = 0  # steps in this epoch (changes when the batch is halved after OOM); 0 = unknown
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class EpochEnded:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    seconds: float
    trainable_params: int
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class CheckpointSaved:
    epoch: int
    kind: str  # "best" or "last"
    path: str
    metric: float | None
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RunFinished:
    best_epoch: int
    metrics: dict[str, Any]  # val/test metrics of the best checkpoint
    stopped_early: bool = False
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RunFailed:
    reason: str  # written for the user
    error_type: str
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RunCancelled:
    epoch: int
    best_epoch: int | None  # the best checkpoint is kept
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Progress:
    """Long work before or between epochs (decoding images, extracting features)."""

    phase: str  # "decode" | "features" | "evaluate"
    done: int  # of the whole phase (for "features": every image this epoch runs through the backbone)
    total: int
    message: str = ""
    time: float = field(default_factory=time.time)
    # Over the last few seconds (tl_core.training.progress.RateWindow); None while unknown and in old logs.
    images_per_s: float | None = None
    seconds_left: float | None = None


@dataclass(frozen=True)
class Note:
    """Something the user should know during a run (e.g. batch size halved after OOM)."""

    message: str
    time: float = field(default_factory=time.time)


Event = (RunStarted | BatchEnded | EpochEnded | CheckpointSaved | RunFinished | RunFailed
         | RunCancelled | Progress | Note)
Subscriber = Callable[[Event], None]
EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in
                                (RunStarted, BatchEnded, EpochEnded, CheckpointSaved, RunFinished,
                                 RunFailed, RunCancelled, Progress, Note)}
TERMINAL = (RunFinished, RunFailed, RunCancelled)


def to_dict(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, **dataclasses.asdict(event)}


def from_dict(data: dict[str, Any]) -> Event:
    data = dict(data)
    cls = EVENT_TYPES[data.pop("type")]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


class Control:
    """Cooperative control handed to the trainer: ``stop()`` ends the run after the current
    batch and keeps the best checkpoint. ``should_stop`` may also be wired to a file flag."""

    def __init__(self, poll: Callable[[], bool] | None = None) -> None:
        self._stop = False
        self._poll = poll

    def stop(self) -> None:
        self._stop = True

    @property
    def should_stop(self) -> bool:
        if not self._stop and self._poll is not None and self._poll():
            self._stop = True
        return self._stop
