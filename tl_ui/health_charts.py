"""The Data page's health-report charts, made once per server for what they show.

A class of 30 each making the same sample would otherwise build the same three Plotly Express
figures 30 times (~0.1-0.2 CPU s each in the server's one interpreter); keyed by the numbers
they draw, every copy of the same images shares them (``render_cache``).
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from tl_core.data import HealthReport

from .charts import plot_label
from .render_cache import shared_figure


def class_bar(report: HealthReport) -> go.Figure:
    """Images per class."""
    counts = tuple(report.class_counts.items())

    def build() -> go.Figure:
        frame = pd.DataFrame({"class": [plot_label(c) for c, _ in counts], "images": [n for _, n in counts]})
        return px.bar(frame, x="class", y="images", title="Images per class", text="images").update_layout(height=320)

    return shared_figure(("class_bar", counts), build)


def size_histogram(report: HealthReport) -> go.Figure:
    """The images' shorter sides."""
    sizes = report.sizes

    def build() -> go.Figure:
        frame = pd.DataFrame(sizes, columns=["width", "height"])
        frame["shorter side (px)"] = frame.min(axis=1)
        return px.histogram(frame, x="shorter side (px)", nbins=30, title="Image sizes").update_layout(height=320)

    # a digest, not the sizes themselves: a key of thousands of pairs would outweigh its figure
    digest = hashlib.sha256(json.dumps([list(size) for size in sizes]).encode()).hexdigest()
    return shared_figure(("size_hist", digest), build)


def split_bar(rows: list[dict]) -> go.Figure:
    """Images per class and split, from rows of ``split``, ``class`` (as plot labels) and ``images``."""
    key = tuple(tuple(row.items()) for row in rows)

    def build() -> go.Figure:
        return px.bar(pd.DataFrame(rows), x="class", y="images", color="split", barmode="group", text="images",
                      title="Images per class and split").update_layout(height=320)

    return shared_figure(("split_bar", key), build)
