"""Teacher page: off without a password; a wrong password opens nothing; the right one shows the
sessions and stops a student's job; students never see each other's work, only what the teacher
shares (read-only) and the leaderboard when it is on; display names are text."""

from __future__ import annotations

import time

import pytest

from tests.app.conftest import SESSION, no_exceptions
from tests.tiny_backbone import NAME as TINY
from tl_core.classroom import teacher as classroom
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tl_core.data.catalog import DatasetCatalog
from tl_core.jobs import launch as jobs
from tl_core.runs import RunStore
from tl_core.workspace import Workspace

PASSWORD = "correct horse"
STUDENT = "adastudentsessionkey0123456789ab"
TRICKY = "**Ada** [x](http://e.com)"
TEACHER_PAGE = "pages/9_teacher.py"


def page_text(at) -> str:
    """Everything the page shows as text: markdown, text, captions, alerts, tables and options."""
    parts = [e.value for kind in ("markdown", "text", "caption", "info", "warning", "error", "success", "title",
                                  "subheader") for e in getattr(at, kind)]
    parts += [d.value.to_string() for d in at.dataframe]
    parts += [option for box in at.selectbox for option in box.options]  # the options as shown
    return "\n".join(str(p) for p in parts)


def leaderboard_table(at):
    return next((d.value for d in at.dataframe if "rank" in d.value.columns), None)


def markdown_text(at) -> str:
    return "\n".join(e.value for kind in ("markdown", "caption", "info", "warning", "error") for e in getattr(at, kind))


def _config(folder) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(folder), dataset_dir=str(folder), val_fraction=0.25, augment="none"),
                     model=ModelConfig(backbone=TINY), freeze=FreezePlan(mode="feature_extractor"),
                     train=TrainConfig(epochs=1, batch_size=8, num_workers=0))


@pytest.fixture
def student(home, tmp_path):
    """Another session with a display name, a dataset and a finished run; returns its workspace."""
    from tests.conftest import write_image_folder
    from tl_core.data import ingest

    workspace = Workspace(home).for_session(STUDENT)
    classroom.set_display_name(workspace, TRICKY)
    dest = DatasetCatalog(workspace).new_dir("adas-secret-data")
    ingest(write_image_folder(tmp_path / "ada", {"red": 6, "blue": 6}), dest, name="adas-secret-data")
    run = RunStore(workspace).create(_config(dest))
    run.rename("adas-secret-run")
    run.record_dataset(dest)
    run.mark_finished(best_epoch=1, best_val_acc=0.8)
    return workspace


@pytest.fixture
def teacher_on(monkeypatch):
    monkeypatch.setenv("TL_STUDIO_TEACHER_PASSWORD", PASSWORD)


def _login(at, password: str):
    at.switch_page(TEACHER_PAGE).run()
    no_exceptions(at)
    at.text_input(key="teacher_password").set_value(password)
    next(b for b in at.button if b.label == "Open the Teacher page").click().run()
    no_exceptions(at)
    return at


def test_without_a_password_the_page_says_how_to_set_one_and_shows_nothing_else(app, student, monkeypatch):
    monkeypatch.delenv("TL_STUDIO_TEACHER_PASSWORD", raising=False)
    app.switch_page(TEACHER_PAGE).run()
    no_exceptions(app)
    assert "TL_STUDIO_TEACHER_PASSWORD" in app.info[0].value
    assert not [t for t in app.text_input if t.key == "teacher_password"]
    assert not app.dataframe
    assert "adas-secret" not in page_text(app)


def test_a_wrong_password_opens_nothing(app, student, teacher_on):
    _login(app, "guess")
    assert "not the teacher password" in app.error[0].value
    assert not app.dataframe
    assert "adas-secret" not in page_text(app)
    assert PASSWORD not in page_text(app) and PASSWORD not in str(dict(app.query_params))


