"""The Teacher page's sections, and the class leaderboard students see on the Runs page.

The engine does the work (``tl_core.classroom.teacher``). Display names, run names and dataset names are
the users' text: they go into tables, widget options or ``st.text``, never into Markdown. Session
ids are the keys to the students' workspaces: the page shows only their first characters, so a
projected screen gives no one a key.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from tl_core.classroom import teacher as classroom
from tl_core.data import uploads

from .feedback import user_errors
from .state import AppState

SHOWN_ID_CHARS = 6


def short_id(session_id: str) -> str:
    """Enough of a session id to tell sessions apart, not enough to open one."""
    return session_id[:SHOWN_ID_CHARS] + "…"


def who(session: classroom.SessionInfo) -> str:
    return f"{session.display_name or classroom.NO_NAME} ({short_id(session.id)})"


def plot_text(text: str) -> str:
    """User text for a plotly label: plotly renders a few HTML tags (links among them) in labels,
    so its angle brackets go as entities, which plotly shows as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- the password -----------------------------------------------------------------------------
def login(state: AppState) -> None:
    """The password prompt. The password is compared on the server and never kept: only the fact
    that it was right is, in this browser session."""
    with st.form("teacher_login", clear_on_submit=True):
        given = st.text_input("Teacher password", type="password", key="teacher_password")
        if st.form_submit_button("Open the Teacher page", icon=":material/lock_open:"):
            if classroom.check_teacher_password(given):
                state.teacher_unlocked = True
                st.rerun()
            st.error("That is not the teacher password.", icon=":material/lock:")


def lock_button(state: AppState) -> None:
    if st.button("Lock", icon=":material/lock:", key="teacher_lock",
                 help="Close the Teacher page in this browser; the password is asked again."):
        state.teacher_unlocked = False
        st.rerun()


# -- sessions ---------------------------------------------------------------------------------
def render_sessions(state: AppState, sessions: list[classroom.SessionInfo]) -> None:
    st.subheader("Sessions")
    if not sessions:
        st.info("No student has opened TL Studio on this server yet.")
        return
    rows = [{"student": s.display_name or classroom.NO_NAME, "session": short_id(s.id),
             "last active": pd.to_datetime(s.last_active, unit="s") if s.last_active else None,
             "disk (MB)": round(s.disk_bytes / 1e6, 1), "datasets": len(s.datasets), "runs": len(s.runs),
             "training": s.active_runs,
             "best val acc": max((r.best_val_acc for r in s.runs if r.best_val_acc is not None), default=None)}
            for s in sessions]
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, key="teacher_sessions_table", column_config={
        "last active": st.column_config.DatetimeColumn("last active", format="distance"),
        "best val acc": st.column_config.NumberColumn("best val acc", format="percent")})
    chart = px.bar(table.assign(who=[plot_text(who(s)) for s in sessions]), x="who", y="disk (MB)",
                   title="Disk use per session", labels={"who": "session"})
    st.plotly_chart(chart.update_layout(height=300), key="teacher_disk_chart")

    by_id = {s.id: s for s in sessions}
    picked = st.selectbox("Session", list(by_id), format_func=lambda sid: who(by_id[sid]), key="teacher_session")
    session = by_id[picked]
    if session.runs:
        st.dataframe(pd.DataFrame([{"run": r.name, "state": r.state, "best val acc": r.best_val_acc,
                                    "strategy": r.strategy, "backbone": r.backbone, "epoch": r.epoch}
                                   for r in session.runs]), hide_index=True, key="teacher_runs_table",
                     column_config={"best val acc": st.column_config.NumberColumn(format="percent")})
    else:
        st.caption("No runs in this session.")
    if session.datasets:
        st.dataframe(pd.DataFrame([{"dataset": d.name, "images": d.num_images, "classes": d.num_classes}
                                   for d in session.datasets]), hide_index=True, key="teacher_datasets_table")
    _delete_buttons(state, session)


def _delete_buttons(state: AppState, session: classroom.SessionInfo) -> None:
    pending = state.pending_teacher_delete
    if pending is None or pending[1] != session.id:
        left, right = st.columns(2)
        if left.button("Delete this session's runs…", icon=":material/delete_sweep:", key="teacher_delete_runs",
                       disabled=not session.runs):
            state.pending_teacher_delete = ("runs", session.id)
            st.rerun()
        if right.button("Delete the whole session…", icon=":material/delete_forever:", key="teacher_delete_session"):
            state.pending_teacher_delete = ("session", session.id)
            st.rerun()
        return
    what = pending[0]
    st.warning(("Delete all runs of this session for good? " if what == "runs" else
                "Delete this whole session for good (datasets, runs, caches)? Its link then opens an empty "
                "workspace. ") + "Jobs still training are stopped first.", icon=":material/warning:")
    st.text(who(session))
    yes, no = st.columns(2)
    if yes.button("Delete for good", type="primary", icon=":material/delete_forever:", key="teacher_delete_yes"):
        with user_errors("Could not delete", message_as_text=True), st.spinner("Stopping jobs and deleting…"):
            if what == "runs":
                classroom.delete_session_runs(session.id)
            else:
                classroom.delete_session(session.id)
            state.pending_teacher_delete = None
            st.toast("Deleted.", icon=":material/delete:")
            st.rerun()
    if no.button("Cancel", key="teacher_delete_no"):
        state.pending_teacher_delete = None
        st.rerun()


