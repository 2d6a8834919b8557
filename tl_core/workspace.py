"""Where TL Studio keeps datasets, runs and caches.

The default is ``~/.tl_studio``; ``TL_STUDIO_HOME`` changes it. The app gives each browser
session its own sub-workspace (``Workspace.for_session``) so that on a shared classroom server
one student's uploads and runs are not listed to another.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "TL_STUDIO_HOME"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def default_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".tl_studio").expanduser()


@dataclass(frozen=True)
class Workspace:
    root: Path  # everything of this workspace lives below this folder

    @classmethod
    def default(cls) -> Workspace:
        return cls(default_home())

    def for_session(self, session_id: str) -> Workspace:
        """A private sub-workspace; ``session_id`` must be a short [A-Za-z0-9_-] token."""
        if not _SAFE_ID.match(session_id):
            raise ValueError(f"invalid session id {session_id!r}")
        return Workspace(sessions_dir(self.root) / session_id)

    @property
    def datasets_dir(self) -> Path:
        return self._ensure(self.root / "datasets")

    @property
    def runs_dir(self) -> Path:
        return self._ensure(self.root / "runs")

    @property
    def experiments_dir(self) -> Path:
        """Experiments (several runs compared); each lists its runs, which stay in runs/."""
        return self._ensure(self.root / "experiments")

    @property
    def cache_dir(self) -> Path:
        """Decoded-image and feature caches; safe to delete at any time."""
        return self._ensure(self.root / "cache")

    @staticmethod
    def _ensure(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path


def sessions_dir(home: Path | None = None) -> Path:
    """The folder holding every session's workspace on the server (not created here)."""
    return Path(home or default_home()) / "sessions"


def is_safe_id(value: str) -> bool:
    return bool(_SAFE_ID.match(value))


def is_shared_dataset(folder: Path | str) -> bool:
    """True for a folder in a server's shared datasets (``<home>/shared/datasets/<id>``)."""
    folder = Path(folder)
    return folder.parent.name == "datasets" and folder.parent.parent.name == "shared"


def cache_dir_for(dataset_dir: Path | str, workspace: Workspace) -> Path:
    """Where a dataset's decoded images and features are cached: the shared cache for a shared
    dataset (so the class decodes it once), else the workspace's own."""
    folder = Path(dataset_dir)
    if is_shared_dataset(folder):
        return Workspace(folder.parent.parent).cache_dir
    return workspace.cache_dir
