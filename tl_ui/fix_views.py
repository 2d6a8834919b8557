"""Fixes to a dataset where its problems are shown: move an image to another class or remove it
(any page: ``image_fix_controls``), drop exact duplicates, near-duplicate groups with "keep one",
and the dataset's history with Undo (the Data page). The fixes themselves are
``tl_core.data.fixes``; each one is a new version of the dataset.

A fix runs in the button's callback, before the page is drawn again, so the page shows the new
records at once; its outcome (one sentence, with an Undo) is kept in ``AppState.last_fix`` and
shown once, where the click was. Names (classes, files, the dataset's) are shown as text.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import streamlit as st

from tl_core.classroom import teacher as classroom
from tl_core.data import Dataset, HealthReport, fixes, neardup
from tl_core.errors import TLError
from tl_core.markup import escape_markdown
from tl_core.workspace import Workspace

from .feedback import log, user_errors
from .heavy import heavy_work
from .state import get_state
from .widgets import progress_callback, thumbnails

GROUPS_SHOWN = 12  # near-duplicate groups drawn with their pictures; the rest are counted
HISTORY_SHOWN = 20
THUMB = 96


# ----------------------------------------------------------------------------- one image
def image_fix_controls(ds: Dataset, record_path: str, *, key: str, reason: str = "",
                       outcome_key: str | None = None) -> None:
    """"Move to class [select]" and "Remove" for one image of ``ds`` (a record path), in a small
    popover. The fix is applied, the page says what changed with an Undo, and reruns. A dataset the
    teacher shared is read-only: the popover says so instead. ``outcome_key``: where the outcome is
    shown (a section's ``show_outcome``) when this control may be gone after the fix; by default
    right here."""
    said_at = outcome_key or key
    if outcome_key is None:
        show_outcome(key)
    record = next((r for r in ds.records if r.path == record_path), None)
    if record is None:
        st.caption("Not in the dataset any more.")
        return
    with st.popover("Fix", icon=":material/edit:", key=f"{key}_fix"):
        if _read_only(ds):
            st.caption("The teacher shared this dataset: it is read-only here.")
            return
        others = [c for c in ds.classes if c != record.label]
        target = st.selectbox("Move to class", others, key=f"{key}_to") if others else None
        c1, c2 = st.columns(2)
        c1.button("Move", key=f"{key}_move", disabled=target is None, icon=":material/drive_file_move:",
                  on_click=apply_fix, args=(said_at, ds.root, lambda: fixes.relabel(
                      ds.root, [record_path], st.session_state[f"{key}_to"], reason=reason or "moved by hand")))
        c2.button("Remove", key=f"{key}_remove", icon=":material/delete:", on_click=apply_fix,
                  args=(said_at, ds.root, lambda: fixes.remove(ds.root, [record_path],
                                                               reason=reason or "removed by hand")))


def fix_picker(root: Path, shown: dict[str, str], *, key: str) -> None:
    """Under a gallery of the dataset at ``root``: pick one of its images (record path -> its
    caption, as text) and move or remove it (``image_fix_controls``). One picker per gallery keeps
    the pictures in one grid and the page light. Nothing without a dataset to fix (moved, deleted)."""
    try:
        ds = Dataset.load(root)
    except TLError:
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    path = c1.selectbox("Wrong label, or not an image of any class? Fix one of these images", list(shown),
                        format_func=shown.__getitem__, key=f"{key}_pick")
    with c2:
        image_fix_controls(ds, path, key=f"{key}_{_path_key(path)}", reason="from the Results page")


# ----------------------------------------------------------------------------- the Data page
def near_duplicate_search(ds: Dataset, workspace: Workspace, *, key: str = "neardup") -> list[list[str]] | None:
    """A switch to look for near-identical images; their groups (record paths) when it is on, else
    None. The first look decodes every image (a progress bar); later ones read cached hashes."""
    on = st.toggle("Also look for near-identical images (resized, re-saved or brightened copies)", key=key,
                   help=f"Compares perceptual hashes: images whose hashes differ in at most "
                        f"{neardup.DEFAULT_THRESHOLD} of 64 bits are grouped.")
    if not on:
        return None
    bar = st.progress(0.0, text="Comparing images…")
    try:  # a busy server (LimitReached) or a full disk: said here, and the rest of the page is drawn
        with user_errors("Could not compare the images"), heavy_work():
            return neardup.near_duplicate_groups(ds, cache_dir=classroom.cache_dir_for(ds.root, workspace) / "neardup",
                                                 progress=progress_callback(bar))
    finally:
        bar.empty()
    return None


def dataset_fixes(ds: Dataset, report: HealthReport, *, key: str = "fixes") -> None:
    """Below the health report: the version, exact duplicates with "drop duplicates", the
    near-duplicate groups with "keep one" and per-image controls, and the history with Undo."""
    read_only = _read_only(ds)
    st.caption(f"Version {ds.version} of this dataset" + (" (as imported)" if ds.version == 1 else ""))
    show_outcome(key)
    if report.duplicate_groups:
        extra = sum(len(g) - 1 for g in report.duplicate_groups)
        st.button(f"Drop {extra} identical copies (keep one of each)", key=f"{key}_exact",
                  icon=":material/content_copy:", disabled=read_only, on_click=apply_fix,
                  args=(key, ds.root, lambda: fixes.drop_exact_duplicates(ds.root)))
    groups = report.near_duplicate_groups
    if groups:
        with st.expander(f"Near-identical images ({len(groups)} groups)", expanded=True):
            st.button("Keep the first of each group, drop the rest", key=f"{key}_near_all",
                      icon=":material/filter_none:", disabled=read_only, on_click=apply_fix,
                      args=(key, ds.root, lambda: fixes.drop_near_duplicates(ds.root, groups)))
            labels = {r.path: r.label for r in ds.records}
            for group in groups[:GROUPS_SHOWN]:
                _group(ds, group, labels, key, read_only)
            if len(groups) > GROUPS_SHOWN:
                st.caption(f"{len(groups) - GROUPS_SHOWN} more group(s) not drawn; the button above fixes all.")
    history_section(ds, key=f"{key}_history")


def history_section(ds: Dataset, *, key: str) -> None:
    """The dataset's changes, newest first, and an Undo of the last one still in force."""
    changes = fixes.history(ds.root)
    if not changes:
        return
    with st.expander(f"History of this dataset ({len(changes)} change(s); now version {ds.version})"):
        last = fixes.can_undo(ds.root)
        if last is not None:
            st.button("Undo the last change", key=f"{key}_undo", icon=":material/undo:", disabled=_read_only(ds),
                      on_click=apply_fix, args=(key, ds.root, lambda: fixes.undo(ds.root, expected=ds.version), "Undone."))
            st.text(f"It would undo: {last.summary}")
        rows = [{"version": c.version, "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(c.when)),
                 "change": c.summary, "reason": c.reason} for c in reversed(changes[-HISTORY_SHOWN:])]
        st.dataframe(rows, hide_index=True, key=f"{key}_table")  # a table shows text as text


def run_dataset_caption(run_dataset: Path | None, version: int) -> None:
    """On a run's page: "Trained on version N of 'name'", and the dataset's version now when it moved on."""
    if run_dataset is None or version < 1:
        return
    try:
        ds = Dataset.load(run_dataset)
    except TLError:
        return
    now = f" (it is at version {ds.version} now)" if ds.version != version else ""
    st.caption(escape_markdown(f"Trained on version {version} of '{ds.name}'{now}."))


# ----------------------------------------------------------------------------- internals
def _group(ds: Dataset, group: Sequence[str], labels: dict[str, str], said_at: str, read_only: bool) -> None:
    """One group: its pictures, "keep one" and each image's controls; outcomes go to ``said_at``
    (the section's), since a fixed group is gone from the next drawing. Keys follow the paths."""
    present = [p for p in group if p in labels]
    if len(present) < 2:
        return
    key = f"{said_at}_{_path_key(present[0])}"
    with st.container(border=True):
        c1, c2 = st.columns([3, 1])
        c1.text(f"{len(present)} near-identical images" + (
            f"; classes differ: {', '.join(sorted({labels[p] for p in present}))}"
            if len({labels[p] for p in present}) > 1 else ""))
        c2.button("Keep one, drop the rest", key=f"{key}_keep", disabled=read_only, on_click=apply_fix,
                  args=(said_at, ds.root, lambda: fixes.drop_near_duplicates(ds.root, [present])))
        classes = sorted({labels[p] for p in present})
        if len(classes) > 1:  # the copies disagree: keep one, under the class the user says is right
            m1, m2 = st.columns([3, 1], vertical_alignment="bottom")
            m1.selectbox("The right class of this image", classes, key=f"{key}_as")
            m2.button("Merge into one", key=f"{key}_merge", disabled=read_only, on_click=apply_fix,
                      args=(said_at, ds.root, lambda: fixes.merge(ds.root, present, keep=present[0],
                                                                   label=st.session_state[f"{key}_as"])))
        columns = st.columns(min(len(present), 6))
        for i, (path, picture) in enumerate(zip(present[:6], thumbnails([ds.root / p for p in present[:6]], THUMB),
                                                strict=True)):
            with columns[i]:
                if picture is not None:
                    st.image(picture, width=THUMB)
                st.text(f"{Path(path).name}\n{labels[path]}" + ("\n(kept)" if i == 0 else ""))
                image_fix_controls(ds, path, key=f"{said_at}_{_path_key(path)}", reason="near-duplicate",
                                   outcome_key=said_at)
        if len(present) > 6:
            st.caption(f"and {len(present) - 6} more in this group")


def _path_key(path: str) -> str:
    """A widget key part for a record path (any characters) that stays with the image when others go."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]


def _read_only(ds: Dataset) -> bool:
    try:
        fixes.check_editable(ds.root)
    except TLError:
        return True
    return False


def apply_fix(key: str, root: Path, fix: Callable[[], Dataset], said: str | None = None) -> None:
    """A button's callback: apply ``fix`` and keep what happened for ``show_outcome`` to show at ``key``."""
    state = get_state()
    try:
        before = Dataset.load(root).version
        after = fix()
    except TLError as exc:  # DiskFull and a read-only dataset included: their messages say what to do
        state.last_fix = {"key": key, "error": str(exc)}
        return
    except Exception as exc:  # noqa: BLE001 - a callback's exception would reach the page as a traceback
        log.exception("unexpected error in a dataset fix")
        state.last_fix = {"key": key, "error": f"Something went wrong inside TL Studio ({type(exc).__name__}: "
                                               f"{exc}). This is a bug, not something you did; the server log "
                                               "has the details."}
        return
    if after.version == before:
        state.last_fix = {"key": key, "said": "Nothing to change."}
        return
    change = fixes.history(root)[-1]
    state.last_fix = {"key": key, "said": said or change.summary, "root": str(root), "version": after.version}


def show_outcome(key: str) -> None:
    """What the last fix clicked at ``key`` did, with an Undo while its version is current."""
    state = get_state()
    last = state.last_fix
    if not last or last.get("key") != key:
        return
    if "error" in last:
        st.error("The dataset was not changed.", icon=":material/error:")
        st.text(last["error"])
        return
    with st.container(border=True):
        st.text(last["said"])
        root = last.get("root")
        if root and last.get("said") != "Undone." and fixes.can_undo(Path(root)) is not None:
            current = Dataset.load(root).version
            if current == last["version"]:
                st.button("Undo", key=f"{key}_undo_last", icon=":material/undo:", on_click=apply_fix,
                          args=(key, Path(root), lambda: fixes.undo(Path(root), expected=current), "Undone."))
