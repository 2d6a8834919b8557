"""Foundation backbones in a real browser: a timm model picked on the Model page trains from random
initialisation on the sample, and the Compare page's "Which backbone?" trains one probe on each
backbone whose weights are on the server and plots them."""

from __future__ import annotations

import re

from tests.e2e.conftest import open_app, saved_setting, screenshot, settled, tiny_backbone_picked
from tests.e2e.test_walkthrough import go_to

SESSION = "e2ewhichbackbone"


def test_a_timm_backbone_trains_from_random_init_and_which_backbone_compares_two(page, server, server_home):
    tiny_backbone_picked(server_home, SESSION)
    open_app(page, server, f"?s={SESSION}")
    page.get_by_role("button", name="Use the sample dataset").click()
    page.get_by_text("2 · Health report").wait_for(timeout=60_000)

    # The Model page: timm's tiny ViT (no weights on the server, so it trains from random init).
    go_to(page, "model")
    backbone = page.locator("[data-testid=stSelectbox]").filter(has=page.get_by_text("Backbone", exact=True))
    backbone.click()
    page.get_by_role("option", name="tiny_vit").click()
    saved_setting(page, server_home, "model", "backbone", "tiny_vit")
    page.locator("[data-testid=stDataFrame]").first.wait_for()  # the backbones' table

    go_to(page, "train")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Enter")
    saved_setting(page, server_home, "train", "epochs", 1)
    page.get_by_text("Start from pretrained weights").click()
    saved_setting(page, server_home, "model", "pretrained", False)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Training finished.").wait_for(timeout=180_000)
    runs = list((server_home / "sessions" / SESSION / "runs").glob("*/config.json"))
    assert len(runs) == 1 and '"backbone": "tiny_vit"' in runs[0].read_text()
    settled(page)
    screenshot(page, "20_train_timm_random_init")

    # Which backbone?: the server has weights for the bundled MobileNetV2 and the test backbone.
    go_to(page, "compare")
    page.get_by_test_id("stRadioGroup").get_by_text("Which backbone?").click()
    page.get_by_text("2 runs, one after another.").wait_for()
    page.get_by_role("button", name="Compare the backbones").click()
    page.get_by_text(re.compile(r"^On your images")).first.wait_for(timeout=300_000)
    charts = page.locator("[data-testid=stPlotlyChart]")
    charts.filter(has_text="published").first.wait_for()
    for name in ("mobilenet_v2", "tiny_cnn"):
        page.locator("[data-testid=stDataFrame]").first.wait_for()
        charts.filter(has_text=name).first.wait_for()
    settled(page)
    screenshot(page, "21_compare_which_backbone")
