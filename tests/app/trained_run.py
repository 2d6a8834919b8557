"""A real tiny run (mobilenet_v2 feature extractor, 1 epoch on 2 colour classes), trained once per
test session and copied into each test's session workspace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

_TRAINED: dict[str, Path] = {}  # one training per session, even when several modules import the fixture


def train_tiny_run(root: Path) -> Path:
    """Train the run under ``root`` (its own workspace); returns the run folder."""
    from tests.conftest import write_image_folder
    from tl_core.config import DataConfig, RunConfig, TrainConfig
    from tl_core.data import ingest
    from tl_core.data.catalog import DatasetCatalog
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train
    from tl_core.workspace import Workspace

    workspace = Workspace(root)
    folder = write_image_folder(root / "src", {"red": 10, "blue": 10})
    dest = DatasetCatalog(workspace).new_dir("colours")
    ingest(folder, dest)
    config = RunConfig(data=DataConfig(source=str(dest), dataset_dir=str(dest), val_fraction=0.3, augment="none"),
                       train=TrainConfig(epochs=1, batch_size=8, lr=1e-2, schedule="constant"), name="tiny")
    run = RunStore(workspace).create(config)
    train(config, run, workspace)
    return run.dir


@pytest.fixture
def trained_run(tmp_path_factory, session_workspace):
    """A finished run in the test's session workspace (the dataset stays in the shared copy)."""
    if "dir" not in _TRAINED:
        _TRAINED["dir"] = train_tiny_run(tmp_path_factory.mktemp("trained"))
    from tl_core.runs import RunStore

    target = session_workspace.runs_dir / _TRAINED["dir"].name
    if not target.exists():
        shutil.copytree(_TRAINED["dir"], target)
    return RunStore(session_workspace).get(target.name)
