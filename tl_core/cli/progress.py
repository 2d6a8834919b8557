"""What the command line draws while it works: tqdm bars for data preparation and training, and one
line per epoch (a subscriber to the trainer's event stream, like the app's charts and the run log)."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """Draws tqdm bars for data preparation and each epoch, and prints one line per epoch."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.bar = None
        self.bar_key: Any = None
        self.steps_per_epoch = 0  # from RunStarted: the length of each epoch's bar

    def _bar(self, key: Any, total: int, desc: str):
        from tqdm import tqdm

        if self.bar_key != key:
            self.close()
            self.bar = tqdm(total=total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)
            self.bar_key = key
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.bar_key = None, None

    def __call__(self, event) -> None:
        from tl_core import events as ev

        if isinstance(event, ev.Progress):
            bar = self._bar(("progress", event.phase), event.total, event.phase)
            bar.n = event.done
            if event.images_per_s is not None:  # the engine's rate over the last seconds, not tqdm's own
                left = "" if event.seconds_left is None else f"{event.seconds_left:.0f}s"
                bar.set_postfix(img_s=f"{event.images_per_s:.0f}", left=left, refresh=False)
            bar.refresh()
        elif isinstance(event, ev.RunStarted):
            self.close()
            print(f"Training on {event.device}: {event.num_train} train / {event.num_val} val images, "
                  f"{len(event.classes)} classes, {event.trainable_params:,} of {event.total_params:,} "
                  f"parameters train" + (" (cached backbone features)" if event.feature_cache else ""),
                  file=self.stream)
            self.steps_per_epoch = event.steps_per_epoch
        elif isinstance(event, ev.BatchEnded):
            bar = self._bar(("epoch", event.epoch), self.steps_per_epoch, f"epoch {event.epoch}")
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.3f}", img_s=f"{event.images_per_s:.0f}", refresh=False)
        elif isinstance(event, ev.EpochEnded):
            self.close()
            print(f"epoch {event.epoch}: train loss {event.train_loss:.4f} acc {event.train_acc:.3f} | "
                  f"val loss {event.val_loss:.4f} acc {event.val_acc:.3f} | {event.seconds:.1f}s",
                  file=self.stream)
        elif isinstance(event, ev.Note):
            self.close()
            print(event.message, file=self.stream)
        elif isinstance(event, ev.RunCancelled):
            self.close()
            print(f"Stopped after epoch {event.epoch}; the best checkpoint (epoch {event.best_epoch}) is kept.",
                  file=self.stream)


def simple_progress(desc: str):
    """A ``(done, total, message)`` progress callback that draws one tqdm bar on stderr, named ``desc``."""
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def report(done: int, total: int, message: str = "") -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        state["bar"].n = done
        state["bar"].refresh()
        if done >= total:
            state["bar"].close()
    return report
