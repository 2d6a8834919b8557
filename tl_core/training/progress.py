"""Rates and time left over a sliding window, for progress a person watches.

A rate measured over one batch swings with every hiccup (a loader start, a garbage collection,
another process), and one measured from the start of a phase lags after a slow start; the last
few seconds are what predicts the next few. ``RateWindow`` is that; ``PhaseProgress`` turns one
phase's work into ``Progress`` events carrying it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from tl_core import events as ev

Clock = Callable[[], float]


class RateWindow:
    """Items per second over the last ``window_s`` seconds of ``add(done)`` calls (``done`` is the
    running count). One sample at or before the window's start is kept, so the rate always spans
    the whole window once there is one."""

    def __init__(self, window_s: float = 5.0, clock: Clock = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, done: float) -> None:
        now = self.clock()
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    @property
    def done(self) -> float:
        return self._samples[-1][1] if self._samples else 0.0

    def rate(self) -> float | None:
        """Items per second; None until two samples lie apart in time."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def seconds_left(self, total: float) -> float | None:
        """Seconds until ``total`` at the current rate; None while the rate is unknown or zero."""
        rate = self.rate()
        if not rate or rate <= 0:
            return None
        return max(0.0, (total - self.done) / rate)


class PhaseProgress:
    """One phase of countable work (e.g. images through the backbone) as ``Progress`` events:
    one at the start, then at most one per ``min_interval`` seconds, and always the last; each
    with images/s and seconds left over a sliding window."""

    def __init__(self, emit: Callable[[ev.Event], None], phase: str, total: int, message: str = "", *,
                 window_s: float = 5.0, min_interval: float = 0.5, clock: Clock = time.monotonic) -> None:
        self.emit, self.phase, self.total, self.message = emit, phase, total, message
        self.min_interval, self.clock = min_interval, clock
        self.window = RateWindow(window_s, clock)
        self.done = 0
        self._last_emit: float | None = None

    def start(self) -> None:
        self.window.add(0)
        self._send()

    def advance(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        self.window.add(self.done)
        if self.done >= self.total or self._last_emit is None or \
                self.clock() - self._last_emit >= self.min_interval:
            self._send()

    def _send(self) -> None:
        self._last_emit = self.clock()
        rate = self.window.rate()
        self.emit(ev.Progress(self.phase, self.done, self.total, self.message,
                              images_per_s=rate, seconds_left=self.window.seconds_left(self.total)))
