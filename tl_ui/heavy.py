"""Heavy work in the server process, as the page shows it: a spinner that says the page is waiting
for the server (not frozen), around ``tl_core.bounded``'s server-wide slots.

Two ways in:
- ``heavy_work()`` holds a slot for a block the script runs itself (an export);
- ``waiting_notice()`` goes around calls to ``st.cache_data`` functions that take the slot
  *inside*, on a cache miss only (``with heavy_task():`` in their body), so that what is cached
  already shows at once even while the server is busy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import streamlit as st

from tl_core.bounded import HEAVY, heavy_task


def _waiting_text() -> str:
    n = HEAVY.running()
    return (f"Waiting for the server: {n} other task{'s are' if n != 1 else ' is'} running "
            "(pictures, Grad-CAM, predictions or exports of other users)…")


@contextmanager
def waiting_notice() -> Iterator[None]:
    """A spinner while the server's heavy-task slots are all taken when the block starts (the block
    may wait for one inside); nothing otherwise."""
    if HEAVY.would_wait():
        with st.spinner(_waiting_text()):
            yield
    else:
        yield


@contextmanager
def heavy_work() -> Iterator[None]:
    """Hold one of the server's heavy-task slots for the block, with a spinner while waiting for
    it. Raises ``LimitReached`` (shown by ``user_errors``) when the wait runs out."""
    with ExitStack() as stack:
        if HEAVY.would_wait():
            with st.spinner(_waiting_text()):
                stack.enter_context(heavy_task())
        else:
            stack.enter_context(heavy_task())
        yield


__all__ = ["heavy_task", "heavy_work", "waiting_notice"]
