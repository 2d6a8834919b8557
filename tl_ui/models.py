"""Cached, read-only views of the backbone registry for the Model page, and adding weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from tl_core.bounded import heavy_task
from tl_core.config import ZERO_SHOT_HEAD, FreezePlan, HeadConfig
from tl_core.errors import TLError, WeightsRejected
from tl_core.model import loading, preprocess
from tl_core.model.freeze import GroupInfo, freeze_report
from tl_core.model.registry import get_backbone, list_backbones
from tl_core.model.spec import BackboneSpec
from tl_core.model.speeds import read_speeds
from tl_core.model.timm_source import DYNAMIC_PREFIX
from tl_core.model.weights import import_weights, import_weights_folder, weights_status
from tl_core.model.zero_shot import similar_classes
from tl_core.workspace import default_home

from .render_cache import dataset_key, shared_figure

# The three kinds of backbone, by how they were pre-trained: what the Model page's table calls them.
KIND_SUPERVISED = "supervised"  # on ImageNet's labels
KIND_SELF_SUPERVISED = "self-supervised"  # no labels, no text
KIND_IMAGE_TEXT = "image-text"  # photos and captions: classifies from words


def backbone_kind(spec: BackboneSpec) -> str:
    """How ``spec`` was pre-trained, read from what its published accuracy measures: a zero-shot
    number is an image-text model's, a linear-probe number a self-supervised one's ("" for a timm
    name typed in, whose pre-training the registry does not know)."""
    if spec.zero_shot:
        return KIND_IMAGE_TEXT
    if spec.accuracy == "linear probe":
        return KIND_SELF_SUPERVISED
    return KIND_SUPERVISED if spec.top1 > 0 else ""


def accuracy_text(spec: BackboneSpec) -> str:
    """The published accuracy with what it measures and, beyond torchvision's own, where it is
    published: "ImageNet top-1 76.1%", "ImageNet linear probe 81.1% (Oquab et al. 2023, DINOv2)"."""
    if spec.top1 <= 0:
        return f"not listed here ({spec.accuracy_source})" if spec.accuracy_source else "not listed here"
    if spec.source == "torchvision" or not spec.accuracy_source:
        return spec.accuracy_label
    return f"{spec.accuracy_label} ({spec.accuracy_source})"


def on_disk_mb(path) -> float | None:
    """The size of a weights file in MiB, or None when it is gone."""
    try:
        return path.stat().st_size / 1024**2
    except OSError:  # removed since it was found
        return None


@st.cache_data(ttl=60, show_spinner=False)
def backbone_table() -> pd.DataFrame:
    """One row per registered backbone: its kind, library, published accuracy, size, speed, and
    whether its weights are here (the size of the file) or where to get them. The weights columns
    are re-checked every minute, and at once after an import."""
    specs = list_backbones()
    fastest = min((s.gflops for s in specs if s.gflops > 0), default=1.0)
    measured = read_speeds(default_home())  # bench/backbones.py --save, on this machine
    rows = []
    for s in specs:
        status = weights_status(s.name)
        speed = measured.get(s.name)
        rows.append({
            "name": s.name, "kind": backbone_kind(s), "library": s.source, "accuracy": accuracy_text(s),
            "params (M)": s.num_params / 1e6,
            "relative speed": fastest / s.gflops if s.gflops > 0 else None,
            "images/s here": speed.images_per_s if speed else None,
            "peak memory (MB)": speed.peak_memory_mb if speed else None,
            "weights here": status.available,
            "on disk (MB)": on_disk_mb(status.path) if status.available and status.path else None,
            "get them": ("" if status.available else
                         "downloaded on first use" if status.source == "download" else s.weights_url),
            "description": s.description})
    return pd.DataFrame(rows)


def speeds_note() -> str:
    """Where the speed columns come from: this machine's measurements (which machine, when), or
    the published multiply-adds alone and how to measure. No user text in it (Markdown)."""
    measured = read_speeds(default_home())
    if not measured:
        return ("Speed: multiply-adds per image, relative to the lightest backbone listed. To measure images/s "
                "on this machine, run `python bench/backbones.py --save` once (a teacher, before the class).")
    latest = max(measured.values(), key=lambda s: s.measured)
    return (f"Images/s and peak memory: frozen-feature extraction measured on this machine ({latest.machine}, "
            f"{latest.measured}) by `bench/backbones.py`; Speed: multiply-adds per image, relative to the "
            "lightest backbone listed.")


def backbone_names(current: str) -> list[str]:
    """The picker's options: every registered backbone, and ``current`` when it is a timm name
    chosen earlier that this server process has not resolved yet (after a restart). ``ConfigError``
    when it no longer resolves."""
    names = [spec.name for spec in list_backbones()]
    if current not in names and current.startswith(DYNAMIC_PREFIX):
        names.append(get_backbone(current).name)
    return names


@dataclass(frozen=True)
class TimmCheck:
    """The outcome of checking a timm name an expert typed, for the page to show once."""
    ok: bool
    headline: str  # no user text in it: shown through st.success / st.error (Markdown)
    detail: str  # the registry's message (it holds the typed name): shown with st.text


def check_timm_name(state, widget_key: str, picker_key: str) -> None:
    """Button callback: the timm name typed in ``widget_key`` is checked (``get_backbone("timm/" +
    name)``: timm knows it, and it builds on the meta device); when it builds it becomes the chosen
    backbone (the picker ``picker_key`` shows it). The outcome is kept in ``state`` for the page."""
    typed = str(st.session_state.get(widget_key) or "").strip()
    if typed.startswith(DYNAMIC_PREFIX):
        typed = typed[len(DYNAMIC_PREFIX):]
    if not typed:
        state.timm_check = TimmCheck(False, "Type a timm model name first, e.g. convnext_tiny.in12k_ft_in1k.", "")
        return
    try:
        spec = get_backbone(DYNAMIC_PREFIX + typed)
    except TLError as exc:
        state.timm_check = TimmCheck(False, "Not added: it is not a timm model that builds here.", str(exc))
        return
    backbone_table.clear()  # the new entry is listed now, not in a minute
    st.session_state[picker_key] = spec.name
    state.edit_draft(model={"backbone": spec.name})
    state.timm_check = TimmCheck(
        True, "It builds, and it is now the chosen backbone.",
        f"{spec.name}: {spec.num_params / 1e6:.1f} M parameters, {spec.feature_dim} features, "
        f"{spec.preprocess.crop_size} px input ({spec.source_name}).")


@st.cache_resource(max_entries=8, show_spinner="Reading the network's layers…")
def skeleton_model(backbone: str, head: HeadConfig, num_classes: int):
    """An untrained model, only to count parameters per group (``loading.skeleton_model``, on the
    meta device), kept once per server for each shape. Read-only: never trained."""
    return loading.skeleton_model(backbone, num_classes, head)


def backbones_with_weights() -> list[str]:
    """Backbones whose pretrained weights are here, mobilenet_v2 (bundled) first."""
    table = backbone_table()
    names = list(table.loc[table["weights here"], "name"])
    return sorted(names, key=lambda name: name != "mobilenet_v2")


@dataclass(frozen=True)
class ImportOutcome:
    ok: bool
    headline: str  # no user text in it: shown through st.success / st.error (Markdown)
    detail: str  # may hold the uploaded file's name: shown with st.text
    lines: tuple[str, ...] = ()  # a folder's import: one line per file (names in it: st.text)


def import_uploaded_weights(state, upload) -> None:
    """Button callback: check and save an uploaded ``.pth`` or ``.safetensors`` file (streamed from the upload to a temp file
    beside its destination), refresh the weights column, keep the outcome in ``state`` for the page."""
    if upload is None:
        outcome = ImportOutcome(False, "Choose a weights file (.pth or .safetensors) first.", "")
    else:
        try:
            path = import_weights(upload, upload.name)
            backbone_table.clear()  # the "weights here" column changes now, not in a minute
            outcome = ImportOutcome(True, "Weights added: all four checks passed.", f"Saved as {path}")
        except WeightsRejected as exc:
            outcome = ImportOutcome(False, f"Weights not added: the **{exc.check}** check failed.", str(exc))
        except TLError as exc:
            outcome = ImportOutcome(False, "Weights not added.", str(exc))
    state.weights_import_outcome = outcome


def import_folder_weights(state, folder: str) -> None:
    """Check and add every weights file (``.pth``, ``.safetensors``) of a folder on this server, as an
    upload is; keep one line
    per file in ``state`` for the page."""
    if not folder.strip():
        state.weights_import_outcome = ImportOutcome(False, "Type the folder's path on this server first.", "")
        return
    try:
        results = import_weights_folder(folder.strip())
    except TLError as exc:
        state.weights_import_outcome = ImportOutcome(False, "No weights added.", str(exc))
        return
    counts = {kind: sum(r.outcome == kind for r in results) for kind in ("added", "refused", "skipped")}
    if counts["added"]:
        backbone_table.clear()  # the "weights here" column changes now, not in a minute
    offered = counts["added"] + counts["refused"]
    headline = (f"{counts['added']} of {offered} weights files added, {counts['refused']} refused"
                + (f"; {counts['skipped']} other files skipped." if counts["skipped"] else ".")
                if results else "The folder holds no files.")
    lines = tuple(f"added: {r.file}" if r.outcome == "added" else
                  f"refused ({r.check} check failed): {r.message}" if r.check else f"{r.outcome}: {r.message}"
                  for r in results)
    state.weights_import_outcome = ImportOutcome(counts["added"] > 0 and not counts["refused"], headline, "",
                                                 lines)


def group_report(backbone: str, head: HeadConfig, num_classes: int, plan: FreezePlan,
                 epoch: int = 1) -> list[GroupInfo]:
    # the zero-shot head's words change no shape: one skeleton for all of them
    return freeze_report(skeleton_model(backbone, dataclasses.replace(head, class_words=()), num_classes),
                         plan, epoch)


def similar_class_texts(backbone: str, head: HeadConfig, classes: list[str], *, pretrained: bool,
                        weights_dir: str | None) -> list[tuple[str, str, float]]:
    """``tl_core.model.zero_shot.similar_classes``: the pairs of classes whose texts the model can
    barely tell apart. It loads the image-text model and embeds every prompt, so it is cached per
    words and runs in one of the server's heavy-task slots (wrap the call in ``waiting_notice``)."""
    return _similar_class_texts(backbone, tuple(classes), head.class_words, pretrained, weights_dir)


