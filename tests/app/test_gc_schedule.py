"""The server's own full garbage collection: one thread per process, collecting on its interval."""

from __future__ import annotations

import threading

from tl_ui import gc_schedule


def test_one_collector_thread_per_process(monkeypatch):
    monkeypatch.setattr(gc_schedule, "_thread", None)
    gc_schedule.start_schedule(every_s=3600)
    first = gc_schedule._thread
    gc_schedule.start_schedule(every_s=3600)
    assert gc_schedule._thread is first and first.is_alive() and first.daemon


def test_the_collector_collects_on_its_interval_until_stopped(monkeypatch):
    collected, stop = [], threading.Event()

    def collect():
        collected.append(1)
        if len(collected) == 3:
            stop.set()

    monkeypatch.setattr(gc_schedule.gc, "collect", collect)
    thread = threading.Thread(target=gc_schedule._collect_every, args=(0.01, stop))
    thread.start()
    thread.join(5)
    assert not thread.is_alive() and len(collected) == 3
