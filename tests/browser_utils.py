"""Browser-test helpers: the real app under `streamlit run`, Debian's Chromium through Playwright.

The `server` and `browser` fixtures (session-wide, in conftest.py) start one app and one browser for
all browser tests. Screenshots go to test-artifacts/browser/. Every wait is for a concrete condition.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 90_000
# Playwright's `expect` waits 5 s by default: a page's first render on a busy 2-core CI machine can take
# longer. Waits that need a training to finish pass TIMEOUT_MS themselves.
expect.set_options(timeout=30_000)


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


def run_server(data_dir: Path) -> Iterator[str]:
    port = _free_port()
    # an empty store, and runs left by one test stop within 2 s instead of the 20 s kept for reloads
    env = {
        **os.environ,
        "RESNET_VIZ_DATA_DIR": str(data_dir),
        "RESNET_VIZ_GRACE_SECONDS": "2",
        "RESNET_VIZ_PROCESSES": "1",
    }
    # The server's output goes to a file: a pipe nobody reads fills up (64 KiB) and then blocks the
    # server on its next write, so every later page load times out.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "server.log", "w")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to ~60 s for the server to answer its health check
            if _healthy(url):
                break
            if proc.poll() is not None:
                raise RuntimeError((ARTIFACTS / "server.log").read_text())
            _wait(proc, 0.1)
        else:
            raise RuntimeError("streamlit did not become healthy")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _wait(proc: subprocess.Popen, seconds: float) -> None:
    """Wait for the server process to exit, at most `seconds` (it should not: this paces the health poll)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)


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


def no_exception(page: Page) -> None:
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
