"""Small widgets and adapters that return typed values to the pages."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image

from tl_core.config import LABELS, choices


def uploads_as_zip(files: Sequence, dest: Path) -> Path:
    """Write a directory upload (names like ``photos/cat/a.jpg``) as one zip at ``dest``.

    The engine's zip ingest then handles it like any archive: class folders, train/val/test
    folders and unsafe names are treated in one place.
    """
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in files:
            archive.writestr(file.name, file.getvalue())
    return dest


def choice_input(widget: Callable[..., Any], label: str, alias: Any, value: str, *,
                 labels: dict[str, str] | Callable[[str], str] | None = None, **kwargs: Any) -> str:
    """A selectbox or radio (``widget``, e.g. ``st.radio`` or ``column.selectbox``) over the choices of a
    config Literal alias, starting at ``value``. ``labels`` (a dict or a function) names the options;
    without one the options show their config names, and the help lists what each means."""
    options = choices(alias)
    if labels is None and "help" not in kwargs and alias in LABELS:
        kwargs["help"] = "\n".join(f"- `{name}`: {LABELS[alias][name]}" for name in options)
    if isinstance(labels, dict):
        labels = labels.get
    return widget(label, options, index=options.index(value) if value in options else 0,
                  format_func=labels or str, **kwargs)


def progress_callback(bar):
    """An engine ``ProgressFn`` that drives an ``st.progress`` bar (called in the script thread)."""
    def report(done: int, total: int, message: str = "") -> None:
        bar.progress(min(1.0, done / total) if total else 0.0, text=message or f"{done} of {total}")
    return report


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail(path: str, mtime: float, size: int = 160) -> bytes:
    """A small JPEG of an image file (cached by path and modification time)."""
    with Image.open(path) as image:
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
    return out.getvalue()


def thumbnail_of(path: Path, size: int = 160) -> bytes | None:
    try:
        return thumbnail(str(path), path.stat().st_mtime, size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
