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


def test_an_opened_runs_metrics_are_shown_as_text_on_results(app, trained_run):  # noqa: F811
    """metrics.json of an opened project is the zip's: its best epoch is quoted in a caption."""
    from tl_core import atomic

    metrics = atomic.read_json(trained_run.dir / "metrics.json")
    metrics["best_epoch"] = ERROR
    metrics["history"] = [{"epoch": 1, "val_acc": 0.9}, {"epoch": 2, "val_acc": 0.5}]
    atomic.write_json(trained_run.dir / "metrics.json", metrics)
    app.query_params.update(run=trained_run.id)
    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    assert any("Log in" in str(c.value) for c in app.caption), "the note is not shown at all"
    assert [f for f in _findings(app) if f[0] != "metric"] == []  # a metric's value is plain text
