"""Results analysis, Predict and Export in a real browser, on a tiny run trained in the server's home:
a click on a confusion cell opens its gallery, a real photo is classified with Grad-CAM, and the
export's zip download arrives and unpacks."""

from __future__ import annotations

import re
import zipfile

import pytest

from tests.e2e.conftest import click_plot_point, open_app, screenshot, settled

SESSION = "e2eship"


def open_page(page, server: str, url_path: str, run_id: str) -> None:
    """The app's root with the session and run in the URL, then the page from the sidebar (how a user
    gets there; the ids stay in the URL)."""
    open_app(page, server, f"?s={SESSION}&run={run_id}")
    page.locator(f'[data-testid=stSidebarNavLink][href$="/{url_path}"]').click()
    page.wait_for_url(re.compile(f"/{url_path}"))
    page.locator("h1").first.wait_for()


@pytest.fixture(scope="module")
def shipped_run(server_home):
    from tests.conftest import train_tiny_run

    # MobileNetV2 itself: this module is the end-to-end check of what a user ships (a real photo
    # predicted, a bundle of the real network's size).
    return train_tiny_run(server_home / "sessions" / SESSION, backbone="mobilenet_v2").name


def test_click_a_confusion_cell_shows_its_images(page, server, shipped_run):
    open_page(page, server, "results", shipped_run)
    page.get_by_text("Error analysis").wait_for(timeout=60_000)
    # The clickable matrix: a heatmap with a layer of (transparent) cell markers. Not the Threshold
    # tab's 2x2 heatmap, which is in the DOM too, hidden, and may finish drawing first.
    chart = (page.locator("[data-testid=stPlotlyChart]").filter(has=page.locator(".heatmaplayer"))
             .filter(has=page.locator(".scatterlayer .point")).first)
    chart.wait_for(state="visible", timeout=60_000)
    true_box = page.locator("[data-testid=stSelectbox]").filter(has_text="True class")
    assert true_box.locator("input").input_value() == "blue"  # the default cell: first class, no mistakes in this tiny run
    # Cell (true red, predicted red): the last of the 2x2 cell markers (row-major), whose hover
    # label names it.
    cell = chart.locator(".scatterlayer .point").nth(3)
    click_plot_point(page, chart, cell, hover_text="true red, predicted red")
    page.wait_for_function(
        "() => document.querySelector('input[aria-label=\\'True class\\']')?.value === 'red'", timeout=30_000)
    page.get_by_text("red → red", exact=True).wait_for()  # the cell's classes, as text
    settled(page)
    screenshot(page, "9_results_error_analysis")

    # Grad-CAM on the gallery, then the calibration and feature-map tabs.
    page.get_by_text("Show where the model looks (Grad-CAM)").click()
    page.get_by_text("Layer to explain").wait_for(timeout=60_000)
    page.locator("[data-testid=stImage]").first.wait_for()
    settled(page)
    screenshot(page, "9b_results_gradcam")
    page.get_by_role("tab", name="Calibration").click()
    page.get_by_text("Calibration error (ECE)").wait_for()
    settled(page)
    screenshot(page, "9c_results_calibration")
    page.get_by_role("tab", name="Feature map").click()
    page.get_by_role("button", name="Compute the map").click()
    page.get_by_text("backbone was frozen").wait_for(timeout=120_000)
    feature_map = page.locator("[data-testid=stPlotlyChart]").filter(has_text="Backbone features")
    dot = feature_map.locator(".scatterlayer .point").first
    dot.wait_for()
    click_plot_point(page, feature_map, dot)
    page.get_by_text("1 image(s) picked on the map").wait_for(timeout=30_000)
    settled(page)
    screenshot(page, "9d_results_feature_map")

    # The images themselves drawn on the map.
    page.locator("[data-testid=stCheckbox]").filter(has_text="Show the images on the map").locator("label").click()
    feature_map.locator("svg image").first.wait_for(timeout=30_000)
    settled(page)
    screenshot(page, "9e_results_feature_map_pictures")


def test_predict_a_real_photo(page, server, shipped_run, tmp_path):
    from PIL import Image
    from skimage import data

    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(photo, "JPEG", quality=90)

    open_page(page, server, "predict", shipped_run)
    assert page.locator("h1").first.inner_text() == "Predict"
    uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Upload one or more photos")
    uploader.locator("input[type=file]").set_input_files(str(photo))
    page.get_by_text(re.compile(r"chelsea\.jpg → (red|blue)")).wait_for(timeout=60_000)
    page.get_by_text("where it looked for").wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for()
    settled(page)
    screenshot(page, "10_predict")


def test_export_download_arrives_and_unpacks(page, server, shipped_run, tmp_path):
    open_page(page, server, "export", shipped_run)
    assert page.locator("h1").first.inner_text() == "Export"
    page.get_by_role("button", name="Build the bundle").click()
    download_button = page.get_by_role("button", name="Download the bundle (.zip)")
    download_button.wait_for(timeout=180_000)
    settled(page)
    screenshot(page, "11_export")
    with page.expect_download() as info:
        download_button.click()
    target = tmp_path / "bundle.zip"
    info.value.save_as(target)
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unpacked")
    assert {"export/model.onnx", "export/predict.py", "export/labels.json", "export/MODEL_CARD.md"} <= names
    assert (tmp_path / "unpacked" / "export" / "model.onnx").stat().st_size > 1_000_000
