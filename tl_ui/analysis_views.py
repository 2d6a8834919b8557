"""Error analysis on the Results page: which images are confused (click a confusion-matrix cell),
the hardest images, per-class bars, calibration, a decision threshold for two classes, and a map
of the backbone's features before and after fine-tuning.

The numbers come from ``tl_core.evaluation.analysis``; this module only draws them. Heavy work (Grad-CAM,
features, t-SNE, thumbnails) runs behind a toggle or a button, is cached per run and checkpoint,
and takes one of the server's bounded heavy-task slots on a cache miss (``tl_ui.heavy``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from tl_core.bounded import heavy_task
from tl_core.evaluation import analysis
from tl_core.evaluation.metrics import EvalResult
from tl_core.markup import escape_markdown
from tl_core.runs import Run

from . import fix_views
from .charts import plot_label, plot_labels
from .feedback import user_errors
from .heavy import waiting_notice
from .trained import checkpoint_stamp, dataset_root, gradcam_controls, gradcam_many
from .widgets import thumbnails

GALLERY_MAX = 24  # thumbnails per gallery; Grad-CAM for each is a forward+backward pass
MAP_MAX = 600  # images on the embedding map (t-SNE on a CPU is slow past this)
MAP_PICTURES_MAX = 200  # pictures drawn on the map (each one travels to the browser inside the chart)
MAP_PICTURE_SIZE = 64
CORRECT_COLOURS = {"correct": "#2e7d32", "wrong": "#c62828"}


# ----------------------------------------------------------------------------- confusion cells
def confusion_click_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str],
                           selected: tuple[int, int] | None = None) -> go.Figure:
    """The confusion matrix as a heatmap with one invisible square marker per cell on top.

    Plotly heatmaps cannot be *selected* (only scatter points can), so the markers receive the
    click; their customdata is ``[true, pred]``. The selected cell gets an outline.
    """
    cm = np.asarray(matrix)
    n = len(classes)
    classes = [plot_label(c) for c in classes]  # cell_from_selection reads these back
    fig = go.Figure(go.Heatmap(z=cm, x=list(classes), y=list(classes), colorscale="Blues", text=cm,
                               texttemplate="%{text}", hoverinfo="skip", showscale=False))
    true_idx, pred_idx = np.divmod(np.arange(n * n), n)
    fig.add_scatter(
        x=[classes[p] for p in pred_idx], y=[classes[t] for t in true_idx], mode="markers",
        customdata=np.column_stack([true_idx, pred_idx, cm.ravel()]),
        # Transparent but present: plotly finds the hovered/clicked point from the data, not the pixels.
        marker={"symbol": "square", "size": max(18, min(90, 420 // max(n, 1))), "color": "rgba(0,0,0,0)",
                "line": {"width": 0}},
        selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}},
        hovertemplate="true <b>%{y}</b>, predicted <b>%{x}</b>: %{customdata[2]} images"
                      "<br>click to see them<extra></extra>",
        showlegend=False)
    if selected is not None:
        t, p = selected
        fig.add_shape(type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5,
                      line={"color": "#e65100", "width": 4})
    fig.update_xaxes(title="predicted class", side="bottom", type="category")
    fig.update_yaxes(title="true class", autorange="reversed", type="category")
    fig.update_layout(height=max(380, 70 * n + 160), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      clickmode="event+select", dragmode=False)
    return fig


def cell_from_selection(selection: Mapping[str, Any] | None, classes: Sequence[str]) -> tuple[int, int] | None:
    """(true, pred) of the clicked cell in a ``st.plotly_chart`` selection event, or None.

    Read from the point's axis labels (x: predicted, y: true); the marker's index into the
    row-major grid is the fallback.
    """
    points = ((selection or {}).get("selection") or {}).get("points") or []
    names = [plot_label(c) for c in classes]  # as confusion_click_figure wrote them
    for point in points:
        x, y = point.get("x"), point.get("y")
        if x in names and y in names:
            return names.index(y), names.index(x)
        index = point.get("point_index")
        if isinstance(index, int) and 0 <= index < len(names) ** 2:
            return divmod(index, len(names))
    return None


def default_cell(matrix: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The most frequent mistake, or the first class's correct cell when there is none."""
    cm = np.array(matrix)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    if off.max() > 0:
        t, p = np.unravel_index(int(off.argmax()), off.shape)
        return int(t), int(p)
    return 0, 0


