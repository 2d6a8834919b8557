"""Model page: backbone table, freezing presets and the live parameter count."""

from __future__ import annotations

import re

from tests.app.conftest import no_exceptions


def trainable_line(at) -> tuple[int, int]:
    line = next(m.value for m in at.markdown if "parameters will train" in m.value)
    numbers = [int(n.replace(",", "")) for n in re.findall(r"[\d,]{2,}", line)]
    return numbers[0], numbers[1]


def test_defaults_are_mobilenet_v2_as_a_feature_extractor(app):
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    assert app.selectbox(key="backbone_pick").value == "mobilenet_v2"
    assert app.radio(key="freeze_mode").value == "feature_extractor"
    table = app.dataframe[0].value  # the backbone table
    assert "mobilenet_v2" in list(table["name"])
    assert bool(table.set_index("name").loc["mobilenet_v2", "weights here"])  # bundled weights
    trainable, total = trainable_line(app)
    assert 0 < trainable < total / 100  # only the head


def test_presets_change_what_trains(app):
    app.switch_page("pages/2_model.py").run()
    head_only, total = trainable_line(app)
    app.radio(key="freeze_mode").set_value("last_n").run()
    no_exceptions(app)
    top_one, _ = trainable_line(app)
    app.radio(key="freeze_mode").set_value("full").run()
    everything, total_again = trainable_line(app)
    assert head_only < top_one < everything == total == total_again


def test_classical_head_with_fine_tuning_warns(app):
    app.switch_page("pages/2_model.py").run()
    app.radio(key="freeze_mode").set_value("full").run()
    app.selectbox(key="head_kind").set_value("logreg").run()
    no_exceptions(app)
    assert any("Feature extractor" in w.value for w in app.warning)


def test_model_choices_come_back_after_a_refresh(home):
    """A refresh is a new script session with the same URL: the choices are read back from disk."""
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO, SESSION

    first = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    first.query_params["s"] = SESSION
    first.switch_page("pages/2_model.py").run()
    first.radio(key="freeze_mode").set_value("full").run()
    no_exceptions(first)

    refreshed = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    refreshed.query_params["s"] = SESSION
    refreshed.switch_page("pages/2_model.py").run()
    no_exceptions(refreshed)
    assert refreshed.radio(key="freeze_mode").value == "full"


def test_option_lists_are_the_configs_choices(app):
    from tl_core.config import FREEZE_MODE_LABELS, HEAD_LABELS, FreezeMode, HeadKind, choices

    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    assert list(app.radio(key="freeze_mode").options) == [FREEZE_MODE_LABELS[m] for m in choices(FreezeMode)]
    assert list(app.selectbox(key="head_kind").options) == [HEAD_LABELS[k] for k in choices(HeadKind)]