def test_the_right_password_shows_every_session_and_lock_closes_it(app, student, teacher_on):
    _login(app, PASSWORD)
    sessions = next(d.value for d in app.dataframe if "student" in d.value.columns)
    assert TRICKY in sessions["student"].tolist()
    assert app.selectbox(key="teacher_session").options  # the sessions are listed
    text = page_text(app)
    assert "adas-secret-run" in text and "adas-secret-data" in text
    assert STUDENT not in text  # the key to a workspace is never shown in full
    assert "http://e.com" not in markdown_text(app)  # the display name never went through Markdown
    assert PASSWORD not in text and PASSWORD not in str(dict(app.query_params))

    app.button(key="teacher_lock").click().run()
    no_exceptions(app)
    assert not app.dataframe and app.text_input(key="teacher_password")


def test_teacher_stops_a_students_queued_job(app, student, teacher_on, monkeypatch):
    import fcntl

    monkeypatch.setenv(jobs.ENV_MAX_JOBS, "1")
    root = jobs.jobs_root(Workspace.default().root)
    blocker = open(root / "slot-0.lock", "ab")  # the device is busy: the student's job waits
    fcntl.flock(blocker, fcntl.LOCK_EX)
    try:
        folder = DatasetCatalog(student).list()[0].path
        run = RunStore(student).get(jobs.start_job(student, _config(folder)))
        _login(app, PASSWORD)
        assert [e.run_id for e in classroom.queue()] == [run.id]
        app.button(key=f"teacher_stop_{run.id}").click().run()
        no_exceptions(app)
        deadline = time.monotonic() + 60
        while jobs.job_state(run).state != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run.state == "cancelled"
        app.run()
        assert not [b for b in app.button if b.key == f"teacher_stop_{run.id}"]
    finally:
        fcntl.flock(blocker, fcntl.LOCK_UN)
        blocker.close()


def test_delete_a_session_only_after_confirming(app, student, teacher_on):
    _login(app, PASSWORD)
    app.selectbox(key="teacher_session").set_value(STUDENT).run()
    app.button(key="teacher_delete_session").click().run()
    assert student.root.exists()  # asked first
    app.button(key="teacher_delete_yes").click().run()
    no_exceptions(app)
    assert not student.root.exists()


def test_students_never_see_another_session_only_what_the_teacher_shares(app, student, teacher_on, home):
    for page in ("pages/1_data.py", "pages/7_runs.py", "pages/4_results.py", "pages/8_compare.py"):
        app.switch_page(page).run()
        no_exceptions(app)
        assert "adas-secret" not in page_text(app), page
        assert STUDENT not in page_text(app), page

    shared_id = classroom.share_dataset(STUDENT, DatasetCatalog(student).list()[0].id)
    on_shared = RunStore(student).create(_config(classroom.shared_dataset_dir(shared_id)))
    on_shared.record_dataset(classroom.shared_dataset_dir(shared_id))
    on_shared.mark_finished(best_epoch=1, best_val_acc=0.65)
    classroom.set_leaderboard_visible(True)
    app.switch_page("pages/1_data.py").run()
    no_exceptions(app)
    picker = app.selectbox(key="dataset_pick")
    assert "read-only" in picker.format_func(shared_id)
    assert picker.format_func(shared_id) in picker.options
    picker.set_value(shared_id).run()
    no_exceptions(app)
    assert any("read-only" in i.value for i in app.info)

    app.switch_page("pages/7_runs.py").run()
    no_exceptions(app)
    board = leaderboard_table(app)
    assert board["student"].tolist() == [TRICKY] and board["best val acc"].tolist() == [0.65]
    assert STUDENT not in page_text(app)
    assert "http://e.com" not in markdown_text(app)
    # The shared dataset is not the student's to delete: the Runs page lists only their own.
    assert not [s for s in app.selectbox if s.key == "manage_dataset"]

    classroom.set_leaderboard_visible(False)
    app.run()
    assert leaderboard_table(app) is None


