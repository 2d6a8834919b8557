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


class _File:
    """What st.file_uploader / st.camera_input hand the page: a name, an id and the bytes."""

    def __init__(self, name: str, data: bytes, file_id: str = "") -> None:
        self.name, self._data, self.file_id = name, data, file_id or name

    def getvalue(self) -> bytes:
        return self._data


def _jpeg(colour: tuple[int, int, int], seed: int) -> bytes:
    import io

    from tests.conftest import synthetic_image

    out = io.BytesIO()
    synthetic_image(colour, seed=seed).save(out, "JPEG")
    return out.getvalue()


def test_class_by_class_keeps_every_image_through_a_refresh(app, session_workspace, monkeypatch):
    """Uploads and webcam photos land in the tray at once; a new session (a refresh) finds them;
    the dataset takes the good ones, and a broken file stays behind, reported."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tl_core.data.snapshots import SnapshotTray

    whole = _jpeg((40, 60, 220), 30)
    broken = whole[: len(whole) // 2]  # a sound header passes the door; the dataset's full decode skips it
    drops = {"class_files_cat_0": [_File(f"cat{i}.jpg", _jpeg((220, 60, 40), i)) for i in range(3)],
             "class_files_dog_0": [_File(f"dog{i}.png", _jpeg((40, 60, 220), 10 + i)) for i in range(2)]
             + [_File("broken.jpg", broken)]}
    real_uploader, real_camera = st.file_uploader, st.camera_input

    def fake_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)
        return drops.get(key)  # only the first (generation 0) uploader of each class gets files

    shots: list[_File] = []  # what the camera holds: nothing until the photo is taken

    def fake_camera(label, *args, key=None, **kwargs):
        real_camera(label, *args, key=key, **kwargs)
        return shots[-1] if shots else None

    monkeypatch.setattr(st, "file_uploader", fake_uploader)
    app.run()
    app.text_input(key="class_names").set_value("cat, dog").run()
    no_exceptions(app)
    text = [t.value for t in app.text]  # class names are shown as text, never through Markdown
    assert "cat · 3 images" in text and "dog · 3 images" in text

    # The webcam: one photo per shot, however often the page reruns with it still on screen.
    monkeypatch.setattr(st, "camera_input", fake_camera)
    app.toggle(key="use_camera").set_value(True).run()
    app.radio(key="snap_label").set_value("dog").run()
    shots.append(_File("image.jpg", _jpeg((40, 60, 220), 77), file_id="shot-1"))
    app.run()
    app.run()
    no_exceptions(app)
    assert SnapshotTray(session_workspace).counts() == {"cat": 3, "dog": 4}

    # A refresh: a new session with the same URL, no class names typed, empty uploaders and
    # camera. Nothing is lost.
    drops.clear()
    shots.clear()
    again = AppTest.from_file(app._script_path, default_timeout=60)
    again.query_params["s"] = SESSION
    again.run()
    no_exceptions(again)
    text = [t.value for t in again.text]
    assert "cat · 3 images" in text and "dog · 4 images" in text
    again.button(key="undo_dog").click().run()
    assert SnapshotTray(session_workspace).counts() == {"cat": 3, "dog": 3}

    again.button(key="add_classes").click().run()
    no_exceptions(again)
    metrics = {m.label: m.value for m in again.metric}
    assert metrics["Classes"] == "2" and metrics["Images"] == "5" and metrics["Skipped files"] == "1"
    left = SnapshotTray(session_workspace).items()
    assert [s.label for s in left] == ["dog"] and left[0].path.read_bytes() == broken


def test_throwing_the_collected_images_away_asks_first(app, session_workspace):
    from tl_core.data.snapshots import SnapshotTray

    tray = SnapshotTray(session_workspace)
    tray.add_many("cat", [(_jpeg((220, 60, 40), i), ".jpg") for i in range(2)])
    app.run()
    no_exceptions(app)
    assert "cat · 2 images" in [t.value for t in app.text]
    assert tray.counts() == {"cat": 2}  # drawing the page (and its closed confirmation) deletes nothing
    app.button(key="tray_clear").click().run()
    no_exceptions(app)
    assert tray.items() == []
    assert "Type two or more class names" in " ".join(c.value for c in app.caption)


def test_a_duplicate_split_between_train_and_validation_is_flagged_as_a_leak(app, session_workspace, tmp_path):
    """The report looks at the split chosen on the page: with two images per class, one goes to
    train and one to validation, so two copies of one photo leak from training into validation."""
    import shutil

    from tests.conftest import write_image_folder
    from tl_core.data import ingest
    from tl_core.data.catalog import DatasetCatalog

    folder = write_image_folder(tmp_path / "dup", {"red": 2, "blue": 2})
    shutil.copy(folder / "red" / "0.jpg", folder / "red" / "1.jpg")
    dest = DatasetCatalog(session_workspace).new_dir("dup")
    ingest(folder, dest)
    app.query_params["dataset"] = dest.name
    app.run()
    no_exceptions(app)
    notices = " ".join(t.value for t in app.text)  # the report quotes file names: shown as text
    assert "1 image(s) appear in more than one of train/val/test" in notices
    assert {m.label: m.value for m in app.metric}["Duplicate groups"] == "1"
    split_chart = next(c for c in app.get("plotly_chart") if "Images per class and split" in c.proto.spec)
    assert '"validation"' in split_chart.proto.spec


def test_a_class_too_small_to_split_still_gets_its_health_report(app, session_workspace, tmp_path):
    from tests.conftest import write_image_folder
    from tl_core.data import ingest
    from tl_core.data.catalog import DatasetCatalog

    dest = DatasetCatalog(session_workspace).new_dir("small")
    ingest(write_image_folder(tmp_path / "small", {"red": 1, "blue": 4}), dest)
    app.query_params["dataset"] = dest.name
    app.run()
    no_exceptions(app)
    assert {m.label: m.value for m in app.metric}["Images"] == "5"
    notices = [t.value for t in app.text]  # the report quotes class names: shown as text
    assert any("'red' has only 1 image(s)" in e for e in notices)  # the report
    assert any("needs at least 2 to be split" in e.value for e in [*app.error, *app.text])  # the split, after it


HOSTILE_CLASSES = ["![t](http://host.invalid/pixel.png)", "[Log in again](http://host.invalid/phish)"]


def test_hostile_class_and_dataset_names_are_shown_as_text(app, session_workspace, tmp_path):
    """A class or dataset name is the user's text: it reaches the page as text (never Markdown, so
    no image is fetched and no link is drawn), on the Data page and in the sidebar."""
    from tl_core.data import UploadedImage, ingest
    from tl_core.data.catalog import DatasetCatalog

    uploads = [UploadedImage(f"{i}.jpg", _jpeg(colour, i), label)
               for label, colour in zip(HOSTILE_CLASSES, [(220, 60, 40), (40, 60, 220)], strict=True)
               for i in range(6)]
    dest = DatasetCatalog(session_workspace).new_dir("**bold** <b>x</b>")
    ds = ingest(uploads, dest, name="**bold** <b>x</b>")
    assert sorted(ds.classes) == sorted(HOSTILE_CLASSES)
    app.query_params["dataset"] = dest.name
    app.run()
    no_exceptions(app)
    rendered = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "subheader")
                for e in app.get(kind)]
    assert not any("host.invalid" in value for value in rendered), [v for v in rendered if "host.invalid" in v]
    texts = " ".join(t.value for t in app.text)
    assert all(name in texts for name in HOSTILE_CLASSES)
