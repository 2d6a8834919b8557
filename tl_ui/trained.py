"""Trained runs for the Results, Predict and Export pages: picking one, and cached Grad-CAM.

Cache keys hold the run folder and the best checkpoint's modification time, so a re-trained
run never shows stale pictures. Trained models are loaded by the engine
(``tl_core.evaluation.explain``) inside ``st.cache_data`` functions and only their *outputs*
(arrays, labels) are cached: a model a user trains is never kept in
``st.cache_resource`` (it would be shared by every session).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from tl_core.bounded import heavy_task
from tl_core.runs import Run, unique_labels

from .state import AppState

CAM_HELP = ("Grad-CAM colours the parts of the image that pushed the model towards its answer: red = "
            "strong, blue = little. Earlier stages show finer detail, the last stage the clearest objects. "
            "For a vision transformer (DINOv2, CLIP, SigLIP, ViT) it is Grad-CAM on the patch tokens of "
            "the last block, laid out on the patch grid: one coarse cell per patch (16 x 16 cells for "
            "224-px images and 14-px patches), not the attention maps.")


def has_model(run: Run) -> bool:
    return run.checkpoint_path("best").exists()


def checkpoint_stamp(run: Run) -> float:
    """Changes whenever the best checkpoint is rewritten (part of every cache key)."""
    path = run.checkpoint_path("best")
    return path.stat().st_mtime if path.exists() else 0.0


def dataset_root(run: Run) -> Path:
    """The folder the run's evaluation paths are relative to (where the trainer read the dataset)."""
    return run.dataset_dir() or Path(run.config.data.source)


def trained_runs(state: AppState) -> list[Run]:
    """Runs of this session with a saved model, newest first."""
    return [run for run in state.runs.list() if has_model(run)]


def pick_trained_run(state: AppState, key: str, label: str = "Trained run") -> Run | None:
    """A select box over the session's trained runs, on the current run when it has a model.
    Picking one makes it the current run (kept in the URL). None (with a hint) when none exists."""
    runs = trained_runs(state)
    if not runs:
        st.info("No trained model yet. Train one on the **Train** page; it appears here as soon as its "
                "first epoch is saved.", icon=":material/info:")
        st.page_link("pages/3_train.py", label="Go to Train", icon=":material/model_training:")
        return None
    by_id = {run.id: run for run in runs}
    ids = list(by_id)
    names = unique_labels(runs)

    def describe(run_id: str) -> str:
        s = by_id[run_id].summary()
        acc = f" · val acc {s['best_val_acc']:.0%}" if s.get("best_val_acc") is not None else ""
        return f"{names[run_id]} · {s['state']}{acc}"

    index = ids.index(state.run_id) if state.run_id in by_id else 0
    picked = st.selectbox(label, ids, index=index, format_func=describe, key=key)
    if picked != state.run_id:
        state.select_run(picked)
    return by_id[picked]


@st.cache_data(max_entries=32, show_spinner=False)
def stage_choices(run_dir: str, stamp: float) -> list[tuple[str, str]]:
    """(module name, label) of the stages Grad-CAM can explain, input to output; a transformer's
    label says that its map is patch tokens on a grid."""
    from tl_core.evaluation.explain import run_stages  # here: it imports torch

    return [(stage.name, stage.description) for stage in run_stages(Run(Path(run_dir)))]


CAM_CHUNK = 6  # images per Grad-CAM call: one model load serves them, the progress bar moves between


@st.cache_data(max_entries=256, show_spinner=False)
@heavy_task()  # under the cache: a cache miss only takes one of the server's bounded heavy-task slots
def gradcam_overlays(run_dir: str, stamp: float, images: tuple[str | bytes, ...], stage: str | None,
                     targets: tuple[int | None, ...]) -> list[tuple[np.ndarray, str] | str]:
    """Grad-CAM overlays of a few images (file paths or upload bytes), one model load for all: per
    image the RGB overlay and the label of the class it explains (``targets``: None = predicted),
    or, for an image that could not be explained, the reason as a string
    (``tl_core.evaluation.explain.explain_run_images``)."""
    from tl_core.evaluation.explain import explain_run_images  # here: it imports torch

    return explain_run_images(Run(Path(run_dir)), images, stage, targets)


def gradcam_many(run: Run, images: list[str | bytes], stage: str | None, targets: list[int | None],
                 bar=None) -> list[tuple[np.ndarray, str] | str]:
    """``gradcam_overlays`` in chunks, moving an ``st.progress`` bar between them."""
    out: list[tuple[np.ndarray, str] | str] = []
    for start in range(0, len(images), CAM_CHUNK):
        out += gradcam_overlays(str(run.dir), checkpoint_stamp(run), tuple(images[start:start + CAM_CHUNK]),
                                stage, tuple(targets[start:start + CAM_CHUNK]))
        if bar is not None:
            bar.progress(len(out) / len(images), text=f"Explained {len(out)} of {len(images)} images")
    return out


def gradcam_controls(run: Run, key: str, default_on: bool = False) -> str | None | bool:
    """A toggle and a stage picker. Returns False when Grad-CAM is off, else the stage's module
    name (None = the last stage)."""
    on = st.toggle("Show where the model looks (Grad-CAM)", value=default_on, key=f"{key}_on", help=CAM_HELP)
    if not on:
        return False
    with st.spinner("Finding the layers that can be explained…"):
        stages = stage_choices(str(run.dir), checkpoint_stamp(run))
    if not stages:
        st.caption("This network has no layer Grad-CAM can explain.")
        return False
    names = [name for name, _ in stages]
    labels = dict(stages)
    right = st.columns([1, 1])[0]
    return right.selectbox("Layer to explain", names, index=len(names) - 1, key=f"{key}_stage",
                           format_func=lambda n: labels[n],
                           help="Stages of the backbone, from the input (fine detail) to the output "
                                "(whole objects). The last one is the usual choice.")
