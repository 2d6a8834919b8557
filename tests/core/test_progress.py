"""Rates and time left over a sliding window (tl_core.training.progress), on a fake clock."""

from __future__ import annotations

from tl_core import events as ev
from tl_core.training.progress import PhaseProgress, RateWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_follows_the_last_seconds_not_the_last_batch_or_the_start():
    clock = FakeClock()
    window = RateWindow(window_s=5.0, clock=clock)
    assert window.rate() is None and window.seconds_left(100) is None
    window.add(0)
    # A slow start (model warm-up: 10 images in 10 s), then steady 100 images/s in batches of 50,
    # with one batch that took twice as long.
    clock.now += 10
    window.add(10)
    assert window.rate() == 1.0
    done = 10
    for step in range(20):
        clock.now += 1.0 if step == 15 else 0.5
        done += 50
        window.add(done)
    rate = window.rate()
    # Per batch this reads 50 or 100; from the start about 1010/20.5 = 49; over the window ~90.
    assert 85 <= rate <= 100, rate
    assert window.seconds_left(done + 900) == (900 / rate)
    assert window.seconds_left(done) == 0.0


def test_the_window_keeps_one_sample_before_its_start():
    clock = FakeClock()
    window = RateWindow(window_s=2.0, clock=clock)
    window.add(0)
    clock.now += 10  # one long batch: the rate spans it, not nothing
    window.add(100)
    assert window.rate() == 10.0


def test_phase_progress_emits_at_most_twice_a_second_and_always_the_last():
    clock = FakeClock()
    seen: list[ev.Progress] = []
    progress = PhaseProgress(seen.append, "features", total=100, message="computing", clock=clock)
    progress.start()
    for _ in range(10):
        clock.now += 0.125  # 80 images/s
        progress.advance(10)
    assert [e.done for e in seen] == [0, 40, 80, 100]
    assert seen[0].images_per_s is None and seen[0].seconds_left is None
    assert seen[1].images_per_s == 80.0 and seen[1].seconds_left == 0.75
    assert seen[-1].total == 100 and seen[-1].seconds_left == 0.0


def test_old_progress_events_without_rates_still_load():
    old = {"type": "Progress", "phase": "features", "done": 3, "total": 8, "message": "", "time": 1.0}
    event = ev.from_dict(old)
    assert event == ev.Progress("features", 3, 8, "", time=1.0)
    assert event.images_per_s is None and event.seconds_left is None
    started = ev.from_dict({"type": "RunStarted", "run_id": "r", "device": "cpu", "classes": ["a", "b"],
                            "num_train": 4, "num_val": 2, "epochs": 2, "steps_per_epoch": 1,
                            "trainable_params": 1, "total_params": 2, "feature_cache": True, "time": 1.0})
    assert started.feature_views == 0
