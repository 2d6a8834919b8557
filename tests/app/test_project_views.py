"""Runs page, project box: Download project packs the workspace (the run and its dataset) into a zip
offered for download; Open a project adds one, whose run is then listed; a file that is not a
project is refused with a message and adds nothing."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.app.conftest import no_exceptions


class _File:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data, self.file_id = name, data, name

    def getvalue(self) -> bytes:
        return self._data


@pytest.fixture
def runs_page(app, trained_run, monkeypatch):  # noqa: F811
    import streamlit as st

    offered: dict[str, bytes] = {}
    uploads: dict[str, _File] = {}
    real_download, real_uploader = st.download_button, st.file_uploader

    def download_button(label, data=None, *args, key=None, **kwargs):
        offered[key] = data
        return real_download(label, data, *args, key=key, **kwargs)

    def file_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)
        return uploads.get(key)

    monkeypatch.setattr(st, "download_button", download_button)
    monkeypatch.setattr(st, "file_uploader", file_uploader)
    app.switch_page("pages/7_runs.py").run()
    no_exceptions(app)
    return app, offered, uploads


def test_download_then_open_the_project(runs_page, trained_run, session_workspace):  # noqa: F811
    from tl_core.data.catalog import DatasetCatalog
    from tl_core.export.project import MANIFEST
    from tl_core.runs import RunStore

    at, offered, uploads = runs_page
    assert not at.download_button  # built on click only
    at.button(key="project_build").click().run()
    no_exceptions(at)
    assert at.download_button(key="project_download").label.startswith("Save the project")
    data = offered["project_download"]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert MANIFEST in names and f"runs/{trained_run.id}/checkpoints/best.pt" in names
    assert any(n.startswith("datasets/") and n.endswith("dataset.json") for n in names)
    assert any(trained_run.display_name() in t.value for t in at.text)

    uploads["project_upload"] = _File("my project.zip", data)
    at.run()
    at.button(key="project_open").click().run()
    no_exceptions(at)
    assert at.success and "1 dataset(s) and 1 run(s)" in at.success[0].value
    runs = RunStore(session_workspace).list()
    assert len(runs) == 2  # the imported run beside the original: nothing overwritten
    imported = next(r for r in runs if r.id != trained_run.id)
    [dataset] = DatasetCatalog(session_workspace).list()
    assert imported.dataset_dir() == dataset.path
    table = next(d.value for d in at.dataframe if {"state", "id"} <= set(d.value.columns))
    assert imported.id in table["id"].tolist()  # listed on the same page at once

    uploads["project_upload"] = _File("**not** a project.zip", b"hello")
    at.run()
    at.button(key="project_open").click().run()
    no_exceptions(at)
    assert at.error and "Could not open the project" in at.error[0].value
    assert any("not a TL Studio project" in t.value for t in at.text)
    assert len(RunStore(session_workspace).list()) == 2
