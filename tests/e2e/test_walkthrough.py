"""The app in a real browser: upload, model, train with live curves across a reload, stop, results;
an upload with broken files; and two browser contexts that do not see each other's runs."""

from __future__ import annotations

import re
import time

from tests.e2e.conftest import make_zip, open_app, open_select_box, saved_setting, screenshot, settled
from tests.tiny_backbone import NAME as TINY


def upload_zip(page, path) -> None:
    page.get_by_role("tab", name=re.compile("Zip")).click()
    uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="A .zip with one folder")
    uploader.locator("input[type=file]").set_input_files(str(path))
    page.get_by_role("button", name="Add this zip").click()
    page.get_by_text("2 · Health report").wait_for(timeout=60_000)


def go_to(page, url_path: str) -> None:
    page.locator(f'[data-testid=stSidebarNavLink][href$="/{url_path}"]').click()
    page.wait_for_url(re.compile(f"/{url_path}(\\?|$)"))  # the click was not lost to a rerun
    page.locator("h1").filter(has_text=re.compile(".")).first.wait_for()


def epochs_done(page) -> int:
    text = page.get_by_text(re.compile(r"Epoch \d+ of \d+ done")).first.inner_text(timeout=60_000)
    return int(re.search(r"Epoch (\d+) of", text).group(1))


def wait_for_growth(page, above: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = epochs_done(page)
        except Exception:  # noqa: BLE001 - the fragment redraws the line while we read it
            done = -1
        if done > above:
            return done
        time.sleep(1.0)
    raise AssertionError(f"training did not get past epoch {above}")


def test_upload_train_reload_stop_results(page, server, server_home, tmp_path):
    open_app(page, server)
    assert page.locator("h1").first.inner_text() == "Your images"
    upload_zip(page, make_zip(tmp_path / "colours.zip", {"red": 6, "green": 6, "blue": 6}))
    page.locator(".js-plotly-plot").first.wait_for()
    settled(page)
    screenshot(page, "1_data_health")

    go_to(page, "model")
    page.get_by_text("parameters will train").wait_for()
    page.get_by_text(re.compile("Pretrained weights for mobilenet_v2 are on this server")).wait_for()
    page.get_by_text("Feature extractor (backbone frozen)").click()
    page.locator(".js-plotly-plot").first.wait_for()
    screenshot(page, "2_model")
    # Training, the reload and Stop below are the app's plumbing: checked on the tiny test backbone,
    # picked here as a user picks a backbone (300 of its epochs on images outlast the test; one of
    # MobileNetV2's took seconds, and its Stop ten more).
    settled(page)
    open_select_box(page, "backbone_pick")
    page.get_by_role("option", name=TINY, exact=True).click()
    saved_setting(page, server_home, "model", "backbone", TINY)

    go_to(page, "train")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("300")
    epochs.press("Enter")
    saved_setting(page, server_home, "train", "epochs", 300)
    page.get_by_text("Compute frozen features once").click()  # train the head on images each epoch
    saved_setting(page, server_home, "train", "feature_cache", False)
    page.get_by_role("button", name="Start training").click()
    second = wait_for_growth(page, 0, timeout=120)
    page.locator(".js-plotly-plot").first.wait_for()
    screenshot(page, "3_train_live")

    url = page.url
    assert "run=" in url and "s=" in url
    page.reload()
    page.wait_for_selector("[data-testid=stApp]")
    after_reload = wait_for_growth(page, second - 1)
    assert after_reload >= second
    wait_for_growth(page, after_reload)  # still growing after the reload
    screenshot(page, "4_train_after_reload")

    page.get_by_role("button", name="Stop training").click()
    page.get_by_text("Training was stopped").wait_for(timeout=90_000)
    screenshot(page, "5_train_stopped")

    go_to(page, "results")
    page.get_by_text("Error analysis").wait_for(timeout=60_000)
    page.locator("[data-testid=stMetricValue]").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    settled(page)
    screenshot(page, "6_results")


def test_upload_with_broken_files_lists_them(page, server, tmp_path):
    open_app(page, server)
    upload_zip(page, make_zip(tmp_path / "messy.zip", {"red": 6, "blue": 6}, corrupt=2))
    page.get_by_text(re.compile(r"Skipped files \(\d+\)")).first.wait_for()
    body = page.locator("[data-testid=stExpander]").filter(has_text="Skipped files").inner_text()
    assert "Skipped files (3)" in body
    page.locator("[data-testid=stDataFrame]").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    settled(page)  # let the thumbnails and charts finish drawing
    screenshot(page, "7_data_skipped")


def test_second_browser_does_not_see_the_first_ones_runs(browser, server, tmp_path):
    from tests.conftest import write_image_folder  # noqa: F401 - tests package importable

    first = browser.new_context()
    second = browser.new_context()
    try:
        a, b = first.new_page(), second.new_page()
        open_app(a, server)
        a.get_by_role("button", name="Use the sample dataset").click()
        a.get_by_text("2 · Health report").wait_for(timeout=60_000)
        open_app(b, server, "results")
        b.get_by_text("No runs yet").wait_for()
        open_app(b, server, "data")
        assert b.get_by_text("2 · Health report").count() == 0  # no dataset of the first session
        assert re.search(r"[?&]s=", a.url) and re.search(r"[?&]s=", b.url)
        s_a = re.search(r"s=([A-Za-z0-9_-]+)", a.url).group(1)
        s_b = re.search(r"s=([A-Za-z0-9_-]+)", b.url).group(1)
        assert s_a != s_b
        screenshot(b, "8_second_session")
    finally:
        first.close()
        second.close()
