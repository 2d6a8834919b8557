"""The code behind a run and the runs you can manage, in a real browser: show the command and the
script for the current settings, train, rename the run with a name full of Markdown (shown as
typed), re-run it (the stored backbone features make the second run quick) and delete one."""

from __future__ import annotations

import re

from tests.e2e.conftest import open_app, saved_setting, screenshot, settled, tiny_backbone_picked
from tests.e2e.test_walkthrough import go_to

HOSTILE_NAME = "**bold** [x](http://e.com)"


def train_two_epochs(page, server_home) -> None:
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("2")
    epochs.press("Enter")
    saved_setting(page, server_home, "train", "epochs", 2)  # the app took the new value
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Training finished").wait_for(timeout=240_000)


def test_show_the_code_then_rename_rerun_and_delete_a_run(page, server, server_home):
    tiny_backbone_picked(server_home, "e2eruns")  # the page's plumbing, not MobileNetV2
    open_app(page, server, "?s=e2eruns")
    page.get_by_role("button", name="Use the sample dataset").click()
    page.get_by_text("2 · Health report").wait_for(timeout=60_000)

    go_to(page, "train")
    # No run yet, so the page ends early; the sidebar is drawn all the same (st.stop() used to drop it).
    page.locator("[data-testid=stSidebar]").get_by_text("transfer learning on your own images").wait_for()
    page.get_by_text("Show the code").click()
    page.get_by_text(re.compile(r"python -m tl_core train")).first.wait_for()
    page.get_by_text("in plain PyTorch").first.wait_for()  # the standalone script's first line
    page.get_by_role("button", name="Download train.py").wait_for()
    screenshot(page, "15_train_show_the_code")
    page.get_by_text("Show the code").click()  # fold it again
    train_two_epochs(page, server_home)

    go_to(page, "runs")
    page.get_by_role("textbox", name="Name", exact=True).fill(HOSTILE_NAME)
    page.get_by_role("button", name="Rename").click()
    page.get_by_text(HOSTILE_NAME, exact=True).first.wait_for()  # the name as typed, not rendered
    assert page.locator("a[href='http://e.com']").count() == 0
    assert page.locator("strong", has_text="bold").count() == 0

    page.get_by_role("button", name="Re-run").click()
    page.wait_for_url(re.compile(r"/train(\?|$)"))
    page.get_by_text("Training finished").wait_for(timeout=240_000)

    go_to(page, "runs")
    table = page.locator("[data-testid=stDataFrame]").first
    table.wait_for()
    page.get_by_role("button", name="Delete run…").click()
    page.get_by_text("Delete this run for good?").wait_for()
    settled(page)  # the rerun that drew the question is over
    page.get_by_role("button", name="Delete for good").click()
    # The question goes, and one run is left: the renamed one, still listed by its name.
    page.get_by_role("button", name="Delete run…").wait_for(timeout=60_000)
    page.get_by_text(HOSTILE_NAME).first.wait_for()
    runs_left = list((server_home / "sessions" / "e2eruns" / "runs").glob("*/config.json"))
    assert len(runs_left) == 1
    settled(page)
    screenshot(page, "16_runs_page")
