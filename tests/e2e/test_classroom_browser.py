"""A class on one server: two students start runs on the sample, the teacher logs in, sees both
in the queue and stops one; each student sees only their own runs."""

from __future__ import annotations

import fcntl
import re
import time
from urllib.parse import parse_qs, urlparse

from tests.conftest import wait_for
from tests.e2e.conftest import TEACHER_PASSWORD, open_app, open_select_box, screenshot, settled
from tests.e2e.test_walkthrough import go_to
from tl_core.classroom.teacher import display_name
from tl_core.workspace import Workspace


def _student_starts_a_run(browser, server, server_home, name: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    context.set_default_timeout(120_000)  # a class-sized server on a busy machine
    page = context.new_page()
    open_app(page, server)
    page.get_by_role("button", name="Use the sample dataset").click()
    page.get_by_text("2 · Health report").wait_for(timeout=90_000)
    box = page.locator("[data-testid=stSidebar]").get_by_label("Your name", exact=True)
    box.fill(name)
    box.press("Enter")
    # The box's callback saves the name on the rerun the Enter starts: wait until it is saved.
    workspace = Workspace(server_home).for_session(parse_qs(urlparse(page.url).query)["s"][0])
    wait_for(lambda: display_name(workspace) == name, timeout=60)
    go_to(page, "train")
    page.get_by_role("button", name="Start training").click()
    page.locator("[data-testid=stSidebar]").get_by_text(re.compile("queued|running")).first.wait_for(timeout=60_000)
    session = parse_qs(urlparse(page.url).query)["s"][0]
    return context, page, session


def _run_ids(server_home, session: str) -> list[str]:
    return sorted(p.parent.name for p in (server_home / "sessions" / session / "runs").glob("*/config.json"))


def test_teacher_sees_and_stops_a_students_job_and_students_stay_apart(browser, server, server_home):
    from tl_core.jobs import launch as jobs
    from tl_core.runs import Run

    root = jobs.jobs_root(server_home)
    blocker = open(root / "slot-0.lock", "ab")  # the device is busy: both students' jobs wait in the queue
    fcntl.flock(blocker, fcntl.LOCK_EX)
    contexts = []
    try:
        ctx_a, ada, session_a = _student_starts_a_run(browser, server, server_home, "Student Ada")
        ctx_b, bob, session_b = _student_starts_a_run(browser, server, server_home, "Student Bob")
        contexts += [ctx_a, ctx_b]
        assert session_a != session_b and len(session_a) == 32
        (run_a,), (run_b,) = _run_ids(server_home, session_a), _run_ids(server_home, session_b)

        teacher_ctx = browser.new_context(viewport={"width": 1400, "height": 2200})
        teacher_ctx.set_default_timeout(120_000)  # a class-sized server on a busy machine
        contexts.append(teacher_ctx)
        teacher = teacher_ctx.new_page()
        open_app(teacher, server, "teacher")
        teacher.get_by_label("Teacher password", exact=True).fill(TEACHER_PASSWORD)
        teacher.get_by_role("button", name="Open the Teacher page").click()
        teacher.get_by_role("heading", name="Queue").wait_for()
        queue_a = teacher.locator(f".st-key-teacher_stop_{run_a}")
        queue_b = teacher.locator(f".st-key-teacher_stop_{run_b}")
        queue_a.wait_for()
        queue_b.wait_for()
        assert teacher.get_by_text("Student Ada").count() >= 1 and teacher.get_by_text("Student Bob").count() >= 1
        assert session_a not in teacher.content() and TEACHER_PASSWORD not in teacher.content()
        teacher.locator(".js-plotly-plot").first.wait_for()  # the disk chart, and the tables, drawn
        teacher.locator("[data-testid=stDataFrame] canvas").first.wait_for()
        teacher.locator("[data-testid=stFileUploaderDropzone]").first.wait_for()
        settled(teacher)
        screenshot(teacher, "18_teacher")

        queue_b.get_by_role("button", name="Stop").click()
        deadline = time.monotonic() + 60
        while Run(server_home / "sessions" / session_b / "runs" / run_b).state != "cancelled":
            assert time.monotonic() < deadline, "the teacher's Stop did not stop Bob's job"
            time.sleep(0.5)
        queue_b.wait_for(state="detached")
        assert queue_a.is_visible()  # Ada's job still waits

        # Each student sees only their own work.
        for page, other, name in ((ada, run_b, "Student Bob"), (bob, run_a, "Student Ada")):
            go_to(page, "runs")
            page.get_by_role("heading", name="Datasets").wait_for()
            content = page.content()
            assert other not in content and name not in content
            open_select_box(page, "manage_run")  # the list of the student's runs: their one run
            assert page.get_by_role("option").count() == 1
            page.keyboard.press("Escape")
        bob.locator("[data-testid=stSidebar]").get_by_text("cancelled").wait_for(timeout=30_000)
        ada.locator("[data-testid=stSidebar]").get_by_text("queued").wait_for(timeout=30_000)

        teacher.locator(f".st-key-teacher_stop_{run_a}").get_by_role("button", name="Stop").click()
        deadline = time.monotonic() + 60
        while Run(server_home / "sessions" / session_a / "runs" / run_a).state != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        fcntl.flock(blocker, fcntl.LOCK_UN)
        blocker.close()
        for context in contexts:
            context.close()
