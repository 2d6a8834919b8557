"""Runs page: re-run, edit and run (the Train page then shows the run's settings), rename shown
as text, delete a run and a dataset only after a confirmation; names on the Results page."""

from __future__ import annotations

import dataclasses

import pytest

from tests.app.conftest import no_exceptions

TRICKY = "**bold** [x](http://e.com)"


def runs_table(at):
    """The table of runs on the page (the one with a state and an id column)."""
    return next(d.value for d in at.dataframe if {"state", "id"} <= set(d.value.columns))


@pytest.fixture
def runs_page(app, trained_run):  # noqa: F811
    app.query_params["run"] = trained_run.id
    app.switch_page("pages/7_runs.py").run()
    no_exceptions(app)
    return app


def test_rename_is_stored_and_shown_as_text_everywhere(runs_page, trained_run):  # noqa: F811
    at = runs_page
    at.text_input(key=f"rename_name_{trained_run.id}").set_value(TRICKY)
    next(b for b in at.button if b.label == "Rename").click().run()
    no_exceptions(at)
    assert trained_run.display_name() == TRICKY
    markdown = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "http://e.com" not in markdown  # never through Markdown
    assert runs_table(at)["name"].tolist() == [TRICKY]
    assert at.selectbox(key="manage_run").format_func(trained_run.id).startswith(TRICKY)

    at.switch_page("pages/4_results.py").run()
    no_exceptions(at)
    assert at.selectbox(key="results_run").format_func(trained_run.id).startswith(TRICKY)
    assert runs_table(at)["name"].tolist() == [TRICKY]
    assert "http://e.com" not in " ".join(m.value for m in at.markdown)


def test_rerun_starts_the_same_config_as_a_new_run_and_opens_train(runs_page, trained_run, monkeypatch):  # noqa: F811
    from tl_core.jobs import launch as jobs
    from tl_core.runs import RunStore

    launched = []
    monkeypatch.setattr(jobs, "_launch", lambda ws, run, home, resume: launched.append((run.id, resume)))
    store = RunStore(trained_run.dir.parent.parent and _workspace_of(trained_run))
    runs_page.button(key="manage_rerun").click().run()
    no_exceptions(runs_page)
    new = [r for r in store.list() if r.id != trained_run.id]
    assert len(new) == 1 and launched == [(new[0].id, False)]
    again, before = new[0].config, trained_run.config  # the same, but for the dataset version it starts on
    assert again.data.dataset_version == 1
    assert dataclasses.replace(again, data=dataclasses.replace(again.data, dataset_version=0)) == before
    assert runs_page.query_params["run"] == [new[0].id] or runs_page.query_params["run"] == new[0].id
    assert runs_page.title[0].value == "Train"


def _workspace_of(run):
    from tl_core.workspace import Workspace

    return Workspace(run.dir.parent.parent)


def test_edit_and_run_loads_the_settings_into_the_train_page(app, trained_run, tiny_dataset):  # noqa: F811
    app.query_params["run"] = trained_run.id
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    assert app.number_input(key="epochs").value == 10  # the defaults before
    app.switch_page("pages/7_runs.py").run()
    app.button(key="manage_edit").click().run()
    no_exceptions(app)
    assert app.title[0].value == "Train"
    config = trained_run.config
    assert app.number_input(key="epochs").value == config.train.epochs == 5  # the session's tiny run
    assert app.select_slider(key="lr").value == config.train.lr == 1e-2
    assert app.select_slider(key="batch_size").value == config.train.batch_size == 8
    assert app.radio(key="augment").value == "none"
    assert app.session_state["tl_studio_state"].draft.train == config.train


def test_resume_is_offered_only_for_a_stopped_or_failed_run(runs_page, trained_run, monkeypatch):  # noqa: F811
    from tl_core.jobs import launch as jobs

    assert runs_page.button(key="manage_resume").disabled  # finished: nothing to resume
    trained_run.mark_cancelled()
    launched = []
    monkeypatch.setattr(jobs, "_launch", lambda ws, run, home, resume: launched.append((run.id, resume)))
    runs_page.run()
    assert not runs_page.button(key="manage_resume").disabled
    runs_page.button(key="manage_resume").click().run()
    no_exceptions(runs_page)
    assert launched == [(trained_run.id, True)]


def test_delete_a_run_asks_first(runs_page, trained_run):  # noqa: F811
    at = runs_page
    at.button(key="manage_delete").click().run()
    assert trained_run.dir.exists() and at.warning and "Delete this run" in at.warning[0].value
    at.button(key="manage_delete_no").click().run()
    assert trained_run.dir.exists() and not at.warning
    at.button(key="manage_delete").click().run()
    at.button(key="manage_delete_yes").click().run()
    no_exceptions(at)
    assert not trained_run.dir.exists()
    assert any("No runs yet" in i.value for i in at.info)


def test_delete_a_dataset_asks_first(app, session_workspace, tiny_dataset):
    from tl_core.data.catalog import DatasetCatalog

    app.switch_page("pages/7_runs.py").run()
    app.button(key="manage_dataset_delete").click().run()
    assert DatasetCatalog(session_workspace).list()
    app.button(key="manage_dataset_delete_yes").click().run()
    no_exceptions(app)
    assert DatasetCatalog(session_workspace).list() == []


def test_results_explain_a_best_epoch_that_is_not_the_accuracy_peak(app, trained_run):  # noqa: F811
    metrics = trained_run.read_metrics()
    metrics.update(best_epoch=1, history=[{"epoch": 1, "val_loss": 0.3, "val_acc": 0.8},
                                          {"epoch": 2, "val_loss": 0.4, "val_acc": 0.9}])
    trained_run.write_metrics(metrics)
    app.query_params["run"] = trained_run.id
    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    from tl_core.markup import escape_markdown

    said = escape_markdown("Best epoch 1 (lowest validation loss); validation accuracy peaked at epoch 2")
    assert any(said in c.value for c in app.caption)  # escaped: metrics.json may come from an opened project


def _sidebar_only():
    from tl_ui import get_state, sidebar

    sidebar.render(get_state())


def test_the_sidebar_names_the_current_run_as_text(home, trained_run):  # noqa: F811
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import SESSION

    trained_run.rename(TRICKY)
    at = AppTest.from_function(_sidebar_only, default_timeout=30)
    at.query_params.update(s=SESSION, run=trained_run.id)  # (app.py's sidebar is not in AppTest's tree)
    at.run()
    no_exceptions(at)
    assert TRICKY in [t.value for t in at.sidebar.text]
    assert "http://e.com" not in " ".join(m.value for m in at.sidebar.markdown)
