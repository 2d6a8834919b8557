"""Runs: one folder per training run under ``workspace.runs_dir``.

A run folder holds ``config.json`` (enough to re-run it alone), ``status.json`` (a ``RunStatus``),
the event log ``events.jsonl`` (one JSON event per line, appended), ``classes.json``,
``checkpoints/{best,last}.pt``, ``metrics.json``, one ``eval_<split>.json`` per evaluated split,
the worker's ``worker.log``, the ``STOP`` flag, the last export in ``export/``, ``label.json``
(the name the user gave the run after it started; ``config.json`` stays the recipe as trained),
``job.json`` (a job launched on a cluster: its backend and job id), ``tracking.json`` (its MLflow
run) and ``tensorboard/`` (TensorBoard's event files).
Only ``Run`` knows these names: writers and readers go through its methods. Whole-file writes are
atomic, and the event log is only ever appended with complete lines, so a page polling from
another process always sees a consistent state. A full disk leaves the previous state and raises
``DiskFull``; readers skip a damaged line or file rather than fail.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_core import atomic
from tl_core.config import RunConfig
from tl_core.errors import CheckpointDamaged, ConfigError, JobError, RunNotFound
from tl_core.events import TERMINAL, Event, RunFailed, from_dict, to_dict
from tl_core.workspace import Workspace, is_safe_id

if TYPE_CHECKING:
    import torch


ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("finished", "failed", "cancelled")
EVAL_SPLITS = ("test", "val")  # the held-back splits the trainer evaluates, most honest first
# Keys older status.json files used for a field that now has another name.
_RENAMED_STATUS_KEYS = {"started_at": "started"}
MAX_NAME_LENGTH = 120  # a run's name is a label for lists and legends, not a description

# How each freezing plan reads in a run's automatic label ("last_n" and "groups" say how many).
_STRATEGY_WORDS = {"feature_extractor": "frozen", "full": "full", "gradual": "gradual unfreezing", "lp_ft": "LP-FT"}


def format_lr(lr: float) -> str:
    """A learning rate as people write it: 1e-3, 3e-4, 2.5e-3."""
    mantissa, exponent = f"{lr:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def strategy_label(config: RunConfig) -> str:
    """The freezing plan in a few words: "frozen", "top 2 groups", "full", ..."""
    plan = config.freeze
    if plan.mode == "last_n":
        words = f"top {plan.last_n} group{'s' if plan.last_n != 1 else ''}"
    elif plan.mode == "groups":
        words = f"{len(plan.groups)} chosen group{'s' if len(plan.groups) != 1 else ''}"
    else:
        words = _STRATEGY_WORDS.get(plan.mode, plan.mode.replace("_", " "))
    if plan.lr_range is not None:
        words += " (discriminative lr)"
    return words


def auto_label(config: RunConfig) -> str:
    """A run's label when the user gave it no name: backbone, strategy, head and learning rate,
    e.g. "mobilenet_v2 · frozen · linear · lr 1e-3". Random initialisation is said, a Flatten
    head too; scikit-learn heads and pure zero-shot (0 epochs) have no learning rate."""
    from tl_core.config import CLASSICAL_HEADS

    head = config.model.head
    parts = [config.model.backbone + ("" if config.model.pretrained else " (random init)"),
             strategy_label(config), head.kind + (f" k={head.neighbours}" if head.kind == "knn" else "")
             + (" on flatten" if head.pool == "flatten" else "")]
    if head.kind == "zero_shot" and config.train.epochs == 0:
        parts[-1] = "zero-shot (no training)"
    elif head.kind not in CLASSICAL_HEADS:
        lr = config.freeze.lr_range
        parts.append(f"lr {format_lr(lr[0])}–{format_lr(lr[1])}" if lr else f"lr {format_lr(config.train.lr)}")
    return " · ".join(parts)


def best_epoch_note(metrics: dict[str, Any], monitor: str) -> str | None:
    """A sentence when the best epoch (chosen by ``monitor``) is not where validation accuracy
    peaked, e.g. "Best epoch 4 (lowest validation loss); validation accuracy peaked at epoch 6.";
    None when they agree or the history is missing. ``metrics`` is ``Run.read_metrics()``."""
    best = metrics.get("best_epoch")
    rows = [row for row in metrics.get("history") or [] if row.get("val_acc") is not None]
    if best is None or not rows:
        return None
    peak = max(rows, key=lambda row: row["val_acc"])  # the first of equal highs
    if peak["epoch"] == best or any(row["epoch"] == best and row["val_acc"] == peak["val_acc"] for row in rows):
        return None
    chosen_by = "lowest validation loss" if monitor == "val_loss" else "highest validation accuracy"
    return f"Best epoch {best} ({chosen_by}); validation accuracy peaked at epoch {peak['epoch']}."



# -- what an evaluation writes (eval_<split>.json); tl_core.evaluation.metrics computes it -----------
@dataclass
class EvalResult:
    classes: list[str]
    accuracy: float
    loss: float
    top_k: int  # k of top_k_accuracy (3, or fewer with fewer classes)
    top_k_accuracy: float
    per_class: list[dict[str, Any]]  # class, precision, recall, f1, support
    confusion: list[list[int]]  # rows = true class, columns = predicted class
    predictions: list[dict[str, Any]] = field(default_factory=list)
    # per image: path, true, pred (indices), true_label, pred_label, confidence, loss, probs

    def summary(self) -> dict[str, Any]:
        """The headline numbers (for metrics.json, status and the CLI)."""
        import numpy as np  # here: the queue worker reads runs without numpy

        macro_f1 = float(np.mean([row["f1"] for row in self.per_class])) if self.per_class else 0.0
        return {"accuracy": self.accuracy, "loss": self.loss, f"top{self.top_k}_accuracy": self.top_k_accuracy,
                "macro_f1": macro_f1, "n": len(self.predictions)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(**data)

@dataclass(frozen=True)
class RunStatus:
    """What ``status.json`` says about a run. Change it through ``Run``'s ``mark_*``/``record_*``
    methods; every field but ``state`` is None until something writes it."""

    state: str = "unknown"  # created, queued, running, finished, failed, cancelled (unknown: no file)
    created: float | None = None  # time.time() of the run folder's creation
    updated: float | None = None  # time of the last status change
    queued_at: float | None = None  # when the job entered the server-wide queue
    started: float | None = None  # when training started (the worker, then the trainer, set it)
    finished: float | None = None  # when training finished
    pid: int | None = None  # the process training the run (or waiting for a device for it)
    pid_created: float | None = None  # that process's start time, so a reused pid is not mistaken for it
    slot: int | None = None  # the device slot the job holds (None: not queued through the slots)
    epoch: int | None = None  # the last epoch completed
    best_epoch: int | None = None  # the epoch of the best checkpoint
    best_val_acc: float | None = None  # validation accuracy of the best checkpoint
    error: str | None = None  # why the run failed, written for the user
    dataset_dir: str | None = None  # the ingested dataset the trainer read (its paths are relative to it)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        """Tolerant of older files: renamed keys are mapped, unknown keys are ignored."""
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in _RENAMED_STATUS_KEYS:
                if _RENAMED_STATUS_KEYS[key] in data:
                    continue  # the new name wins
                key = _RENAMED_STATUS_KEYS[key]
            if key in _STATUS_FIELDS:
                values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)



_STATUS_FIELDS = frozenset(f.name for f in dataclasses.fields(RunStatus))


def _parse_event(line: str) -> Event | None:
    """The event on one line of ``events.jsonl``; None when the line is damaged or unknown."""
    try:
        data = json.loads(line)
        return from_dict(data) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


class Run:
    """A handle on one run folder. Cheap to create; every read goes to disk."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.id = self.dir.name

    # -- files ---------------------------------------------------------------------------
    @property
    def config(self) -> RunConfig:
        return RunConfig.from_json((self.dir / "config.json").read_text(encoding="utf-8"))

    @property
    def classes(self) -> list[str]:
        return list(atomic.read_json(self.dir / "classes.json", default=[]))

    def write_classes(self, classes: Sequence[str]) -> None:
        atomic.write_json(self.dir / "classes.json", list(classes))

    def dataset_dir(self) -> Path | None:
        """The ingested dataset the run trained on: where the trainer found it, else the one its
        config names. None when neither is known (the folder itself may since have been deleted)."""
        folder = self.status().dataset_dir or self.config.data.dataset_dir
        return Path(folder) if folder else None

    # -- results -------------------------------------------------------------------------
    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """The trainer's result: best_epoch, history, and a summary per evaluated split."""
        atomic.write_json(self.dir / "metrics.json", metrics)

    def read_metrics(self) -> dict[str, Any]:
        """The trainer's result (see ``write_metrics``); empty until training ended."""
        metrics = atomic.read_json(self.dir / "metrics.json", default=None)
        return metrics if isinstance(metrics, dict) else {}

    def write_evaluation(self, split: str, result: EvalResult) -> None:
        atomic.write_json(self._eval_path(split), result.to_dict())

    def read_evaluation(self, split: str) -> EvalResult | None:
        """The evaluation of the best checkpoint on ``split`` ("val" or "test"), None if none yet."""
        data = atomic.read_json(self._eval_path(split), default=None)
        if not isinstance(data, dict) or not data:
            return None
        try:
            return EvalResult.from_dict(data)
        except (KeyError, TypeError, ValueError):  # damaged or foreign: as if not evaluated yet
            return None

    def evaluations(self) -> dict[str, EvalResult]:
        """Every evaluation written so far, by split, test first (the most honest number)."""
        found = {split: self.read_evaluation(split) for split in EVAL_SPLITS}
        return {split: result for split, result in found.items() if result is not None}

    def _eval_path(self, split: str) -> Path:
        if split not in EVAL_SPLITS:
            raise ValueError(f"Unknown evaluation split {split!r}; use one of {', '.join(EVAL_SPLITS)}.")
        return self.dir / f"eval_{split}.json"

    # -- status --------------------------------------------------------------------------
    def status(self) -> RunStatus:
        data = atomic.read_json(self.dir / "status.json", default=None)
        return RunStatus.from_dict(data) if isinstance(data, dict) and data else RunStatus()

    @property
    def state(self) -> str:
        return self.status().state

    def _update_status(self, **changes: Any) -> RunStatus:
        status = dataclasses.replace(self.status(), **changes, updated=time.time())
        atomic.write_json(self.dir / "status.json", status.to_dict())
        return status

    def mark_queued(self, *, pid: int | None, pid_created: float | None = None,
                    queued_at: float | None = None) -> RunStatus:
        """Waiting for a device slot in process ``pid`` (None: being launched). ``queued_at`` is
        kept from an earlier call when not given."""
        changes: dict[str, Any] = {"pid": pid, "pid_created": pid_created}
        if queued_at is not None:
            changes["queued_at"] = queued_at
        return self._update_status(state="queued", **changes)

    def mark_running(self, *, pid: int, slot: int | None = None, pid_created: float | None = None) -> RunStatus:
        """Training started now in process ``pid``; clears an earlier error. The slot, and the pid's
        start time when it is the same process, are kept from ``mark_queued`` when not given (a
        ``--resume`` from the CLI is another process: the old start time would mark it dead)."""
        changes: dict[str, Any] = {"pid": pid, "started": time.time(), "error": None}
        if slot is not None:
            changes["slot"] = slot
        if pid_created is not None or pid != self.status().pid:
            changes["pid_created"] = pid_created
        return self._update_status(state="running", **changes)

    def record_dataset(self, dataset_dir: str | Path) -> RunStatus:
        """Where the trainer found the ingested dataset (evaluation paths are relative to it)."""
        return self._update_status(dataset_dir=str(dataset_dir))

    def record_epoch(self, epoch: int, best_epoch: int | None, best_val_acc: float | None) -> RunStatus:
        return self._update_status(epoch=epoch, best_epoch=best_epoch, best_val_acc=best_val_acc)

    def mark_finished(self, *, best_epoch: int | None = None, best_val_acc: float | None = None) -> RunStatus:
        """Training ended normally now; the best results are kept from ``record_epoch`` when not given."""
        changes: dict[str, Any] = {"finished": time.time(), "error": None}
        if best_epoch is not None:
            changes["best_epoch"] = best_epoch
        if best_val_acc is not None:
            changes["best_val_acc"] = best_val_acc
        return self._update_status(state="finished", **changes)

    def mark_cancelled(self, *, best_epoch: int | None = None, best_val_acc: float | None = None) -> RunStatus:
        """Stopped on request (the best checkpoint so far is kept); like ``mark_finished`` otherwise."""
        changes: dict[str, Any] = {"error": None}
        if best_epoch is not None:
            changes["best_epoch"] = best_epoch
        if best_val_acc is not None:
            changes["best_val_acc"] = best_val_acc
        return self._update_status(state="cancelled", **changes)

    def mark_failed(self, reason: str, *, error_type: str | None = None) -> RunStatus:
        """The run failed for ``reason`` (written for the user). With ``error_type`` a ``RunFailed``
        event is logged too, unless the log's last event already ends the run (for callers outside the trainer,
        whose own subscribers log it).

        Never raises for a write the disk refuses: this is how failures are reported, so it must
        not fail itself. It writes what it can and returns the failed status either way; a run
        whose status could not be written still reads "running", and ``jobs.job_state`` marks it
        failed once its worker has exited (and the disk has room again)."""
        if error_type is not None:
            try:
                events, _ = self.read_events()
                # the last event, not any: a resumed run's log holds the ending it was resumed from
                if not (events and isinstance(events[-1], TERMINAL)):
                    self.append_event(RunFailed(reason=reason, error_type=error_type))
            except OSError:  # DiskFull included; the status below matters more
                pass
        try:
            return self._update_status(state="failed", error=reason)
        except OSError:
            return dataclasses.replace(self.status(), state="failed", error=reason, updated=time.time())

    # -- events --------------------------------------------------------------------------
    def append_event(self, event: Event) -> None:
        """Log ``event`` as one whole line, or not at all (``DiskFull``); see ``atomic.append_line``."""
        atomic.append_line(self.dir / "events.jsonl", json.dumps(to_dict(event), default=str))

    def read_events(self, start_line: int = 0) -> tuple[list[Event], int]:
        """Events from line ``start_line`` on, and the line to start from next time. A damaged
        line (half-written by a process that died, edited by hand, from a newer version) is
        skipped: the rest of the log still reads."""
        path = self.dir / "events.jsonl"
        if not path.exists():
            return [], start_line
        events: list[Event] = []
        line_no = 0
        # errors="replace": a line cut inside a UTF-8 character is a damaged line, not a crash
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line_no <= start_line:
                    continue
                if not line.endswith("\n"):  # being written right now
                    return events, line_no - 1
                event = _parse_event(line)
                if event is not None:
                    events.append(event)
        return events, max(line_no, start_line)

    # -- stop flag -----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the worker to stop. An empty file: its existence is the signal, and creating it
        needs no free space, so a run can be stopped (and deleted) when the disk is full."""
        try:
            (self.dir / "STOP").touch()
        except OSError as exc:
            if atomic.is_disk_full(exc):
                raise atomic.disk_full(exc) from exc
            raise

    def clear_stop(self) -> None:
        (self.dir / "STOP").unlink(missing_ok=True)

    def stop_requested(self) -> bool:
        return (self.dir / "STOP").exists()

    # -- name ----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The name given with ``rename``; "" when none."""
        data = atomic.read_json(self.dir / "label.json", default=None)
        return str(data.get("name", "")) if isinstance(data, dict) else ""

    def rename(self, name: str) -> None:
        """Give the run a name every list, legend and the CLI show; "" goes back to the config's
        name or the automatic label. ``config.json`` is not touched: it stays the recipe."""
        name = " ".join(name.split())  # one line: newlines or tabs would break tables and legends
        if len(name) > MAX_NAME_LENGTH:
            raise ConfigError(f"A run name can have at most {MAX_NAME_LENGTH} characters; "
                              f"this one has {len(name)}. Shorten it.")
        atomic.write_json(self.dir / "label.json", {"name": name})

    def display_name(self) -> str:
        """What to call the run: its new name, else the name it started with, else its automatic
        label (backbone · strategy · head · lr). The id only when the config cannot be read."""
        if self.label:
            return self.label
        try:
            config = self.config
        except (OSError, ValueError):
            return f"run {self.id}"
        return config.name or auto_label(config)

    # -- other files ---------------------------------------------------------------------
    @property
    def export_dir(self) -> Path:
        """Where the app and the CLI write the run's export bundle by default."""
        return self.dir / "export"

    @property
    def worker_log_path(self) -> Path:
        """The worker process's stdout and stderr (tracebacks of bugs end up here)."""
        return self.dir / "worker.log"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard's event files of the run (``tl_core.training.trackers``), beside the run log."""
        return self.dir / "tensorboard"

    def tracking(self) -> dict[str, Any]:
        """Where the run is tracked outside TL Studio (``tracking.json``: the MLflow run id and
        tracking URI); {} when nowhere."""
        data = atomic.read_json(self.dir / "tracking.json", default=None)
        return data if isinstance(data, dict) else {}

    def record_tracking(self, **info: Any) -> None:
        atomic.write_json(self.dir / "tracking.json", {**self.tracking(), **info})

    def job_record(self) -> dict[str, Any]:
        """How the run's job was launched when not by the local queue (``job.json``: e.g.
        {"backend": "ray", "job_id": ..., "address": ...}); {} for a local job."""
        data = atomic.read_json(self.dir / "job.json", default=None)
        return data if isinstance(data, dict) else {}

    def record_job(self, **info: Any) -> None:
        """Replace the job record (a new launch, e.g. a resume, is a new job)."""
        atomic.write_json(self.dir / "job.json", info)

    def clear_job_record(self) -> None:
        (self.dir / "job.json").unlink(missing_ok=True)

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_path(self, kind: str = "best") -> Path:
        return self.dir / "checkpoints" / f"{kind}.pt"

    def save_checkpoint(self, kind: str, state: dict[str, Any]) -> Path:
        path = self.checkpoint_path(kind)
        import torch  # here, not at the top: a worker waiting in the queue must not load torch

        atomic.write_with(path, lambda handle: torch.save(state, handle))
        return path

    def has_checkpoint(self, kind: str = "best") -> bool:
        """True when checkpoint ``kind`` exists and loads (not a file a full disk cut short): the
        test before any message says "the best checkpoint is kept"."""
        path = self.checkpoint_path(kind)
        if not path.is_file():
            return False
        import torch  # here, not at the top: a worker waiting in the queue never loads torch

        try:  # mmap: the tensors are not read, only the archive's index and the pickled structure
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - damaged in any way means "not usable"
            return False
        return isinstance(checkpoint, dict) and "model" in checkpoint

    def best_kept_note(self) -> str:
        """" The best checkpoint so far (epoch N) is kept." when it is (``has_checkpoint``), else
        "": a failure message adds it, so it is said only when true."""
        if not self.has_checkpoint("best"):
            return ""
        epoch = self.status().best_epoch
        return f" The best checkpoint so far{f' (epoch {epoch})' if epoch else ''} is kept."

    def load_checkpoint(self, kind: str = "best", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        path = self.checkpoint_path(kind)
        if not path.exists():
            raise RunNotFound(f"Run {self.id} has no {kind} checkpoint yet; train it first "
                              "(or wait for its first epoch to finish).")
        import torch

        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
            raise self.damaged_checkpoint(kind, exc) from exc

    def damaged_checkpoint(self, kind: str, exc: BaseException) -> CheckpointDamaged:
        """The error for checkpoint ``kind`` that cannot be read or used (``exc`` says why)."""
        return CheckpointDamaged(
            f"The {kind} checkpoint of run '{self.display_name()}' ({self.id}) is damaged and cannot be "
            f"used ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}). "
            "It may have been cut short by a full disk or an interrupted copy. Train the run again "
            f"(Re-run in the app, or `python -m tl_core train --config {self.id}`), then delete this one.")

    def summary(self) -> dict[str, Any]:
        """One row for run lists: name (``display_name``), state, backbone, strategy, head, lr,
        best metrics, created time, and the id last."""
        status = self.status()
        try:
            cfg = self.config
            backbone, pretrained, strategy = cfg.model.backbone, cfg.model.pretrained, strategy_label(cfg)
            head, lr = cfg.model.head.kind, cfg.train.lr
        except (OSError, ValueError):
            backbone, pretrained, strategy, head, lr = "?", True, "?", "?", None
        return {"name": self.display_name(), "state": status.state, "backbone": backbone,
                "pretrained": pretrained, "strategy": strategy, "head": head, "lr": lr,
                "created": status.created, "best_val_acc": status.best_val_acc, "epoch": status.epoch,
                "error": status.error, "id": self.id}


class RunStore:
    """The runs of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.runs_dir

    def create(self, config: RunConfig) -> Run:
        """A new run folder with ``config.json`` and a "created" status; whole or not at all (a
        full disk raises ``DiskFull`` and leaves no folder behind)."""
        config.validate()
        run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        run_dir = self.root / run_id
        try:
            run_dir.mkdir(parents=True)
        except OSError as exc:
            if atomic.is_disk_full(exc):
                raise atomic.disk_full(exc) from exc
            raise
        run = Run(run_dir)
        try:
            atomic.write_bytes(run_dir / "config.json", config.to_json().encode("utf-8"))
            now = time.time()
            atomic.write_json(run_dir / "status.json", RunStatus(state="created", created=now, updated=now).to_dict())
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return run

    def get(self, run_id: str) -> Run:
        if not is_safe_id(run_id) or not (self.root / run_id / "config.json").exists():
            raise RunNotFound(f"No run '{run_id}' in {self.root}. "
                              "List the runs with `python -m tl_core runs`.")
        return Run(self.root / run_id)

    def list(self) -> list[Run]:
        """Runs, newest first."""
        runs = [Run(p.parent) for p in self.root.glob("*/config.json")]
        return sorted(runs, key=lambda r: r.id, reverse=True)

    def delete(self, run_id: str, *, is_active: Callable[[Run], bool] | None = None) -> None:
        """Remove a run that is not queued or running (``jobs.delete_run`` stops one first).
        Pass ``is_active=jobs.is_active``: it looks at the worker, not the file, since a run whose
        worker died on a full disk still reads "running" there (nothing could be written), and
        deleting runs is how the disk is freed. (runs cannot import jobs: jobs imports runs.)"""
        run = self.get(run_id)
        if (is_active or (lambda r: r.status().active))(run):
            raise JobError(f"Run '{run.display_name()}' ({run_id}) is still {run.state}; stop it first "
                           f"(`python -m tl_core stop {run_id}`, or Delete in the app, which stops it).")
        shutil.rmtree(run.dir)


def unique_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run id -> ``display_name``, made unique for legends and pickers: runs that share a name
    get their start time (and, if that is shared too, their id) added."""
    names = {run.id: run.display_name() for run in runs}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    labels: dict[str, str] = {}
    for run in runs:
        name = names[run.id]
        if counts[name] > 1:
            created = run.status().created
            name += time.strftime(" (%d %b %H:%M:%S)", time.localtime(created)) if created else f" ({run.id})"
        labels[run.id] = name
    taken: dict[str, int] = {}
    for label in labels.values():
        taken[label] = taken.get(label, 0) + 1
    return {run_id: (f"{label} [{run_id}]" if taken[label] > 1 else label) for run_id, label in labels.items()}


# ------------------------------------------------------------- the draft of the next run
DRAFT_FILE = "choices.json"  # below a workspace: the app's choices for its next run


def save_draft(workspace: Workspace, draft: dict[str, Any]) -> None:
    """Keep the app's draft of the next run (``RunConfig.to_dict()``) in ``workspace``, so that it
    survives a refresh; whole or not at all (a full disk raises ``DiskFull``, an ``OSError``)."""
    atomic.write_json(workspace.root / DRAFT_FILE, draft)


def read_draft(workspace: Workspace) -> Any:
    """The draft ``save_draft`` kept, as read (None when there is none or it is damaged)."""
    return atomic.read_json(workspace.root / DRAFT_FILE)
