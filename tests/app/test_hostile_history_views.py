"""Review: the new views (a dataset's history and Undo, the near-duplicate and leak sections, the
run's 'trained on version N' caption) keep hostile class and dataset names as text once the
dataset has been fixed, as the round's first review asked; the pages and the checks are those of
tests/app/test_hostile_names.py."""

from __future__ import annotations

import json

import pytest

from tests.app.conftest import SESSION, no_exceptions
from tests.app.test_hostile_names import CLASSES, _findings, hostile  # noqa: F401 - hostile: the fixture

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("page", ["pages/1_data.py", "pages/4_results.py"])
def test_a_fixed_hostile_dataset_shows_its_history_as_text(app, hostile, home, page):  # noqa: F811
    from tl_core.data import Dataset, fixes
    from tl_core.workspace import Workspace

    dataset_id, run_id = hostile
    root = Workspace(home).for_session(SESSION).datasets_dir / dataset_id
    ds = Dataset.load(root)
    record = next(r for r in ds.records if r.label != CLASSES[2])
    fixes.relabel(root, [record.path], CLASSES[2], reason=f"**{CLASSES[1]}**")  # version 2: history and Undo
    config = Workspace(home).for_session(SESSION).runs_dir / run_id / "config.json"
    data = json.loads(config.read_text())
    data["data"]["dataset_version"] = 1  # as a run started from the Train page records it
    config.write_text(json.dumps(data))
    app.query_params.update(dataset=dataset_id, run=run_id)
    app.switch_page(page).run()
    no_exceptions(app)
    shown = " ".join(str(t.value) for t in app.text)
    if page == "pages/1_data.py":
        assert f"It would undo: Moved 1 image to '{CLASSES[2]}'." in shown
    else:
        # (the run's dataset is the fixture's original, version 1: the caption with the hostile dataset name)
        assert any(str(c.value).startswith("Trained on version 1 of") for c in app.caption)
    assert _findings(app) == []
