"""Train page: "GPUs for this run" shows only on a machine with more than one GPU, and its choice
goes into the run's config (it survives a refresh, as the other settings do)."""

from __future__ import annotations

from tests.app.conftest import REPO, SESSION, no_exceptions


def test_no_gpu_choice_on_a_machine_with_one_gpu_or_none(app, tiny_dataset, monkeypatch):
    from tl_core.jobs import launch as jobs

    monkeypatch.setattr(jobs, "gpu_count", lambda: 1)
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert not [s for s in app.select_slider if s.label == "GPUs for this run"]


def test_the_gpus_for_a_run_are_chosen_on_a_machine_with_several(app, tiny_dataset, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tl_core.jobs import launch as jobs

    monkeypatch.setattr(jobs, "gpu_count", lambda: 4)
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    gpus = app.select_slider(key="nproc")
    assert gpus.label == "GPUs for this run"
    assert list(gpus.options) == ["1", "2", "3", "4"] and gpus.value == 1
    gpus.set_value(2).run()
    no_exceptions(app)

    refreshed = AppTest.from_file(str(REPO / "app.py"), default_timeout=30)
    refreshed.query_params["s"] = SESSION
    refreshed.query_params["dataset"] = tiny_dataset
    refreshed.switch_page("pages/3_train.py").run()
    no_exceptions(refreshed)
    assert refreshed.select_slider(key="nproc").value == 2  # kept in the draft run config
