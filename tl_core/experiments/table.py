"""An experiment's table: one row per member, read from its run folder (status and event log).

The Compare page shows it and draws from it; ``tl_core.experiments.report`` turns it into
sentences. Its columns are named in ``tl_core.experiments.columns``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pandas as pd

from tl_core.errors import RunNotFound
from tl_core.events import BatchEnded, EpochEnded, Progress, RunStarted
from tl_core.experiments.columns import RATE_OF_FEATURES, RATE_OF_TRAINING, TABLE_COLUMNS
from tl_core.experiments.store import Experiment, Member
from tl_core.runs import RunStore
from tl_core.workspace import Workspace


def member_row(workspace: Workspace, member: Member, now: float | None = None) -> dict[str, Any]:
    """One table row from the member's run folder: its status and its event log."""
    from tl_core.jobs.launch import job_state

    row: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
    row.update(strategy=member.label, key=member.key, run=member.run_id, series=member.series, x=member.x)
    try:
        run = RunStore(workspace).get(member.run_id)
    except RunNotFound:
        row["state"] = "deleted"
        return row
    status = job_state(run)
    row["state"] = status.state
    events, _ = run.read_events()
    started = next((e for e in events if isinstance(e, RunStarted)), None)
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    accs = [(e.val_acc, e.epoch) for e in epochs if e.val_acc is not None]
    if accs:
        row["final val acc"] = accs[-1][0]
        best = max(accs, key=lambda pair: (pair[0], -pair[1]))  # the first epoch of equal highs
        row["best val acc"], row["best epoch"] = best
    trainable = [e.trainable_params for e in epochs] + ([started.trainable_params] if started else [])
    row["trainable params"] = max(trainable) if trainable else None  # LP-FT: after the probe
    if started:
        row["val images"] = started.num_val
        row["train images"] = started.num_train
        row["images per class"] = started.num_train / max(1, len(started.classes))  # the mean, for the x axis
    if status.started:
        end = status.finished if status.finished else (now or time.time()) if status.active else status.updated
        row["wall time (s)"] = max(0.0, float(end or status.started) - float(status.started))
    if started and started.feature_cache:
        rates = [e.images_per_s for e in events if isinstance(e, Progress) and e.phase == "features" and e.images_per_s]
        row["images/s of"] = RATE_OF_FEATURES
    else:
        rates = [e.images_per_s for e in events if isinstance(e, BatchEnded) and e.images_per_s]
        row["images/s of"] = RATE_OF_TRAINING if started else None
    row["images/s"] = statistics.median(rates) if rates else None
    return row


def experiment_table(workspace: Workspace, experiment: Experiment) -> pd.DataFrame:
    """One row per member, in the experiment's order (``TABLE_COLUMNS``; missing numbers are None).
    "best val acc" is the highest validation accuracy of any epoch; "images/s of" says whether
    "images/s" is the backbone's feature-extraction rate (frozen members, whose features may come
    from the shared store: then no rate) or the median rate of the training steps."""
    now = time.time()
    rows = [member_row(workspace, m, now) for m in experiment.members if m.run_id]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
