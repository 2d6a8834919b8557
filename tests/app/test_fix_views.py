"""Dataset fixes in the app (tl_ui.fix_views): one image's "move / remove" with its Undo, drop
duplicates and near-duplicate groups on the Data page, a shared dataset read-only for students,
and the Results page's galleries with the same controls."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import SESSION, no_exceptions
from tests.conftest import write_image_folder
from tl_core.data import Dataset, fixes, ingest


def _controls_page() -> None:
    """One image's controls, as any page uses them, and the dataset's labels as the test reads them."""
    import streamlit as st

    from tl_core.data import Dataset
    from tl_ui import fix_views, get_state

    state = get_state()
    ds = Dataset.load(state.dataset_dir())
    fix_views.image_fix_controls(ds, "images/red/0.jpg", key="one")
    st.text(f"version {ds.version}")


@pytest.fixture
def controls(home, tiny_dataset):
    at = AppTest.from_function(_controls_page, default_timeout=30)
    at.query_params["s"] = SESSION
    at.query_params["dataset"] = tiny_dataset
    return at


def _labels(root: Path) -> dict[str, str]:
    return {r.path: r.label for r in Dataset.load(root).records}


def test_move_and_remove_one_image_each_with_an_undo(controls, session_workspace, tiny_dataset):
    root = session_workspace.datasets_dir / tiny_dataset
    controls.run()
    no_exceptions(controls)
    assert controls.selectbox(key="one_to").options == ["blue"]  # the other classes only
    controls.button(key="one_move").click().run()
    no_exceptions(controls)
    assert _labels(root)["images/red/0.jpg"] == "blue" and Dataset.load(root).version == 2
    assert any("Moved 1 image to 'blue'." in t.value for t in controls.text)
    controls.button(key="one_undo_last").click().run()
    assert _labels(root)["images/red/0.jpg"] == "red" and Dataset.load(root).version == 1
    assert any(t.value == "Undone." for t in controls.text)

    controls.button(key="one_remove").click().run()
    no_exceptions(controls)
    assert "images/red/0.jpg" not in _labels(root) and (root / "images/red/0.jpg").exists()
    assert any("Not in the dataset any more" in c.value for c in controls.caption)
    assert [c.what for c in fixes.history(root)] == ["relabel", "undo", "remove"]


def test_a_shared_dataset_is_read_only_for_a_student(home, tmp_path):
    from tl_core.classroom import teacher as classroom

    dest = classroom.new_shared_dir("class set", home)
    ingest(write_image_folder(tmp_path / "src", {"red": 3, "blue": 3}, size=(24, 24)), dest)
    at = AppTest.from_function(_controls_page, default_timeout=30)
    at.query_params["s"] = SESSION
    at.query_params["dataset"] = dest.name
    at.run()
    no_exceptions(at)
    assert any("read-only" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "one_remove"]
    assert Dataset.load(dest).version == 1


def test_data_page_drops_exact_and_near_duplicates_and_undoes(app, session_workspace, tmp_path, real_photos):
    from tl_core.data.catalog import DatasetCatalog

    src = write_image_folder(tmp_path / "src", {"red": 4, "blue": 4}, size=(32, 32))
    shutil.copy(src / "red" / "0.jpg", src / "red" / "copy.jpg")
    cat = real_photos["chelsea"]
    cat.save(src / "blue" / "cat.jpg", quality=95)
    cat.resize((cat.width // 3, cat.height // 3)).save(src / "red" / "cat_small.jpg", quality=80)
    root = DatasetCatalog(session_workspace).new_dir("dups")
    ingest(src, root)
    app.query_params["dataset"] = root.name
    app.run()
    no_exceptions(app)
    assert any(c.value.startswith("Version 1 of this dataset") for c in app.caption)

    app.button(key="fixes_exact").click().run()
    no_exceptions(app)
    assert "images/red/copy.jpg" not in _labels(root) and Dataset.load(root).version == 2

    app.toggle(key="neardup").set_value(True).run()
    no_exceptions(app)
    assert any("near-identical image(s) in 1 group(s)" in t.value for t in app.text)  # the health report counts it
    assert any("classes differ: blue, red" in t.value for t in app.text)
    app.button(key="fixes_near_all").click().run()
    no_exceptions(app)
    assert "images/red/cat_small.jpg" not in _labels(root) and "images/blue/cat.jpg" in _labels(root)
    assert any("Dropped 1 image near-identical" in t.value for t in app.text)

    app.button(key="fixes_history_undo").click().run()
    no_exceptions(app)
    assert "images/red/cat_small.jpg" in _labels(root) and Dataset.load(root).version == 2

    merge = next(b for b in app.button if b.key and b.key.endswith("_merge"))  # the copies disagree
    app.selectbox(key=merge.key.replace("_merge", "_as")).set_value("red")
    merge.click().run()
    no_exceptions(app)
    labels = _labels(root)
    assert "images/red/cat_small.jpg" not in labels and labels["images/blue/cat.jpg"] == "red"


def test_results_galleries_offer_the_fix_controls(app, trained_run, tmp_path):  # noqa: F811 - fixture
    own = tmp_path / "own_copy"  # the trained run's dataset is shared by the tests: fix a copy
    shutil.copytree(trained_run.dataset_dir(), own)
    trained_run.record_dataset(own)
    app.query_params["run"] = trained_run.id
    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    removes = [b for b in app.button if b.key and "_cell_fix_" in b.key and b.key.endswith("_remove")]
    assert removes and [b for b in app.button if b.key and "_losses_fix_" in b.key]
    removes[0].click().run()
    no_exceptions(app)
    assert Dataset.load(own).version == 2 and len(Dataset.load(own).records) == len(
        Dataset.load(trained_run.config.data.dataset_dir).records) - 1


def test_a_full_disk_is_said_and_the_dataset_kept(controls, session_workspace, tiny_dataset, monkeypatch):
    import errno

    root = session_workspace.datasets_dir / tiny_dataset

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Dataset, "save", full)
    controls.run()
    controls.button(key="one_remove").click().run()
    no_exceptions(controls)
    assert any("disk is full" in t.value for t in controls.text)
    assert "images/red/0.jpg" in _labels(root) and Dataset.load(root).version == 1
