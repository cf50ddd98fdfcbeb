"""A Streamlit client at the protocol level: one browser tab without the browser, for load benchmarks.

A Streamlit page talks to its server over one websocket (`/_stcore/stream`) in protobuf messages:
the tab sends `BackMsg.rerun_script` (page, query string, widget values; a button click is a
widget state with `trigger_value`), the server streams `ForwardMsg`s back (`new_session` when a
run starts, `delta`s with the elements, `page_info_changed` when the script writes the URL,
`script_finished`). A fragment with `run_every` sends `auto_rerun` (interval, fragment id): the
browser then keeps a timer and sends a fragment rerun (`fragment_id`, `is_auto_rerun`) every
interval, until a full run starts (a `new_session` not tagged with fragment ids clears every timer)
or the server sends `stop_auto_rerun`. This module does what Streamlit's frontend does there
(frontend/app/src/App.tsx: handleNewSession, handleAutoRerun, handlePageInfoChanged), so a hundred
tabs cost one Python process instead of a hundred Chromium renderers.

What it does not do: render anything, keep a widget value it was not told (the server keeps the
last value of every widget it rendered, so a rerun that names only the clicked button behaves like
the browser's), or cache messages (it reports no cached hashes, so the server sends every message
in full).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import ClientConnection, connect

from resnet_viz.ui import live_chart

MAX_MESSAGE_BYTES = 256 * 2**20  # Streamlit's own limit is 200 MB
FINISHED_OK = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)


def element_text(el: Element) -> str:
    """The text a user reads in an element (alerts, progress lines, markdown, captions, text); '' else."""
    kind = el.WhichOneof("type")
    if kind == "alert":
        return el.alert.body
    if kind == "progress":
        return el.progress.text
    if kind == "markdown":
        return el.markdown.body
    if kind == "text":
        return el.text.body
    if kind == "exception":
        return f"{el.exception.type}: {el.exception.message}"
    return ""


def plotly_array(values: Any) -> np.ndarray:
    """A Plotly trace array as numpy: plain JSON lists, or Plotly's typed arrays ({"dtype", "bdata"})."""
    if isinstance(values, dict) and "bdata" in values:
        out = np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
        shape = values.get("shape")
        return out.reshape([int(s) for s in str(shape).split(",")]) if shape else out
    return np.asarray(values if values is not None else [])


CHART_KINDS = ("plotly_chart", "bidi_component")  # st.plotly_chart, and the lab's live charts


def plotly_figures(el: Element) -> list[dict[str, Any]]:
    """The figures (data and layout) a chart element carries: a plotly_chart's one, or the charts of a live
    board (`resnet_viz.ui.live_chart`); none for another component."""
    if el.WhichOneof("type") == "bidi_component":
        return [chart["figure"] for chart in live_chart.charts_in(el.bidi_component) or []]
    return [json.loads(el.plotly_chart.spec)]


def figure_title(fig: dict[str, Any]) -> str:
    title = fig.get("layout", {}).get("title", "")
    return title.get("text", "") if isinstance(title, dict) else str(title)


@dataclass
class Event:
    """One element as it arrived: when (perf_counter seconds), where (delta path), what."""

    t: float
    path: tuple[int, ...]
    element: Element
    fragment: str  # the fragment whose run sent it ('' for a full run)


