"""A shared link works as the very first request of a freshly started server (issue 9, item 6).

Streamlit serves a fresh server's first request in its legacy `pages/` mode; without
resnet_viz/ui/shell.py a deep link showed the raw file list (app, attributions, depth study, ...)
and no app sidebar. This test starts its own server, so no other test can have warmed it up, and
opens two deep links at once as its first requests: one with query parameters (a preset plus a
hostile value, which must be shown as literal text), one to another page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_utils import ARTIFACTS, main, new_page, no_exception, run_server
from playwright.sync_api import Browser, Page, expect

APP_PAGES = [
    "Home",
    "Training lab",
    "Depth study",
    "Receptive fields",
    "Attributions",
    "Loss landscape",
    "Limits & pitfalls",
]
HOSTILE = "[Click to log in](https://evil.example/login)"


@pytest.fixture
def fresh_server(tmp_path) -> Iterator[str]:
    served = run_server(tmp_path / "app-data")
    yield next(served)
    served.close()


def _shows_app_navigation(page: Page) -> None:
    nav = page.get_by_test_id("stSidebarNav")
    for title in APP_PAGES:
        expect(nav.get_by_text(title, exact=True)).to_be_visible()
    expect(nav.get_by_role("link")).to_have_count(len(APP_PAGES))
    expect(nav.locator("a[href$='/app']")).to_have_count(0)  # the legacy list's first entry, app.py itself
    expect(page.get_by_test_id("stSidebar").get_by_text("Why skip connections matter, trained live.")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    no_exception(page)


def test_deep_links_as_the_first_requests_of_a_fresh_server(fresh_server: str, browser: Browser):
    lab, study = new_page(browser), new_page(browser)
    lab.goto(f"{fresh_server}/lab?preset=depth&epochs={HOSTILE}")  # both sessions start before either finishes
    study.goto(f"{fresh_server}/depth_study")

    body = main(lab)
    body.get_by_role("button", name="Train").wait_for()  # the page's first full run, however slow the server
    expect(body.get_by_text("Depth hurts plain nets")).to_be_visible()  # the preset's config and banner
    warning = body.get_by_test_id("stAlert").filter(has_text="Ignored a value in the URL: epochs")
    expect(warning).to_contain_text(f"got {HOSTILE}, using 10")  # the value verbatim, as text
    expect(lab.locator("a[href*='evil.example']")).to_have_count(0)
    _shows_app_navigation(lab)
    lab.screenshot(path=str(ARTIFACTS / "deeplink_lab_first_request.png"), full_page=True)

    main(study).get_by_text("Stored runs").first.wait_for()
    expect(main(study).get_by_role("heading", name="Depth study")).to_be_visible()
    _shows_app_navigation(study)
    study.screenshot(path=str(ARTIFACTS / "deeplink_depth_study_first_request.png"), full_page=True)
    lab.context.close()
    study.context.close()
