"""Small widgets and adapters that return typed values to the pages."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from tl_core.bounded import heavy_task
from tl_core.config import LABELS, ZERO_SHOT_HEAD, choices
from tl_core.data.safety import ImageRefused, thumbnail_jpeg
from tl_core.errors import LimitReached

from .heavy import waiting_notice


def choice_input(widget: Callable[..., Any], label: str, alias: Any, value: str, *,
                 labels: dict[str, str] | Callable[[str], str] | None = None, exclude: Collection[str] = (),
                 **kwargs: Any) -> str:
    """A selectbox or radio (``widget``, e.g. ``st.radio`` or ``column.selectbox``) over the choices of a
    config Literal alias, starting at ``value``, less those in ``exclude`` (choices that do not apply
    here, such as the zero-shot head for an image-only backbone). ``labels`` (a dict or a function)
    names the options; without one the options show their config names, and the help lists what
    each means."""
    options = tuple(name for name in choices(alias) if name not in exclude)
    if labels is None and "help" not in kwargs and alias in LABELS:
        kwargs["help"] = "\n".join(f"- `{name}`: {LABELS[alias][name]}" for name in options)
    if isinstance(labels, dict):
        labels = labels.get
    return widget(label, options, index=options.index(value) if value in options else 0,
                  format_func=labels or str, **kwargs)


def epochs_input(widget: Callable[..., Any], value: int, head_kind: str, **kwargs: Any) -> int:
    """The number of epochs (``widget``: ``st.number_input`` or a column's), starting at ``value``.
    0 is allowed only with the zero-shot head, as ``RunConfig.validate`` allows it: the class words
    alone classify, and no training image is used."""
    least = 0 if head_kind == ZERO_SHOT_HEAD else 1
    note = " 0 = pure zero-shot, no training images." if least == 0 else ""
    return int(widget("Epochs", least, max(500, value), max(value, least),
                      help="Passes over the training images. 5-20 is typical." + note, **kwargs))


def steps_with(steps: Sequence[float], value: float) -> list[float]:
    """A slider's ``steps`` with ``value`` among them: a run made elsewhere (the CLI's ``--lr 0.1``,
    an opened project) brings values the page does not offer, and *Edit and run* must show them
    rather than fail."""
    return sorted({*steps, value})


def progress_callback(bar):
    """An engine ``ProgressFn`` that drives an ``st.progress`` bar (called in the script thread)."""
    def report(done: int, total: int, message: str = "") -> None:
        bar.progress(min(1.0, done / total) if total else 0.0, text=message or f"{done} of {total}")
    return report


THUMBNAIL_WAIT = 5.0  # seconds a thumbnail waits for a busy server; a page without pictures beats a frozen one


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail(path: str, mtime: float, size: int = 160, _wait: float | None = THUMBNAIL_WAIT) -> bytes:
    """A small JPEG of an image file (cached by path and modification time), made after the image
    guard and without decoding a big photo at full size (``tl_core.data.safety.thumbnail_jpeg``),
    in one of the server's heavy-task slots. Raises ``ImageRefused``, or ``LimitReached`` when the
    server stays busy for ``_wait`` seconds."""
    with heavy_task(_wait):
        return thumbnail_jpeg(Path(path), size)


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail_of_content(digest: str, size: int, _path: str, _wait: float | None = THUMBNAIL_WAIT) -> bytes:
    """``thumbnail`` cached by the file's content hash (sha256) rather than its path: every
    student's copy of the same sample shares one thumbnail per image in the server."""
    with heavy_task(_wait):
        return thumbnail_jpeg(Path(_path), size)


def thumbnails(paths: Sequence[Path], size: int = 160, digests: Sequence[str] | None = None) -> list[bytes | None]:
    """``thumbnail`` of each file, or None for one that cannot be shown (missing, not an image, too
    many pixels), with one waiting notice while the server is busy; when a picture could not get a
    slot in time, the rest of the batch is left out too (None) and a caption says why. With
    ``digests`` (each file's sha256, as a dataset's records hold it), cached by content."""
    out: list[bytes | None] = []
    with waiting_notice():
        for i, path in enumerate(paths):
            try:
                out.append(thumbnail_of_content(digests[i], size, str(path)) if digests is not None
                           else thumbnail(str(path), path.stat().st_mtime, size))
            except (OSError, ImageRefused):
                out.append(None)
            except LimitReached:
                st.caption("The server is busy: some pictures are left out for now.")
                return out + [None] * (len(paths) - len(out))
    return out


@st.cache_data(max_entries=256, show_spinner=False)
def _shrunk(digest: str, _data: bytes, size: int) -> bytes:
    with heavy_task():
        return thumbnail_jpeg(_data, size)


def picture_of(data: bytes, size: int = 480) -> bytes | None:
    """An uploaded image as a JPEG of at most ``size`` pixels a side for the page (the browser
    gets a small picture, the server never holds the decoded original), or None when it cannot
    be shown."""
    try:
        with waiting_notice():
            return _shrunk(hashlib.sha256(data).hexdigest(), data, size)
    except ImageRefused:
        return None


QUEUED_POLL_S = 5.0  # how often a live view rereads a run that waits in the queue


def poll_every(run_state: str | None, running_s: float) -> float | None:
    """How often a live view (a ``run_every`` fragment) rereads a run: every ``running_s`` seconds
    while it trains, every ``QUEUED_POLL_S`` while it waits in the queue (its place changes slowly,
    and a class of 30 waiting students polling each second costs the one server process more than
    the pages it draws), never once it has ended."""
    if run_state == "running":
        return running_s
    if run_state == "queued":
        return max(running_s, QUEUED_POLL_S)
    return None
