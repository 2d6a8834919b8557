"""The Runs page's project box: download the workspace as one project zip (built on click, with a
progress bar, in one of the server's heavy-task slots) and open a project made on another TL Studio.
The engine does the work and the checks (``tl_core.export.project``, ``project_import``; the bytes in and out:
``tl_core.export.project_upload``); names from an archive are the user's:
shown as text only."""

from __future__ import annotations

import time

import streamlit as st

from tl_core.export.project import ProjectSummary
from tl_core.export.project_upload import open_project_upload, project_zip_bytes

from .feedback import user_errors
from .heavy import heavy_work
from .state import AppState


def _progress_bar(what: str):
    bar = st.progress(0.0, text=what)

    def update(done: int, total: int, message: str) -> None:
        bar.progress(done / max(total, 1), text=message)
    return update


def _summary_text(summary: ProjectSummary) -> str:
    lines = [f"dataset: {item.name}" for item in summary.datasets] + [f"run: {item.name}" for item in summary.runs]
    return "\n".join(lines + summary.notes)


def render(state: AppState) -> None:
    """The "Project" expander: Download project, Open a project."""
    with st.expander("Project: take your datasets and runs to another TL Studio", icon=":material/work:"):
        st.caption("Download project packs your datasets (images included) and runs (settings, curves, "
                   "metrics and best checkpoints) into one zip; Open a project adds one to this workspace. "
                   "Caches are left out: they are computed again.")
        left, right = st.columns(2)
        with left:
            _download(state)
        with right:
            _open(state)


def _download(state: AppState) -> None:
    if not st.button("Download project", key="project_build", icon=":material/download:"):
        return
    with user_errors("Could not pack the project", message_as_text=True), heavy_work():
        data, summary = project_zip_bytes(state.workspace, progress=_progress_bar("Packing the project…"))
        st.download_button(f"Save the project ({len(data) / 1024**2:,.1f} MB)", data, key="project_download",
                           file_name=time.strftime("tl-studio-project-%Y%m%d-%H%M.zip"), mime="application/zip",
                           on_click="ignore", type="primary", icon=":material/save:")
        st.text(_summary_text(summary))


def _open(state: AppState) -> None:
    upload = st.file_uploader("Open a project (.zip made by Download project)", type="zip", key="project_upload")
    if upload is None or not st.button("Open this project", key="project_open", icon=":material/upload:"):
        return
    with user_errors("Could not open the project", message_as_text=True):
        summary = open_project_upload(upload.getvalue(), state.workspace, name=upload.name,
                                      progress=_progress_bar("Checking the project…"))
        st.success(f"Opened the project: {len(summary.datasets)} dataset(s) and {len(summary.runs)} run(s) "
                   "added.", icon=":material/check_circle:")
        st.text(_summary_text(summary))
