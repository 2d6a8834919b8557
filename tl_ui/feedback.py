"""How the app talks to the user: page introductions and error display without tracebacks."""

from __future__ import annotations

import logging
import runpy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
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
    Streamlit drops what app.py draws next, the sidebar is still drawn. Outside ``page_area`` (a
    page run without app.py, which ``start_page`` prevents) this is ``st.stop()``."""
    if _IN_PAGE_AREA.get():
        raise PageEnd
    st.stop()


APP_SCRIPT = Path(__file__).resolve().parents[1] / "app.py"


def start_page() -> None:
    """The first call of every page: makes a page opened without app.py look like the app.

    Streamlit's automatic pages/ mode runs pages/3_train.py alone when the first request a server
    process gets is a deep link (``/train?s=...``, what a student reopens after a restart): until
    some run has called ``st.navigation``, a ``pages/`` folder next to app.py switches that mode on.
    Then the menu lists the file names, the layout is narrow and there is no sidebar. Here that run
    becomes app.py's: page config, ``st.navigation`` with app.py's pages (which also turns the
    pages/ mode off for the rest of the process), this same page inside ``page_area`` and the
    sidebar; then this outer run of the page ends. Inside app.py this does nothing."""
    if _IN_PAGE_AREA.get():
        return
    runpy.run_path(str(APP_SCRIPT), run_name="__main__")
    st.stop()  # the page was drawn inside app.py: nothing of this outer run is left to draw


_NOTICE = {"error": (":red[:material/error:]", "Problem"), "warning": (":orange[:material/warning:]", "Check")}


def notice(kind: Literal["error", "warning"], message: str) -> None:
    """An engine message that may quote a name the user typed (a class, a file): a bordered box
    with a fixed headline, the message itself as text (``st.warning`` would render it as Markdown)."""
    icon, headline = _NOTICE[kind]
    with st.container(border=True):
        st.markdown(f"{icon} **{headline}**")
        st.text(message)
