"""How the app talks to the user: page introductions and error display without tracebacks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, NoReturn

import streamlit as st

from tl_core.atomic import disk_full, is_disk_full
from tl_core.errors import DiskFull, TLError

log = logging.getLogger("tl_studio")


def intro(title: str, summary: str, more: str) -> None:
    """Page title, two sentences on what this step is in transfer learning, and an expander
    with more (written so a teacher can project it)."""
    st.title(title)
    st.markdown(summary)
    with st.expander("Learn more about this step"):
        st.markdown(more)


@contextmanager
def user_errors(what: str = "", *, message_as_text: bool = False) -> Iterator[None]:
    """Show a TLError as ``st.error`` with its message; any other exception is a bug, shown as
    one line (the traceback goes to the server log, never to the page). A full disk, whichever
    write met it, is said as ``DiskFull``'s one message, never as a bug. ``message_as_text``: the
    message goes out with ``st.text`` below ``what``, for messages that quote a name the user typed."""
    try:
        try:
            yield
        except Exception as exc:  # the server's own writes (a zip saved, a sample drawn) meet a full disk too
            if not isinstance(exc, DiskFull) and is_disk_full(exc):
                log.warning("the disk is full: %s", exc)
                raise disk_full(exc) from exc
            raise
    except TLError as exc:
        if message_as_text:
            st.error(what or "That did not work", icon=":material/error:")
            st.text(str(exc))
        else:
            st.error(f"{what}{': ' if what else ''}{exc}", icon=":material/error:")
    except Exception as exc:  # noqa: BLE001 - the page must keep working; the log has details
        log.exception("unexpected error in the app")
        st.error(f"Something went wrong inside TL Studio ({type(exc).__name__}: {exc}). "
                 "This is a bug, not something you did; the server log has the details.",
                 icon=":material/bug_report:")


class PageEnd(BaseException):  # noqa: N818 - a signal, like st.stop()'s StopException, not an error
    """Raised by ``end_page`` inside ``page_area``. A BaseException, so ``user_errors`` lets it pass."""


_IN_PAGE_AREA: ContextVar[bool] = ContextVar("tl_studio_in_page_area", default=False)


@contextmanager
def page_area() -> Iterator[None]:
    """Where app.py runs the current page: an ``end_page()`` in it ends the page, and app.py goes on
    (to draw the sidebar)."""
    token = _IN_PAGE_AREA.set(True)
    try:
        yield
    except PageEnd:
        pass
    finally:
        _IN_PAGE_AREA.reset(token)


def end_page() -> NoReturn:
    """Stop drawing this page here (nothing more to show yet). Unlike ``st.stop()``, after which
    Streamlit drops what app.py draws next, the sidebar is still drawn. When Streamlit runs a page
    without app.py (its own pages/ mode, e.g. the first deep link after a server start) this is
    ``st.stop()``: there is nothing after the page to keep."""
    if _IN_PAGE_AREA.get():
        raise PageEnd
    st.stop()


_NOTICE = {"error": (":red[:material/error:]", "Problem"), "warning": (":orange[:material/warning:]", "Check")}


def notice(kind: Literal["error", "warning"], message: str) -> None:
    """An engine message that may quote a name the user typed (a class, a file): a bordered box
    with a fixed headline, the message itself as text (``st.warning`` would render it as Markdown)."""
    icon, headline = _NOTICE[kind]
    with st.container(border=True):
        st.markdown(f"{icon} **{headline}**")
        st.text(message)
