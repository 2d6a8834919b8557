"""Review: a failed run's error message is text on the Train and Results pages. It quotes what the
user named (a class, a file) and, in a project opened from someone else's zip, it is whatever that
zip's status.json says: a link or an image there must not become one on the page."""

from __future__ import annotations

import pytest

from tests.app.conftest import no_exceptions
from tests.app.test_hostile_names import _findings

ERROR = "[Log in](http://h/x) ![t](http://h/p.png) <b>x</b> **bold**"


@pytest.mark.parametrize("page", ["pages/3_train.py", "pages/4_results.py"])
def test_a_failed_runs_error_is_shown_as_text(app, session_workspace, tiny_dataset, page):
    from tl_core import atomic
    from tl_core.config import DataConfig, RunConfig
    from tl_core.runs import RunStore

    folder = session_workspace.datasets_dir / tiny_dataset
    run = RunStore(session_workspace).create(RunConfig(data=DataConfig(source=str(folder), dataset_dir=str(folder))))
    status = atomic.read_json(run.dir / "status.json") | {"state": "failed", "error": ERROR}
    atomic.write_json(run.dir / "status.json", status)  # as an opened project brings it
    app.query_params.update(dataset=tiny_dataset, run=run.id)
    app.switch_page(page).run()
    no_exceptions(app)
    assert any("Log in" in str(e.value) for e in [*app.error, *app.text]), "the error is not shown at all"
    assert _findings(app) == []
