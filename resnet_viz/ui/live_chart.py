"""A live board: a run's Plotly charts and their captions in one element, redrawn in place (`Plotly.react`).

Why not `st.plotly_chart`: Streamlit 1.67 folds the figure into the chart element's identity
(`key_as_main_identity=False`), so each refresh of a live run with a changed figure is a new
element, and Chromium builds the plot from scratch: about 0.4 s of renderer CPU per chart per
refresh, on the two cores the run trains on (measured with `benchmarks/bench_app.py`; the browser,
not the server, was the bottleneck of in-app training). A `st.components.v2` component keyed by
the board's key keeps its element, and its script hands each changed figure to `Plotly.react`,
which diffs it against the drawn one (16-35 ms per lab figure in Chromium).

Why one element for all charts: a chart element, its caption and the two column blocks around
each pair were a dozen deltas per refresh, each with its own cost in the server (enqueueing,
hashing, widget registration). Thirty tabs refresh every second; the board is one delta.

The script is the `plotly.min.js` that the `plotly` package ships (no download, same version as
the figures), served by Streamlit's component file handler from the package's own folder and
loaded once per page.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import streamlit.components.v1 as components_v1
import streamlit.components.v2 as components_v2

from ..figures.common import TEMPLATE

# The folder of the plotly package's `plotly.min.js`, served at /component/<name>/plotly.min.js.
_PLOTLY_JS = components_v1.declare_component("plotly_js", path=str(Path(plotly.__file__).parent / "package_data"))
DEFAULT_HEIGHT = 450  # Plotly's own default when a figure sets no height
DIGEST_CHARS = 32  # hex digits of a payload's digest, which starts it
_TEMPLATE = json.dumps(TEMPLATE)  # the shared look, sent once per board for the bare figures in it

_JS = (
    f"const DIGEST = {DIGEST_CHARS};  // bytes of a payload's digest, then a newline, then its JSON\n"
    + """
// Charts out of view keep their newest figure and draw it when they scroll into view: a live run's
// refresh then redraws only what the viewer sees (Plotly was the page's largest CPU cost).
const pending = new WeakMap();
const inView = new WeakMap();
const watcher = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    inView.set(entry.target, entry.isIntersecting);
    const draw = pending.get(entry.target);
    if (entry.isIntersecting && draw) { pending.delete(entry.target); draw(); }
  }
});

const text = new TextDecoder();

export default function (component) {
  const { data, parentElement } = component;
  if (!(data instanceof Uint8Array)) { if (data && data.preload) plotly(data.lib); return; }
  const board = parentElement.querySelector(".rv-board");
  const digest = text.decode(data.subarray(0, DIGEST));
  if (!board || board.dataset.digest === digest) return;  // a refresh that brought the same charts
  board.dataset.digest = digest;
  const { lib, config, template, charts } = JSON.parse(text.decode(data.subarray(DIGEST + 1)));
  const cells = new Map([...board.children].map((cell) => [cell.dataset.key, cell]));
  charts.forEach((chart, index) => {
    let cell = cells.get(chart.key);
    cells.delete(chart.key);
    if (!cell) cell = newCell(chart.key);
    if (board.children[index] !== cell) board.insertBefore(cell, board.children[index] || null);
    cell.classList.toggle("rv-wide", chart.wide);
    const [div, caption] = cell.children;
    if (caption.textContent !== chart.caption) caption.textContent = chart.caption;  // text, never HTML
    if (div.dataset.digest === chart.digest) return;  // this chart did not change
    div.dataset.digest = chart.digest;
    div.style.height = chart.height + "px";
    if (!inView.has(div)) { inView.set(div, true); watcher.observe(div); }  // drawn once, then when seen
    const layout = chart.figure.layout;
    if (layout.template && Object.keys(layout.template).length === 0) layout.template = template;  // a bare figure
    const draw = () => react(div, chart.digest, lib, chart.figure, config);
    if (inView.get(div)) draw(); else pending.set(div, draw);
  });
  for (const cell of cells.values()) {  // a chart the run no longer has (another family's picture)
    watcher.unobserve(cell.firstChild);
    if (window.Plotly) window.Plotly.purge(cell.firstChild);
    cell.remove();
  }
}

function newCell(key) {
  const cell = document.createElement("div");
  cell.className = "rv-cell";
  cell.dataset.key = key;
  const div = document.createElement("div");
  div.className = "rv-live-plot";
  const caption = document.createElement("div");
  caption.className = "rv-caption";
  cell.append(div, caption);
  return cell;
}

function plotly(lib) {
  if (!window.__rvPlotly) {
    const src = new URL("component/" + lib + "/plotly.min.js", document.baseURI).href;
    window.__rvPlotly = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve(window.Plotly);
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }
  return window.__rvPlotly;
}

