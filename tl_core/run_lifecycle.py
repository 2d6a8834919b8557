"""Every write a training run makes to its run folder, besides checkpoints (``tl_core.checkpoints``):
the status file through the run's life, the class list, the evaluation reports, the event log and
the stop flag it polls. One small class, so that the run folder's API can change in one place."""

from __future__ import annotations

import os
import time
from typing import Any

from .events import Event
from .runs import Run


class RunLifecycle:
    def __init__(self, run: Run) -> None:
        self.run = run

    def log_event(self, event: Event) -> None:
        self.run.append_event(event)

    def stop_requested(self) -> bool:
        return self.run.stop_requested()

    def started(self) -> None:
        self.run.set_status("running", pid=os.getpid(), started=time.time(), error=None)

    def data_ready(self, classes: list[str], dataset_dir: str) -> None:
        self.run.write_json("classes.json", classes)
        self.run.set_status("running", dataset_dir=dataset_dir)

    def epoch_ended(self, epoch: int, best_epoch: int | None, best_val_acc: float | None) -> None:
        self.run.set_status("running", epoch=epoch, best_epoch=best_epoch, best_val_acc=best_val_acc)

    def evaluated(self, split: str, report: dict[str, Any]) -> None:
        self.run.write_json(f"eval_{split}.json", report)

    def metrics(self, result: dict[str, Any]) -> None:
        self.run.write_json("metrics.json", result)

    def finished(self, best_epoch: int | None, best_val_acc: float | None) -> None:
        self.run.set_status("finished", best_epoch=best_epoch, finished=time.time(), best_val_acc=best_val_acc)

    def cancelled(self, best_epoch: int | None, best_val_acc: float | None) -> None:
        self.run.set_status("cancelled", best_epoch=best_epoch, best_val_acc=best_val_acc)

    def failed(self, reason: str) -> None:
        self.run.set_status("failed", error=reason)
