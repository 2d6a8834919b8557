"""Worker processes on this machine: starting one in its own process group, telling whether one
still runs (its pid and the create time recorded with it), and ending one.

The queue (``tl_core.jobs.queue``) asks whether a ticket's worker lives; the public API
(``tl_core.jobs.launch``) starts and ends the workers through the functions here.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import IO

import psutil

from tl_core.runs import Run


# -- process liveness ------------------------------------------------------------------------
def process_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True while ``pid`` runs (zombies count as dead; a recycled pid is caught by its start time)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(proc.create_time() - float(create_time)) > 1.0:
            return False
        return True
    except (psutil.Error, ValueError):
        return False


def process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# -- starting --------------------------------------------------------------------------------
_children: dict[int, subprocess.Popen] = {}  # reaped by a thread, so no zombie stays behind


def start_worker(command: list[str], log: IO[bytes]) -> subprocess.Popen:
    """Start ``command`` (a worker's ``python -m ...`` line) with its output going to ``log``, in its
    own process group, with tl_core importable; OSError when it cannot start. The process is kept
    in ``started_workers()`` until a thread has reaped it."""
    package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding tl_core/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True)  # its own process group: a Ctrl-C of the app leaves it be
    _children[proc.pid] = proc
    threading.Thread(target=_reap, args=(proc,), daemon=True).start()
    return proc


def started_workers() -> dict[int, subprocess.Popen]:
    """The worker processes this process started that have not been reaped yet, by pid (a copy)."""
    return dict(_children)


def _reap(proc: subprocess.Popen) -> None:
    proc.wait()
    _children.pop(proc.pid, None)


# -- ending ----------------------------------------------------------------------------------
def end_worker(run: Run, wait_s: float) -> bool:
    """End the run's worker (see ``recorded_worker``); False when there is none to end from here."""
    worker = recorded_worker(run)
    if worker is None:
        return False
    end_process(worker, exit_wait_s=wait_s)
    return True


def recorded_worker(run: Run) -> psutil.Process | None:
    """The live worker process of ``run``: only one whose start time the run recorded (a worker of
    ``start_job``), so neither a process that reused the pid nor this process (a run trained
    in-process by the CLI or a test) is ever taken for it."""
    status = run.status()
    if status.pid_created is None or status.pid == os.getpid():
        return None
    if not process_alive(status.pid, status.pid_created):
        return None
    try:
        return psutil.Process(int(status.pid))
    except psutil.Error:
        return None


def end_process(proc: psutil.Process, exit_wait_s: float, kill_wait_s: float = 5.0) -> None:
    """Give ``proc`` ``exit_wait_s`` seconds to exit by itself, then terminate it, then kill it."""
    try:
        proc.wait(timeout=exit_wait_s)
        return
    except psutil.TimeoutExpired:
        pass
    except psutil.NoSuchProcess:
        return
    try:
        proc.terminate()
        proc.wait(timeout=kill_wait_s)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=kill_wait_s)
    except psutil.NoSuchProcess:
        pass
