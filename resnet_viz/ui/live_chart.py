"""A Plotly chart that a live run redraws in place (`Plotly.react`) instead of building anew.

Why not `st.plotly_chart`: Streamlit 1.67 folds the figure into the chart element's identity
(`key_as_main_identity=False`), so each refresh of a live run with a changed figure is a new
element, and Chromium builds the plot from scratch: about 0.4 s of renderer CPU per chart per
refresh, on the two cores the run trains on (measured with `benchmarks/bench_app.py`; the browser,
not the server, was the bottleneck of in-app training). A `st.components.v2` component keyed by
the chart's key keeps its element, and its script hands each new figure to `Plotly.react`, which
diffs it against the drawn one (16-35 ms per lab figure in Chromium).

The script is the `plotly.min.js` that the `plotly` package ships (no download, same version as
the figures), served by Streamlit's component file handler from the package's own folder and
loaded once per page.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import streamlit.components.v1 as components_v1
import streamlit.components.v2 as components_v2

# The folder of the plotly package's `plotly.min.js`, served at /component/<name>/plotly.min.js.
_PLOTLY_JS = components_v1.declare_component("plotly_js", path=str(Path(plotly.__file__).parent / "package_data"))
DEFAULT_HEIGHT = 450  # Plotly's own default when a figure sets no height
DIGEST_CHARS = 32  # hex digits of a payload's digest, which starts it

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
  const div = parentElement.querySelector(".rv-live-plot");
  const digest = text.decode(data.subarray(0, DIGEST));
  if (!div || div.dataset.digest === digest) return;  // a refresh that brought the same figure
  div.dataset.digest = digest;
  const chart = JSON.parse(text.decode(data.subarray(DIGEST + 1)));
  div.style.height = chart.height + "px";
  if (!inView.has(div)) { inView.set(div, true); watcher.observe(div); }  // drawn once, then when seen
  const draw = () => react(div, digest, chart);
  if (inView.get(div)) draw(); else pending.set(div, draw);
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

function react(div, digest, chart) {
  plotly(chart.lib).then((Plotly) => {
    if (div.dataset.digest !== digest) return;  // a newer figure arrived while the script loaded
    Plotly.react(div, chart.figure.data, chart.figure.layout, chart.config);
  });
}
"""
)
COMPONENT = "resnet_viz_live_plotly"
_live = components_v2.component(
    COMPONENT,
    html='<div class="rv-live-plot" style="width: 100%"></div>',
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
class LiveFigure:
    """What a live chart element carries: made once per figure, sent as it is to every tab watching.

    `payload` is bytes, a digest of the chart then its JSON, {"lib", "height", "config", "figure"}:
    Streamlit forwards bytes as they are, where a dict is JSON-encoded twice per tab and refresh
    (once for the element, once for its identity), the figure's JSON escaped inside. The page skips
    a payload whose digest it has drawn.
    """

    payload: bytes
    height: int  # px


def prepare(fig: go.Figure, config: dict[str, Any]) -> LiveFigure:
    """The figure (arrays as base64 typed arrays, which plotly.js decodes) and Plotly's options, ready to send."""
    height = int(fig.layout.height or DEFAULT_HEIGHT)
    head = json.dumps({"lib": _PLOTLY_JS.name, "height": height, "config": config})
    body = f'{head[:-1]}, "figure": {fig.to_json(validate=False)}}}'.encode()
    digest = hashlib.blake2b(body, digest_size=DIGEST_CHARS // 2).hexdigest().encode()
    return LiveFigure(digest + b"\n" + body, height)


def live_chart(key: str, figure: LiveFigure) -> None:
    """Draw `figure` in the element keyed `key`, updating the plot already there (if any) in place."""
    _live(key=key, data=figure.payload, height=figure.height)


def figure_in(component: Any) -> dict[str, Any] | None:
    """The figure a live chart element carries, from its `BidiComponent` proto (a test's or a benchmark
    client's view of the page); None for another component or for the script preloader."""
    if component.component_name != COMPONENT or component.WhichOneof("data") != "bytes":
        return None
    return figure_of(component.bytes)


def figure_of(payload: bytes) -> dict[str, Any]:
    """The Plotly figure (data and layout) in a live chart element's payload."""
    return json.loads(payload[DIGEST_CHARS + 1 :])["figure"]
