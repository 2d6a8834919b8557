"""The reported case in a real browser: a 13300x13300 PNG (under 1 MB) dropped on a class of the
Data page's class-by-class tab. The page says why it was not kept, shows no thumbnail of it, and the
server process's peak memory does not grow by the 177 MB (and more) that decoding it would take."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import psutil

from tests.e2e.conftest import open_app, screenshot, settled
from tests.image_bombs import BOMB_SIDE, png_bomb


def _server_process(server: str) -> psutil.Process:
    port = urlparse(server).port
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return psutil.Process(conn.pid)
    raise AssertionError(f"no process listens on port {port}")


def _peak_rss(process: psutil.Process) -> int:
    """The process's high-water mark of resident memory (Linux ``VmHWM``), in bytes."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_png_bomb_dropped_on_a_class_is_refused_without_touching_server_memory(page, server, tmp_path):
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(png_bomb())
    process = _server_process(server)
    open_app(page, server, "?s=e2ebomb")
    page.get_by_role("tab", name=re.compile("Class by class")).click()
    names = page.get_by_label("Class names, separated by commas")
    names.fill("cells, debris")
    names.press("Enter")
    page.get_by_text(re.compile(r"^cells · 0 images$")).wait_for()
    before = _peak_rss(process)

    uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="JPG, PNG, WEBP").first  # cells
    uploader.locator("input[type=file]").set_input_files(str(bomb))
    page.get_by_text(re.compile(rf"huge\.png: image is too large: too many pixels \({BOMB_SIDE}x{BOMB_SIDE}")) \
        .wait_for(timeout=60_000)
    settled(page)
    screenshot(page, "13b_data_bomb_refused")
    assert page.get_by_text(re.compile(r"^cells · 0 images$")).is_visible()
    assert page.locator("[data-testid=stImage]").count() == 0  # no thumbnail of it
    grown = _peak_rss(process) - before
    assert grown < 100_000_000, f"the server's peak memory grew by {grown / 1e6:.0f} MB"
