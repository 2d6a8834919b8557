"""An experiment's record and its folder: ``<workspace>/experiments/<id>/experiment.json``.

An ``Experiment`` is a name, a kind (``KINDS``), the base ``RunConfig`` the user set up, and its
members: one normal run each (listed on the Results and Runs pages, labelled
"<experiment> · <member>"). The runs keep their own folders, so the experiment file only lists
their ids. Members of a sweep carry the line they belong to (``Member.series``) and, where the
plan fixes it, their x (frozen groups; for "Which backbone?" the published accuracy and its kind).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tl_core import atomic
from tl_core.config import RunConfig
from tl_core.errors import ConfigError, ExperimentNotFound, TLError
from tl_core.workspace import Workspace, is_safe_id

KINDS: dict[str, str] = {"strategies": "Compare strategies", "data_size": "How much data is enough",
                         "freeze_depth": "Freeze depth", "backbones": "Which backbone?"}
EXPERIMENT_FILE = "experiment.json"


@dataclass(frozen=True)
class Member:
    key: str  # what distinguishes it within its kind (a strategy key for "strategies")
    label: str  # for people: legends and tables
    run_id: str = ""  # "" until its run exists
    config: RunConfig | None = None
    # sweeps: the line it belongs to (a strategy, a learning-rate rule); "backbones": what its backbone's
    # published accuracy measures ("top-1", "linear probe", "zero-shot"); "" otherwise
    series: str = ""
    # its x when the plan fixes it: frozen body groups (freeze depth), the backbone's published ImageNet
    # accuracy in % ("backbones"; None where none is published)
    x: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "run_id": self.run_id,
                "config": self.config.to_dict() if self.config else None, "series": self.series, "x": self.x}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        config = data.get("config")
        x = data.get("x")
        return cls(key=data["key"], label=data["label"], run_id=data.get("run_id", ""),
                   config=RunConfig.from_dict(config) if config else None, series=data.get("series", ""),
                   x=None if x is None else float(x))


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    kind: str  # a KINDS key
    base: RunConfig  # the settings the members were derived from
    members: tuple[Member, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # the kind's choices, e.g. {"top_n": 2}
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "base": self.base.to_dict(),
                "members": [m.to_dict() for m in self.members], "options": dict(self.options),
                "created": self.created}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        try:
            return cls(id=data["id"], name=data["name"], kind=data["kind"], base=RunConfig.from_dict(data["base"]),
                       members=tuple(Member.from_dict(m) for m in data.get("members", ())),
                       options=dict(data.get("options", {})), created=float(data.get("created", 0.0)))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"This experiment file is damaged ({exc}); its runs are still on the Runs page. "
                              "Start the comparison again to get a new one.") from exc


class ExperimentStore:
    """The experiments of one workspace, in ``<workspace>/experiments/<id>/experiment.json``."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.experiments_dir

    def new_id(self) -> str:
        return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)

    def save(self, experiment: Experiment) -> None:
        atomic.write_json(self.root / experiment.id / EXPERIMENT_FILE, experiment.to_dict())

    def get(self, experiment_id: str) -> Experiment:
        path = self.root / experiment_id / EXPERIMENT_FILE if is_safe_id(experiment_id) else None
        data = atomic.read_json(path) if path else None
        if data is None:
            raise ExperimentNotFound(f"No experiment '{experiment_id}' in this workspace; pick one from "
                                     "the list of past experiments or start a new comparison.")
        return Experiment.from_dict(data)

    def list(self) -> list[Experiment]:
        """Experiments, newest first (a damaged file is left out)."""
        found = []
        for path in sorted(self.root.glob(f"*/{EXPERIMENT_FILE}"), reverse=True):
            try:
                found.append(self.get(path.parent.name))
            except TLError:
                continue
        return found
