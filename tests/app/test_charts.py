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


def features(done, total, t, rate=None, left=None):
    return ev.Progress("features", done, total, "computing backbone features", time=t, images_per_s=rate,
                       seconds_left=left)


def cached_run(workspace, events):
    run = RunStore(workspace).create(RunConfig(data=DataConfig(source="x")))
    for e in events:
        run.append_event(e)
    curves = RunCurves(run.id)
    curves.update(run)
    return curves


def lazy_started(epochs, views=4, num_train=32):
    return ev.RunStarted(run_id="r", device="cpu", classes=["a", "b"], num_train=num_train, num_val=8,
                         epochs=epochs, steps_per_epoch=1, trainable_params=10, total_params=100,
                         feature_cache=True, time=1000.0, feature_views=views)


def test_during_the_first_extraction_the_bar_rate_and_time_left_come_from_the_backbone(workspace):
    curves = cached_run(workspace, [lazy_started(10), features(0, 40, 1000.0), features(16, 40, 1002.0, 8.0, 3.0)])
    extraction = curves.extraction()
    assert extraction is not None and (extraction.done, extraction.total) == (16, 40)
    assert curves.images_per_s == 8.0
    assert "16 done" in curves.extraction_text() and "8 images/s" in curves.extraction_text()
    # 3 s of this pass, then epochs 2..4 each add a view of the 32 training images at 8 images/s;
    # the head's epochs are not timed yet.
    assert curves.eta_seconds() == 3.0 + 3 * 32 / 8.0
    assert not curves.features_cached()


def test_after_the_views_are_cached_time_left_is_the_heads_epochs(workspace):
    events = [lazy_started(10, views=2), features(0, 40, 1000.0), features(40, 40, 1005.0, 8.0, 0.0),
              batch(1, 1, 1, 1005.2), epoch_ended(1, 5.25), features(0, 32, 1005.3), features(32, 32, 1009.3, 8.0, 0.0),
              batch(2, 1, 1, 1009.5), epoch_ended(2, 4.25), batch(3, 1, 1, 1009.8), epoch_ended(3, 0.25)]
    curves = cached_run(workspace, events)
    assert curves.extraction() is None and curves.features_cached()
    assert curves.images_per_s == 10.0  # the last batch's, no backbone at work
    assert [round(e["head_seconds"], 6) for e in curves.epochs] == [0.25, 0.25, 0.25]
    assert abs(curves.eta_seconds() - 7 * 0.25) < 1e-9  # not 7 times a 5-second first epoch


def test_between_epochs_time_left_counts_the_views_still_to_compute(workspace):
    events = [lazy_started(6, views=4), features(0, 40, 1000.0), features(40, 40, 1005.0, 8.0, 0.0),
              batch(1, 1, 1, 1005.5), epoch_ended(1, 5.5)]
    curves = cached_run(workspace, events)
    # Epochs 2, 3, 4 each compute a view (32 images at 8/s); 5 epochs of the head at 0.5 s.
    assert curves.eta_seconds() == 3 * 4.0 + 5 * 0.5
