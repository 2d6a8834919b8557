"""E2E fixtures: a real `streamlit run app.py` server and Debian Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
TEACHER_PASSWORD = "e2e teacher phrase"  # opens the Teacher page of the test server
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # A synthetic camera that needs no permission prompt, for st.camera_input.
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tl_home")


@contextmanager
def streamlit_server(home: Path) -> Iterator[str]:
    """A fresh `streamlit run app.py` process (its own process group, stopped with killpg) with
    ``home`` as TL_STUDIO_HOME; yields its base URL once /_stcore/health answers (which runs no script)."""
    port = free_port()
    env = {**os.environ, "TL_STUDIO_HOME": str(home), "TL_STUDIO_OFFLINE": "1",
           "PYTHONPATH": str(REPO), "TL_STUDIO_TEACHER_PASSWORD": TEACHER_PASSWORD}
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("streamlit did not start:\n" + (home / "server.log").read_text())
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(scope="session")
def server(server_home):
    """Base URL of the TL Studio server the e2e tests share."""
    with streamlit_server(server_home) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    # Debian's chromium where installed (make browser), else Playwright's own download.
    executable = (shutil.which("chromium") or shutil.which("chromium-browser")
                  or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None))
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="session", autouse=True)
def _no_stale_failure_screenshots():
    for old in SCREENSHOTS.glob("FAILED_*.png"):
        old.unlink()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, server, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:  # what the browser showed when the test failed
        try:
            screenshot(tab, f"FAILED_{request.node.name}")
        except Exception:  # noqa: BLE001 - a dead page must not hide the test's own error
            pass
    context.close()


def open_app(page, server: str, path: str = "") -> None:
    page.goto(f"{server}/{path}")
    page.wait_for_selector("[data-testid=stApp]")
    page.wait_for_selector("h1")


# Streamlit's root element says whether the script is running: data-test-script-state is "running"
# while it runs and "notRunning" once the page is drawn.
_SCRIPT_DONE = "[data-testid=stApp][data-test-script-state=notRunning]"
# Every visible image has loaded (a lazy one below the fold loads when scrolled to) and every
# visible plotly chart has drawn its SVG.
_DRAWN = """() => {
    const visible = (el) => el.offsetParent !== null;
    return [...document.images].filter(visible).every((img) => img.complete || img.loading === 'lazy')
        && [...document.querySelectorAll('.js-plotly-plot')].filter(visible)
               .every((chart) => chart.querySelector('.main-svg'));
}"""


def settled(page, timeout: float = 60_000) -> None:
    """Wait until the page stops changing as a user would see it (before a screenshot): the script
    run is over and its images and charts are drawn."""
    page.wait_for_selector(_SCRIPT_DONE, timeout=timeout)
    page.wait_for_function(_DRAWN, timeout=timeout)


def saved_setting(page, server_home: Path, section: str, name: str, value, timeout: float = 60) -> None:
    """Wait until the session's saved settings (choices.json, which the pages write on every change)
    hold ``value``: the app has taken a widget's new value before the test goes on."""
    from tests.conftest import wait_for
    from tl_core import atomic
    from tl_core.workspace import Workspace

    session = parse_qs(urlparse(page.url).query)["s"][0]
    path = Workspace(server_home).for_session(session).root / "choices.json"

    def saved():
        data = atomic.read_json(path, default={})
        return isinstance(data, dict) and data.get(section, {}).get(name) == value

    wait_for(saved, timeout=timeout)


def tiny_backbone_picked(server_home: Path, session: str) -> None:
    """The session's saved settings with the tiny test backbone picked (as on the Model page), so
    that the jobs a browser test starts check the app's plumbing in seconds, not MobileNetV2."""
    from tests.tiny_backbone import save_tiny_draft
    from tl_core.workspace import Workspace

    save_tiny_draft(Workspace(server_home).for_session(session))


def open_select_box(page, key: str, within_s: float = 120.0) -> None:
    """Click the select box ``key`` until its options show: a click that lands while the page
    reruns (its sidebar polls the queue) is lost with the element it hit."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    box = page.locator(f".st-key-{key}")
    deadline = time.monotonic() + within_s
    while True:
        box.click()
        try:
            page.get_by_role("option").first.wait_for(timeout=5_000)
            return
        except PlaywrightTimeoutError:
            assert time.monotonic() < deadline, f"the select box {key} never opened"


def click_plot_point(page, chart, point, hover_text: str = "", attempts: int = 4) -> None:
    """Click the Plotly point ``point`` (a locator) the way a user does: rest the pointer on it
    until Plotly shows its hover label (holding ``hover_text``), then click.

    Plotly finds the clicked point from its hover state, computed on a throttled mousemove, so a
    move-and-click in one go can beat it on a busy machine. The point's position is read at each
    attempt, right before the pointer moves: the page may still be settling (a table above it
    finishing its layout), and a position measured earlier would hit a neighbouring point."""
    label = chart.locator(".hoverlayer .hovertext")
    if hover_text:
        label = label.filter(has_text=hover_text)
    for attempt in range(attempts):
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 40, y - 40)
        page.mouse.move(x, y, steps=4)
        try:
            label.first.wait_for(state="visible", timeout=5_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: not on it yet, measure again
            if attempt + 1 < attempts:
                continue
            raise
        page.mouse.click(x, y)
        return


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def make_zip(path: Path, classes: dict[str, int], corrupt: int = 0) -> Path:
    """A zip of class folders of small synthetic JPEGs, plus ``corrupt`` broken files."""
    from tests.conftest import write_image_folder

    folder = write_image_folder(path.parent / (path.stem + "_src"), classes)
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*.jpg")):
            archive.write(file, f"{path.stem}/{file.relative_to(folder)}")
        first = next(iter(classes))
        for i in range(corrupt):
            archive.writestr(f"{path.stem}/{first}/broken_{i}.jpg", b"this is not a jpeg" * 10)
        if corrupt:
            archive.writestr(f"{path.stem}/{first}/notes.txt", b"not an image")
    return path
