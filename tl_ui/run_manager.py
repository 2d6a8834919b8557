"""The Runs page's widgets: re-run, edit and run, resume, stop, rename and delete a run; delete a
dataset. The engine does the work (``tl_core.jobs.launch``, ``Run.rename``, ``DatasetCatalog.delete``);
deleting asks for a confirmation first. Names are the user's: shown as text or widget values only.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tl_core.classroom import teacher as classroom
from tl_core.data.catalog import DatasetCatalog
from tl_core.jobs import launch as jobs
from tl_core.runs import Run, auto_label, unique_labels

from .feedback import user_errors
from .state import AppState

TRAIN_PAGE = "pages/3_train.py"
RESUMABLE = ("cancelled", "failed")


def load_into_draft(state: AppState, run: Run) -> None:
    """Make ``run``'s settings the draft the Model and Train pages show, and its dataset the
    current one when it is still in this workspace."""
    config = run.config
    state.edit_draft(data=config.data, model=config.model, freeze=config.freeze, train=config.train)
    folder = run.dataset_dir()
    own_or_shared = folder is not None and (folder.parent == state.workspace.datasets_dir
                                            or classroom.is_shared_dataset(folder))
    if own_or_shared and (folder / "dataset.json").exists():
        state.select_dataset(folder.name)


def runs_table(runs: list[Run], labels: dict[str, str]) -> None:
    rows = [{**run.summary(), "name": labels[run.id]} for run in runs]
    table = pd.DataFrame(rows, columns=["name", "state", "backbone", "strategy", "head", "lr", "best_val_acc",
                                        "epoch", "created", "id"])
    table["created"] = pd.to_datetime(table["created"], unit="s", errors="coerce")
    st.dataframe(table, hide_index=True, key="manage_runs_table", column_config={
        "name": "Run", "lr": st.column_config.NumberColumn("lr", format="%.0e"),
        "best_val_acc": st.column_config.NumberColumn("best val acc", format="percent"),
        "created": st.column_config.DatetimeColumn("created", format="distance"),
        "id": st.column_config.TextColumn("id", help="The run's folder under runs/ (for the CLI)"),
    })


def render_runs(state: AppState) -> None:
    runs = state.runs.list()
    if not runs:
        st.info("No runs yet. Train one on the **Train** page.")
        st.page_link(TRAIN_PAGE, label="Go to Train", icon=":material/model_training:")
        return
    labels = unique_labels(runs)
    by_id = {run.id: run for run in runs}
    runs_table(runs, labels)

    ids = list(by_id)
    states = {run.id: run.state for run in runs}
    picked = st.selectbox("Run", ids, index=ids.index(state.run_id) if state.run_id in by_id else 0,
                          format_func=lambda run_id: f"{labels[run_id]} · {states[run_id]}", key="manage_run")
    if picked != state.run_id:
        state.select_run(picked)
    run = by_id[picked]
    status = jobs.job_state(run)

    c1, c2, c3, c4 = st.columns(4)
    with user_errors("Could not start the run", message_as_text=True):
        if c1.button("Re-run", icon=":material/replay:", key="manage_rerun",
                     help="Train the exact same settings again, as a new run."):
            state.select_run(jobs.rerun(state.workspace, run))
            st.switch_page(TRAIN_PAGE)
        if c2.button("Edit and run", icon=":material/edit:", key="manage_edit",
                     help="Load this run's settings into the Model and Train pages, to change some and start."):
            load_into_draft(state, run)
            st.switch_page(TRAIN_PAGE)
        if c3.button("Resume", icon=":material/resume:", key="manage_resume",
                     disabled=status.state not in RESUMABLE,
                     help="Train a stopped or failed run on from its last saved epoch."):
            jobs.resume_job(state.workspace, run)
            st.switch_page(TRAIN_PAGE)
    if status.active and c4.button("Stop", icon=":material/stop:", key="manage_stop",
                                   help="Stop after the current batch; the best checkpoint is kept."):
        jobs.cancel(run)
        st.toast("Stopping after the current batch; the best checkpoint is kept.")

    _rename(run)
    _delete_run(state, run, active=status.active)


def _rename(run: Run) -> None:
    with st.form(f"rename_{run.id}", border=False):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        name = left.text_input("Name", value=run.label or run.config.name, key=f"rename_name_{run.id}",
                               placeholder=auto_label(run.config),
                               help="Shown in every list, legend and the CLI. Empty: the name it started "
                                    "with, else the automatic label (backbone · strategy · head · lr).")
        if right.form_submit_button("Rename", icon=":material/edit_note:"):
            with user_errors("Could not rename the run", message_as_text=True):
                run.rename(name)
                st.rerun()


def _delete_run(state: AppState, run: Run, *, active: bool) -> None:
    if state.pending_delete_run != run.id:
        if st.button("Delete run…", icon=":material/delete:", key="manage_delete"):
            state.pending_delete_run = run.id
            st.rerun()
        return
    st.warning("Delete this run for good? Its checkpoints, evaluation and export are removed."
               + (" It is training now: it is stopped first." if active else ""), icon=":material/warning:")
    st.text(run.display_name())
    answer = _yes_or_cancel("manage_delete")
    if answer == "yes":
        with user_errors("Could not delete the run", message_as_text=True), st.spinner("Stopping and deleting the run…"):
            jobs.delete_run(state.runs, run)
            state.pending_delete_run = None
            if state.run_id == run.id:
                state.select_run(None)
            st.toast("Run deleted.", icon=":material/delete:")
            st.rerun()
    elif answer == "cancel":
        state.pending_delete_run = None
        st.rerun()


def _yes_or_cancel(key: str, *, disabled: bool = False) -> str | None:
    """The two buttons under a "delete for good?" question: "yes", "cancel" or None (no click)."""
    yes, no = st.columns(2)
    if yes.button("Delete for good", type="primary", icon=":material/delete_forever:", key=f"{key}_yes",
                  disabled=disabled):
        return "yes"
    if no.button("Cancel", key=f"{key}_no"):
        return "cancel"
    return None


def render_datasets(state: AppState) -> None:
    catalog = DatasetCatalog(state.workspace)
    entries = catalog.list()
    if not entries:
        st.caption("No datasets in this workspace.")
        return
    by_id = {entry.id: entry for entry in entries}
    st.dataframe(pd.DataFrame([{"name": e.name, "images": e.num_images, "classes": e.num_classes, "id": e.id}
                               for e in entries]), hide_index=True, key="manage_datasets_table")
    ids = list(by_id)
    picked = st.selectbox("Dataset", ids, index=ids.index(state.dataset_id) if state.dataset_id in by_id else 0,
                          format_func=lambda dataset_id: by_id[dataset_id].name, key="manage_dataset")
    if state.pending_delete_dataset != picked:
        if st.button("Delete dataset…", icon=":material/delete:", key="manage_dataset_delete"):
            state.pending_delete_dataset = picked
            st.rerun()
        return
    used = catalog.runs_using(picked)
    live = [run for run in used if jobs.job_state(run).active]
    if live:
        st.error(f"{len(live)} run(s) still train on this dataset; stop them first.", icon=":material/error:")
    else:
        st.warning("Delete this dataset for good? Its copy of the images is removed."
                   + (f" {len(used)} run(s) trained on it keep their results, but cannot show its images or "
                      "be re-run." if used else ""), icon=":material/warning:")
    st.text(by_id[picked].name)
    answer = _yes_or_cancel("manage_dataset_delete", disabled=bool(live))
    if answer == "yes":
        with user_errors("Could not delete the dataset", message_as_text=True):
            catalog.delete(picked, is_active=jobs.is_active)
            state.pending_delete_dataset = None
            if state.dataset_id == picked:
                state.select_dataset(None)
            st.toast("Dataset deleted.", icon=":material/delete:")
            st.rerun()
    elif answer == "cancel":
        state.pending_delete_dataset = None
        st.rerun()