@st.cache_data(max_entries=64, show_spinner=False)
def _similar_class_texts(backbone: str, classes: tuple[str, ...], words: tuple[tuple[str, str], ...],
                         pretrained: bool, weights_dir: str | None) -> list[tuple[str, str, float]]:
    with heavy_task():
        return similar_classes(backbone, HeadConfig(kind=ZERO_SHOT_HEAD, class_words=words), classes,
                               pretrained=pretrained, weights_dir=weights_dir)


def freeze_diagram(frame: pd.DataFrame) -> go.Figure:
    """The layer groups as bars (``group``, ``parameters``, ``state``, ``lr`` columns), frozen or
    trainable; built once per server for each plan (``render_cache``)."""
    def build() -> go.Figure:
        fig = px.bar(frame, x="group", y="parameters", color="state", text="lr", log_y=True,
                     color_discrete_map={"trainable": "#2e7d32", "frozen": "#90a4ae"},
                     category_orders={"group": list(frame["group"])},
                     labels={"parameters": "parameters (log scale)"})
        return fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10})

    return shared_figure(("freeze_diagram", tuple(frame.itertuples(index=False, name=None))), build)


def augment_preview(dataset_dir: str, preset: str, backbone: str, images: int = 4,
                    views: int = 4, seed: int = 0, width: int = 110) -> list[bytes]:
    """``views`` augmented versions of the first image of ``images`` classes, as JPEGs ``width``
    pixels wide, ready for ``st.image(..., width=width)`` (row-major: one row per image). The same
    decoding and augmentation as training (``tl_core.model.preprocess.augment_preview``). Cached by
    the dataset's content (``render_cache.dataset_key``): every student's copy of the same sample
    shares one preview in the server."""
    from tl_core.data import Dataset

    ds = Dataset.load(dataset_dir)
    return _augment_preview(dataset_key(ds), preset, backbone, images, views, seed, width, ds)


@st.cache_data(max_entries=16, show_spinner=False)
def _augment_preview(content: str, preset: str, backbone: str, images: int, views: int, seed: int, width: int,
                     _ds) -> list[bytes]:
    return preprocess.augment_preview(_ds, preset, backbone, images=images, views=views, seed=seed, width=width)
