"""The live curves read a run's event log: retried epochs and slow first epochs are handled."""

from __future__ import annotations

from tl_core import events as ev
from tl_core.config import DataConfig, RunConfig
from tl_core.runs import RunStore
from tl_ui.charts import RunCurves


def started(epochs: int, steps: int) -> ev.RunStarted:
    return ev.RunStarted(run_id="r", device="cpu", classes=["a", "b"], num_train=32, num_val=8, epochs=epochs,
                         steps_per_epoch=steps, trainable_params=10, total_params=100, feature_cache=True,
                         time=1000.0)


def batch(epoch, step, steps, t, global_step=0):
    return ev.BatchEnded(epoch=epoch, step=step, steps=steps, global_step=global_step, loss=1.0, accuracy=0.5,
                         lr=1e-3, images_per_s=10.0, time=t)


def epoch_ended(epoch, seconds):
    return ev.EpochEnded(epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5, lr=1e-3,
                         seconds=seconds, trainable_params=10)


def test_a_retried_epoch_replaces_its_abandoned_batches(workspace):
    run = RunStore(workspace).create(RunConfig(data=DataConfig(source="x")))
    for e in [started(3, 2), batch(1, 1, 2, 1001), ev.Note("Out of memory: retrying epoch 1 with batch size 8."),
              batch(1, 1, 4, 1002), batch(1, 2, 4, 1003), batch(1, 3, 4, 1004), batch(1, 4, 4, 1005)]:
        run.append_event(e)
    curves = RunCurves(run.id)
    curves.update(run)
    assert [round(b["epoch"], 2) for b in curves.batches] == [0.25, 0.5, 0.75, 1.0]
    assert round(curves.progress(), 3) == round(1 / 3, 3)


def test_eta_uses_later_epochs_when_the_first_computed_features(workspace):
    run = RunStore(workspace).create(RunConfig(data=DataConfig(source="x")))
    events = [started(20, 1), batch(1, 1, 1, 1060), epoch_ended(1, 60.0), batch(2, 1, 1, 1061),
              epoch_ended(2, 1.0), batch(3, 1, 1, 1062), epoch_ended(3, 1.0)]
    for e in events:
        run.append_event(e)
    curves = RunCurves(run.id)
    curves.update(run)
    assert curves.eta_seconds() == 17.0  # 17 epochs left at ~1 s, not minutes
