"""Classroom load test: N simulated students walk through the app on one server while jobs train.

Each student is a websocket client that speaks Streamlit's own protocol (the BackMsg / ForwardMsg
protobufs a browser sends and receives on ``/_stcore/stream``), not a browser: 30 Chromium pages
on 2 cores would measure the browsers, not the server. Each student has a fresh session id;
their starts are staggered over ``--ramp`` seconds. A student:

1. opens the Data page and presses "Use the sample dataset";
2. opens the Model page (defaults: the bundled mobilenet_v2);
3. opens the Train page, sets Epochs (the same number box a user types in) and presses
   "Start training";
4. watches the Train page: reruns its live fragment every ``run_every`` seconds (the interval the
   app asks for), each time after the previous rerun has finished, as the browser's timer does
   (the sidebar's run-status fragment has a timer of its own, not simulated);
   the first ``--wait-results`` students to press Start watch until their run ends (bounded by
   ``--timeout``), the others for ``--watch`` seconds (all jobs queue on one device slot: 30 runs
   one after the other would take far longer than a lesson's load peak);
5. opens the Results page.

A render time is from sending the rerun request to the server's ``script_finished`` for it (a
rerun the page asks for itself, e.g. ``st.rerun()`` after Start, is part of the same render).
Errors: an exception element, an ``st.error`` box (a failed run shows one), a widget of the walk
missing, a dropped connection, a render that does not finish within ``--render-timeout``, or a
run whose config is not what the student typed. The server's memory (RSS of its own process and,
separately, of its children: the training workers; their PSS every 10 s) and CPU time are sampled
every second; queue waits are read from each run's status.json (queued -> started) through
tl_core.runs. All runs still queued or training at the end are stopped.

Usage: python bench/load.py --students 30 [--ramp 60] [--epochs 1] [--wait-results 3]
       [--watch 60] [--json out.json]; a smoke run: python bench/load.py --students 3
Exit status 1 when any error occurred.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import websockets
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.RootContainer_pb2 import RootContainer
from streamlit.proto.WidgetStates_pb2 import WidgetState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tl_core, for the queue waits and the clean-up at the end

from bench.machine_info import cpu_name  # noqa: E402 - from REPO, just put on the path

SAMPLE_BUTTON = "Use the sample dataset"  # pages/1_data.py
START_BUTTON = "Start training"  # pages/3_train.py
EPOCHS_BOX = "Epochs"
_DONE = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
         ForwardMsg.FINISHED_WITH_COMPILE_ERROR}
_RUN_ENDED = {"Training finished": "finished", "Training was stopped": "cancelled"}


class LoadError(Exception):
    """Something a student met that a real user would see as broken (kept as text in the report)."""


# -- one simulated browser ------------------------------------------------------------------------
@dataclass
class Render:
    """What one rerun drew: its time, the widgets by label, the texts of its alerts, its errors."""

    page: str
    seconds: float
    widgets: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (kind, widget id)
    alerts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)  # fragment id -> interval: the run_every timers
    fragment_roots: dict[str, int] = field(default_factory=dict)  # fragment id -> where it draws (main, sidebar)
    full_run: bool = False  # the whole page ran (not only a fragment): its timers are the page's timers
    server_cpu_s: float = 0.0  # the server process's CPU time during the render (all its threads: other students' too)

    @property
    def auto_rerun(self) -> tuple[str, float] | None:
        """The timer of the page's own live fragment: one drawing in the main area. The sidebar's
        run status (tl_ui/sidebar.py, every 2 s) has a timer of its own, set after the page's; it
        never says the run ended as an alert nor reruns the page, so watching it never sees the end."""
        return next(((fragment_id, interval) for fragment_id, interval in self.timers.items()
                     if self.fragment_roots.get(fragment_id) == RootContainer.MAIN), None)


class StudentClient:
    """A Streamlit session over one websocket, driven like a browser tab with the app open.

    The browser's protocol, as in streamlit/web/server/starlette/starlette_websocket.py and the
    frontend: connect with the "streamlit" subprotocol, then each (re)run is a BackMsg
    ``rerun_script`` carrying the query string, the page and the widget values that changed; the
    server answers with ForwardMsgs (new_session, navigation, deltas, ...) and ends with
    ``script_finished``."""

    def __init__(self, url: str, session: str, render_timeout: float, server_pid: int | None = None) -> None:
        self.server = psutil.Process(server_pid) if server_pid else None
        self.ws_url = url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        self.query_string = f"s={session}"
        self.render_timeout = render_timeout
        self.page_hashes: dict[str, str] = {}  # url path -> page_script_hash, from the navigation message
        self.page = ""
        self._ws: Any = None

    async def connect(self) -> None:
        # max_size=None: a page's charts may exceed websockets' 1 MiB default; the browser has no limit.
        self._ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"], max_size=None,
                                            open_timeout=self.render_timeout, ping_interval=None)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def open(self, page: str) -> Render:
        """Open ``page`` (its url path) as a click in the sidebar does."""
        self.page = page
        return await self._rerun()

    async def press(self, render: Render, label: str) -> Render:
        """Press the button ``label`` of ``render``."""
        return await self._rerun(widget_states=[_widget_state(render, label, trigger_value=True)])

    async def set_numbers(self, render: Render, values: dict[str, float]) -> Render:
        """Type numbers into the boxes labelled as the keys of ``values`` (one rerun, as leaving a box does)."""
        states = [_widget_state(render, box, double_value=float(value)) for box, value in values.items()]
        return await self._rerun(widget_states=states)

    async def rerun_fragment(self, fragment_id: str) -> Render:
        """The browser's ``run_every`` timer firing: a rerun of one fragment."""
        return await self._rerun(fragment_id=fragment_id)

    async def _rerun(self, *, widget_states: list | None = None, fragment_id: str = "") -> Render:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query_string
        state.page_name = self.page
        state.page_script_hash = self.page_hashes.get(self.page, "")
        if fragment_id:
            state.fragment_id = fragment_id
            state.is_auto_rerun = True
        for widget in widget_states or ():
            state.widget_states.widgets.append(widget)
        render = Render(page=self.page, seconds=0.0)
        cpu_before = self._server_cpu()
        started = time.perf_counter()
        try:
            await self._ws.send(msg.SerializeToString())
            await asyncio.wait_for(self._read_until_finished(render), self.render_timeout)
        except TimeoutError as exc:
            raise LoadError(f"{self.page}: no script_finished within {self.render_timeout:.0f} s") from exc
        except websockets.ConnectionClosed as exc:
            raise LoadError(f"{self.page}: connection dropped ({exc})") from exc
        render.seconds = time.perf_counter() - started
        render.server_cpu_s = self._server_cpu() - cpu_before
        return render

    def _server_cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far; 0 without its pid."""
        if self.server is None:
            return 0.0
        try:
            cpu = self.server.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return cpu.user + cpu.system

    async def _read_until_finished(self, render: Render) -> None:
        while True:
            data = await self._ws.recv()
            fmsg = ForwardMsg()
            fmsg.ParseFromString(data)
            kind = fmsg.WhichOneof("type")
            if kind == "delta":
                _read_delta(fmsg.delta, render)
                if fmsg.delta.fragment_id and fmsg.metadata.delta_path:
                    render.fragment_roots.setdefault(fmsg.delta.fragment_id, fmsg.metadata.delta_path[0])
            elif kind == "navigation":
                for page in fmsg.navigation.app_pages:
                    self.page_hashes[page.url_pathname] = page.page_script_hash
            elif kind == "page_info_changed":
                self.query_string = fmsg.page_info_changed.query_string
            elif kind == "auto_rerun":  # one per fragment with run_every: the page's and the sidebar's
                render.timers[fmsg.auto_rerun.fragment_id] = fmsg.auto_rerun.interval
            elif kind == "stop_auto_rerun":
                for fragment_id in fmsg.stop_auto_rerun.fragment_ids:
                    render.timers.pop(fragment_id, None)
            elif kind == "page_not_found":
                render.errors.append(f"{self.page}: page not found")
            elif kind == "script_finished" and fmsg.script_finished in _DONE:
                render.full_run = fmsg.script_finished != ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY
                if fmsg.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    render.errors.append(f"{self.page}: the script did not compile")
                return


def _read_delta(delta: Any, render: Render) -> None:
    if delta.WhichOneof("type") != "new_element":
        return
    element = delta.new_element
    kind = element.WhichOneof("type")
    if kind == "exception":
        render.errors.append(f"{render.page}: exception {element.exception.type}: {element.exception.message}")
    elif kind == "alert":
        render.alerts.append(element.alert.body)
        if element.alert.format == Alert.ERROR:
            render.errors.append(f"{render.page}: error box: {element.alert.body}")
    elif kind is not None:
        widget = getattr(element, kind)
        if hasattr(widget, "id") and hasattr(widget, "label") and widget.id:
            render.widgets[widget.label] = (kind, widget.id)


def _widget_state(render: Render, label: str, **value: Any) -> WidgetState:
    if label not in render.widgets:
        raise LoadError(f"{render.page}: no widget labelled {label!r} (the page drew: {sorted(render.widgets)})")
    state = WidgetState(id=render.widgets[label][1])
    for name, v in value.items():
        setattr(state, name, v)
    return state


# -- the walk ----------------------------------------------------------------------------------------
class FirstStarters:
    """The first ``count`` students to press Start watch their run until it ends, the others for
    ``watch_s``: the queue is first come, first served, so their runs are the first to train."""

    def __init__(self, count: int) -> None:
        self.left = count

    def take(self) -> bool:
        """One student has just pressed Start: True while places are left (asyncio: no lock needed)."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass
