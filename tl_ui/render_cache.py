"""What every session of the server draws alike, made once per server process.

Streamlit runs every student's pages in threads of one Python process, so on a classroom server
all the pages share one interpreter lock: a chart built 30 times for 30 copies of the same sample
costs the class 30 times. Charts here are keyed by what they show (a dataset's content, not its
folder or name: each student's copy of the sample has its own folder), kept in a bounded,
least-recently-used table, and shared read-only between sessions (``st.plotly_chart`` only reads a
figure: it copies it to a dict before serialising it). Measured with ``bench/load.py``; see
docs/benchmarks.md, "Cutting the server's CPU per student".
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from tl_core.data import Dataset

MAX_FIGURES = 128  # a few figures per dataset and split, tens of KB each: a few MB at most


class SharedFigures:
    """A bounded LRU table of figures by key, safe to use from every script thread."""

    def __init__(self, max_entries: int = MAX_FIGURES) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._figures: OrderedDict[Hashable, go.Figure] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}  # key -> held while one session builds it

    def get(self, key: Hashable, build: Callable[[], go.Figure]) -> go.Figure:
        """The figure under ``key``, built by ``build()`` on a miss. Sessions that miss the same key
        at once (a class arriving together) wait for the first one's figure rather than each
        building it; other keys are not held up. Callers must not change the figure."""
        figure = self._cached(key)
        if figure is not None:
            return figure
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:
            figure = self._cached(key)
            if figure is not None:
                return figure
            try:
                figure = build()
                with self._lock:
                    self._figures[key] = figure
                    while len(self._figures) > self.max_entries:
                        self._figures.popitem(last=False)
            finally:
                with self._lock:
                    self._building.pop(key, None)
        return figure

    def _cached(self, key: Hashable) -> go.Figure | None:
        with self._lock:
            figure = self._figures.get(key)
            if figure is not None:
                self._figures.move_to_end(key)
            return figure

    def __len__(self) -> int:
        with self._lock:
            return len(self._figures)

    def clear(self) -> None:
        with self._lock:
            self._figures.clear()


FIGURES = SharedFigures()


def shared_figure(key: Hashable, build: Callable[[], go.Figure]) -> go.Figure:
    """The server-wide figure for ``key`` (a tuple naming the chart and what it shows), built once."""
    return FIGURES.get(key, build)


def dataset_key(ds: Dataset) -> str:
    """A digest of what the pages show of a dataset: its classes, each image's file, class, split,
    size and content hash, its skipped files. Not its name, folder or source: two copies of the
    same images (the class's samples) have the same key; any change to an image, a class or the
    split gives another."""
    content = {"classes": list(ds.classes),
               "records": [(r.path, r.label, r.split, r.width, r.height, r.sha256) for r in ds.records],
               "skipped": [(s.path, s.reason) for s in ds.skipped]}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
