"""A newcomer's first run, as the README promises: the built-in sample and the bundled
MobileNetV2, offline, in a few clicks and with no setting changed."""

from __future__ import annotations

import re

from tests.e2e.conftest import open_app, screenshot, settled
from tests.e2e.test_walkthrough import go_to


def test_sample_and_defaults_train_a_good_model(page, server):
    open_app(page, server)
    page.get_by_role("button", name="Use the sample dataset").click()
    page.get_by_text("2 · Health report").wait_for(timeout=60_000)

    go_to(page, "train")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"Epoch \d+ of 10 done")).first.wait_for(timeout=240_000)
    page.get_by_text("Training finished").wait_for(timeout=240_000)
    page.locator(".js-plotly-plot").first.wait_for()
    settled(page)  # let the curves finish drawing
    screenshot(page, "0_first_run_trained")

    go_to(page, "results")
    page.get_by_text("Error analysis").wait_for(timeout=60_000)
    accuracy = page.locator("[data-testid=stMetric]").filter(has_text="Accuracy").first
    value = float(accuracy.locator("[data-testid=stMetricValue]").inner_text().rstrip("%"))
    assert value >= 80.0, f"the sample should be easy for a pretrained backbone, got {value}%"
