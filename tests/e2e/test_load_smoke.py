"""The classroom load test's client (bench/load.py) against the e2e server: two students walk the
pages without training. Keeps the bench working as the app and Streamlit change; the full run
(30 students while jobs train) is `make bench-load`."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import tiny_backbone_picked

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"


@pytest.fixture(scope="module")
def load():
    spec = importlib.util.spec_from_file_location("bench_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.timeout(90)
def _in_own_loop(coroutine):
    """asyncio.run in a thread of its own: the browser tests' Playwright (sync API) keeps an event
    loop running in this thread for the whole session, and asyncio.run refuses to nest in it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_two_students_walk_the_pages(load, server):
    options = load.WalkOptions(train=False, render_timeout_s=45)
    results = _in_own_loop(load.run_students(server, 2, ramp_s=1.0, options=options))
    summary = load.report(results, None, None, {})

    assert summary["errors"] == []
    for step in ("open data", "make sample", "open model", "open train", "open results"):
        stats = summary["renders"][step]
        assert stats["count"] == 2, step
        assert 0 < stats["median_s"] <= stats["p95_s"] <= stats["max_s"] < 45, (step, stats)
    assert summary["renders"]["all renders"]["count"] == 10
    assert "| open train | 2 |" in load.format_table(summary)


def test_an_exception_or_error_box_on_a_page_is_an_error(load):
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.Delta_pb2 import Delta

    render = load.Render(page="data", seconds=0.0)
    broken = Delta()
    broken.new_element.exception.type = "ValueError"
    broken.new_element.exception.message = "boom"
    box = Delta()
    box.new_element.alert.body = "Could not make the sample: the disk is full"
    box.new_element.alert.format = Alert.ERROR
    fine = Delta()
    fine.new_element.alert.body = "No dataset yet."
    fine.new_element.alert.format = Alert.INFO
    for delta in (broken, box, fine):
        load._read_delta(delta, render)

    assert render.errors == ["data: exception ValueError: boom",
                             "data: error box: Could not make the sample: the disk is full"]
    assert render.alerts == ["Could not make the sample: the disk is full", "No dataset yet."]


class _Replay:
    """A websocket that answers with the given ForwardMsgs, one per recv()."""

    def __init__(self, messages) -> None:
        self.messages = [m.SerializeToString() for m in messages]

    async def recv(self) -> bytes:
        return self.messages.pop(0)


def test_the_watch_follows_the_page_fragment_not_the_sidebar_one(load):
    """The Train page's live view (every 1 s, main area) and the sidebar's run status (every 2 s,
    set later) each send an auto_rerun; watching the sidebar's never sees the run end."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    def timer(fragment_id, interval):
        msg = ForwardMsg()
        msg.auto_rerun.fragment_id, msg.auto_rerun.interval = fragment_id, interval
        return msg

    def text(fragment_id, path):
        msg = ForwardMsg()
        msg.delta.fragment_id = fragment_id
        msg.delta.new_element.text.body = "run"
        msg.metadata.delta_path.extend(path)
        return msg

    finished = ForwardMsg()
    finished.script_finished = ForwardMsg.FINISHED_SUCCESSFULLY
    client = load.StudentClient("http://x", "s", 1.0)
    client._ws = _Replay([timer("page", 1.0), text("page", [0, 5, 1]), timer("side", 2.0), text("side", [1, 4, 1]),
                          finished])
    render = load.Render(page="train", seconds=0.0)
    _in_own_loop(client._read_until_finished(render))

    assert render.full_run and render.timers == {"page": 1.0, "side": 2.0}
    assert render.auto_rerun == ("page", 1.0)


class _Ticks:
    """A client whose fragment reruns show the run active, then (from ``ends_at``) finished."""

    def __init__(self, load, ends_at: int | None) -> None:
        self.load, self.ends_at, self.reruns = load, ends_at, 0

    async def rerun_fragment(self, fragment_id):
        self.reruns += 1
        render = self.load.Render(page="train", seconds=0.0)
        if self.ends_at is not None and self.reruns >= self.ends_at:  # the fragment's st.rerun: the full page
            render.full_run = True
            render.alerts.append("Training finished. The best checkpoint is saved; see **Results**.")
        return render


def test_a_watcher_sees_the_end_and_one_who_leaves_early_says_active(load):
    start = load.Render(page="train", seconds=0.0, timers={"page": 0.01}, fragment_roots={"page": 0})
    options = load.WalkOptions(watch_s=0.2, timeout_s=30)

    to_the_end = _Ticks(load, ends_at=3)
    assert _in_own_loop(load._watch(to_the_end, start, options, lambda name, r: r, to_the_end=True)) == "finished"
    assert to_the_end.reruns == 3
    leaves = _Ticks(load, ends_at=None)
    assert _in_own_loop(load._watch(leaves, start, options, lambda name, r: r, to_the_end=False)) == "active"


@pytest.mark.timeout(150)
def test_a_student_who_waits_for_the_results_sees_the_run_finish(load, server, server_home):
    """One student trains 1 epoch on the sample and watches the Train page to the end (on the tiny
    test backbone: the client's watch to the run's end, not MobileNetV2)."""
    options = load.WalkOptions(epochs=1, timeout_s=120, render_timeout_s=45,
                               prepare_session=lambda session: tiny_backbone_picked(server_home, session))
    results = _in_own_loop(load.run_students(server, 1, ramp_s=0.0, wait_results=1, options=options))

    assert results[0].errors == []
    assert results[0].run_outcome == "finished"
    assert any(name == "train (live)" for name, _ in results[0].renders)
