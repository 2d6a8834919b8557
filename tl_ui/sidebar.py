"""The sidebar: current dataset, current run, device, the job status (live while a job runs) and the
student's display name."""

from __future__ import annotations

import functools
from pathlib import Path

import streamlit as st

from tl_core.classroom import teacher as classroom
from tl_core.data import Dataset
from tl_core.errors import TLError
from tl_core.jobs import launch as jobs
from tl_core.system import device_info

from .state import AppState
from .widgets import poll_every

STATE_ICONS = {"queued": ":material/hourglass_top:", "running": ":material/directions_run:",
               "finished": ":material/check_circle:", "failed": ":material/error:",
               "cancelled": ":material/stop_circle:"}


def render(state: AppState) -> None:
    with st.sidebar:
        st.caption("**TL Studio** · transfer learning on your own images")
        dataset = None
        if state.dataset_id:
            try:
                dataset = dataset_summary(state.dataset_dir() or state.workspace.datasets_dir / state.dataset_id)
            except TLError:
                st.markdown(":material/photo_library: Dataset: the selected dataset is gone; pick another on **Data**")
        if dataset is not None:  # its name is the user's: shown as text, never as Markdown
            name, images, classes = dataset
            st.markdown(":material/photo_library: Dataset:" + (" (shared by the teacher)" if state.dataset_is_shared()
                                                              else ""))
            st.text(f"{name} · {images} images, {classes} classes")
        elif not state.dataset_id:
            st.markdown(":material/photo_library: Dataset: none yet: add one on **Data**")
        draft = state.draft
        st.markdown(f":material/neurology: Model: **{draft.model.backbone}**, {draft.freeze.mode.replace('_', ' ')}")
        run = state.current_run()
        _job_status(state, every=poll_every(run.status().state if run is not None else None, 2.0))
        _display_name(state)


def dataset_summary(folder: Path) -> tuple[str, int, int]:
    """(name, images, classes) of the dataset in ``folder``, read once per version of its
    dataset.json: the sidebar draws it on every page of every session, and a big dataset's file
    takes tens of ms to parse. Raises TLError as ``Dataset.load`` does."""
    try:
        info = (Path(folder) / "dataset.json").stat()
        version = (info.st_mtime_ns, info.st_size)
    except OSError:
        version = (0, 0)  # Dataset.load below says what is missing (errors are never cached)
    return _summary(str(folder), version)


@functools.lru_cache(maxsize=256)
def _summary(folder: str, version: tuple[int, int]) -> tuple[str, int, int]:
    dataset = Dataset.load(folder)
    return dataset.name, len(dataset.records), len(dataset.classes)


def _display_name(state: AppState) -> None:
    """The name the teacher and the class leaderboard show for this session (the student's text)."""
    st.text_input("Your name", key=state.display_name_key(), on_change=state.take_display_name,
                  max_chars=classroom.MAX_DISPLAY_NAME, placeholder="optional",
                  help="Shown to the teacher and on the class leaderboard, if the teacher turns it on. "
                       "Other students never see your work.")
    if state.display_name_error:
        st.error(state.display_name_error, icon=":material/error:")


def _job_status(state: AppState, every: float | None) -> None:
    @st.fragment(run_every=every)
    def job_status() -> None:
        run = state.current_run()
        if run is None:
            st.markdown(":material/model_training: Run: none yet")
        else:
            status = jobs.job_state(run)
            run_state = status.state
            st.markdown(":material/model_training: Run:")
            st.text(run.display_name())  # the user's name: text, never Markdown
            line = f"{STATE_ICONS.get(run_state, '')} **{run_state}**"
            if run_state == "running" and status.epoch:
                line += f" (epoch {status.epoch} of {run.config.train.epochs})"
            if run_state == "queued":
                position = jobs.queue_position(run)
                if position:
                    line += f" (place {position} in the queue)"
            st.markdown(line)
        info = device_info()
        busy = len(jobs.running_jobs())
        st.caption(f":material/memory: {info.summary()} · {busy} job{'s' if busy != 1 else ''} "
                   "training on this server")
    job_status()
