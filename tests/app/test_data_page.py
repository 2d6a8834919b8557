"""Data page: one-click sample, health report, split, offline download message, URL ids."""

from __future__ import annotations

from tests.app.conftest import SESSION, no_exceptions


def test_first_visit_explains_and_offers_the_sample(app):
    app.run()
    no_exceptions(app)
    assert app.title[0].value == "Your images"
    assert app.expander  # "learn more" for the teacher
    assert any("Use the sample dataset" in b.label for b in app.button)
    assert app.query_params["s"] == [SESSION] or app.query_params["s"] == SESSION


def test_sample_in_one_click_shows_health_report_and_split(app):
    app.run()
    app.button(key="use_sample").click().run()
    no_exceptions(app)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Classes"] == "4" and int(metrics["Images"]) > 0
    assert app.query_params["dataset"]  # the dataset id is in the URL
    assert any(s.value == "3 · Split" for s in app.subheader)
    assert not app.error


def test_refresh_comes_back_to_the_same_dataset(app, tiny_dataset):
    from streamlit.testing.v1 import AppTest

    again = AppTest.from_file(app._script_path, default_timeout=60)
    again.query_params["s"] = SESSION
    again.query_params["dataset"] = tiny_dataset
    again.run()
    no_exceptions(again)
    assert {m.label: m.value for m in again.metric}["Images"] == "16"


def test_download_when_offline_says_so(app, monkeypatch):
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    app.run()
    app.button(key="download").click().run()
    no_exceptions(app)
    assert any("offline" in e.value for e in app.error)


def test_a_dataset_just_added_becomes_current_and_a_pick_switches_back(app, tiny_dataset):
    app.query_params["dataset"] = tiny_dataset
    app.run()
    assert {m.label: m.value for m in app.metric}["Images"] == "16"
    app.button(key="use_sample").click().run()
    no_exceptions(app)
    sample_id = app.query_params["dataset"]
    sample_id = sample_id[0] if isinstance(sample_id, list) else sample_id
    assert sample_id != tiny_dataset and app.selectbox(key="dataset_pick").value == sample_id
    assert {m.label: m.value for m in app.metric}["Classes"] == "4"
    app.selectbox(key="dataset_pick").set_value(tiny_dataset).run()
    no_exceptions(app)
    assert {m.label: m.value for m in app.metric}["Images"] == "16"
    got = app.query_params["dataset"]
    assert (got[0] if isinstance(got, list) else got) == tiny_dataset