class WalkOptions:
    train: bool = True  # False: open the pages and make the sample only (no job)
    epochs: int = 1
    first_starters: FirstStarters | None = None  # who of the students watches the run to its end
    watch_s: float = 60.0
    timeout_s: float = 900.0  # the longest a student waits for the run's end
    render_timeout_s: float = 120.0
    abort: threading.Event | None = None  # set: every student stops at its next step (the machine runs out of memory)
    server_pid: int | None = None  # to read the server's CPU time around each render
    # Called with each student's fresh session id before the walk: the tests pick their tiny test
    # backbone in the session's saved settings there (the bench itself trains the app's default).
    prepare_session: Callable[[str], None] | None = None


@dataclass
class StudentResult:
    session: str
    renders: list[tuple[str, float]] = field(default_factory=list)  # (page or action, seconds)
    server_cpu: list[tuple[str, float]] = field(default_factory=list)  # (page or action, server CPU s meanwhile)
    errors: list[str] = field(default_factory=list)
    run_outcome: str = ""  # what the Train page said at the end: finished, cancelled, or still active
    seconds: float = 0.0


async def walk(url: str, options: WalkOptions, delay_s: float = 0.0) -> StudentResult:
    """One student's walk through the app (see the module's docstring); never raises."""
    await asyncio.sleep(delay_s)
    session = secrets.token_hex(8)
    if options.prepare_session is not None:
        options.prepare_session(session)
    result = StudentResult(session=session)
    client = StudentClient(url, session, options.render_timeout_s, options.server_pid)
    began = time.perf_counter()

    def keep(name: str, render: Render) -> Render:
        result.renders.append((name, render.seconds))
        result.server_cpu.append((name, render.server_cpu_s))
        result.errors.extend(render.errors)
        if options.abort is not None and options.abort.is_set():
            raise LoadError("stopped early: the machine was running out of memory (see --min-available-mb)")
        return render

    try:
        await client.connect()
        # "" is the app's default page (Data), as the browser opens "/": Streamlit lists the default
        # page under the url path "", so asking for "data" by name is answered "page not found"
        data = keep("open data", await client.open(""))
        keep("make sample", await client.press(data, SAMPLE_BUTTON))
        keep("open model", await client.open("model"))
        train = keep("open train", await client.open("train"))
        if START_BUTTON not in train.widgets:  # it is drawn once a dataset is chosen
            raise LoadError(f"train: no {START_BUTTON!r} button: the sample dataset was not made")
        if options.train:
            train = keep("set epochs", await client.set_numbers(train, {EPOCHS_BOX: options.epochs}))
            train = keep("start training", await client.press(train, START_BUTTON))
            to_the_end = options.first_starters is not None and options.first_starters.take()
            result.run_outcome = await _watch(client, train, options, keep, to_the_end=to_the_end)
        keep("open results", await client.open("results"))
    except LoadError as exc:
        result.errors.append(str(exc))
    except (OSError, websockets.WebSocketException) as exc:
        result.errors.append(f"connection: {type(exc).__name__}: {exc}")
    finally:
        await client.close()
        result.seconds = time.perf_counter() - began
    return result


