"""The classroom load test's client (bench/load.py) against the e2e server: two students walk the
pages without training. Keeps the bench working as the app and Streamlit change; the full run
(30 students while jobs train) is `make bench-load`."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

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