def pick_cell(result: EvalResult, key: str) -> tuple[int, int]:
    """Draw the clickable matrix and a (true, predicted) pair of select boxes that follow a click
    (and work without one, from the keyboard). Returns the chosen cell."""
    classes = result.classes
    true_key, pred_key, seen_key = f"{key}_true", f"{key}_pred", f"{key}_seen_click"
    if true_key not in st.session_state:
        st.session_state[true_key], st.session_state[pred_key] = default_cell(result.confusion)
    current = (st.session_state[true_key], st.session_state[pred_key])
    event = st.plotly_chart(confusion_click_figure(result.confusion, classes, current), key=key,
                            on_select="rerun", selection_mode="points",
                            config={"displayModeBar": False})
    clicked = cell_from_selection(event, classes)
    if clicked is None:
        st.session_state[seen_key] = None  # so that clicking the same cell again counts
    elif clicked != st.session_state.get(seen_key):
        # A new click moves the boxes; afterwards the boxes may move on their own.
        st.session_state[seen_key] = clicked
        st.session_state[true_key], st.session_state[pred_key] = clicked
        st.rerun()  # redraw the outline on the clicked cell
    c1, c2 = st.columns(2)
    t = c1.selectbox("True class", range(len(classes)), key=true_key, format_func=classes.__getitem__)
    p = c2.selectbox("Predicted class", range(len(classes)), key=pred_key, format_func=classes.__getitem__)
    return int(t), int(p)


# ----------------------------------------------------------------------------- galleries
def caption_of(row: Any) -> str:
    mark = "✓" if row.true == row.pred else "✗"
    return f"{mark} {Path(row.path).name}: true {row.true_label}, predicted {row.pred_label} ({row.confidence:.0%})"


def gallery(rows: pd.DataFrame, run: Run, cam_stage: str | None | bool, key: str,
            limit: int = GALLERY_MAX, fixable: bool = False) -> None:
    """Thumbnails (or Grad-CAM overlays) with true label, predicted label and confidence; with
    ``fixable``, a picker under them to move one to another class or remove it (``fix_views``)."""
    if rows.empty:
        st.caption("No images here.")
        return
    root = dataset_root(run)
    shown = rows.head(limit)
    paths = [root / p for p in shown["path"]]
    present = [i for i, path in enumerate(paths) if path.exists()]
    cams: dict[int, Any] = {}
    if cam_stage is not False and present:
        bar = st.progress(0.0, text="Explaining the images…")
        with user_errors("Grad-CAM failed"), waiting_notice():
            explained = gradcam_many(run, [str(paths[i]) for i in present], cam_stage,
                                     [int(shown["pred"].iloc[i]) for i in present], bar)
            cams = {i: e[0] for i, e in zip(present, explained, strict=True) if not isinstance(e, str)}
        bar.empty()
    pictures, captions, pictured, missing = [], [], [], 0
    thumbs = thumbnails([path for i, path in enumerate(paths) if i not in cams])
    thumb_of = dict(zip([i for i in range(len(paths)) if i not in cams], thumbs, strict=True))
    for i, row in enumerate(shown.itertuples()):
        picture = cams.get(i)
        if picture is None:
            picture = thumb_of[i]
        if picture is None:
            missing += 1
            continue
        pictures.append(picture)
        captions.append(escape_markdown(caption_of(row)))  # image captions are Markdown
        pictured.append((row.path, caption_of(row)))
    if pictures:
        st.image(pictures, caption=captions, width=170)
    if pictured and fixable:
        fix_views.fix_picker(root, dict(pictured), key=f"{key}_fix")
    if len(rows) > limit:
        st.caption(f"Showing {limit} of {len(rows)} images (the most confident first).")
    if missing:
        st.warning(f"{missing} image(s) are no longer on disk (the dataset was moved or deleted).",
                   icon=":material/warning:")


