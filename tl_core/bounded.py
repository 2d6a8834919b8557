"""A bound on heavy work in the app's server process, shared by every browser session.

Streamlit runs each session's script in its own thread of one process: thumbnails, Grad-CAM,
feature maps, batch predictions and exports from 30 students would all decode images and run
networks at once and starve each other (and the server's memory). ``heavy_task()`` lets
``settings.server_heavy_tasks`` of them run at a time; the others wait their turn, up to a
bound, then get a ``LimitReached`` that says to try again. Inside a task, torch uses a share
of the cores per slot. Training runs in worker processes and is not counted
here.

No Streamlit here: the app shows a waiting notice around it (``tl_ui.heavy``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from tl_core.errors import LimitReached
from tl_core.settings import load_settings

WAIT_SECONDS = 60.0  # how long a task waits for a free slot before the user is told to try again
SETTING = "server_heavy_tasks"


class Gate:
    """At most ``size()`` tasks inside at once (0: no bound). Re-entrant per thread: a task that
    starts another (a gallery's Grad-CAM and its thumbnails) holds one slot, so nested tasks
    cannot deadlock each other."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0
        self._mine = threading.local()

    def running(self) -> int:
        """Tasks inside now."""
        return self._running

    def waiting(self) -> int:
        """Tasks waiting for a slot now."""
        return self._waiting

    def held_here(self) -> bool:
        """Whether this thread is inside already (its nested tasks go straight in)."""
        return getattr(self._mine, "depth", 0) > 0

    def would_wait(self) -> bool:
        """Whether a task started now from this thread would have to wait."""
        size = self._size()
        return not self.held_here() and bool(size) and self._running >= size

    @contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[None]:
        """Hold one slot for the block; raise ``LimitReached`` after ``timeout`` seconds of waiting
        (default ``WAIT_SECONDS``, read at each call)."""
        if self.held_here():
            self._mine.depth += 1
            try:
                yield
            finally:
                self._mine.depth -= 1
            return
        size = self._size()
        timeout = WAIT_SECONDS if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            try:
                while size and self._running >= size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LimitReached(SETTING, f"The server is busy: {self._running} other heavy tasks "
                                                    f"(pictures, Grad-CAM, predictions, exports) have been running "
                                                    f"for over {timeout:.0f} s. Try again in a minute; if this "
                                                    f"happens often, ask the teacher to raise {SETTING}.")
                    self._cond.wait(left)
            finally:
                self._waiting -= 1
            self._running += 1
        self._mine.depth = 1
        own_threads = None
        try:
            own_threads = _share_cores(size)
            yield
        finally:
            _give_back_cores(own_threads)
            self._mine.depth = 0
            with self._cond:
                self._running -= 1
                self._cond.notify()


def _share_cores(slots: int) -> int | None:
    """For the task starting in this thread, torch (when the server has loaded it) uses a share of
    the cores per slot, so the tasks together use the machine's cores, not each of them all of them
    (torch's default). Returns the setting to give back when the task ends. (With OpenMP, torch's
    usual build on Linux, the setting is the calling thread's own.)"""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, cores // max(slots, 1))))
    return before


def _give_back_cores(before: int | None) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and before is not None:
        torch.set_num_threads(before)


HEAVY = Gate(lambda: int(load_settings().server_heavy_tasks))


def heavy_task(timeout: float | None = None) -> AbstractContextManager[None]:
    """The server-wide slot for one heavy task: ``with heavy_task(): ...``, or ``@heavy_task()`` on
    a function (each call takes the slot; under ``st.cache_data``, only a cache miss does)."""
    return HEAVY.slot(timeout)
