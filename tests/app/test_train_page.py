"""Train page: start a real job in the worker process, follow it, stop one."""

from __future__ import annotations

import time

from tests.app.conftest import no_exceptions


def follow(at, until: tuple[str, ...], timeout: float = 180.0) -> str:
    """Re-run the page (run_every fragments do not tick in AppTest) until the run's state is reached."""
    from tl_core.runs import RunStore  # noqa: F401

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        no_exceptions(at)
        text = " ".join(x.value for x in [*at.success, *at.warning, *at.error])
        for state, marker in (("finished", "Training finished"), ("cancelled", "Training was stopped"),
                              ("failed", "failed")):
            if state in until and marker in text:
                return state
        time.sleep(1.0)
    raise AssertionError("the run did not reach " + "/".join(until))


def test_without_a_dataset_the_page_points_to_data(app):
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert any("choose a dataset" in i.value for i in app.info)


def test_start_trains_in_a_worker_and_shows_curves(app, tiny_dataset, tiny_draft):
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    app.number_input(key="epochs").set_value(2)
    app.toggle(key="feature_cache").set_value(True)
    app.button(key="start").click().run()
    no_exceptions(app)
    run_id = app.query_params["run"]
    assert run_id
    assert follow(app, ("finished",)) == "finished"
    assert any("Validation accuracy" == m.label and m.value != "—" for m in app.metric)
    # curves are plotly charts drawn from the run folder's event log
    assert len(app.get("plotly_chart")) >= 3


def test_stop_keeps_the_run_and_marks_it_cancelled(app, tiny_dataset, tiny_draft):
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    app.number_input(key="epochs").set_value(200)
    app.toggle(key="feature_cache").set_value(False)
    app.select_slider(key="batch_size").set_value(4)
    app.button(key="start").click().run()
    no_exceptions(app)
    app.button(key="stop").click().run()
    assert follow(app, ("cancelled",)) == "cancelled"


def test_settings_come_back_after_a_refresh(app, tiny_dataset):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO, SESSION

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    app.number_input(key="epochs").set_value(23).run()
    app.selectbox(key="optimizer").set_value("sgd").run()
    app.radio(key="augment").set_value("standard").run()
    no_exceptions(app)
    assert app.number_input(key="epochs").value == 23  # a change is not undone on the next rerun

    refreshed = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    refreshed.query_params["s"] = SESSION
    refreshed.query_params["dataset"] = tiny_dataset
    refreshed.switch_page("pages/3_train.py").run()
    no_exceptions(refreshed)
    assert refreshed.number_input(key="epochs").value == 23
    assert refreshed.selectbox(key="optimizer").value == "sgd"
    assert refreshed.radio(key="augment").value == "standard"


def test_option_lists_are_the_configs_choices(app, tiny_dataset):
    from tl_core.config import AugmentPreset, Optimizer, Schedule, TrainConfig, choices

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert list(app.selectbox(key="optimizer").options) == list(choices(Optimizer))
    assert list(app.selectbox(key="schedule").options) == list(choices(Schedule))
    assert [o.split(":")[0] for o in app.radio(key="augment").options] == list(choices(AugmentPreset))
    assert app.selectbox(key="optimizer").value == TrainConfig().optimizer  # the defaults are the config's
    assert app.selectbox(key="schedule").value == TrainConfig().schedule


def test_settings_from_elsewhere_are_shown_not_a_crash(app, tiny_dataset, session_workspace):
    """*Edit and run* on a run made with the CLI (``--lr 0.1 --batch-size 24 --epochs 600``) or in an
    opened project loads values the sliders do not offer: the page shows them (it raised
    ``ValueError: 0.1 is not in iterable``)."""
    from tests.tiny_backbone import save_tiny_draft
    from tl_core.config import TrainConfig

    save_tiny_draft(session_workspace, train=TrainConfig(lr=0.1, batch_size=24, weight_decay=0.05, epochs=600,
                                                         label_smoothing=0.4, early_stopping_patience=60))
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert app.select_slider(key="lr").value == 0.1
    assert app.select_slider(key="batch_size").value == 24
    assert app.select_slider(key="weight_decay").value == 0.05
    assert app.number_input(key="epochs").value == 600
    assert app.number_input(key="patience").value == 60
    assert app.slider(key="label_smoothing").value == 0.4
