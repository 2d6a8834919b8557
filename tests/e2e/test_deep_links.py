"""A deep link that is the first request of a fresh server gets the app's navigation, layout and
sidebar (Streamlit's automatic pages/ mode would run the page file alone)."""

from __future__ import annotations

import secrets

import pytest

from tests.e2e.conftest import streamlit_server

pytestmark = pytest.mark.slow

APP_LABELS = ["1 · Data", "2 · Model", "3 · Train", "Compare strategies", "4 · Results", "5 · Predict",
              "6 · Export", "Runs", "Teacher"]


def nav_labels(tab) -> list[str]:
    links = tab.locator("[data-testid=stSidebarNav] [data-testid=stSidebarNavLink]")
    links.first.wait_for()
    return [text.split("\n")[-1].strip() for text in links.all_inner_texts()]  # after the icon's name


def check_app_shell(tab, title: str) -> None:
    tab.get_by_role("heading", name=title, exact=True).wait_for()
    assert nav_labels(tab) == APP_LABELS  # not "app, data, model, ..." from the file names
    sidebar = tab.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("TL Studio", exact=False).first.wait_for()
    # Drawn by app.py after the page, which ended early (no dataset and no run yet on Train).
    sidebar.get_by_text("Run: none yet").wait_for()
    sidebar.get_by_text("Dataset: none yet", exact=False).wait_for()
    # layout="wide": the main column uses the window (the centered layout is at most 736 px wide).
    width = tab.locator("[data-testid=stMainBlockContainer]").bounding_box()["width"]
    assert width > 900, width


def test_deep_link_as_first_request_after_a_start_gets_the_app(browser, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with streamlit_server(home) as url:  # a new process: no script has run in it yet
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        try:
            tab = context.new_page()
            session = secrets.token_hex(8)
            tab.goto(f"{url}/train?s={session}")  # what a student reopens after the restart
            check_app_shell(tab, "Train")
            assert f"s={session}" in tab.url
            # A second tab on another page, and the app's own navigation, keep working.
            other = context.new_page()
            other.goto(f"{url}/runs?s={session}")
            check_app_shell(other, "Runs")
            tab.locator("[data-testid=stSidebarNav]").get_by_text("2 · Model").click()
            tab.get_by_role("heading", name="Choose a model", exact=True).wait_for()
            assert nav_labels(tab) == APP_LABELS
        finally:
            context.close()
    log = (home / "server.log").read_text()
    assert "Traceback" not in log, log