# ----------------------------------------------------------------------------- charts
def per_class_figure(frame: pd.DataFrame) -> go.Figure:
    long = plot_labels(frame, "class").melt(id_vars=["class", "support"], value_vars=["precision", "recall", "f1"],
                      var_name="metric", value_name="value")
    long["metric"] = long["metric"].map({"precision": "precision", "recall": "recall", "f1": "F1"})
    fig = px.bar(long, x="class", y="value", color="metric", barmode="group", hover_data=["support"],
                 color_discrete_sequence=["#1565c0", "#e65100", "#2e7d32"])
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", title=None)
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "y": 1.1, "title": None})
    return fig


def reliability_figure(rel: analysis.Reliability) -> go.Figure:
    bins = rel.bins.copy()
    bins["centre"] = (bins["lower"] + bins["upper"]) / 2
    filled = bins[bins["count"] > 0]
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                    line={"dash": "dash", "color": "#9e9e9e"})
    fig.add_bar(x=filled["centre"], y=filled["accuracy"], width=(filled["upper"] - filled["lower"]) * 0.9,
                name="accuracy in this bin", marker_color="#1565c0", customdata=filled[["count", "confidence"]],
                hovertemplate="confidence %{customdata[1]:.0%}: %{y:.0%} right (%{customdata[0]} images)"
                              "<extra></extra>")
    fig.add_scatter(x=filled["confidence"], y=filled["confidence"], mode="markers", name="mean confidence",
                    marker={"color": "#e65100", "size": 8})
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title="how sure the model was (confidence)")
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", title="how often it was right")
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def threshold_figure(tc: analysis.ThresholdConfusion, negative: str, positive: str) -> go.Figure:
    names = [plot_label(negative), plot_label(positive)]
    fig = px.imshow(tc.matrix, x=names, y=names, text_auto=True, color_continuous_scale="Blues",
                    labels={"x": "predicted", "y": "true", "color": "images"}, aspect="auto")
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10}, coloraxis_showscale=False)
    return fig


def embedding_figure(frame: pd.DataFrame, colour: str, title: str) -> go.Figure:
    colours = CORRECT_COLOURS if colour == "outcome" else None
    frame = plot_labels(frame, *(c for c in ("name", "true", "predicted") if c in frame))
    # An explicit qualitative palette: the theme's default shades of one blue hide the classes.
    fig = px.scatter(frame, x="x", y="y", color=colour, color_discrete_map=colours, title=title,
                     color_discrete_sequence=px.colors.qualitative.D3,
                     hover_name="name", hover_data={"x": False, "y": False, "true": True, "predicted": True,
                                                    "confidence": ":.0%"})
    fig.update_traces(marker={"size": 8, "opacity": 0.8})
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.05, "title": None})
    return fig


def add_thumbnails(fig: go.Figure, xy: np.ndarray, pictures: Mapping[int, bytes | None],
                   share: float = 0.07) -> go.Figure:
    """Draw images (small JPEG bytes, by row of ``xy``) on the map under their dots, each
    ``share`` of the map's span.

    Plotly's hover label cannot hold a picture, so the pictures go on the map itself: the classic
    "image t-SNE" view, where one sees at a glance which images the network puts together. The
    dots stay on top (with a white rim) so the colours still tell the classes; the axes, from all
    the dots, grow by half a picture so the pictures at the edges are whole.
    """
    if len(xy) == 0:
        return fig
    span_x = float(np.ptp(xy[:, 0])) or 1.0
    span_y = float(np.ptp(xy[:, 1])) or 1.0
    size_x, size_y = span_x * share, span_y * share * 2  # the map is about twice as wide as high
    for row, picture in pictures.items():
        if picture is None:
            continue
        x, y = xy[row]
        fig.add_layout_image(source="data:image/jpeg;base64," + base64.b64encode(picture).decode("ascii"),
                             x=float(x), y=float(y), xref="x", yref="y", xanchor="center", yanchor="middle",
                             sizex=size_x, sizey=size_y, sizing="contain", layer="below")
    fig.update_traces(marker={"line": {"color": "white", "width": 1.5}})
    fig.update_xaxes(range=[xy[:, 0].min() - size_x, xy[:, 0].max() + size_x])
    fig.update_yaxes(range=[xy[:, 1].min() - size_y, xy[:, 1].max() + size_y])
    return fig


