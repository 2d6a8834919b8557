"""A user over one of the teacher's limits is told which and what to do, and nothing is made."""

from __future__ import annotations

import io
import zipfile

from tests.app.conftest import SESSION, no_exceptions
from tests.app.test_data_page import _File, _jpeg


def errors(at) -> str:
    return " ".join([e.value for e in at.error] + [t.value for t in at.text])


def test_start_over_the_run_limit_says_which_limit(app, tiny_dataset, session_workspace, monkeypatch):
    from tl_core.config import DataConfig, RunConfig
    from tl_core.runs import RunStore

    monkeypatch.setenv("TL_STUDIO_MAX_RUNS", "1")
    RunStore(session_workspace).create(RunConfig(data=DataConfig(source="x")))
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    app.button(key="start").click().run()
    no_exceptions(app)
    message = errors(app)
    assert "Could not start training" in message
    assert "You have 1 run (the limit is 1)" in message and "max_runs" in message
    assert len(RunStore(session_workspace).list()) == 1  # no run was made, no worker started


def test_a_zip_over_the_image_limit_is_refused_before_it_is_read(app, session_workspace, monkeypatch):
    import streamlit as st

    from tl_core.data.catalog import DatasetCatalog

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"red/{i}.jpg", _jpeg((220, 40, 40), i))
            zf.writestr(f"blue/{i}.jpg", _jpeg((40, 40, 220), i))
    real_uploader = st.file_uploader

    def fake_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)
        return _File("photos.zip", archive.getvalue()) if key == "zip_upload" else None

    monkeypatch.setattr(st, "file_uploader", fake_uploader)
    monkeypatch.setenv("TL_STUDIO_MAX_UPLOAD_IMAGES", "5")
    app.run()
    app.button(key="add_zip").click().run()
    no_exceptions(app)
    message = errors(app)
    assert "This upload has 6 images (the limit is 5 per upload)" in message and "max_upload_images" in message
    assert DatasetCatalog(session_workspace).list() == []

    monkeypatch.setenv("TL_STUDIO_MAX_UPLOAD_IMAGES", "6")
    app.button(key="add_zip").click().run()
    no_exceptions(app)
    assert len(DatasetCatalog(session_workspace).list()) == 1


def test_the_dataset_limit_stops_the_sample_too(app, tiny_dataset, monkeypatch):
    monkeypatch.setenv("TL_STUDIO_MAX_DATASETS", "1")
    app.run()
    app.button(key="use_sample").click().run()
    no_exceptions(app)
    assert "You have 1 dataset (the limit is 1)" in errors(app)


def test_a_new_visitor_over_the_session_limit_is_told_while_links_keep_working(home, session_workspace,
                                                                              monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO

    session_workspace.datasets_dir  # noqa: B018 - this session's workspace exists
    monkeypatch.setenv("TL_STUDIO_MAX_SESSIONS", "1")
    visitor = AppTest.from_file(str(REPO / "app.py"), default_timeout=30)
    visitor.run()
    no_exceptions(visitor)
    assert "No new workspace can be opened" in errors(visitor)
    assert "max_sessions" in errors(visitor)
    assert not visitor.button  # no page drawn: no workspace was handed out

    known = AppTest.from_file(str(REPO / "app.py"), default_timeout=30)
    known.query_params["s"] = SESSION
    known.run()
    no_exceptions(known)
    assert "No new workspace" not in errors(known)
    assert known.button(key="use_sample")


def test_class_by_class_uploads_obey_the_upload_limits(app, session_workspace, monkeypatch):
    import streamlit as st

    from tl_core.data.snapshots import SnapshotTray

    drop = [_File(f"cat{i}.jpg", _jpeg((220, 60, 40), i)) for i in range(3)]
    real_uploader = st.file_uploader

    def fake_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)
        return drop if key == "class_files_cat_0" else None

    monkeypatch.setattr(st, "file_uploader", fake_uploader)
    monkeypatch.setenv("TL_STUDIO_MAX_UPLOAD_IMAGES", "2")
    app.run()
    app.text_input(key="class_names").set_value("cat, dog").run()
    no_exceptions(app)
    assert "This upload has 3 images (the limit is 2 per upload)" in errors(app)
    assert SnapshotTray(session_workspace).counts() == {}
