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

import json
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import streamlit.components.v1 as components_v1
import streamlit.components.v2 as components_v2

# The folder of the plotly package's `plotly.min.js`, served at /component/<name>/plotly.min.js.
_PLOTLY_JS = components_v1.declare_component("plotly_js", path=str(Path(plotly.__file__).parent / "package_data"))
DEFAULT_HEIGHT = 450  # Plotly's own default when a figure sets no height

_JS = """
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

export default function (component) {
  const { data, parentElement } = component;
  if (data.preload) { plotly(data.lib); return; }
  const div = parentElement.querySelector(".rv-live-plot");
  if (!div || div.dataset.spec === data.spec) return;  // a refresh that brought the same figure
  div.dataset.spec = data.spec;
  div.style.height = data.height + "px";
  if (!inView.has(div)) { inView.set(div, true); watcher.observe(div); }  // drawn once, then when seen
  const draw = () => react(div, data);
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

function react(div, data) {
  plotly(data.lib).then((Plotly) => {
    if (div.dataset.spec !== data.spec) return;  // a newer figure arrived while the script loaded
    const fig = JSON.parse(data.spec);
    Plotly.react(div, fig.data, fig.layout, data.config);
  });
}
"""
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


def spec(fig: go.Figure) -> str:
    """The figure as Plotly JSON; arrays go as base64 typed arrays, which plotly.js decodes."""
    return fig.to_json(validate=False)


def live_chart(fig: go.Figure, key: str, config: dict[str, Any], figure_json: str | None = None) -> None:
    """Draw `fig` in the element keyed `key`, updating the plot already there (if any) in place.

    `figure_json` is `spec(fig)` when the caller already has it (a figure shared by many tabs is
    serialised once).
    """
    height = int(fig.layout.height or DEFAULT_HEIGHT)
    data = {"lib": _PLOTLY_JS.name, "spec": figure_json or spec(fig), "height": height, "config": config}
    _live(key=key, data=data, height=height)


def spec_of(data_json: str) -> str | None:
    """The figure's Plotly JSON that a live chart element carries, from the element's JSON data;
    None for the element that only preloads the script."""
    return json.loads(data_json).get("spec")