@dataclass
class Tab:
    """One browser tab on a Streamlit server, speaking its websocket protocol.

    `on_element(tab, event)` is called for every element the server sends (in the event loop:
    keep it cheap). Every wait takes a timeout; every loop is bounded by it.
    """

    base_url: str  # http://127.0.0.1:PORT
    name: str = "tab"
    on_element: Callable[[Tab, Event], None] | None = None
    query: str = ""  # the tab's URL query string (what the page last wrote with st.query_params)
    page_name: str = ""  # the URL path of the page, as the frontend sends it for a first request
    page_hash: str = ""  # the page's script hash, once the server has named it
    pages: dict[str, str] = field(default_factory=dict)  # URL path -> page script hash (from new_session)
    buttons: dict[str, str] = field(default_factory=dict)  # button label -> widget id (latest seen)
    sliders: dict[str, Element] = field(default_factory=dict)  # slider label -> latest element
    running: bool = False  # a script run (full or fragment) is going on
    full_runs: int = 0  # full script runs started
    finished: list[int] = field(default_factory=list)  # script_finished statuses, in order
    errors: list[str] = field(default_factory=list)  # exceptions shown, pages not found
    fragment_reruns_sent: int = 0
    messages: int = 0  # ForwardMsgs received
    bytes_in: int = 0

    def __post_init__(self) -> None:
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._timers: dict[str, tuple[float, asyncio.Task]] = {}  # fragment id -> (interval, timer task)
        self._changed = asyncio.Condition()
        self._closed = False
        self._mark = 0  # full runs started before the latest request (see settle)

    # ---- connection

    async def connect(self) -> None:
        url = self.base_url.replace("http://", "ws://") + "/_stcore/stream"
        self._ws = await connect(url, subprotocols=["streamlit"], max_size=MAX_MESSAGE_BYTES, open_timeout=30)
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")

    async def close(self) -> None:
        self._closed = True
        for _, task in self._timers.values():
            task.cancel()
        self._timers.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    # ---- what the tab sends

    async def open(self, page: str, query: str = "") -> None:
        """Load `/page?query` as a first request (the frontend names the page by its URL path)."""
        self.page_name, self.query = page, query
        self.page_hash = self.pages.get(page, "")
        await self._rerun()

    async def click(self, label: str) -> float:
        """Click the button labelled `label`; returns when the click was sent (perf_counter seconds)."""
        state = WidgetState(id=self.buttons[label], trigger_value=True)
        return await self._rerun([state])

    async def set_slider(self, label: str, value: float) -> float:
        """Move the slider labelled `label` to `value` (a float slider); returns when it was sent."""
        el = self.sliders[label]
        state = WidgetState(id=el.slider.id)
        state.double_array_value.data.append(value)
        return await self._rerun([state])

    async def _rerun(self, widgets: list[WidgetState] | None = None, fragment: str = "") -> float:
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query
        cs.page_script_hash = self.page_hash
        cs.page_name = "" if self.page_hash else self.page_name
        cs.widget_states.widgets.extend(widgets or [])
        if fragment:
            cs.fragment_id = fragment
            cs.is_auto_rerun = True
        if not fragment:
            self._mark = self.full_runs
        sent = time.perf_counter()
        await self._ws.send(msg.SerializeToString())
        return sent

    # ---- fragment timers (App.tsx handleAutoRerun / handleNewSession)

    def _auto_rerun(self, fragment: str, interval: float) -> None:
        if fragment in self._timers and self._timers[fragment][0] == interval:
            return  # re-registering the same interval leaves the countdown alone
        self._stop_timer(fragment)
        self._timers[fragment] = (interval, asyncio.create_task(self._tick(fragment, interval)))

    def _stop_timer(self, fragment: str) -> None:
        old = self._timers.pop(fragment, None)
        if old is not None:
            old[1].cancel()

    async def _tick(self, fragment: str, interval: float) -> None:
        while not self._closed:
            await asyncio.sleep(interval)
            self.fragment_reruns_sent += 1
            await self._rerun(fragment=fragment)

    # ---- what the tab receives

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                self.bytes_in += len(raw)
                self.messages += 1
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                self._handle(msg, time.perf_counter())
                async with self._changed:
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a dropped connection ends the tab; the benchmark reports it
            if not self._closed:
                self.errors.append(f"connection: {err!r}")
        finally:
            async with self._changed:
                self._changed.notify_all()

    def _handle(self, msg: ForwardMsg, t: float) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            ns = msg.new_session
            self.pages.update({p.url_pathname: p.page_script_hash for p in ns.app_pages})
            if ns.page_script_hash:
                self.page_hash = ns.page_script_hash
            self.running = True
            if not msg.metadata.run.fragment_ids:  # a full run: the frontend clears every timer
                self.full_runs += 1
                for fragment in list(self._timers):
                    self._stop_timer(fragment)
        elif kind == "navigation":  # st.navigation names the page it ran (the frontend reruns that one)
            nav = msg.navigation
            self.pages.update({p.url_pathname: p.page_script_hash for p in nav.app_pages})
            if nav.page_script_hash:
                self.page_hash = nav.page_script_hash
        elif kind == "session_status_changed":
            self.running = msg.session_status_changed.script_is_running
        elif kind == "script_finished":
            self.running = False
            self.finished.append(msg.script_finished)
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "auto_rerun":
            self._auto_rerun(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fragment in msg.stop_auto_rerun.fragment_ids:
                self._stop_timer(fragment)
        elif kind == "page_not_found":
            self.errors.append(f"page not found: {msg.page_not_found.page_name}")
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            el = msg.delta.new_element
            which = el.WhichOneof("type")
            if which == "button":
                self.buttons[el.button.label] = el.button.id
            elif which == "slider":
                self.sliders[el.slider.label] = el
            elif which == "exception":
                self.errors.append(element_text(el)[:300])
            if self.on_element is not None:
                self.on_element(self, Event(t, tuple(msg.metadata.delta_path), el, msg.delta.fragment_id))

    # ---- waiting

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds after some message (or the connection ended); False on timeout."""
        deadline = time.perf_counter() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - time.perf_counter()
                if left <= 0 or (self._reader is not None and self._reader.done()):
                    return predicate()
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    return predicate()
        return True

    async def settle(self, timeout: float) -> bool:
        """Wait until a full run started after the latest request has finished and nothing runs (the page
        is drawn, as a user sees it)."""

        def done() -> bool:
            ran = self.full_runs > self._mark and not self.running
            return ran and bool(self.finished) and self.finished[-1] in FINISHED_OK

        return await self.wait_for(done, timeout)
