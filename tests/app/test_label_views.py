"""Domain experts' data in the app: the class-balancing suggestion with its one click (Data and
Train pages), and the likely mislabelled images on the Results page."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.app.conftest import no_exceptions

SUGGEST_BUTTON = "Balance the classes in training (weighted loss)"


@pytest.fixture
def imbalanced_dataset(session_workspace, tmp_path):
    """Red 12, blue 3 (4x): above the ratio where balancing is suggested. A class name that is
    Markdown, to check it is shown as typed."""
    from tests.conftest import write_image_folder
    from tl_core.data import ingest
    from tl_core.data.catalog import DatasetCatalog

    folder = write_image_folder(tmp_path / "imb", {"red": 12, "blue": 3}, size=(24, 16))
    (folder / "blue").rename(folder / "**blue**")
    dest = DatasetCatalog(session_workspace).new_dir("imb")
    ingest(folder, dest)
    return dest.name


def _texts(at) -> str:
    return " ".join(t.value for t in at.text)


def test_the_data_page_suggests_balancing_and_one_click_turns_it_on(app, imbalanced_dataset):
    app.query_params["dataset"] = imbalanced_dataset
    app.switch_page("pages/1_data.py").run()
    no_exceptions(app)
    assert "'**blue**' only 3" in _texts(app)  # the class name as text, not bold Markdown
    assert any("per-class table" in m.value for m in app.markdown)  # the trade-off, in words
    next(b for b in app.button if b.label == SUGGEST_BUTTON).click().run()
    no_exceptions(app)
    assert app.session_state["tl_studio_state"].draft.train.balance == "weighted_loss"
    assert not any(b.label == SUGGEST_BUTTON for b in app.button)  # said as on, no second click
    assert any("balanced in training" in m.value for m in app.markdown)

    # The Train page starts from the choice, and a run started there records it.
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert app.radio(key="balance").value == "weighted_loss"
    app.radio(key="balance").set_value("sampler").run()
    no_exceptions(app)
    assert app.session_state["tl_studio_state"].draft.train.balance == "sampler"


def test_the_train_page_offers_the_click_and_a_balanced_dataset_gets_no_suggestion(app, imbalanced_dataset,
                                                                                   tiny_dataset):
    app.query_params["dataset"] = imbalanced_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert app.radio(key="balance").value == "none"
    next(b for b in app.button if b.label == SUGGEST_BUTTON).click().run()
    no_exceptions(app)
    assert app.radio(key="balance").value == "weighted_loss"

    app.query_params["dataset"] = tiny_dataset  # 8 and 8
    app.session_state["tl_studio_state"].select_dataset(tiny_dataset)
    app.run()
    no_exceptions(app)
    assert not any(b.label == SUGGEST_BUTTON for b in app.button)


def test_results_lists_a_misfiled_image_with_given_and_suggested_class(app, trained_run,  # noqa: F811 - fixture
                                                                       session_workspace):
    """The trained run's dataset, copied, with one red image filed under blue; the run points at
    the copy. A click lists it (thumbnail, given and suggested class) with its fixes."""
    from tl_core.data import Dataset

    source = trained_run.dataset_dir()
    copy = session_workspace.datasets_dir / "colours-copy"
    shutil.copytree(source, copy)
    meta = json.loads((copy / "dataset.json").read_text())
    misfiled = next(r for r in meta["records"] if r["label"] == "red")
    misfiled["label"] = "blue"
    (copy / "dataset.json").write_text(json.dumps(meta))
    trained_run.record_dataset(copy)

    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    assert any(s.value == "Likely mislabelled images" for s in app.subheader)
    pictures_before = len(app.get("image"))
    app.button(key="mislabelled_go").click().run()
    no_exceptions(app)
    listed = [t.value for t in app.text if "filed under" in t.value]
    name = misfiled["path"].split("/")[-1]
    assert listed and listed[0].startswith(f"{name}: filed under 'blue', looks like 'red'")
    assert len(app.get("image")) == pictures_before + len(listed)  # a thumbnail beside each

    # "Move to 'red'" (first, one click) files it back through the fixes API: it leaves the list,
    # and the page says what changed, with an Undo.
    next(b for b in app.button if b.label == "Move to 'red'" and b.key.startswith("mislabelled_")).click().run()
    no_exceptions(app)
    labels = {r.path: r.label for r in Dataset.load(copy).records}
    assert labels[misfiled["path"]] == "red"
    assert not any(t.value.startswith(f"{name}: filed under") for t in app.text)
    assert any("Moved 1 image to 'red'" in t.value for t in app.text)
    assert any(b.key == "mislabelled_undo_last" for b in app.button)
