"""Browser-test helpers: the real app under `streamlit run`, Debian's Chromium through Playwright.

The `server` and `browser` fixtures (session-wide, in conftest.py) start one app and one browser for
all browser tests. Screenshots go to test-artifacts/browser/. Every wait is for a concrete condition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from benchmarks.server import CHROMIUM, CHROMIUM_FLAGS, Server

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
TIMEOUT_MS = 90_000
# Playwright's `expect` waits 5 s by default: a page's first render on a busy 2-core CI machine can take
# longer. Waits that need a training to finish pass TIMEOUT_MS themselves.
expect.set_options(timeout=30_000)


def run_server(data_dir: Path) -> Iterator[str]:
    """The app on an empty store; runs left by one test stop within 2 s of its tabs closing (instead of
    the 20 s kept for reloads), so they do not hold the next test's slots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = Server(data_dir, ARTIFACTS / "server.log", RESNET_VIZ_GRACE_SECONDS="2", RESNET_VIZ_PROCESSES="1")
    try:
        server.wait_healthy()
        yield server.url
    finally:
        server.stop()


def run_browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


_OPEN: list[BrowserContext] = []  # contexts of the running test, closed after it even when it fails


def new_page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    _OPEN.append(context)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def close_pages() -> None:
    """Close every tab a test opened: a tab left open keeps its session, its refresh timer and its runs
    on the shared server, and slows every later browser test."""
    while _OPEN:
        with contextlib.suppress(Exception):  # already closed by the test, or the browser is gone
            _OPEN.pop().close()


def main(page: Page) -> Locator:
    """The page body (Streamlit's header has its own Stop button while a script runs)."""
    return page.get_by_test_id("stMainBlockContainer")


def open_preset(page: Page, key: str) -> None:
    """Click Home's Open link of preset `key`, found by its URL: Streamlit draws the preset cards as their
    elements arrive, not in page order, so "the first Open link" can be another preset's for a moment."""
    main(page).locator(f'a[href$="preset={key}"]').click()


def no_exception(page: Page) -> None:
    expect(page.locator("[data-testid=stException]")).to_have_count(0)


def seen_chart(page: Page, title: str) -> Locator:
    """The Plotly chart whose text includes `title`, scrolled into view: a live lab chart out of view
    keeps its newest figure and draws it when it is seen (`resnet_viz/ui/live_chart.py`)."""
    chart = page.locator(".js-plotly-plot").filter(has_text=title)
    chart.scroll_into_view_if_needed()
    return chart


def wait_for_loss_lines(page: Page) -> None:
    """Wait until the loss chart (the first Plotly chart) has drawn lines with points for both models."""
    page.wait_for_function(
        """() => {
            const plot = document.querySelector('.js-plotly-plot');
            if (!plot || !plot.querySelector('.main-svg')) return false;
            const lines = [...plot.querySelectorAll('.scatterlayer .trace path.js-line')];
            return lines.filter(p => (p.getAttribute('d') || '').includes('L')).length >= 2;
        }""",
        timeout=TIMEOUT_MS,
    )
