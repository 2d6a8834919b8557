"""A full garbage collection once a minute in the server process, in place of Streamlit's after
every script run (``runner.postScriptGC = false`` in .streamlit/config.toml).

On this app's heap (torch, torchvision, plotly) a full ``gc.collect()`` takes ~0.27 CPU s under
the one interpreter lock: after every rerun, 30 students' live views spent more on it than on
their pages. Python's own generational collector still runs; this bounds how long cyclic garbage
that reached the oldest generation (a page's figures, a big table) can wait to ~1 minute.
"""

from __future__ import annotations

import gc
import threading

GC_EVERY_S = 60.0

_lock = threading.Lock()
_thread: threading.Thread | None = None


def start_schedule(every_s: float = GC_EVERY_S) -> None:
    """Start the collector thread once per process; a no-op after the first call."""
    global _thread
    with _lock:
        if _thread is not None:
            return
        _thread = threading.Thread(target=_collect_every, args=(every_s, threading.Event()), daemon=True,
                                   name="tl-studio-gc")
        _thread.start()


def _collect_every(every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        gc.collect()
