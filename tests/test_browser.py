"""Browser tests: the real app under `streamlit run`, driven in Debian's Chromium by Playwright.

Screenshots go to test-artifacts/browser/. Every wait is for a concrete condition in the page.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # fmt: skip
TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read() == b"ok"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "RESNET_VIZ_MAX_JOBS": "2", "RESNET_VIZ_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to ~60 s for the server to answer its health check
            if _healthy(url):
                break
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode())
            _wait(proc, 0.1)
        else:
            raise RuntimeError("streamlit did not become healthy")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(proc: subprocess.Popen, seconds: float) -> None:
    """Wait for the server process to exit, at most `seconds` (it should not: this paces the health poll)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def _main(page: Page):
    """The page body (Streamlit's header has its own Stop button while a script runs)."""
    return page.get_by_test_id("stMainBlockContainer")


def _no_exception(page: Page) -> None:
    expect(page.locator("[data-testid=stException]")).to_have_count(0)


def _step(page: Page) -> int:
    text = page.get_by_text(re.compile(r"step \d+/\d+ · epoch")).first.inner_text()
    return int(re.search(r"step (\d+)/", text).group(1))


def _wait_for_loss_lines(page: Page) -> None:
    """Wait until the loss chart (first Plotly chart) has drawn lines with points for both models."""
    page.wait_for_function(
        """() => {
            const plot = document.querySelector('.js-plotly-plot');
            if (!plot || !plot.querySelector('.main-svg')) return false;
            const lines = [...plot.querySelectorAll('.scatterlayer .trace path.js-line')];
            return lines.filter(p => (p.getAttribute('d') || '').includes('L')).length >= 2;
        }""",
        timeout=TIMEOUT_MS,
    )


def _legend(page: Page) -> str:
    return page.locator(".js-plotly-plot").first.locator(".legend").text_content() or ""


def test_preset_train_switch_pages_and_stop(server, browser):
    page = _page(browser)
    page.goto(server)
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    page.get_by_role("link", name="Open").first.click()  # "Depth hurts plain nets"
    expect(page.get_by_text("Depth hurts plain nets:")).to_be_visible()
    assert "a.depth=56" in page.url
    epochs = page.get_by_label("Epochs")
    epochs.fill("60")  # long enough that it is still training after a trip to another page
    epochs.press("Enter")
    page.wait_for_url(re.compile(r"epochs=60"))  # the rerun took the new value
    _main(page).get_by_role("button", name="Train").click()
    _wait_for_loss_lines(page)
    legend = _legend(page)
    assert "A · plain 56" in legend and "B · residual 56" in legend
    page.screenshot(path=str(ARTIFACTS / "lab_training.png"), full_page=True)
    before = _step(page)

    page.get_by_role("link", name="Home").click()
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Lab run training: step \d+"))).to_be_visible()
    page.get_by_role("link", name="Training lab").click()
    _wait_for_loss_lines(page)
    page.wait_for_function(
        f"""() => {{
            const m = document.body.innerText.match(/step (\\d+)\\/\\d+ · epoch/);
            return m && Number(m[1]) > {before};
        }}"""
    )  # training went on while we were away
    assert "a.depth=56" in page.url  # the config survived the round trip
    _main(page).get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"Stopped at step \d+"))).to_be_visible()
    expect(_main(page).get_by_role("button", name="Steps CSV")).to_be_visible()
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "lab_stopped.png"), full_page=True)
    page.context.close()


def test_two_sessions_train_at_once_without_sharing(server, browser):
    first, second = _page(browser), _page(browser)
    first.goto(f"{server}/lab?a.depth=14&a.width=8&epochs=200")
    second.goto(f"{server}/lab?a.depth=8&a.width=8&epochs=200&lr=0.05")
    for page in (first, second):
        _main(page).get_by_role("button", name="Train").click()
    for page in (first, second):
        _wait_for_loss_lines(page)
    assert "plain 14" in _legend(first) and "plain 8" not in _legend(first)
    assert "plain 8" in _legend(second) and "plain 14" not in _legend(second)
    # Each tab's progress counts its own run (different totals: 10 steps/epoch either way, own epochs).
    for page in (first, second):
        _main(page).get_by_role("button", name="Stop").click()
        expect(page.get_by_text(re.compile(r"Stopped at step \d+"))).to_be_visible()
        _no_exception(page)
    second.screenshot(path=str(ARTIFACTS / "lab_second_session.png"), full_page=True)
    first.context.close()
    second.context.close()


def test_invalid_url_explains_itself(server, browser):
    page = _page(browser)
    page.goto(f"{server}/lab?a.depth=21&lr=-1")
    expect(page.get_by_text(re.compile("Ignored a value in the URL: a.depth"))).to_be_visible()
    expect(page.get_by_text(re.compile("Ignored a value in the URL: lr"))).to_be_visible()
    _no_exception(page)
    page.context.close()
