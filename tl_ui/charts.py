"""Event-to-chart adapter: training events (read from a run's events.jsonl) to plotly figures.

``RunCurves.update(run)`` reads only the lines added since the last call, so a fragment that
polls every second stays cheap; a fresh session (refresh, second tab) reads the log from the
start and gets the whole curve back.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from tl_core.events import (
    BatchEnded,
    CheckpointSaved,
    EpochEnded,
    Note,
    Progress,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
)
from tl_core.runs import Run

from .render_cache import shared_figure

METRICS = {"loss": "Loss", "accuracy": "Accuracy", "lr": "Learning rate"}
FEATURES_EXPLAINED = ("Why the epochs now fly: the backbone ran once over your images; now only the head trains "
                      "on the stored features.")


@dataclass
class RunCurves:
    run_id: str
    next_line: int = 0
    started: RunStarted | None = None
    batches: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    best_epoch: int | None = None
    phase: Progress | None = None  # latest long preparation step (decoding, features)
    outcome: RunFinished | RunFailed | RunCancelled | None = None
    extract_rate: float | None = None  # images/s of the backbone in the latest feature extraction
    _phase_epoch: int = 0  # the epoch whose feature extraction ``phase`` reports
    _phase_t0: float | None = None
    _extract_s: float = 0.0  # seconds of feature extraction in the epoch under way
    # metric -> (next_line it was drawn at, figure): the live view reruns each second (every 5 s
    # while queued) and a figure takes ~30 ms of the server's one interpreter to build; most
    # reruns find no new event (a queued run, the pauses between batches)
    _figures: dict[str, tuple[int, go.Figure]] = field(default_factory=dict, repr=False, compare=False)

    def update(self, run: Run) -> bool:
        """Read new events; True when something changed."""
        events, self.next_line = run.read_events(self.next_line)
        for event in events:
            self._add(event)
        return bool(events)

    def _add(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            self.started = event
        elif isinstance(event, BatchEnded):
            if event.step == 1:  # an epoch retried after out-of-memory replaces its abandoned batches
                self.batches = [b for b in self.batches if b["epoch"] <= event.epoch - 1]
            per_epoch = event.steps or (self.started.steps_per_epoch if self.started else max(event.step, 1))
            self.batches.append({"epoch": event.epoch - 1 + event.step / max(per_epoch, 1),
                                 "step": event.global_step, "loss": event.loss,
                                 "accuracy": event.accuracy, "lr": event.lr,
                                 "images_per_s": event.images_per_s, "time": event.time})
        elif isinstance(event, EpochEnded):
            self.epochs.append({"epoch": event.epoch, "train_loss": event.train_loss,
                                "train_acc": event.train_acc, "val_loss": event.val_loss,
                                "val_acc": event.val_acc, "lr": event.lr, "seconds": event.seconds,
                                "head_seconds": max(0.0, event.seconds - self._extract_s)})
            self._extract_s = 0.0
        elif isinstance(event, CheckpointSaved) and event.kind == "best":
            self.best_epoch = event.epoch
        elif isinstance(event, Progress):
            self.phase = event
            if event.phase == "features":
                self._phase_epoch = len(self.epochs) + 1
                if event.images_per_s:
                    self.extract_rate = event.images_per_s
                if event.done == 0:
                    self._phase_t0 = event.time
                elif event.done >= event.total and self._phase_t0 is not None:
                    self._extract_s += event.time - self._phase_t0
                    self._phase_t0 = None
        elif isinstance(event, Note):
            self.notes.append(event.message)
        elif isinstance(event, (RunFinished, RunFailed, RunCancelled)):
            self.outcome = event

    # -- numbers for the status line --------------------------------------------------------
    def extraction(self) -> Progress | None:
        """The backbone feature extraction under way, if one is."""
        phase = self.phase
        if phase is None or phase.phase != "features" or phase.done >= phase.total or self.outcome is not None:
            return None
        return phase if self._phase_epoch == len(self.epochs) + 1 else None

    def features_cached(self) -> bool:
        """A cached run with epochs done and no extraction under way: the epochs train only the head."""
        return bool(self.started and self.started.feature_cache and self.epochs and self.extraction() is None)

    @property
    def images_per_s(self) -> float | None:
        """The backbone's images/s while it extracts features, else the latest batch's."""
        extraction = self.extraction()
        if extraction is not None:
            return extraction.images_per_s
        return self.batches[-1]["images_per_s"] if self.batches else None

    def progress(self) -> float:
        if not self.started or not self.batches:
            return 0.0
        return min(1.0, self.batches[-1]["epoch"] / max(self.started.epochs, 1))

    def eta_seconds(self) -> float | None:
        """Seconds left; None before the first batch.

        Once two epochs are done, from the typical later epoch: the first one also decodes
        images or computes cached features, and would make the estimate far too long."""
        cached = self._cached_eta_seconds()
        if cached is not None:
            return cached
        done = self.progress()
        if not self.started or done <= 0 or done >= 1:
            return None
        if len(self.epochs) >= 2:
            later = sorted(e["seconds"] for e in self.epochs[1:])
            per_epoch = later[len(later) // 2]
            return max(0.0, per_epoch * (self.started.epochs - self.batches[-1]["epoch"]))
        elapsed = self.batches[-1]["time"] - self.started.time
        return max(0.0, elapsed / done * (1 - done))

    def _cached_eta_seconds(self) -> float | None:
        """Seconds left of a run whose epochs add backbone views lazily: the extraction under way,
        the views later epochs still compute (at the backbone's latest images/s), and the head's
        epochs. None when this is not such a run or the backbone's speed is not known yet."""
        started, rate = self.started, self.extract_rate
        if not started or not started.feature_views or not rate or self.outcome is not None:
            return None
        epoch_now = len(self.epochs) + 1
        if epoch_now > started.epochs:
            return None
        extraction = self.extraction()
        left = 0.0
        if extraction is not None:
            left = extraction.seconds_left if extraction.seconds_left is not None else \
                (extraction.total - extraction.done) / rate
        views_from_now = max(0, min(started.feature_views, started.epochs) - epoch_now + 1)
        if self._phase_epoch == epoch_now:  # this epoch's view is under way or done: counted above
            views_from_now = max(0, views_from_now - 1)
        left += views_from_now * started.num_train / rate
        heads = sorted(e["head_seconds"] for e in self.epochs)
        head_s = heads[len(heads) // 2] if heads else 0.0
        return max(0.0, left + head_s * (started.epochs - len(self.epochs)))

    def extraction_text(self) -> str:
        """The feature extraction progress bar's text (the page shows it under the bar)."""
        extraction = self.extraction()
        if extraction is None:
            return ""
        rate = f"{extraction.images_per_s:.0f} images/s" if extraction.images_per_s else "measuring speed"
        left = format_seconds(extraction.seconds_left) if extraction.seconds_left is not None else "—"
        return (f"Epoch {len(self.epochs) + 1}: the backbone computes features of {extraction.total} images "
                f"({extraction.done} done), {rate}, {left} left")

    # -- figures -----------------------------------------------------------------------------
    def figure(self, metric: str) -> go.Figure:
        """One metric: per-batch line (thin) plus per-epoch train/val points (thick). The same
        figure object until new events arrive: callers draw it, never change it."""
        drawn = self._figures.get(metric)
        if drawn is not None and drawn[0] == self.next_line:
            return drawn[1]
        if self.batches or self.epochs:
            fig = self._build_figure(metric)
        else:  # no point yet (a queued run): the same empty axes for every session
            fig = shared_figure(("live_empty", metric), lambda: self._build_figure(metric))
        self._figures[metric] = (self.next_line, fig)
        return fig

    def _build_figure(self, metric: str) -> go.Figure:
        fig = go.Figure()
        if self.batches:
            frame = pd.DataFrame(self.batches)
            fig.add_scatter(x=frame["epoch"], y=frame[metric], mode="lines", name="per batch",
                            line={"width": 1, "color": "#9e9e9e"})
        if self.epochs and metric != "lr":
            frame = pd.DataFrame(self.epochs)
            train_col = "train_loss" if metric == "loss" else "train_acc"
            val_col = "val_loss" if metric == "loss" else "val_acc"
            fig.add_scatter(x=frame["epoch"], y=frame[train_col], mode="lines+markers",
                            name="train (epoch)", line={"color": "#1565c0"})
            if frame[val_col].notna().any():
                fig.add_scatter(x=frame["epoch"], y=frame[val_col], mode="lines+markers",
                                name="validation (epoch)", line={"color": "#e65100"})
        fig.update_layout(title=METRICS[metric], xaxis_title="epoch", height=300,
                          margin={"l": 10, "r": 10, "t": 40, "b": 10},
                          legend={"orientation": "h", "y": -0.3})
        if metric == "accuracy":
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
        if metric == "lr":
            fig.update_yaxes(exponentformat="e")
        return fig


def curves_for(store: dict[str, RunCurves], run: Run) -> RunCurves:
    """The cached curves of ``run`` in ``store`` (a dict in session state), brought up to date."""
    curves = store.get(run.id)
    if curves is None:
        curves = store[run.id] = RunCurves(run.id)
    curves.update(run)
    return curves


def plot_label(name: object) -> str:
    """A name the user gave (class, run, file) as Plotly text: axis ticks, legends, hover labels and
    titles read ``<b>``, ``<i>``, ``<a href>`` as HTML, so ``<`` and ``>`` go in as entities."""
    return html.escape(str(name), quote=False)


def plot_labels(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """``frame`` with ``plot_label`` applied to the values of ``columns``."""
    return frame.assign(**{c: frame[c].map(plot_label) for c in columns})


CURVE_LABELS = {"val_acc": "validation accuracy", "val_loss": "validation loss",
                "train_loss": "training loss", "train_acc": "training accuracy"}


def comparison_figure(curves: dict[str, RunCurves], column: str = "val_acc") -> go.Figure:
    """Per-epoch ``column`` of several runs overlaid, one line per run."""
    rows = [{"run": plot_label(name), "epoch": row.get("epoch"), column: row.get(column)}
            for name, c in curves.items() for row in c.epochs]

    def build() -> go.Figure:
        frame = pd.DataFrame(rows, columns=["run", "epoch", column])
        fig = px.line(frame, x="epoch", y=column, color="run", markers=True,
                      labels={column: CURVE_LABELS.get(column, column)})
        return fig.update_layout(height=350, margin={"l": 10, "r": 10, "t": 30, "b": 10})

    # shared by what it draws: runs not trained yet (a queued class) all draw the same empty axes
    return shared_figure(("comparison", column, tuple(tuple(row.values()) for row in rows)), build)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return time.strftime("%H:%M:%S" if seconds >= 3600 else "%M:%S", time.gmtime(seconds))


def sweep_figure(table: pd.DataFrame, x: str, x_label: str, log_x: bool = False) -> go.Figure:
    """Best validation accuracy against ``x`` (a column of an experiment table), one line per
    ``series``; members without a number yet are left out."""
    frame = table[table["best val acc"].notna() & table[x].notna()].sort_values(x)
    frame = plot_labels(frame, *(c for c in ("series", "strategy") if c in frame))
    fig = px.line(frame, x=x, y="best val acc", color="series", markers=True, log_x=log_x,
                  labels={x: x_label, "best val acc": "best validation accuracy", "series": ""},
                  hover_name="strategy")
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_tickformat=".0%")
    return fig


# "Which backbone?": one marker per kind of published accuracy (BackboneSpec.accuracy), so that a
# supervised top-1, a self-supervised linear probe and an image-text zero-shot number are told apart.
ACCURACY_SYMBOLS = {"top-1": "circle", "linear probe": "diamond", "zero-shot": "star"}


def backbone_figure(table: pd.DataFrame, x: str, x_label: str, log_x: bool = False) -> go.Figure:
    """"Which backbone?": each finished backbone's best validation accuracy against ``x`` (its
    published accuracy "x", or "images/s"), labelled with its name, the marker saying what its
    published accuracy measures; members without both numbers are left out."""
    frame = table[table["best val acc"].notna() & table[x].notna()]
    frame = plot_labels(frame.assign(**{"published as": frame["series"]}), "strategy", "published as")
    fig = px.scatter(frame, x=x, y="best val acc", text="strategy", symbol="published as", color="published as",
                     symbol_map={plot_label(k): v for k, v in ACCURACY_SYMBOLS.items()}, log_x=log_x,
                     labels={x: x_label, "best val acc": "best validation accuracy",
                             "published as": "published ImageNet accuracy"})
    # names are drawn beyond the axes rather than cut at them; accuracy stays on its 0-100% scale
    fig.update_traces(textposition="top center", marker={"size": 12}, cliponaxis=False)
    fig.update_layout(height=380, margin={"l": 10, "r": 40, "t": 40, "b": 10}, yaxis_tickformat=".0%",
                      yaxis_range=[0, 1.08], legend={"orientation": "h", "y": -0.25})
    return fig