async def _watch(client: StudentClient, render: Render, options: WalkOptions, keep, *, to_the_end: bool) -> str:
    """Rerun the Train page's live fragment at the interval it asks for, until the run ends
    (``to_the_end``, at most ``timeout_s``) or for ``watch_s``; the run's end as the page says it."""
    limit = time.monotonic() + (options.timeout_s if to_the_end else options.watch_s)
    timer = render.auto_rerun
    while True:
        outcome = next((word for alert in render.alerts for text, word in _RUN_ENDED.items() if text in alert), "")
        if outcome or timer is None:
            return outcome or "ended"
        fragment_id, interval = timer
        if time.monotonic() + interval > limit:
            return "active"
        await asyncio.sleep(interval)
        render = keep("train (live)", await client.rerun_fragment(fragment_id))
        if render.full_run:  # the fragment reran the whole page (st.rerun when the run ended)
            timer = render.auto_rerun


async def run_students(url: str, students: int, *, ramp_s: float = 30.0, wait_results: int = 0,
                       options: WalkOptions | None = None) -> list[StudentResult]:
    """Walk ``students`` students through the app at ``url``, their starts spread over ``ramp_s``;
    the first ``wait_results`` of them to press Start watch their run to its end."""
    options = dataclasses.replace(options or WalkOptions(), first_starters=FirstStarters(wait_results))
    step = ramp_s / max(students - 1, 1)
    done = 0

    async def student(i: int) -> StudentResult:
        nonlocal done
        result = await walk(url, options, delay_s=i * step)
        done += 1
        print(f"student {i + 1}: done in {result.seconds:.0f} s, {len(result.renders)} renders, "
              f"{len(result.errors)} errors ({done}/{students})", file=sys.stderr, flush=True)
        return result

    return list(await asyncio.gather(*(student(i) for i in range(students))))