def pictured_rows(labels: Sequence[Any], limit: int, seed: int = 0) -> list[int]:
    """Up to ``limit`` rows to draw pictures for, shared fairly among the classes (round robin over
    each class's rows in a seeded random order), so that every class shows on the map."""
    rng = np.random.default_rng(seed)
    by_class: dict[Any, list[int]] = {}
    for row, label in enumerate(labels):
        by_class.setdefault(label, []).append(row)
    queues = [list(rng.permutation(rows)) for _, rows in sorted(by_class.items(), key=lambda kv: str(kv[0]))]
    chosen: list[int] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(int(queue.pop()))
    return sorted(chosen)


# ----------------------------------------------------------------------------- embeddings
@st.cache_data(max_entries=16, show_spinner=False)
@heavy_task()  # under the cache: a cache miss only takes one of the server's bounded heavy-task slots
def body_features(run_dir: str, stamp: float, which: str, root: str, paths: tuple[str, ...]) -> np.ndarray:
    """Backbone features [N, D] of the images: ``which`` = "after" (the run's body) or "before"
    (the same backbone with its pretrained weights); ``analysis.backbone_features``."""
    return analysis.backbone_features(Run(Path(run_dir)), which, root, paths)


@st.cache_data(max_entries=16, show_spinner=False)
@heavy_task()
def map_coords(features: np.ndarray, method: str) -> np.ndarray:
    return analysis.embedding_map(features, method)


def body_was_frozen(run: Run) -> bool:
    return analysis.body_was_frozen(run)


