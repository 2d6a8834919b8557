"""Runs: one folder per training run under ``workspace.runs_dir``.

A run folder holds ``config.json`` (enough to re-run it alone), ``status.json``, the event log
``events.jsonl`` (one JSON event per line, appended), ``classes.json``, ``checkpoints/{best,last}.pt``
and evaluation results. Whole-file writes are atomic, and the event log is only ever appended
with complete lines, so a page polling from another process always sees a consistent state.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .config import RunConfig
from .errors import RunNotFound
from .events import Event, from_dict, to_dict
from .workspace import Workspace, is_safe_id

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("finished", "failed", "cancelled")


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

    def write_json(self, name: str, obj: Any) -> None:
        atomic.write_json(self.dir / name, obj)

    def read_json(self, name: str, default: Any = None) -> Any:
        return atomic.read_json(self.dir / name, default=default)

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return atomic.read_json(self.dir / "status.json", default={"state": "unknown"})

    def set_status(self, state: str, **info: Any) -> None:
        status = self.status()
        status.update(info)
        status.update(state=state, updated=time.time())
        self.write_json("status.json", status)

    @property
    def state(self) -> str:
        return self.status().get("state", "unknown")

    # -- events --------------------------------------------------------------------------
    def append_event(self, event: Event) -> None:
        line = json.dumps(to_dict(event), default=str) + "\n"
        # One write() of a whole line on an O_APPEND file: readers never see half a line
        # from us, and read_events() ignores a trailing partial line anyway.
        fd = os.open(self.dir / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def read_events(self, start_line: int = 0) -> tuple[list[Event], int]:
        """Events from line ``start_line`` on, and the line to start from next time."""
        path = self.dir / "events.jsonl"
        if not path.exists():
            return [], start_line
        events: list[Event] = []
        line_no = 0
        with path.open("r", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line_no <= start_line:
                    continue
                if not line.endswith("\n"):  # being written right now
                    return events, line_no - 1
                events.append(from_dict(json.loads(line)))
        return events, max(line_no, start_line)

    # -- stop flag -----------------------------------------------------------------------
    def request_stop(self) -> None:
        atomic.write_bytes(self.dir / "STOP", b"stop requested\n")

    def clear_stop(self) -> None:
        (self.dir / "STOP").unlink(missing_ok=True)

    def stop_requested(self) -> bool:
        return (self.dir / "STOP").exists()

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_path(self, kind: str = "best") -> Path:
        return self.dir / "checkpoints" / f"{kind}.pt"

    def save_checkpoint(self, kind: str, state: dict[str, Any]) -> Path:
        path = self.checkpoint_path(kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, kind: str = "best", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        path = self.checkpoint_path(kind)
        if not path.exists():
            raise RunNotFound(f"Run {self.id} has no {kind} checkpoint yet; train it first "
                              "(or wait for its first epoch to finish).")
        return torch.load(path, map_location=map_location, weights_only=True)

    def load_model(self, kind: str = "best", map_location: str | torch.device = "cpu"):
        """The trained TransferModel in eval mode, its weights from the ``kind`` checkpoint."""
        from .backbones import build_model

        cfg = self.config
        state = self.load_checkpoint(kind, map_location=map_location)
        model = build_model(cfg.model.backbone, len(self.classes), cfg.model.head, pretrained=False)
        model.load_state_dict(state["model"])
        model.pretrained = cfg.model.pretrained
        return model.eval()

    def summary(self) -> dict[str, Any]:
        """One row for run lists: id, name, state, backbone, best metrics, created time."""
        status = self.status()
        try:
            cfg = self.config
            backbone, name = cfg.model.backbone, cfg.name
            pretrained = cfg.model.pretrained
        except (OSError, ValueError):
            backbone, name, pretrained = "?", "", True
        return {"id": self.id, "name": name or self.id, "state": status.get("state", "unknown"),
                "backbone": backbone, "pretrained": pretrained, "created": status.get("created"),
                "best_val_acc": status.get("best_val_acc"), "epoch": status.get("epoch"),
                "error": status.get("error")}


class RunStore:
    """The runs of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.runs_dir

    def create(self, config: RunConfig) -> Run:
        config.validate()
        run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        run_dir = self.root / run_id
        run_dir.mkdir(parents=True)
        run = Run(run_dir)
        atomic.write_bytes(run_dir / "config.json", config.to_json().encode("utf-8"))
        run.write_json("status.json", {"state": "created", "created": time.time(),
                                       "updated": time.time()})
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

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.state in ACTIVE_STATES:
            from .errors import JobError

            raise JobError(f"Run {run_id} is still {run.state}; stop it before deleting it.")
        shutil.rmtree(run.dir)
