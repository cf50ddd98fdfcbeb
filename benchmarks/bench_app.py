"""The app as a user sees it: latency to the first drawn loss point, refresh interval, training speed.

Starts `streamlit run app.py`, drives Debian's Chromium with Playwright, clicks Train, and measures
in the browser's own clock:
- time from the click to the first loss line with points for both models (goal <= 1.5 s);
- the interval between chart redraws while training (the fragment timer is 1 s);
- training steps/s inside the app (from its progress line, at the end of the run) against the
  headless engine on the same config in this process, after the app run (goal ratio >= 0.85).

    python -m benchmarks.bench_app          # from the repository root; prints one JSON object
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from playwright.sync_api import sync_playwright

from resnet_viz.lab import decode
from resnet_viz.training import Trainer

ROOT = Path(__file__).resolve().parent.parent
PARAMS = {"a.depth": "20", "epochs": "30"}
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            pass
        try:
            proc.wait(timeout=0.2)
            raise RuntimeError("streamlit exited")
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError("streamlit did not become healthy")


WATCH = """() => {
    window.__redraws = [];
    window.__firstLines = null;
    const check = () => {
        const plot = document.querySelector('.js-plotly-plot');
        if (!plot) return;
        const lines = [...plot.querySelectorAll('.scatterlayer .trace path.js-line')]
            .filter(p => (p.getAttribute('d') || '').includes('L'));
        if (lines.length >= 2 && window.__firstLines === null) window.__firstLines = performance.now();
    };
    new MutationObserver(() => {
        check();
        const m = document.body.innerText.match(/step (\\d+)\\/(\\d+) · epoch/);
        if (m && (window.__redraws.length === 0 || window.__redraws[window.__redraws.length - 1][1] !== m[1]))
            window.__redraws.push([performance.now(), m[1]]);
    }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def measure_app(url: str) -> dict[str, float]:
    query = "&".join(f"{k}={v}" for k, v in PARAMS.items())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(180_000)
        page.goto(f"{url}/lab?{query}")
        main = page.get_by_test_id("stMainBlockContainer")
        main.get_by_role("button", name="Train").wait_for()
        page.evaluate(WATCH)
        clicked = page.evaluate("performance.now()")
        main.get_by_role("button", name="Train").click()
        page.wait_for_function("window.__firstLines !== null")
        first = page.evaluate("window.__firstLines") - clicked
        page.get_by_text(re.compile(r"Finished \d+ steps")).wait_for()
        redraws = page.evaluate("window.__redraws")
        text = page.get_by_text(re.compile(r"steps/s · ETA")).first.inner_text()
        app_rate = float(re.search(r"([\d.]+) steps/s", text).group(1))
        browser.close()
    times = [t for t, _ in redraws]
    intervals = [(b - a) / 1000 for a, b in zip(times, times[1:], strict=False)]
    return {
        "click_to_first_loss_point_s": round(first / 1000, 3),
        "refresh_interval_median_s": round(statistics.median(intervals), 3) if intervals else float("nan"),
        "refresh_interval_p90_s": round(sorted(intervals)[int(0.9 * (len(intervals) - 1))], 3) if intervals else 0,
        "app_steps_per_s": app_rate,
    }


def headless_rate() -> float:
    cfg, _ = decode(PARAMS)
    trainer = Trainer(cfg.models(), cfg.train, cfg.data)
    history = trainer.history()
    t0 = time.perf_counter()
    for records in trainer.run():
        history.add(records)
    return trainer.total_steps / (time.perf_counter() - t0)


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
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
        env={**os.environ, "RESNET_VIZ_DATA_DIR": tempfile.mkdtemp(prefix="bench-app-")},  # nothing stored: it trains
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(url, proc)
        app = measure_app(url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    torch.set_num_threads(2)
    engine = headless_rate()
    result = {
        "config": PARAMS,
        **app,
        "headless_steps_per_s": round(engine, 2),
        "ratio_app_to_headless": round(app["app_steps_per_s"] / engine, 3),
        # the default lab pair (depth 20, 10 epochs on digits) is 100 steps: its time in the app at this speed
        "default_pair_seconds_in_app": round(100 / app["app_steps_per_s"], 1),
        "goals": {
            "first_point_at_most_s": 1.5,
            "met_first_point": app["click_to_first_loss_point_s"] <= 1.5,
            "ratio_at_least": 0.85,
            "met_ratio": app["app_steps_per_s"] / engine >= 0.85,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