def embedding_section(run: Run, frame: pd.DataFrame, key: str) -> None:
    st.markdown("Each dot is one image, placed by the features the backbone computes for it: images the "
                "network finds similar land close together. Fine-tuning should pull each class into its "
                "own cluster.")
    c1, c2, c3 = st.columns([1, 1, 1])
    method = c1.radio("Map", ["pca", "tsne"], horizontal=True, key=f"{key}_method",
                      format_func={"pca": "PCA (instant)", "tsne": "t-SNE (slower, clearer clusters)"}.get)
    colour = c2.radio("Colour by", ["true", "outcome"], horizontal=True, key=f"{key}_colour",
                      format_func={"true": "class", "outcome": "right / wrong"}.get)
    show_pictures = c2.toggle("Show the images on the map", key=f"{key}_pictures",
                              help=f"Draws each image (up to {MAP_PICTURES_MAX}) at its dot, to see at a glance "
                                   "what the network puts together.")
    requested = f"{key}_requested"
    if c3.button("Compute the map", icon=":material/scatter_plot:", key=f"{key}_go"):
        st.session_state[requested] = run.id
    if st.session_state.get(requested) != run.id:
        st.caption("Computing features runs the network over every image here: a few seconds to a minute.")
        return
    shown = frame.head(MAP_MAX)
    if len(frame) > MAP_MAX:
        st.caption(f"Using the first {MAP_MAX} of {len(frame)} images.")
    paths = tuple(shown["path"])
    root = str(dataset_root(run))
    stamp = checkpoint_stamp(run)
    frozen = body_was_frozen(run)
    labels = shown.assign(name=shown["path"].map(lambda p: Path(p).name), true=shown["true_label"],
                          predicted=shown["pred_label"],
                          outcome=np.where(shown["true"] == shown["pred"], "correct", "wrong"))
    with user_errors("Could not compute the map"):
        steps = ["after"] if frozen else ["before", "after"]
        bar = st.progress(0.0, text="Running the backbone over the images…")
        coords = {}
        for i, which in enumerate(steps):
            with waiting_notice():
                feats = body_features(str(run.dir), stamp, which, root, paths)
            bar.progress((i + 0.5) / len(steps), text=f"Placing the images ({method.upper()})…")
            with waiting_notice():
                coords[which] = map_coords(feats, method)
            bar.progress((i + 1) / len(steps))
        bar.empty()
        if frozen:
            st.info("The backbone was frozen during this run (feature extractor), so its features are the "
                    "pretrained ones, before and after: only the head learned. One map shows both.",
                    icon=":material/ac_unit:")
            maps = [(st.container(), "after", "Backbone features (pretrained = fine-tuned)")]
        else:
            left, right = st.columns(2)
            maps = [(left, "before", "Before: pretrained backbone"), (right, "after", "After: fine-tuned backbone")]
        rows = pictured_rows(list(shown["true"]), MAP_PICTURES_MAX) if show_pictures else []
        pictures = dict(zip(rows, thumbnails([Path(root) / paths[row] for row in rows], MAP_PICTURE_SIZE),
                            strict=True))
        picked: list[int] = []
        for col, which, title in maps:
            placed = labels.assign(x=coords[which][:, 0], y=coords[which][:, 1])
            fig = embedding_figure(placed, colour, title)
            if pictures:
                add_thumbnails(fig, coords[which], pictures)
            with col:
                event = st.plotly_chart(fig, key=f"{key}_map_{which}",
                                        on_select="rerun", selection_mode=("points", "box", "lasso"))
            picked += rows_of_selection(event, placed)
        if show_pictures and len(paths) > MAP_PICTURES_MAX:
            st.caption(f"Pictures drawn for {MAP_PICTURES_MAX} of the {len(paths)} dots, shared among the classes.")
        st.caption("Hover a dot to see the image's name, class and prediction, or switch on *Show the images "
                   "on the map*; click a dot, or draw a box or lasso around a group (tools at the chart's "
                   "top right), to see those images here.")
        if picked:
            chosen = shown.iloc[sorted(set(picked))]
            st.markdown(f"**{len(chosen)} image(s) picked on the map**")
            gallery(chosen, run, False, key=f"{key}_picked")


def rows_of_selection(event: Mapping[str, Any] | None, placed: pd.DataFrame) -> list[int]:
    """Row positions in ``placed`` (columns x, y) of the points selected on its scatter plot.

    Matched by position (nearest dot): with one trace per colour, plotly's point indices are per
    trace and would need the trace order to be decoded.
    """
    points = ((event or {}).get("selection") or {}).get("points") or []
    if not points or placed.empty:
        return []
    xy = placed[["x", "y"]].to_numpy(dtype=np.float64)
    out = []
    for point in points:
        if point.get("x") is None or point.get("y") is None:
            continue
        distance = np.hypot(xy[:, 0] - float(point["x"]), xy[:, 1] - float(point["y"]))
        out.append(int(distance.argmin()))
    return out


