"""The Predict page's pieces: uploads (photos, a folder, a zip) to checked images, cached
predictions, and the per-image view (photo, Grad-CAM, top-k bars).

Uploaded files are checked by the engine with the same rules as dataset imports
(``tl_core.data.check_images``: the image guard before any pixel is decoded, then a decode), under
the server's upload limits, so a decompression bomb, a corrupt file or a non-image gets a reason
and the other files are still classified. Predictions and Grad-CAM run in the server's bounded
heavy-task slots (``tl_ui.heavy``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tl_core.bounded import heavy_task
from tl_core.data import Limits, check_images
from tl_core.data.safety import file_too_big, upload_limits
from tl_core.limits import check_upload_size
from tl_core.markup import escape_markdown
from tl_core.runs import Run
from tl_core.settings import load_settings

from .charts import plot_label
from .heavy import waiting_notice
from .trained import checkpoint_stamp, gradcam_many
from .widgets import picture_of

CHUNK = 32  # images per prediction call (one progress step)


def unsure_below(num_classes: int) -> float:
    """Top probability under which the page says the model is unsure: 1.5x chance, at least 50 %
    (75 % with two classes, where 58 % is close to a coin toss)."""
    return min(0.9, max(0.5, 1.5 / max(num_classes, 1)))


@dataclass(frozen=True)
class Incoming:
    name: str  # file name as uploaded (a path inside a zip or folder)
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: str  # written for the user


def collect_images(files: Sequence, limits: Limits | None = None) -> tuple[list[Incoming], list[Rejected]]:
    """Uploaded files (Streamlit ``UploadedFile`` or anything with ``.name`` and ``.getvalue()``),
    zips unpacked in memory, to readable images and rejected files with the reason
    (``tl_core.data.check_images``: the checks and wording of a dataset import). The server's
    ``max_upload_images`` and ``max_upload_mb`` apply: too many files raise ``LimitReached``, a file
    too big is rejected unread."""
    settings = load_settings()
    check_upload_size(sum(getattr(f, "size", 0) or 0 for f in files), len(files), settings)
    limits = upload_limits(settings, limits)
    readable, too_big = [], []
    for file in files:
        size = getattr(file, "size", None)  # Streamlit's UploadedFile knows it without a copy
        if size is not None and size > limits.max_file_bytes:
            too_big.append(Rejected(file.name, str(file_too_big(limits))))
        else:
            readable.append(file)
    good, bad = check_images(((file.name, file.getvalue()) for file in readable), limits)
    return [Incoming(g.name, g.data) for g in good], too_big + [Rejected(b.path, b.reason) for b in bad]


@st.cache_data(max_entries=256, show_spinner=False)
def _predict_chunk(run_dir: str, stamp: float, digests: tuple[str, ...], _datas: tuple[bytes, ...],
                   top_k: int) -> list[list[tuple[str, float]]]:
    """Top-k of one chunk; the cache key is the images' digests (hashing them once is ours)."""
    from pathlib import Path

    from tl_core.evaluation.metrics import predict

    with heavy_task():
        return predict(Run(Path(run_dir)), list(_datas), top_k=top_k)


def predict_all(run: Run, images: Sequence[Incoming], top_k: int,
                progress: Callable[[int, int], None] | None = None) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per image, in chunks (cached per run checkpoint; each chunk not
    in the cache takes one of the server's heavy-task slots)."""
    out: list[list[tuple[str, float]]] = []
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK]
        with waiting_notice():
            out += _predict_chunk(str(run.dir), checkpoint_stamp(run), tuple(i.digest for i in chunk),
                                  tuple(i.data for i in chunk), top_k)
        if progress:
            progress(min(start + CHUNK, len(images)), len(images))
    return out


def results_table(images: Sequence[Incoming], predictions: Sequence[Sequence[tuple[str, float]]]) -> pd.DataFrame:
    """One row per image: file, predicted label, confidence, and the runners-up."""
    rows = []
    for image, top in zip(images, predictions, strict=True):
        row = {"file": image.name, "prediction": top[0][0], "confidence": round(top[0][1], 4)}
        for rank, (label, prob) in enumerate(top[1:], start=2):
            row[f"choice {rank}"] = label
            row[f"probability {rank}"] = round(prob, 4)
        rows.append(row)
    return pd.DataFrame(rows)


def topk_figure(top: Sequence[tuple[str, float]]) -> go.Figure:
    labels = [plot_label(label) for label, _ in top][::-1]  # the best at the top
    probs = [prob for _, prob in top][::-1]
    colours = ["#9e9e9e"] * (len(top) - 1) + ["#1565c0"]
    fig = go.Figure(go.Bar(x=probs, y=labels, orientation="h", marker_color=colours,
                           text=[f"{p:.0%}" for p in probs], textposition="auto",
                           hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title="probability")
    fig.update_layout(height=max(160, 45 * len(top) + 70), margin={"l": 10, "r": 40, "t": 10, "b": 10})
    return fig


def rejected_message(rejected: Sequence[Rejected]) -> None:
    """One error box listing every file that could not be used, and what to do. File names are the
    user's: shown as text, never through Markdown."""
    if not rejected:
        return
    lines = [f"{r.name}: {r.reason}" for r in rejected[:20]]
    if len(rejected) > 20:
        lines.append(f"… and {len(rejected) - 20} more")
    st.error(f"**{len(rejected)} file(s) could not be used** (the others were classified). Use JPEG, PNG, "
             "BMP, GIF, TIFF or WebP pictures; re-export or re-download damaged files, and shrink very "
             "large ones.", icon=":material/broken_image:")
    st.text("\n".join(lines))


def explain_uploads(run: Run, images: Sequence[Incoming], cam_stage: str | None | bool) -> list:
    """Grad-CAM for each image (one model load per few images, with a progress bar), or Nones when
    Grad-CAM is off."""
    if cam_stage is False or not images:
        return [None] * len(images)
    bar = st.progress(0.0, text="Explaining…")
    try:
        with waiting_notice():  # each Grad-CAM chunk not in the cache takes a heavy-task slot
            return gradcam_many(run, [i.data for i in images], cam_stage, [None] * len(images), bar)
    finally:
        bar.empty()


def show_prediction(run: Run, image: Incoming, top: Sequence[tuple[str, float]],
                    explained: tuple | str | None, key: str) -> None:
    """Photo, Grad-CAM overlay (``explain_uploads``' entry; None when off) and the top-k bars of one image."""
    label, prob = top[0]
    st.text(f"{image.name} → {label} ({prob:.0%})")  # a file and a class name: text, never Markdown
    left, middle, right = st.columns([1, 1, 2])
    picture = picture_of(image.data)  # a small copy: the browser never gets, nor the server decodes, the original
    if picture is None:
        left.caption("This image cannot be shown.")
    else:
        left.image(picture, caption="your image", width="stretch")
    if isinstance(explained, str):
        middle.caption(explained)
    elif explained is not None:
        middle.image(explained[0], caption=f"where it looked for '{escape_markdown(explained[1])}'", width="stretch")
    right.plotly_chart(topk_figure(top), key=f"{key}_topk", config={"displayModeBar": False})
    if prob < unsure_below(len(run.classes)):
        st.caption(f":material/help: The model is unsure ({prob:.0%}). It only knows the classes "
                   f"{escape_markdown(', '.join(run.classes))}: a picture of something else still gets one of them.")
