"""The Data page's *Class by class* tab: name the classes, then fill each one with uploaded images
or webcam photos, Teachable-Machine style.

Every image is kept on disk the moment it arrives (``tl_core.snapshots.SnapshotTray``), so a
refresh loses nothing; the dataset is made from the tray in one click, and the tray gives up only
the images the dataset took.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from tl_core.data import Dataset
from tl_core.snapshots import IMAGE_SUFFIXES, Snapshot, SnapshotTray

from .feedback import user_errors
from .state import AppState
from .widgets import thumbnail_of

RECENT = 8  # thumbnails shown per class
IngestFn = Callable[..., None]  # _ingest_into_new(name, uploads, on_ingested=...)


def class_names(text: str) -> list[str]:
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    return names


def render(state: AppState, ingest_into_new: IngestFn) -> None:
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
            ingest_into_new(name, tray.as_uploads(snapshots), on_ingested=took)
            st.rerun()


def _camera(state: AppState, tray: SnapshotTray, classes: list[str]) -> Snapshot | None:
    """The webcam and its class picker; returns the photo just kept, if any."""
    label = st.radio("Photos go to class", classes, horizontal=True, key="snap_label")
    shot = st.camera_input("Webcam", key="camera",
                           help="After each photo, press *Clear photo* to take the next one.")
    if shot is not None and shot.file_id not in state.snapshots_seen:
        state.snapshots_seen.add(shot.file_id)
        with user_errors("Could not keep the photo"):
            kept = tray.add(label, shot.getvalue(), Path(shot.name or "").suffix or ".jpg")
            st.toast("Photo kept.")  # the class's card shows its new count (the name is not Markdown-safe)
            return kept
    return None


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
            # Only once kept: a rerun after a failure (a full disk) would wipe its message, and the
            # uploader keeps the files for another try (add_many keeps all of them or none).
            with user_errors("Could not keep the images"):
                tray.add_many(label, [(f.getvalue(), Path(f.name).suffix) for f in files])
                generations[label] = generations.get(label, 0) + 1
                st.rerun()
        recent = images[-RECENT:]
        pictures = [(i, thumbnail_of(s.path, 96)) for i, s in enumerate(recent, start=count - len(recent) + 1)]
        if pictures:
            shown = [(i, p) for i, p in pictures if p is not None]
            if shown:
                st.image([p for _, p in shown], width=96, caption=[f"{label} {i}" for i, _ in shown])
            if len(shown) < len(pictures):
                st.caption(f"{len(pictures) - len(shown)} of these files cannot be shown; the health report "
                           "will say what is wrong with them.")