# -- the server, its memory and its queue ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``streamlit run app.py`` in its own process group with TL_STUDIO_HOME in ``home``."""

    def __init__(self, home: Path, profile_dir: Path | None = None) -> None:
        self.home = home
        self.profile_dir = profile_dir  # set: every script run is profiled there (bench/profile_server.py)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    def start(self, timeout_s: float = 120.0) -> None:
        env = {**os.environ, "TL_STUDIO_HOME": str(self.home), "TL_STUDIO_OFFLINE": "1",
               "PYTHONPATH": str(REPO)}
        self._log = open(self.home / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *(("bench/profile_server.py", str(self.profile_dir.resolve())) if self.profile_dir
                               else ("-m", "streamlit")),
             "run", "app.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.read().decode().strip() == "ok":
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("streamlit did not start:\n" + self.log_tail())
            time.sleep(0.5)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.home / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server's process group, then the training workers it started (each in its own
        session, so the group's signal misses them): by their pids, found before the server goes."""
        if self.proc is None:
            return
        try:
            workers = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            workers = []
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for worker in workers:
            try:
                worker.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(workers, timeout=10)
        for worker in alive:
            try:
                worker.kill()
            except psutil.NoSuchProcess:
                pass
        if self._log is not None:
            self._log.close()
        self.proc = None


class ServerSampler:
    """Every second: the RSS of the server process and, apart, the sum over its children (the
    training workers, separate processes); every ``pss_every`` samples their PSS summed; the CPU
    time each used; the machine's load average and available memory. Keeps the peaks."""

    def __init__(self, pid: int, every_s: float = 1.0, pss_every: int = 10, min_available_mb: int = 0) -> None:
        self.pid, self.every_s, self.pss_every = pid, every_s, pss_every
        self.min_available = min_available_mb * 1024 ** 2
        self.low_memory = threading.Event()  # set once the machine's available memory fell below the minimum
        self.min_seen_available = psutil.virtual_memory().available
        self.load_at_start = os.getloadavg()[0]  # the machine's 1-minute load before the students came
        self.peak_load = self.load_at_start
        self.peak_server = self.peak_children = self.peak_total = 0
        self.peak_workers = 0
        self.peak_pss_total = 0
        self.cpu_s: dict[int, float] = {}  # pid -> CPU seconds (user + system) at its last sample
        self.server_cpu_at_start = _cpu_seconds(pid)  # its start-up, before the students came
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                server = psutil.Process(self.pid)
                own = self._sample(server)
                kids = server.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            children = 0
            for child in kids:
                try:
                    children += self._sample(child)
                except psutil.NoSuchProcess:
                    pass
            self.peak_server = max(self.peak_server, own)
            self.peak_children = max(self.peak_children, children)
            self.peak_total = max(self.peak_total, own + children)
            self.peak_workers = max(self.peak_workers, len(kids))
            self.peak_load = max(self.peak_load, os.getloadavg()[0])
            available = psutil.virtual_memory().available
            self.min_seen_available = min(self.min_seen_available, available)
            if available < self.min_available:
                self.low_memory.set()
            if self.samples % self.pss_every == 0:
                self.peak_pss_total = max(self.peak_pss_total, _pss([server, *kids]))
            self.samples += 1
            self._stop.wait(self.every_s)

    def _sample(self, proc: psutil.Process) -> int:
        """The process's RSS; notes its CPU time."""
        with proc.oneshot():
            cpu = proc.cpu_times()
            self.cpu_s[proc.pid] = cpu.user + cpu.system
            return proc.memory_info().rss

    def summary(self) -> dict[str, Any]:
        mb = 1024 ** 2
        server_cpu = self.cpu_s.get(self.pid, 0.0)
        return {"server_peak_mb": round(self.peak_server / mb), "workers_peak_mb": round(self.peak_children / mb),
                "total_peak_mb": round(self.peak_total / mb), "workers_peak_count": self.peak_workers,
                "total_pss_peak_mb": round(self.peak_pss_total / mb),
                "machine_available_min_mb": round(self.min_seen_available / mb),
                "stopped_for_memory": self.low_memory.is_set(),
                "server_cpu_s": round(server_cpu),
                "server_cpu_walk_s": round(server_cpu - self.server_cpu_at_start, 1),
                "workers_cpu_s": round(sum(self.cpu_s.values()) - server_cpu),
                "load_at_start": round(self.load_at_start, 1), "load_peak": round(self.peak_load, 1),
                "samples": self.samples}


def _cpu_seconds(pid: int) -> float:
    try:
        cpu = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return cpu.user + cpu.system


def _pss(processes: list[psutil.Process]) -> int:
    """Proportional set size summed: shared pages (torch's libraries in every worker) counted once
    in all, where a sum of RSS counts them in each process."""
    total = 0
    for proc in processes:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            pass
    return total


def queue_waits(home: Path, sessions: list[str]) -> dict[str, Any]:
    """Seconds from queued to started of every run of these sessions (status.json via tl_core.runs);
    a run still queued counts as waiting until now (a lower bound, counted apart)."""
    os.environ["TL_STUDIO_HOME"] = str(home)
    from tl_core.runs import RunStore  # imports torch: only once the students are done
    from tl_core.workspace import Workspace

    now = time.time()
    waits, still_queued, states, epochs = [], [], {}, {}
    for session in sessions:
        for run in RunStore(Workspace(home).for_session(session)).list():
            status = run.status()
            states[status.state] = states.get(status.state, 0) + 1
            epochs[run.config.train.epochs] = epochs.get(run.config.train.epochs, 0) + 1
            if status.queued_at is None:
                continue
            if status.started is not None:
                waits.append(status.started - status.queued_at)
            elif status.state == "queued":
                still_queued.append(now - status.queued_at)
    return {"runs": sum(states.values()), "states": states, "epochs": epochs, "started": len(waits),
            "wait_median_s": _round(statistics.median(waits)) if waits else None,
            "wait_max_s": _round(max(waits)) if waits else None,
            "still_queued": len(still_queued),
            "still_queued_max_s": _round(max(still_queued)) if still_queued else None}


def cancel_runs(home: Path, sessions: list[str]) -> None:
    """Ask every run still queued or training to stop (the bench's jobs must not outlive it)."""
    from tl_core.jobs import launch as jobs
    from tl_core.runs import RunStore
    from tl_core.workspace import Workspace

    for session in sessions:
        for run in RunStore(Workspace(home).for_session(session)).list():
            if jobs.job_state(run).active:
                jobs.cancel(run)


# -- the report ----------------------------------------------------------------------------------
def _round(x: float) -> float:
    return round(x, 2)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def render_stats(results: list[StudentResult]) -> dict[str, dict[str, float]]:
    by_step: dict[str, list[float]] = {}
    for result in results:
        for name, seconds in result.renders:
            by_step.setdefault(name, []).append(seconds)
    cpu_by_step: dict[str, list[float]] = {}
    for result in results:
        for name, seconds in result.server_cpu:
            cpu_by_step.setdefault(name, []).append(seconds)
    everything = [s for values in by_step.values() for s in values]
    if everything:
        by_step["all renders"] = everything
        cpu_by_step["all renders"] = [s for values in cpu_by_step.values() for s in values]
    # the server's CPU time during each render: that render's own work when one student walks
    # alone; with several, it also counts what the others' renders made the server do meanwhile
    return {name: {"count": len(values), "median_s": _round(statistics.median(values)),
                   "p95_s": _round(percentile(values, 95)), "max_s": _round(max(values)),
                   "server_cpu_median_s": _round(statistics.median(cpu_by_step.get(name) or [0.0])),
                   "server_cpu_sum_s": _round(sum(cpu_by_step.get(name) or [0.0]))}
            for name, values in by_step.items()}


def _cpu_by_step(result: StudentResult) -> dict[str, float]:
    """The server's CPU seconds during each step of one student's walk (the live view's reruns summed)."""
    steps: dict[str, float] = {}
    for name, seconds in result.server_cpu:
        steps[name] = _round(steps.get(name, 0.0) + seconds)
    return steps


def report(results: list[StudentResult], memory: dict | None, queue: dict | None, meta: dict,
           epochs: int | None = None) -> dict:
    errors = [f"{r.session}: {e}" for r in results for e in r.errors]
    if queue and epochs is not None and set(queue["epochs"]) - {epochs}:
        errors.append(f"runs with other epochs than the {epochs} typed in: {queue['epochs']} (epochs: runs)")
    outcomes: dict[str, int] = {}
    for r in results:
        if r.run_outcome:
            outcomes[r.run_outcome] = outcomes.get(r.run_outcome, 0) + 1
    return {**meta, "students": len(results), "renders": render_stats(results), "errors": errors,
            "run_outcomes_seen": outcomes, "memory": memory, "queue": queue,
            "server_cpu_by_student": [_cpu_by_step(r) for r in results],  # in the order they started
            "walk_seconds_max": _round(max((r.seconds for r in results), default=0.0))}


def format_table(result: dict) -> str:
    alone = result.get("students") == 1  # the server's CPU per render is that render's own only then
    lines = ["| render | count | median s | p95 s | max s |" + (" server CPU s (median) |" if alone else ""),
             "|---|---|---|---|---|" + ("---|" if alone else "")]
    for name, s in result["renders"].items():
        lines.append(f"| {name} | {s['count']} | {s['median_s']:.2f} | {s['p95_s']:.2f} | {s['max_s']:.2f} |"
                     + (f" {s.get('server_cpu_median_s', 0.0):.2f} |" if alone else ""))
    memory, queue = result.get("memory"), result.get("queue")
    lines.append("")
    if memory:
        lines.append(f"server memory (RSS, peak): streamlit {memory['server_peak_mb']} MB; training workers "
                     f"{memory['workers_peak_mb']} MB (up to {memory['workers_peak_count']} processes); "
                     f"together {memory['total_peak_mb']} MB (PSS, shared pages counted once, sampled "
                     f"every 10 s: {memory['total_pss_peak_mb']} MB); the machine's available memory fell "
                     f"to {memory['machine_available_min_mb']} MB"
                     + (" and the walk was stopped for it" if memory["stopped_for_memory"] else ""))
        lines.append(f"CPU time: streamlit {memory['server_cpu_s']} s, training workers {memory['workers_cpu_s']} s "
                     f"in {result.get('seconds', '?')} s on {os.cpu_count()} cores; machine load average "
                     f"{memory['load_at_start']} before the students, peak {memory['load_peak']}")
        walk_cpu = memory.get("server_cpu_walk_s")
        if walk_cpu is not None and result.get("students"):
            lines.append(f"server CPU during the students' walks (after its start-up): {walk_cpu} s, "
                         f"{walk_cpu / result['students']:.1f} s per student")
    if queue:
        lines.append(f"runs: {queue['runs']} {queue['states']}; queue wait (queued -> started) of the "
                     f"{queue['started']} started: median {queue['wait_median_s']} s, max {queue['wait_max_s']} s; "
                     f"{queue['still_queued']} still queued at the end (waiting up to {queue['still_queued_max_s']} s)")
    if result.get("run_outcomes_seen"):
        lines.append(f"what the Train page showed at the end of the watch: {result['run_outcomes_seen']}")
    lines.append(f"errors: {len(result['errors'])}")
    lines.extend(f"  - {e}" for e in result["errors"][:20])
    return "\n".join(lines)


def machine() -> str:
    cpu = cpu_name()
    gib = psutil.virtual_memory().total / 1024 ** 3
    return f"{cpu}, {os.cpu_count()} cores, {gib:.0f} GiB; Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--ramp", type=float, default=60.0, help="seconds over which the students start")
    p.add_argument("--epochs", type=int, default=1, help="epochs of each student's run")
    p.add_argument("--wait-results", type=int, default=3,
                   help="how many students (the first to press Start) watch their run until it ends")
    p.add_argument("--watch", type=float, default=60.0, help="seconds the other students watch the Train page")
    p.add_argument("--timeout", type=float, default=900.0, help="the longest a student waits for a run's end")
    p.add_argument("--render-timeout", type=float, default=120.0, help="a render slower than this is an error")
    p.add_argument("--no-train", action="store_true", help="open the pages and make the sample only")
    p.add_argument("--min-available-mb", type=int, default=2000,
                   help="stop the walk when the machine's available memory falls below this (protects a shared machine)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--profile-dir", default=None,
                   help="profile every script run of the server into this folder (bench/profile_server.py; "
                        "slows the server: not for the measured runs)")
    args = p.parse_args(argv)

    options = WalkOptions(train=not args.no_train, epochs=args.epochs, watch_s=args.watch,
                          timeout_s=args.timeout, render_timeout_s=args.render_timeout)
    with tempfile.TemporaryDirectory(prefix="tl_load_") as tmp:
        home = Path(tmp)
        server = Server(home, Path(args.profile_dir) if args.profile_dir else None)
        server.start()
        began = time.time()
        try:
            with ServerSampler(server.proc.pid, min_available_mb=args.min_available_mb) as sampler:
                options.abort = sampler.low_memory
                options.server_pid = server.proc.pid
                results = asyncio.run(run_students(server.url, args.students, ramp_s=args.ramp,
                                                   wait_results=args.wait_results, options=options))
            sessions = [r.session for r in results]
            queue = queue_waits(home, sessions) if options.train else None
            cancel_runs(home, sessions)
        finally:
            server.stop()
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(began)), "machine": machine(),
                "command": "python bench/load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "seconds": _round(time.time() - began)}
        result = report(results, sampler.summary(), queue, meta, epochs=args.epochs)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
