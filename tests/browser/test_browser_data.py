"""Browser test: upload a CSV of points in the lab, train on it, see the loss chart drawn; Python for the run."""

from __future__ import annotations

import re

from browser_utils import ARTIFACTS, TIMEOUT_MS, main, new_page, no_exception, wait_for_loss_lines
from harness import points_csv
from playwright.sync_api import expect


def test_upload_points_train_and_the_chart_is_drawn(server, browser, tmp_path):
    page = new_page(browser)
    page.goto(f"{server}/lab?a.width=8&epochs=2")
    body = main(page)
    body.get_by_text("Your own data: upload points (CSV) or images (zip)").click()
    csv = tmp_path / "north south.csv"
    csv.write_bytes(points_csv())
    page.locator("input[type=file]").set_input_files(str(csv))
    done = body.get_by_test_id("stAlertContentSuccess")
    expect(done).to_have_text("Stored north south and chose it as the lab's dataset.", timeout=TIMEOUT_MS)
    expect(done.locator("code")).to_have_text("north south")  # the uploaded name, shown literally
    page.wait_for_url(re.compile(r"dataset=upload&.*upload=[0-9a-f]{64}|upload=[0-9a-f]{64}.*dataset=upload"))
    # A click sends the widget values the browser holds: wait until its dataset box shows the upload, as a
    # student would see it (on a loaded machine the box is redrawn after the URL changes).
    expect(body.get_by_role("combobox", name="Dataset")).to_have_value(re.compile(r"^upload: north south "))
    body.get_by_role("button", name="Train").click()
    wait_for_loss_lines(page)
    expect(body.get_by_text(re.compile(r"Finished")).first).to_be_visible(timeout=TIMEOUT_MS)
    body.get_by_text("Python for this run, and Download model").click()
    expect(body.get_by_text("Download script")).to_be_visible(timeout=TIMEOUT_MS)
    expect(body.locator("code", has_text="DataConfig(name='upload'")).to_be_visible()
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "lab_upload.png"), full_page=True)
