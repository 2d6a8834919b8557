"""The image guard and the heavy-task bound as the pages show them: the 13300x13300 PNG bomb
dropped on the Data page's class-by-class tab or on Predict gets its reason, as text, and no
thumbnail; the server's upload limits refuse a drop with what to do; a server kept busy past the
wait gives a clear message, not a frozen page."""

from __future__ import annotations

import io
import threading

from tests.app.conftest import no_exceptions
from tests.conftest import COLOURS, synthetic_image
from tests.image_bombs import BOMB_SIDE, png_bomb


class Upload:
    """What st.file_uploader / st.camera_input hand the page: a name, an id and the bytes."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data, self.file_id = name, data, name

    def getvalue(self) -> bytes:
        return self._data


def jpeg(colour: str, seed: int) -> bytes:
    out = io.BytesIO()
    synthetic_image(COLOURS[colour], seed=seed).save(out, "JPEG")
    return out.getvalue()


def _fake(monkeypatch, widget: str, files_for) -> None:
    """Hand the page ``files_for(key)`` from ``st.<widget>`` (AppTest cannot upload files)."""
    import streamlit as st

    real = getattr(st, widget)

    def fake(label, *args, key=None, **kwargs):
        real(label, *args, key=key, **kwargs)
        return files_for(key)

    monkeypatch.setattr(st, widget, fake)


def _texts(at) -> str:
    return "\n".join(t.value for t in at.text)


def test_the_bomb_dropped_on_a_class_gets_its_reason_and_no_thumbnail(app, session_workspace, monkeypatch):
    from tl_core.data.snapshots import SnapshotTray

    drops = {"class_files_cat_0": [Upload("<b>bomb</b>.png", png_bomb()), Upload("cat.jpg", jpeg("red", 1))]}
    _fake(monkeypatch, "file_uploader", drops.get)
    app.run()
    app.text_input(key="class_names").set_value("cat, dog").run()
    no_exceptions(app)
    assert [s.label for s in SnapshotTray(session_workspace).items()] == ["cat"]  # the good file only
    text = _texts(app)
    assert "cat · 1 image" in text
    assert "1 of 2 file(s) were not kept" in text
    assert f"<b>bomb</b>.png: image is too large: too many pixels ({BOMB_SIDE}x{BOMB_SIDE}" in text  # as text
    captions = [c for el in app.get("image") for c in el.captions]
    assert captions == ["cat 1"]  # the good file's thumbnail, nothing else


def test_a_drop_past_the_upload_limit_is_refused_whole(app, session_workspace, monkeypatch):
    from tl_core.data.snapshots import SnapshotTray

    monkeypatch.setenv("TL_STUDIO_MAX_UPLOAD_IMAGES", "2")
    drops = {"class_files_cat_0": [Upload(f"cat{i}.jpg", jpeg("red", i)) for i in range(3)]}
    _fake(monkeypatch, "file_uploader", drops.get)
    app.run()
    app.text_input(key="class_names").set_value("cat, dog").run()
    no_exceptions(app)
    assert SnapshotTray(session_workspace).items() == []
    assert "(the limit is 2 per upload)" in _texts(app) and "max_upload_images" in _texts(app)


def test_a_webcam_snapshot_that_is_not_a_photo_is_not_kept(app, session_workspace, monkeypatch):
    from tl_core.data.snapshots import SnapshotTray

    _fake(monkeypatch, "camera_input", lambda key: Upload("image.jpg", b"not a photo from any camera"))
    app.run()
    app.text_input(key="class_names").set_value("cat, dog").run()
    app.toggle(key="use_camera").set_value(True).run()
    no_exceptions(app)
    assert SnapshotTray(session_workspace).items() == []
    assert any("Could not keep the photo" in e.value for e in app.error)
    assert "not an image" in _texts(app)


def _open_predict(app) -> None:
    app.run()
    app.switch_page("pages/5_predict.py").run()
    no_exceptions(app)


def test_predict_shows_the_bombs_reason_and_classifies_the_rest(app, trained_run, monkeypatch):  # noqa: F811
    uploads = [Upload("bomb.png", png_bomb()), Upload("my_red.jpg", jpeg("red", 3))]
    _fake(monkeypatch, "file_uploader", lambda key: uploads if key == "predict_files" else None)
    _open_predict(app)
    text = _texts(app)
    assert f"bomb.png: image is too large: too many pixels ({BOMB_SIDE}x{BOMB_SIDE}" in text
    assert "my_red.jpg → red" in text and "bomb.png →" not in text
    assert any("1 file(s) could not be used" in e.value for e in app.error)


def test_predict_says_when_the_server_stays_busy(app, trained_run, monkeypatch):  # noqa: F811
    """All heavy-task slots held by others past the wait: a clear message, no traceback."""
    import tl_core.bounded as bounded

    monkeypatch.setenv("TL_STUDIO_SERVER_HEAVY_TASKS", "1")
    monkeypatch.setattr(bounded, "WAIT_SECONDS", 0.5)
    uploads = [Upload("fresh_blue.jpg", jpeg("blue", 4242))]  # not in any cache: the page must compute
    _fake(monkeypatch, "file_uploader", lambda key: uploads if key == "predict_files" else None)
    entered, release = threading.Event(), threading.Event()

    def other_user() -> None:
        with bounded.heavy_task(timeout=5):
            entered.set()
            release.wait(30)

    holder = threading.Thread(target=other_user)
    holder.start()
    try:
        assert entered.wait(5)
        _open_predict(app)
    finally:
        release.set()
        holder.join(10)
    errors = " ".join(e.value for e in app.error)
    assert "The server is busy" in errors and "Try again" in errors
    assert "fresh_blue.jpg →" not in _texts(app)
