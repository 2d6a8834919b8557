"""Runs in the tools people already use: TensorBoard and MLflow, two more subscribers to the
trainer's events (``tl_core.events``), beside the run log.

- TensorBoard, when the ``tensorboard`` package is installed: event files in ``<run>/tensorboard``
  (scalars per epoch: ``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val``, ``lr``),
  so ``tensorboard --logdir <home>/runs`` (or a session's ``runs`` folder) shows every run.
- MLflow, when ``MLFLOW_TRACKING_URI`` is set and ``mlflow`` (or ``mlflow-skinny``) is installed:
  one MLflow run per run (in the experiment ``MLFLOW_EXPERIMENT_NAME``, else "TL Studio"), with the
  run config flattened into params, the per-epoch metrics with the epoch as step, the best
  checkpoint as an artifact, and the export bundle when the run is exported (``log_export``).

Both are optional and fail soft: a tracker that fails writes a ``Note`` to the run's event log
(the user sees it on the Train page) and stops tracking; it never fails the run.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tl_core import events as ev
from tl_core.runs import Run

ENV_MLFLOW_URI = "MLFLOW_TRACKING_URI"
ENV_MLFLOW_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "TL Studio"
MAX_PARAM_CHARS = 500  # MLflow refuses longer param values on some stores; a list of groups can be long


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def mlflow_available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def for_run(run: Run) -> list[ev.Subscriber]:
    """The trackers that apply to ``run`` here and now (none when neither tool is set up)."""
    subscribers: list[ev.Subscriber] = []
    if tensorboard_available():
        subscribers.append(TensorBoardTracker(run))
    if os.environ.get(ENV_MLFLOW_URI) and mlflow_available():
        subscribers.append(MLflowTracker(run, os.environ[ENV_MLFLOW_URI]))
    return subscribers


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """("train.lr", "0.001"), ... for a nested dict (the run config as MLflow params)."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, name + ".")
        else:
            yield name, str(value)[:MAX_PARAM_CHARS]


class _Tracker:
    """A subscriber that never raises: its first error becomes a Note in the run log, then it is off."""

    tool = "tracker"

    def __init__(self, run: Run) -> None:
        self.run = run
        self.failed = False

    def __call__(self, event: ev.Event) -> None:
        if self.failed:
            return
        try:
            self.handle(event)
        except Exception as exc:  # noqa: BLE001 - a tracker must never fail the run it tracks
            self.failed = True
            self._warn(f"{self.tool} logging stopped for this run ({type(exc).__name__}: {exc}); "
                       "training goes on.")
            self.close_quietly()

    def _warn(self, message: str) -> None:
        try:
            self.run.append_event(ev.Note(message))
        except OSError:  # a full disk: the run's own writes report it
            pass

    def handle(self, event: ev.Event) -> None:
        raise NotImplementedError

    def close_quietly(self) -> None:
        pass


class TensorBoardTracker(_Tracker):
    """Scalars per epoch into ``<run>/tensorboard`` (``Run.tensorboard_dir``)."""

    tool = "TensorBoard"

    def __init__(self, run: Run) -> None:
        super().__init__(run)
        self._writer = None

    def _open(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run.tensorboard_dir))
        return self._writer

    def handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.EpochEnded):
            writer = self._open()
            scalars = {"loss/train": event.train_loss, "accuracy/train": event.train_acc,
                       "loss/val": event.val_loss, "accuracy/val": event.val_acc, "lr": event.lr}
            for tag, value in scalars.items():
                if value is not None:
                    writer.add_scalar(tag, value, global_step=event.epoch, walltime=event.time)
            writer.flush()  # a page or TensorBoard reading now sees the epoch
        elif isinstance(event, ev.TERMINAL):
            self.close_quietly()

    def close_quietly(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


_MLFLOW_END = {ev.RunFinished: "FINISHED", ev.RunFailed: "FAILED", ev.RunCancelled: "KILLED"}


class MLflowTracker(_Tracker):
    """One MLflow run per run; its id is kept in the run folder (``Run.record_tracking``), so a
    resumed run and a later export go on logging to the same MLflow run."""

    tool = "MLflow"

    def __init__(self, run: Run, tracking_uri: str) -> None:
        super().__init__(run)
        self.tracking_uri = tracking_uri
        self._client = None
        self._mlflow_run_id: str | None = None

    def _start(self) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        known = self.run.tracking().get("mlflow_run_id")
        if known and self.run.tracking().get("mlflow_tracking_uri") == self.tracking_uri:
            self._mlflow_run_id = known  # a resumed run: same MLflow run, params already logged
            self._client.update_run(known, status="RUNNING")
            return
        name = os.environ.get(ENV_MLFLOW_EXPERIMENT) or DEFAULT_EXPERIMENT
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(name)
        created = self._client.create_run(experiment_id, run_name=self.run.display_name(),
                                          tags={"tl_studio.run_id": self.run.id})
        self._mlflow_run_id = created.info.run_id
        self.run.record_tracking(mlflow_run_id=self._mlflow_run_id, mlflow_tracking_uri=self.tracking_uri)
        params = [Param(key, value) for key, value in flatten(self.run.config.to_dict())]
        for start in range(0, len(params), 100):  # log_batch takes at most 100 params at a time
            self._client.log_batch(self._mlflow_run_id, params=params[start:start + 100])

    def handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted) or (self._client is None and isinstance(event, ev.EpochEnded)):
            if self._client is None:
                self._start()
        if self._client is None:
            return
        if isinstance(event, ev.EpochEnded):
            from mlflow.entities import Metric

            stamp = int(event.time * 1000)
            values = {"train_loss": event.train_loss, "train_acc": event.train_acc, "val_loss": event.val_loss,
                      "val_acc": event.val_acc, "lr": event.lr}
            self._client.log_batch(self._mlflow_run_id, metrics=[
                Metric(key, float(value), stamp, event.epoch) for key, value in values.items() if value is not None])
        elif isinstance(event, ev.TERMINAL):
            if self.run.has_checkpoint("best"):
                self._client.log_artifact(self._mlflow_run_id, str(self.run.checkpoint_path("best")),
                                          artifact_path="checkpoints")
            self._client.set_terminated(self._mlflow_run_id, status=_MLFLOW_END[type(event)],
                                        end_time=int(time.time() * 1000))


def log_export(run: Run, bundle_dir: Path | str) -> str | None:
    """Add an exported bundle to the run's MLflow run (as ``export/``), when the run was logged to
    MLflow and MLflow is reachable now. Returns a warning for the user, or None when all went well
    or there is nothing to do; never raises (the export itself succeeded)."""
    info = run.tracking()
    run_id, uri = info.get("mlflow_run_id"), info.get("mlflow_tracking_uri")
    if not run_id or not uri or not mlflow_available():
        return None
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).log_artifacts(run_id, str(bundle_dir), artifact_path="export")
    except Exception as exc:  # noqa: BLE001 - the bundle is exported; MLflow is a copy of it
        return f"The bundle is exported, but could not be added to MLflow ({type(exc).__name__}: {exc})."
    return None