# -- the queue --------------------------------------------------------------------------------
def render_queue() -> None:
    st.subheader("Queue")
    entries = classroom.queue()
    if st.button("Refresh", icon=":material/refresh:", key="teacher_queue_refresh"):
        st.rerun()
    if not entries:
        st.caption("No job is training or waiting.")
        return
    for entry in entries:
        with st.container(border=True):
            c1, c2, c3, c4 = st.columns([4, 2, 1, 1.5], vertical_alignment="center")
            person = entry.display_name or classroom.NO_NAME
            c1.text(f"{entry.run_name}\n{person}" + (f" ({short_id(entry.session_id)})" if entry.session_id else ""))
            c2.text("training" if entry.state == "running" else f"waiting, place {entry.position}")
            if entry.session_id and c3.button("Stop", icon=":material/stop:", key=f"teacher_stop_{entry.run_id}"):
                with user_errors("Could not stop the job", message_as_text=True), st.spinner("Stopping…"):
                    status = classroom.stop_job(entry.session_id, entry.run_id, wait_s=5.0)
                    st.toast("Stopped." if not status.active else "Stopping after the current batch.")
                    st.rerun()
            if entry.state == "waiting" and entry.position != 1 and c4.button(
                    "Move to front", icon=":material/vertical_align_top:", key=f"teacher_front_{entry.run_id}"):
                classroom.move_to_front(entry.run_id)
                st.rerun()


# -- shared datasets --------------------------------------------------------------------------
def render_sharing(sessions: list[classroom.SessionInfo]) -> None:
    st.subheader("Share a dataset with the class")
    st.caption("Students see a shared dataset in their Data page's list, read-only; its images are "
               "decoded once for the whole class.")
    with_data = [s for s in sessions if s.datasets]
    left, right = st.columns(2)
    with left:
        if with_data:
            by_id = {s.id: s for s in with_data}
            sid = st.selectbox("From session", list(by_id), format_func=lambda v: who(by_id[v]), key="share_session")
            datasets = {d.id: d for d in by_id[sid].datasets}
            did = st.selectbox("Dataset", list(datasets), key="share_dataset",
                               format_func=lambda v: f"{datasets[v].name} · {datasets[v].num_images} images")
            if st.button("Share it", icon=":material/share:", key="share_button"):
                with user_errors("Could not share the dataset", message_as_text=True), st.spinner("Copying…"):
                    classroom.share_dataset(sid, did)
                    st.toast("Shared with the class.")
        else:
            st.caption("No session has a dataset yet; upload one here instead.")
    with right:
        archive = st.file_uploader("Or upload a .zip (one folder per class)", type="zip", key="share_upload")
        if archive is not None and st.button("Share this zip", key="share_upload_button"):
            with user_errors("Could not read the zip", message_as_text=True), st.spinner("Reading images…"):
                # the same caps as a student's upload (size, image count, free disk): one shared
                # dataset is decoded once for the whole class, but the disk is the class's too
                uploads.add_uploaded_dataset(uploads.ZipUpload(archive), classroom.shared_workspace(),
                                             new_dir=classroom.new_shared_dir,
                                             name=Path(archive.name).stem[:60] or "dataset")
                st.toast("Shared with the class.")
    shared = classroom.shared_catalog().list()
    if shared:
        st.dataframe(pd.DataFrame([{"shared dataset": e.name, "images": e.num_images, "classes": e.num_classes}
                                   for e in shared]), hide_index=True, key="shared_datasets_table")
        by_id = {e.id: e for e in shared}
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        gone = c1.selectbox("Stop sharing", list(by_id), format_func=lambda v: by_id[v].name, key="unshare_pick")
        if c2.button("Stop sharing", icon=":material/share_off:", key="unshare_button"):
            with user_errors("Could not stop sharing", message_as_text=True):
                classroom.unshare_dataset(gone)
                st.rerun()


# -- the leaderboard --------------------------------------------------------------------------
def render_leaderboard_switch() -> None:
    st.subheader("Leaderboard")
    visible = classroom.leaderboard_visible()
    wanted = st.toggle("Students see the leaderboard (on their Runs page)", value=visible, key="leaderboard_toggle")
    if wanted != visible:
        with user_errors("Could not save the setting"):
            classroom.set_leaderboard_visible(wanted)
    render_leaderboard("teacher")


def render_leaderboard(key: str) -> None:
    """The class's runs on a shared dataset, best validation accuracy first (display names only)."""
    shared = classroom.shared_catalog().list()
    if not shared:
        st.caption("No dataset is shared with the class yet.")
        return
    by_id = {e.id: e for e in shared}
    picked = st.selectbox("Shared dataset", list(by_id), format_func=lambda v: by_id[v].name,
                          key=f"{key}_leaderboard_dataset")
    with user_errors("Could not read the leaderboard", message_as_text=True):
        rows = classroom.leaderboard(picked)
        if not rows:
            st.caption("No run on this dataset has a validation accuracy yet.")
            return
        table = pd.DataFrame([{"rank": r.rank, "student": r.student, "run": r.run, "best val acc": r.best_val_acc,
                               "strategy": r.strategy, "backbone": r.backbone, "state": r.state} for r in rows])
        st.dataframe(table, hide_index=True, key=f"{key}_leaderboard_table",
                     column_config={"best val acc": st.column_config.NumberColumn(format="percent")})
