"""AppTest fixtures: the app in a temporary server home, with a fixed session id."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SESSION = "apptest1"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TL_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    return tmp_path / "home"


@pytest.fixture
def session_workspace(home):
    from tl_core.workspace import Workspace

    return Workspace(home).for_session(SESSION)


@pytest.fixture
def app(home):
    """The whole app (app.py with st.navigation), session id fixed through the URL."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["s"] = SESSION
    return at


@pytest.fixture
def tiny_dataset(session_workspace, tmp_path):
    """A 2-class dataset of 16 small images in the session's workspace; returns its id."""
    from tests.conftest import write_image_folder
    from tl_core.data import ingest
    from tl_core.data.catalog import DatasetCatalog

    folder = write_image_folder(tmp_path / "tiny", {"red": 8, "blue": 8})
    dest = DatasetCatalog(session_workspace).new_dir("tiny")
    ingest(folder, dest)
    return dest.name


@pytest.fixture
def tiny_draft(session_workspace):
    """The session's saved settings with the tiny test backbone picked (as the Model page would),
    so a job the Train page starts trains it: the page's plumbing, in a fraction of a second."""
    from tests.tiny_backbone import save_tiny_draft

    save_tiny_draft(session_workspace)


@pytest.fixture
def trained_run(trained_run_dir, session_workspace):
    """The session's tiny run (tests/conftest.py), copied into this test's session workspace (the
    dataset stays in the shared copy)."""
    from tl_core.runs import RunStore

    target = session_workspace.runs_dir / trained_run_dir.name
    if not target.exists():
        shutil.copytree(trained_run_dir, target)
    return RunStore(session_workspace).get(target.name)


def no_exceptions(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
