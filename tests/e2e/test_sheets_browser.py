"""A biologist's spreadsheet in a real browser: a zip with a CSV (image, label, patient, split) whose
given split puts one patient in train and in validation; the Data page flags the leak, one click
splits again keeping each patient in one split, and a 1-epoch MobileNetV2 run trains on it."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from tests.conftest import COLOURS, synthetic_image
from tests.e2e.conftest import open_app, saved_setting, screenshot, settled, tiny_backbone_picked
from tests.e2e.test_walkthrough import go_to


def patients_zip(path: Path) -> Path:
    rows = ["image,label,patient,split"]
    with zipfile.ZipFile(path, "w") as zf:
        for p in range(8):
            label = "lesion" if p % 2 else "normal"
            for k in range(3):
                buf = io.BytesIO()
                synthetic_image(COLOURS["red" if p % 2 else "blue"], seed=10 * p + k, size=(48, 48)).save(buf, "JPEG")
                zf.writestr(f"scans/p{p}_{k}.jpg", buf.getvalue())
                split = "val" if p >= 6 or (p == 1 and k == 2) else "train"  # P1 leaks into val
                rows.append(f"scans/p{p}_{k}.jpg,{label},P{p},{split}")
        zf.writestr("labels.csv", "\n".join(rows) + "\n")
    return path


def test_sheet_with_a_leaking_patient_is_fixed_and_trains(page, server, server_home, tmp_path):
    tiny_backbone_picked(server_home, "e2esheets")  # the page's plumbing, not MobileNetV2
    open_app(page, server, "?s=e2esheets")
    page.get_by_role("tab", name=re.compile("Spreadsheet")).click()
    uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Spreadsheet and images")
    uploader.locator("input[type=file]").set_input_files(str(patients_zip(tmp_path / "study.zip")))
    page.get_by_text("24 of 24 rows name an image, from 8 groups; 0 do not.").wait_for(timeout=60_000)
    page.get_by_role("button", name="Add the 24 images it lists").click()
    page.get_by_text("2 · Health report").wait_for(timeout=60_000)

    leak = page.get_by_text(re.compile(r"'P1' in train and validation"))
    leak.wait_for(timeout=30_000)
    settled(page)
    screenshot(page, "19_data_sheet_group_leak")
    page.get_by_role("button", name="Split again keeping each group in one split").click()
    page.get_by_text("Groups per class and split").wait_for()
    page.get_by_role("button", name="Split again keeping each group in one split").wait_for(state="detached")
    assert page.get_by_text(re.compile("more than one split")).count() == 0

    go_to(page, "train")
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Enter")
    saved_setting(page, server_home, "train", "epochs", 1)  # the rerun that keeps the value
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Training finished").wait_for(timeout=240_000)

    from tl_core.runs import RunStore
    from tl_core.workspace import Workspace

    run_id = re.search(r"[?&]run=([^&]+)", page.url).group(1)
    config = RunStore(Workspace(server_home).for_session("e2esheets")).get(run_id).config
    assert config.data.keep_given_split is False and config.train.epochs == 1  # trained on the fixed split
