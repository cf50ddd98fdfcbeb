"""What every page test needs: the app under AppTest, sessions that are closed after each test,
decoders for the figure JSON a page ships, and a browser tab opened on one page.

Each AppTest session is one viewer of the server's run service; `close_sessions` (run after every
test by the autouse fixture `closed_sessions` in conftest.py) makes it leave its runs and stops and
joins its background tasks, so nothing one test started trains on into the next.
"""

from __future__ import annotations

import base64
import io
import stat
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from browser_utils import TIMEOUT_MS, main, new_page
from playwright.sync_api import Browser, Locator, Page, expect
from streamlit.testing.v1 import AppTest

from resnet_viz.ui import live_chart
from resnet_viz.ui.session import SESSION_KEY

APP = str(Path(__file__).resolve().parent.parent / "app.py")
OPENED: list[AppTest] = []  # sessions of the current test, closed after it


def new_app(timeout: float = 120) -> AppTest:
    """An AppTest of the whole app (navigation included), closed after the test."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    OPENED.append(at)
    return at


def open_page(
    page: str,
    params: dict[str, str] | None = None,
    *,
    secrets: dict[str, str] | None = None,
    state: dict[str, Any] | None = None,
    prepare: Callable[[AppTest], None] | None = None,
    timeout: float = 120,
) -> AppTest:
    """The app run once (as a first visit does), then `page`, with URL `params`, `secrets` and session
    `state` set first; `prepare(at)` runs between the two (to hand the session runs). No exception."""
    at = new_app(timeout)
    for key, value in (params or {}).items():
        at.query_params[key] = value
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    if prepare is not None:
        prepare(at)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def close_sessions() -> None:
    """Every session of this test leaves its runs; its background tasks are stopped and joined."""
    for at in OPENED:
        if SESSION_KEY in at.session_state:
            jobs = at.session_state[SESSION_KEY]
            jobs.close()
            for task in jobs.others.values():
                task.join(30)
    OPENED.clear()


def run_to_the_end(at: AppTest, button: str, task: str, timeout: float = 300) -> None:
    """Click `button`, wait until the session's background task `task` finished, and redraw the page
    (AppTest runs no fragment timers)."""
    next(b for b in at.button if b.label == button).click().run()
    job = at.session_state[SESSION_KEY].others[task]
    assert job.join(timeout) and job.status == "finished", job.message
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def plotly_figures(at: AppTest) -> list[go.Figure]:
    """The page's Plotly figures, decoded from the JSON the page ships: its `st.plotly_chart`s, then the
    charts of the live boards a run redraws in place (`resnet_viz.ui.live_chart`)."""
    charts = [pio.from_json(el.proto.spec) for el in at.get("plotly_chart")]
    return charts + [go.Figure(chart["figure"]) for chart in board_charts(at)]


def live_boards(at: AppTest) -> list[Any]:
    """The page's live board elements in page order (not the sidebar's script preloader)."""
    return [el for el in at.get("bidi_component") if live_chart.charts_in(el.proto) is not None]


def board_charts(at: AppTest) -> list[dict[str, Any]]:
    """The charts of the page's live boards in page order: {"key", "caption", "wide", "figure", ...} each."""
    return [chart for el in live_boards(at) for chart in live_chart.charts_in(el.proto)]


def trace_array(value: Any) -> np.ndarray:
    """A trace array from figure JSON, as floats: (nested) lists, or Plotly's typed-array form
    {dtype, bdata (base64), shape}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).astype(float)
    return np.asarray(value, dtype=float)


def texts(elements: Iterable[Any], sep: str = " | ") -> str:
    """The values of text elements (at.caption, at.error, ...) in one string."""
    return sep.join(e.value for e in elements)


def page_texts(at: AppTest) -> str:
    """Everything a page says in markdown, captions, infos and warnings."""
    return texts((e for group in (at.markdown, at.caption, at.info, at.warning) for e in group), " ")


def browse(browser: Browser, server: str, path: str, heading: str, height: int | None = None) -> tuple[Page, Locator]:
    """A new tab (`height` px tall, to show a long page whole) on the page at `server/path`, once its
    `heading` shows; returns the tab and the page body. Home is visited first: a fresh server resolves a
    deep link only after one full run of the navigation."""
    page = new_page(browser)
    if height is not None:
        page.set_viewport_size({"width": 1500, "height": height})
    page.goto(server)
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible(timeout=TIMEOUT_MS)
    page.goto(f"{server}/{path}")
    body = main(page)
    expect(body.get_by_role("heading", name=heading)).to_be_visible(timeout=TIMEOUT_MS)
    return page, body


def points_csv(n: int = 120) -> bytes:
    """A CSV of 2-D points in two classes (north / south of y = 300), as a user would upload it."""
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(n, 2)) * 50 + 300  # any scale: the lab standardises uploaded points
    rows = ["x,y,label"] + [f"{x:.3f},{y:.3f},{'north' if y > 300 else 'south'}" for x, y in pts]
    return "\n".join(rows).encode()


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED, link: str | None = None) -> bytes:
    """A zip of `members` (name -> bytes), with a symlink member named `link` (to /etc/passwd) if given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


# the files of an exported run of models "plain" and "residual" (RunStore.export, the CLI's --out)
EXPORTED = {
    "manifest.json",
    "config.json",
    "summary.json",
    "records.json",
    "steps.csv",
    "layers.csv",
    "plain.safetensors",
    "residual.safetensors",
    "snapshots.json",  # the weight snapshots along training: steps and skip scales, then one file per model
    "plain.snapshots.safetensors",
    "residual.snapshots.safetensors",
}
