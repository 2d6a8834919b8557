"""The Data page's *Class by class* tab: name the classes, then fill each one with uploaded images
or webcam photos, Teachable-Machine style.

Every image is kept on disk the moment it arrives (``tl_core.data.snapshots.SnapshotTray``), so a
refresh loses nothing; the dataset is made from the tray in one click, and the tray gives up only
the images the dataset took.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import streamlit as st

from tl_core import limits
from tl_core.data import Dataset
from tl_core.data.safety import ImageRefused, checked_image, file_too_big, upload_limits
from tl_core.data.snapshots import IMAGE_SUFFIXES, Snapshot, SnapshotTray
from tl_core.data.uploads import ImagesUpload
from tl_core.errors import LimitReached
from tl_core.markup import escape_markdown
from tl_core.settings import load_settings

from .feedback import notice, user_errors
from .state import AppState
from .widgets import thumbnails

RECENT = 8  # thumbnails shown per class
AddFn = Callable[..., None]  # the Data page's _add_upload(upload, name=..., on_ingested=...)


def class_names(text: str) -> list[str]:
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    return names


def render(state: AppState, add_upload: AddFn) -> None:
    tray = SnapshotTray(state.workspace)
    st.markdown("Name your classes, then give each one images: upload files, or take webcam photos. "
                "Each image is kept the moment it arrives (a refresh keeps them too). 10 or more per "
                "class work best; vary the angle, distance and background.")
    typed = class_names(st.text_input("Class names, separated by commas", key="class_names",
                                      placeholder="healthy, spotted, wilted"))
    snapshots = tray.items()  # read once per run; every change below ends in a rerun
    classes = typed + [c for c in dict.fromkeys(s.label for s in snapshots) if c not in typed]  # with images: listed
    if not classes:
        st.caption("Type two or more class names to start.")
        return

    use_camera = st.toggle("Use the webcam", key="use_camera", help="Take photos with this computer's camera; "
                           "each one goes to the class picked below. The browser asks once for permission.")
    if use_camera:
        shot = _camera(state, tray, classes)
        if shot is not None:
            snapshots.append(shot)

    by_class: dict[str, list[Snapshot]] = {}
    for snapshot in snapshots:
        by_class.setdefault(snapshot.label, []).append(snapshot)
    for label in classes:
        _class_card(state, tray, label, by_class.get(label, []))

    total = len(snapshots)
    c1, c2 = st.columns(2)
    with c1.popover("Throw all these images away", icon=":material/delete:", disabled=not total):
        st.markdown(f"Delete all {total} images collected here? This cannot be undone.")
        if st.button("Yes, delete them", key="tray_clear", type="primary"):
            tray.clear()
            st.rerun()
    ready = sum(1 for c in classes if by_class.get(c)) >= 2
    if c2.button(f"Create dataset from {total} images", key="add_classes", type="primary",
                 disabled=not ready, help=None if ready else "Two or more classes need images first."):
        def took(ds: Dataset) -> None:  # right after the import, before anything can interrupt the page
            tray.remove(SnapshotTray.taken_by(ds, snapshots))

        with user_errors("Could not create the dataset"):
            name = "webcam" if use_camera else "my-classes"
            add_upload(ImagesUpload(tray.as_uploads(snapshots)), name=name, on_ingested=took)
            st.rerun()


def _camera(state: AppState, tray: SnapshotTray, classes: list[str]) -> Snapshot | None:
    """The webcam and its class picker; returns the photo just kept, if any."""
    label = st.radio("Photos go to class", classes, horizontal=True, key="snap_label")
    shot = st.camera_input("Webcam", key="camera",
                           help="After each photo, press *Clear photo* to take the next one.")
    if shot is not None and shot.file_id not in state.snapshots_seen:
        state.snapshots_seen.add(shot.file_id)
        with user_errors("Could not keep the photo", message_as_text=True):  # ImageRefused: the guard's reason
            kept = tray.add(label, shot.getvalue(), Path(shot.name or "").suffix or ".jpg",
                            upload_limits(load_settings()))
            st.toast("Photo kept.")  # the class's card shows its new count (the name is not Markdown-safe)
            return kept
    return None


def screen_uploads(files: Sequence) -> tuple[list[tuple[bytes, str]], list[str]]:
    """A drop of uploaded files (``.name``, ``.getvalue()``) through the image guard and the
    server's upload limits (``max_upload_images``, ``max_upload_mb``), before any pixel is decoded:
    the ``(bytes, suffix)`` images to keep, and one line per file refused (or for the whole drop)."""
    settings = load_settings()
    try:
        limits.check_upload_size(sum(getattr(f, "size", 0) or 0 for f in files), len(files), settings)
    except LimitReached as too_many:
        return [], [str(too_many)]
    caps = upload_limits(settings)
    good: list[tuple[bytes, str]] = []
    refused: list[str] = []
    for file in files:
        size = getattr(file, "size", None)  # Streamlit's UploadedFile: refuse a huge one unread
        try:
            if size is not None and size > caps.max_file_bytes:
                raise file_too_big(caps)
            data = file.getvalue()
            checked_image(data, caps)
        except ImageRefused as why:
            refused.append(f"{file.name}: {why}")
            continue
        good.append((data, Path(file.name).suffix))
    if refused:
        refused.insert(0, f"{len(refused)} of {len(files)} file(s) were not kept:")
    return good, refused


def _class_card(state: AppState, tray: SnapshotTray, label: str, images: list[Snapshot]) -> None:
    count = len(images)
    with st.container(border=True):
        head, undo = st.columns([4, 1])
        head.text(f"{label} · {count} image{'s' if count != 1 else ''}")  # a class name: text, never Markdown
        if undo.button("Undo last", key=f"undo_{label}", disabled=not count, icon=":material/undo:",
                       help="Remove the newest image of this class"):
            tray.remove_last(label)
            st.rerun()
        # A fresh (empty) uploader after each drop: the files now live in the tray, shown below.
        generations = state.upload_generation
        files = st.file_uploader("Add images of this class", type=[s[1:] for s in IMAGE_SUFFIXES],
                                 accept_multiple_files=True, key=f"class_files_{label}_{generations.get(label, 0)}",
                                 label_visibility="collapsed")
        if files:
            # Only once kept: a rerun after a failure (a limit, a full disk) would wipe its message, and
            # the uploader keeps the files for another try (add_many keeps all of them or none).
            with user_errors("Could not keep the images"):
                good, state.upload_refused[label] = screen_uploads(files)
                limits.check_can_upload(state.workspace, sum(len(data) for data, _ in good), len(good))
                tray.add_many(label, good)
                generations[label] = generations.get(label, 0) + 1
                st.rerun()
        refused = state.upload_refused.get(label)
        if refused:  # the last drop's files that were not kept, and why (file names: text, never Markdown)
            notice("error", "\n".join(refused))
        recent = images[-RECENT:]
        pictures = list(zip(range(count - len(recent) + 1, count + 1), thumbnails([s.path for s in recent], 96),
                            strict=True))
        if pictures:
            shown = [(i, p) for i, p in pictures if p is not None]
            if shown:
                st.image([p for _, p in shown], width=96, caption=[escape_markdown(f"{label} {i}") for i, _ in shown])
            if len(shown) < len(pictures):
                st.caption(f"{len(pictures) - len(shown)} of these files cannot be shown; the health report "
                           "will say what is wrong with them.")

