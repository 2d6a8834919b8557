"""Predict page: a trained run classifies an uploaded photo, a broken upload is explained without a
traceback, and a zip (with a broken member) gives a table and a CSV."""

from __future__ import annotations

import io
import zipfile

from tests.app.conftest import no_exceptions
from tests.conftest import COLOURS, synthetic_image


class Upload:
    """What st.file_uploader hands the page: a name and the bytes."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def jpeg(colour: str, seed: int = 7) -> bytes:
    out = io.BytesIO()
    synthetic_image(COLOURS[colour], seed=seed).save(out, "JPEG")
    return out.getvalue()


def test_collect_images_keeps_good_files_and_explains_bad_ones():
    from tl_ui.predict_views import collect_images

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("photos/a.jpg", jpeg("red"))
        zf.writestr("photos/broken.jpg", b"not a jpeg at all" * 10)
        zf.writestr("photos/notes.txt", b"hello")
        zf.writestr("__MACOSX/photos/._a.jpg", b"junk")
    good, bad = collect_images([Upload("b.jpg", jpeg("blue")), Upload("c.jpg", b"\xff\xd8\xff garbage"),
                                Upload("set.zip", archive.getvalue()), Upload("bad.zip", b"PK nope")])
    assert [g.name for g in good] == ["b.jpg", "set.zip/photos/a.jpg"]
    reasons = {b.name: b.reason for b in bad}
    assert set(reasons) == {"c.jpg", "set.zip/photos/broken.jpg", "set.zip/photos/notes.txt", "bad.zip"}
    assert "not an image" in reasons["set.zip/photos/notes.txt"]


def _open_predict(app):
    app.switch_page("pages/5_predict.py").run()
    no_exceptions(app)


def test_no_trained_run_points_to_train(app):
    _open_predict(app)
    assert any("No trained model yet" in i.value for i in app.info)


def test_predict_shows_the_right_label_and_survives_a_corrupt_upload(app, trained_run, monkeypatch):  # noqa: F811
    import streamlit as st

    uploads = [Upload("my_red.jpg", jpeg("red")), Upload("broken.jpg", b"\xff\xd8\xff this is not a photo"),
               Upload("my_blue.jpg", jpeg("blue"))]
    real_uploader = st.file_uploader

    def fake_uploader(label, *args, key=None, **kwargs):
        # AppTest cannot upload files: hand the page these when it asks for photos.
        real_uploader(label, *args, key=key, **kwargs)
        return uploads if key == "predict_files" else None

    monkeypatch.setattr(st, "file_uploader", fake_uploader)
    _open_predict(app)
    assert app.selectbox(key="predict_run").value == trained_run.id
    text = " ".join(t.value for t in app.text)  # file and class names: text, never Markdown
    assert "my_red.jpg → red" in text
    assert "my_blue.jpg → blue" in text
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and "could not be used" in errors[0]
    assert "broken.jpg: " in text  # the file's name and reason: text, never Markdown
    # Grad-CAM is on by default: each good photo has its overlay.
    captions = [c for el in app.get("image") for c in el.captions]
    assert sum("where it looked for 'red'" in c for c in captions) == 1
    assert len(app.get("plotly_chart")) == 2  # one top-k chart per readable photo


def test_a_zip_gives_a_table_and_a_csv(app, trained_run, monkeypatch):  # noqa: F811
    import streamlit as st

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"new/red_{i}.jpg", jpeg("red", seed=50 + i))
        zf.writestr("new/damaged.png", b"\x89PNG\r\n\x1a\n broken")
    real_uploader = st.file_uploader

    def fake_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)
        return [Upload("new.zip", archive.getvalue())] if key == "predict_zip" else None

    monkeypatch.setattr(st, "file_uploader", fake_uploader)
    _open_predict(app)
    app.button(key="predict_batch_go").click().run()
    no_exceptions(app)
    table = next(d.value for d in app.dataframe if "prediction" in d.value.columns)
    assert list(table["file"]) == [f"new.zip/new/red_{i}.jpg" for i in range(3)]
    assert set(table["prediction"]) == {"red"}
    assert app.error and any("damaged.png" in t.value for t in app.text)
    assert any(m.label == "Images classified" and m.value == "3" for m in app.metric)
    assert app.get("download_button")


def test_a_webcam_photo_is_classified(app, trained_run, monkeypatch):  # noqa: F811
    import streamlit as st

    real_camera = st.camera_input

    def fake_camera(label, *args, key=None, **kwargs):
        real_camera(label, *args, key=key, **kwargs)
        return Upload("camera.jpg", jpeg("blue", seed=99))

    monkeypatch.setattr(st, "camera_input", fake_camera)
    _open_predict(app)
    assert "camera.jpg → blue" in " ".join(t.value for t in app.text)
    assert any("where it looked for 'blue'" in c for el in app.get("image") for c in el.captions)


def test_collect_images_reports_a_zip_member_outside_the_archive():
    """The Predict page checks uploads with the engine (``tl_core.data.check_images``): a member
    named with ``../`` is reported as unsafe, as a dataset import reports it, never read."""
    from tl_ui.predict_views import collect_images

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.jpg", jpeg("red"))
        zf.writestr("../escape.jpg", jpeg("blue"))
    good, bad = collect_images([Upload("up.zip", archive.getvalue())])
    assert [g.name for g in good] == ["up.zip/ok/a.jpg"]
    assert [(b.name, "points outside the archive" in b.reason) for b in bad] == [("up.zip/../escape.jpg", True)]