def test_a_student_sets_a_display_name_shown_as_text(app):
    app.run()
    no_exceptions(app)
    app.sidebar.text_input(key="display_name_input").set_value(TRICKY).run()
    no_exceptions(app)
    assert classroom.display_name(Workspace.default().for_session(SESSION)) == TRICKY
    assert "http://e.com" not in markdown_text(app)


def test_names_in_the_disk_chart_cannot_become_links():
    from tl_ui.teacher_views import plot_text

    shown = plot_text('<a href="http://e.com">me</a> & co')
    assert "<" not in shown and ">" not in shown
    assert shown == '&lt;a href="http://e.com"&gt;me&lt;/a&gt; &amp; co'


def test_a_new_session_gets_an_unguessable_id(home):
    """The link is the key to a workspace: 16 random bytes, still a valid workspace id."""
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO
    from tl_core.workspace import is_safe_id

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    no_exceptions(at)
    session = at.query_params["s"]
    session = session[0] if isinstance(session, list) else session
    assert len(session) == 32 and int(session, 16) >= 0 and is_safe_id(session)


def test_edit_and_run_keeps_a_shared_dataset_and_the_sidebar_names_it(app, student, session_workspace):
    from streamlit.testing.v1 import AppTest

    shared_id = classroom.share_dataset(STUDENT, DatasetCatalog(student).list()[0].id)
    folder = classroom.shared_dataset_dir(shared_id)
    run = RunStore(session_workspace).create(_config(folder))
    run.record_dataset(folder)
    run.mark_finished(best_epoch=1, best_val_acc=0.5)
    app.query_params["run"] = run.id
    app.switch_page("pages/7_runs.py").run()
    no_exceptions(app)
    app.button(key="manage_edit").click().run()
    no_exceptions(app)
    params = app.query_params["dataset"]
    assert (params[0] if isinstance(params, list) else params) == shared_id
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)

    sidebar = AppTest.from_function(_sidebar_only, default_timeout=30)
    sidebar.query_params.update(s=SESSION, dataset=shared_id)  # (app.py's sidebar is not in AppTest's tree)
    sidebar.run()
    no_exceptions(sidebar)
    assert any("shared by the teacher" in m.value for m in sidebar.sidebar.markdown)
    assert any(t.value.startswith("adas-secret-data") for t in sidebar.sidebar.text)


def _sidebar_only():
    from tl_ui import get_state, sidebar

    sidebar.render(get_state())


def test_a_shared_zip_is_held_to_the_upload_limits_like_a_students(app, teacher_on, monkeypatch, tmp_path):
    """The teacher's zip goes through the same caps as a student's upload: over max_upload_images
    it is refused with the limit's name, and nothing is shared."""
    import io
    import zipfile

    import streamlit as st

    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "zoo", {"red": 3, "blue": 3})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, path.relative_to(folder).as_posix())

    class _Zip:
        name, file_id, size = "zoo.zip", "zoo", len(buf.getvalue())

        def getvalue(self) -> bytes:
            return buf.getvalue()

    real_uploader = st.file_uploader

    def fake_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)
        return _Zip() if key == "share_upload" else None

    monkeypatch.setattr(st, "file_uploader", fake_uploader)
    monkeypatch.setenv("TL_STUDIO_MAX_UPLOAD_IMAGES", "4")
    _login(app, PASSWORD)
    app.button(key="share_upload_button").click().run()
    no_exceptions(app)
    assert [e.value for e in app.error] == ["Could not read the zip"]
    assert any("max_upload_images" in t.value for t in app.text)  # the message, as text
    assert classroom.shared_catalog().list() == []

    monkeypatch.setenv("TL_STUDIO_MAX_UPLOAD_IMAGES", "6")
    app.button(key="share_upload_button").click().run()
    no_exceptions(app)
    assert [e.num_images for e in classroom.shared_catalog().list()] == [6]