function react(div, digest, lib, figure, config) {
  plotly(lib).then((Plotly) => {
    if (div.dataset.digest !== digest) return;  // a newer figure arrived while the script loaded
    Plotly.react(div, figure.data, figure.layout, config);
  });
}
"""
)
# Two columns as the page's st.columns(2) had them, wide charts across both; one column on a phone.
# Captions as st.caption draws them, in the theme's text colour (components get it as --st-text-color).
_CSS = """
.rv-board { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1rem; width: 100%; }
.rv-board > .rv-wide { grid-column: 1 / -1; }
@media (max-width: 640px) { .rv-board { grid-template-columns: minmax(0, 1fr); } }
.rv-live-plot { width: 100%; }
.rv-caption { font-family: var(--st-font); font-size: 0.875rem; line-height: 1.6; color: var(--st-text-color);
  opacity: 0.6; margin-top: 0.25rem; overflow-wrap: break-word; }
"""
COMPONENT = "resnet_viz_live_plotly"
_live = components_v2.component(
    COMPONENT,
    html='<div class="rv-board"></div>',
    css=_CSS,
    js=_JS,
    isolate_styles=False,  # Plotly puts its styles in the document's head: a shadow root would hide them
)


def preload() -> None:
    """Load plotly.min.js into the page now, while nothing trains (an empty element, 0 px high).

    Loaded with a run's first figures instead, reading and compiling its 4.6 MB took 2.5 s of the
    first point's 4.2 s in Chromium, on the two cores the run trained on (default pair, bench_app).
    """
    _live(key="rv-live-plotly-preload", data={"lib": _PLOTLY_JS.name, "preload": True}, height="content")


@dataclass(frozen=True)
class Chart:
    """One chart of a live board, serialised once: thirty tabs watching one run send the same text.

    `json` is {"key", "digest", "height", "wide", "caption", "figure"}: the figure with its arrays as
    base64 typed arrays (which plotly.js decodes), and a digest of figure and caption, by which the
    page skips a chart it has drawn.
    """

    key: str  # the chart's name on the page ("lab.loss")
    json: str


def chart(key: str, fig: go.Figure, caption: str, wide: bool = False) -> Chart:
    """A chart for `live_board`: `fig` with its 'what to look for' caption, across the board if `wide`."""
    figure = fig.to_json(validate=False)
    digest = hashlib.blake2b(f"{figure}{caption}".encode(), digest_size=DIGEST_CHARS // 2).hexdigest()
    height = int(fig.layout.height or DEFAULT_HEIGHT)
    head = json.dumps({"key": key, "digest": digest, "height": height, "wide": wide, "caption": caption})
    return Chart(key, f'{head[:-1]}, "figure": {figure}}}')


@functools.lru_cache(maxsize=64)
def _payload(charts: tuple[Chart, ...], config: str) -> bytes:
    """Digest, newline, then {"lib", "config", "template", "charts"}: bytes, which Streamlit forwards as they
    are (a dict is JSON-encoded twice per tab and refresh, once for the element and once for its identity).
    Made once per set of charts: every tab showing them gets the same bytes. `template` is the shared look,
    which the page puts into each figure made `bare` (figures.common), once per board instead of per chart."""
    listed = ", ".join(c.json for c in charts)
    body = (
        f'{{"lib": {json.dumps(_PLOTLY_JS.name)}, "config": {config}, "template": {_TEMPLATE}, "charts": [{listed}]}}'
    )
    digest = hashlib.blake2b(body.encode(), digest_size=DIGEST_CHARS // 2).hexdigest()
    return f"{digest}\n{body}".encode()


def live_board(key: str, charts: Sequence[Chart], config: dict[str, Any]) -> None:
    """Draw `charts` (two to a row, wide ones across) with their captions in one element keyed `key`,
    updating the plots already there in place (`Plotly.react`).

    One element for all of a run's charts, not one per chart plus a caption and two column blocks:
    each element costs the server its own delta, and a live run's page is redrawn every second in
    each of thirty tabs.
    """
    _live(key=key, data=_payload(tuple(charts), json.dumps(config, sort_keys=True)), height="content")


def charts_in(component: Any) -> list[dict[str, Any]] | None:
    """The charts a live board element carries ({"key", "caption", "wide", "figure", ...} each), from its
    `BidiComponent` proto (a test's or a benchmark client's view of the page); None for another component
    or for the script preloader."""
    if component.component_name != COMPONENT or component.WhichOneof("data") != "bytes":
        return None
    return charts_of(component.bytes)


def charts_of(payload: bytes) -> list[dict[str, Any]]:
    """The charts in a live board's payload, in page order, each figure with the template the page gives it."""
    board = json.loads(payload[DIGEST_CHARS + 1 :])
    for chart in board["charts"]:
        if chart["figure"]["layout"].get("template") == {}:  # a bare figure (see the script)
            chart["figure"]["layout"]["template"] = board["template"]
    return board["charts"]