# ----------------------------------------------------------------------------- the section
def render(run: Run, result: EvalResult, split: str, key: str | None = None) -> None:
    """The error-analysis section for one evaluation (``split``: its name for the user). Widget keys
    include the run id, so another run (other classes) starts from fresh choices."""
    key = key or f"ea_{run.id}"
    if not result.predictions:
        st.caption("This evaluation has no per-image predictions; train the run again to analyse errors.")
        return
    frame = analysis.predictions_frame(result.predictions)
    classes = result.classes
    st.subheader("Error analysis")
    st.markdown(f"Which {split} images does the model get wrong, and why? Click a cell of the matrix to "
                "see exactly those images; switch on Grad-CAM to see where the network looked.")
    cam = gradcam_controls(run, key=f"{key}_cam")
    tabs = ["Confusions", "Hardest images", "Per class", "Calibration"]
    if len(classes) == 2:
        tabs.append("Threshold")
    tabs.append("Feature map")
    panes = dict(zip(tabs, st.tabs(tabs), strict=True))

    with panes["Confusions"]:
        left, right = st.columns([1, 1])
        with left:
            t, p = pick_cell(result, key=f"{key}_cm")
        with right:
            rows = analysis.cell_images(frame, t, p)
            verdict = "correct" if t == p else "mistaken"
            st.markdown(f"**{len(rows)} image(s)**, {verdict}: true class → predicted class")
            st.text(f"{classes[t]} → {classes[p]}")  # class names: text, never Markdown
            gallery(rows, run, cam, key=f"{key}_cell", fixable=True)

    with panes["Hardest images"]:
        st.markdown("The images with the highest loss: confidently wrong, or right by a hair. They are often "
                    "mislabelled, unusual, or show two classes at once; worth checking by eye.")
        gallery(analysis.top_losses(frame, k=12), run, cam, key=f"{key}_losses", fixable=True)

    with panes["Per class"]:
        metrics = analysis.per_class_metrics(frame["true"], frame["pred"], classes)
        st.plotly_chart(per_class_figure(metrics), key=f"{key}_per_class")
        weakest = metrics.sort_values("f1").iloc[0]
        st.text(f"Weakest class: {weakest['class']} (F1 {weakest['f1']:.2f}, {weakest['support']} images)")
        st.caption("Precision: of the images called this class, the share that were. Recall: of this class's "
                   "images, the share found.")

    with panes["Calibration"]:
        rel = analysis.reliability(np.stack(frame["probs"].to_numpy()), frame["true"].to_numpy())
        c1, c2 = st.columns([3, 1])
        c1.plotly_chart(reliability_figure(rel), key=f"{key}_reliability")
        c2.metric("Calibration error (ECE)", f"{rel.ece:.3f}",
                  help="Average gap between how sure the model is and how often it is right; 0 is perfect.")
        c2.markdown("When the model says *90 % sure*, is it right 9 times out of 10? Bars below the "
                    "dashed line mean over-confidence. An ECE under 0.05 is good; with few images the "
                    "bars are noisy.")

    if "Threshold" in panes:
        with panes["Threshold"]:
            threshold_section(frame, classes, key=f"{key}_thr")

    with panes["Feature map"]:
        embedding_section(run, frame, key=f"{key}_emb")


def threshold_section(frame: pd.DataFrame, classes: Sequence[str], key: str) -> None:
    st.markdown("With two classes the model calls an image *positive* when that class's probability passes "
                "a threshold (0.5 by default). Lower it to miss fewer positives (higher recall) at the cost "
                "of more false alarms (lower precision), e.g. when a missed case is costly.")
    c1, c2 = st.columns([1, 2])
    positive = c1.selectbox("Positive class", [1, 0], key=f"{key}_pos", format_func=lambda i: classes[i])
    threshold = c2.slider("Threshold", 0.0, 1.0, 0.5, 0.01, key=f"{key}_value",
                          help=f"Call an image '{escape_markdown(classes[positive])}' when its probability is at least this.")
    probs = np.stack(frame["probs"].to_numpy())[:, positive]
    labels = (frame["true"].to_numpy() == positive).astype(int)
    tc = analysis.threshold_confusion(probs, labels, threshold)
    left, right = st.columns([2, 1])
    left.plotly_chart(threshold_figure(tc, classes[1 - positive], classes[positive]), key=f"{key}_matrix")
    right.metric("Precision", f"{tc.precision:.0%}")
    right.metric("Recall", f"{tc.recall:.0%}")
    right.metric("F1", f"{tc.f1:.2f}")
    right.metric("Accuracy", f"{tc.accuracy:.0%}")
