"""The teaching lab in a real browser: three transfer strategies compared in one click on the
sample dataset, their curves overlaid under their names, the table and what the numbers show."""

from __future__ import annotations

import re

from tests.e2e.conftest import open_app, saved_setting, screenshot, settled, tiny_backbone_picked
from tests.e2e.test_walkthrough import go_to

KEPT = ("linear probe", "logistic regression on features", "full fine-tune")
DROPPED = ("LP-FT (probe, then fine-tune all)", "random init (no transfer)")


def test_compare_three_strategies_on_the_sample(page, server, server_home):
    tiny_backbone_picked(server_home, "e2ecompare")  # the page's plumbing, not MobileNetV2
    open_app(page, server, "?s=e2ecompare")
    page.get_by_role("button", name="Use the sample dataset").click()
    page.get_by_text("2 · Health report").wait_for(timeout=60_000)
    go_to(page, "train")  # a short budget for every member: 2 epochs
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("2")
    epochs.press("Enter")
    saved_setting(page, server_home, "train", "epochs", 2)

    go_to(page, "compare")
    for label in DROPPED:
        page.get_by_role("button", name=f"Remove {label}").click()
        page.get_by_role("button", name=f"Remove {label}").wait_for(state="detached")
    page.get_by_text("3 runs, one after another.").wait_for()
    page.get_by_role("button", name="Compare").click()

    # Shown once the probe and the fine-tune have both finished: a sentence on the user's numbers.
    page.get_by_text(re.compile(r"Fine-tuning everything \(|the linear probe \(")).first.wait_for(timeout=420_000)
    legend = page.locator(".js-plotly-plot .legendtext")
    for label in KEPT:
        legend.filter(has_text=label).first.wait_for()
    page.locator("[data-testid=stDataFrame]").first.wait_for()
    runs = list((server_home / "sessions" / "e2ecompare" / "runs").glob("*/config.json"))
    assert len(runs) == 3
    settled(page)
    screenshot(page, "17_compare_strategies")
