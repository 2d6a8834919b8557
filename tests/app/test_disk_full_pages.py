"""A full disk met by the app's own writes is said as the DiskFull message, never as a bug."""

from __future__ import annotations

import errno

from tests.app.conftest import no_exceptions
from tl_core.atomic import DISK_FULL_MESSAGE


def _raising_in_user_errors() -> None:
    import errno

    import streamlit as st

    from tl_ui.feedback import user_errors

    kind = st.query_params.get("kind")
    with user_errors("Could not read the zip"):
        if kind == "oserror":  # e.g. the uploaded zip saved to a temporary folder
            raise OSError(errno.ENOSPC, "No space left on device")
        if kind == "quota":
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        if kind == "torch":  # how torch.save reports it, with the OSError as its cause
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as exc:
                raise RuntimeError("PytorchStreamWriter failed writing file data/0") from exc
        raise RuntimeError("something else")


def _errors_for(kind: str) -> list[str]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_raising_in_user_errors, default_timeout=30)
    at.query_params["kind"] = kind
    at.run()
    no_exceptions(at)
    return [e.value for e in at.error]


def test_a_full_disk_anywhere_is_said_as_such_not_as_a_bug():
    for kind in ("oserror", "quota", "torch"):
        errors = _errors_for(kind)
        assert len(errors) == 1 and DISK_FULL_MESSAGE in errors[0] and "bug" not in errors[0], (kind, errors)
    assert "This is a bug" in _errors_for("other")[0]  # other errors are still reported as bugs


def test_the_sample_on_a_full_disk_says_so_and_leaves_no_dataset(app, session_workspace, monkeypatch):
    from PIL import Image

    def save(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save)
    app.run()
    app.button(key="use_sample").click().run()
    no_exceptions(app)
    assert [e.value for e in app.error] == [f"Could not make the sample: {DISK_FULL_MESSAGE}"]
    datasets = session_workspace.datasets_dir
    assert not datasets.exists() or list(datasets.iterdir()) == []


class _File:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.file_id, self._data = name, name, data

    def getvalue(self) -> bytes:
        return self._data


def test_class_by_class_upload_on_a_full_disk_says_so_and_keeps_the_files(app, session_workspace, monkeypatch):
    import streamlit as st

    from tl_core import atomic
    from tl_core.data.snapshots import SnapshotTray

    real_uploader = st.file_uploader

    def fake_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)
        return [_File("cat0.jpg", b"\xff\xd8 a photo")] if key == "class_files_cat_0" else None

    def full(*args, **kwargs):  # add_many keeps all or none (tests/core/test_disk_full.py)
        raise atomic.disk_full()

    monkeypatch.setattr(SnapshotTray, "add_many", full)
    app.run()
    app.text_input(key="class_names").set_value("cat, dog").run()
    monkeypatch.setattr(st, "file_uploader", fake_uploader)
    app.run()
    no_exceptions(app)
    # The message stays on the page (no rerun wiped it) and nothing half-kept is in the tray.
    assert [e.value for e in app.error] == [f"Could not keep the images: {DISK_FULL_MESSAGE}"]
    assert SnapshotTray(session_workspace).items() == []
