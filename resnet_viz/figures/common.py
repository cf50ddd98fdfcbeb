"""Shared look of every figure: one colour per model, titles, axes, thinning of long traces.

Every figure has a title that says what it shows, labelled axes with units, a log scale where
magnitudes span decades, and the same colour per model everywhere (`COLORS`). Figures set
`uirevision` so a user's zoom survives the redraws of a live run, and long traces are downsampled
(short runs keep every point).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from ..models import ModelConfig

# Okabe-Ito colour-blind-safe pair: vermillion for the first model (A, plain), blue for the second.
COLORS = {"A": "#D55E00", "B": "#0072B2", "plain": "#D55E00", "residual": "#0072B2"}
FALLBACK_COLORS = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9")
MAX_POINTS = 600  # per trace; longer traces are thinned evenly (first and last point kept)
MAX_HEATMAP_COLUMNS = 240

# Every figure uses Plotly's "plotly_white" look, with the mode bar (shown on hover) upright at the right
# edge, within the top margin: across the top it covered the end of a long title in a half-width column
# ("... validation (dashed)"). It is set once as Plotly's default rather than per figure: validating a
# named template in `update_layout` costs about 20 ms per figure, which a live run's refresh (six figures
# a second per run) spent holding the GIL the training thread needs.
pio.templates["resnet_viz"] = go.layout.Template(pio.templates["plotly_white"])
pio.templates["resnet_viz"].layout.modebar.orientation = "v"
pio.templates.default = "resnet_viz"


def model_label(key: str, cfg: ModelConfig, alpha: float | None = None) -> str:
    """'A · plain 56' / 'B · residual 56 (pre-act)' / 'A · residual 10 (post-LN)': what every chart's legend and
    table calls a model. Transformers always say where their LayerNorm sits (Xiong et al. 2020). A model keyed
    by its kind (the depth study's and the Limits grids' "plain" and "residual") is named once: 'plain 56'.

    `alpha`: the skip scale in force now (or at the step shown), where the live slider may have moved it. A
    value other than the config's own is named: 'A · plain 20 (α=0.5 live)' is a net that started plain and
    has had half its identity shortcut added back; it is no longer the plain net its kind names."""
    kind = "residual" if cfg.skip and cfg.skip_scale > 0 else "plain"
    if cfg.family == "transformer":
        extras = [cfg.order + "-LN"] if cfg.norm == "layer" else []
    else:
        extras = [cfg.order + "-act"] if cfg.order == "pre" else []
    extras += ["no norm"] if cfg.norm == "none" else []
    extras += [f"α={alpha:g} live"] if alpha is not None and abs(alpha - cfg.alpha) > 1e-9 else []
    tail = f" ({', '.join(extras)})" if extras else ""
    return f"{kind} {cfg.depth}{tail}" if key == kind else f"{key} · {kind} {cfg.depth}{tail}"


def color(key: str, index: int = 0) -> str:
    return COLORS.get(key, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def look(title: str, *, height: int = 420, legend_y: float = 1.03) -> dict:
    """Title, size, margins, legend and zoom memory that every figure shares, as layout properties."""
    return {
        # Title at the very top, legend in its own band below it: long legends wrap without covering it.
        "title": {"text": title, "x": 0.0, "xanchor": "left", "y": 0.98, "yanchor": "top", "yref": "container"},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 110 if legend_y < 1.1 else 140, "b": 50},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": legend_y, "xanchor": "left", "x": 0.0},
        "uirevision": "keep",
        "hovermode": "closest",
    }


LOG_AXIS = {"type": "log", "exponentformat": "power", "minorloglabels": "none"}
"""A log axis's look: powers of ten written as such (10⁻⁴, not Plotly's SI "100μ", which reads as
micro-something), and no bare digits at the minor ticks ("2", "5" under a decade read as values)."""


def axis(title: str, **props: object) -> dict:
    """An axis with its title and any other axis properties (type="log", range=..., ...); log axes get
    `LOG_AXIS`."""
    if props.get("type") == "log":
        props = {**LOG_AXIS, **props}
    return {"title": {"text": title}, **props}


_BARE: ContextVar[bool] = ContextVar("bare", default=False)  # see `bare`


def figure(traces: list[dict], layout: dict) -> go.Figure:
    """A figure made in one step from plain trace and layout dicts (each trace names its "type").

    Plotly checks the whole figure once here (unless `bare`), where each `add_trace` or
    `update_layout` call walks and checks it again: built call by call, a redraw of the live lab's
    five charts took 190-250 ms of the server's CPU (one each 0.8 s while anyone watches a run);
    built this way, 57-81 ms. Pandas columns go in as NumPy arrays: Plotly's own conversion of a
    Series (through narwhals) cost more than the rest of a trace.
    """
    data = [{k: v.to_numpy() if isinstance(v, pd.Series | pd.Index) else v for k, v in t.items()} for t in traces]
    if _BARE.get():
        return go.Figure({"data": data, "layout": {**layout, "template": {}}}, _validate=False)
    return go.Figure({"data": data, "layout": layout})


@contextlib.contextmanager
def bare() -> Iterator[None]:
    """Figures that `figure` makes in this block (in this thread) skip Plotly's checks of each property and
    carry an empty template: for a page that supplies the shared look itself (a live board sends
    `TEMPLATE` once and fills it in).

    Why: the live lab rebuilds its charts every 0.8 s while a run trains, in the server process, on
    the cores the run trains on. Of a rebuild's 87 ms of CPU the checks were about 10 and the
    template about 14 (Plotly copies its 3.7 kB into each figure, then into each figure's JSON).
    What the checks would change is done in the figure code instead (named colour scales are
    expanded with `colorscale`), and a test asserts that the lab's figures serialise the same
    either way, once the template is put back.
    """
    token = _BARE.set(True)
    try:
        yield
    finally:
        _BARE.reset(token)


TEMPLATE = pio.templates[pio.templates.default].to_plotly_json()  # the look `bare` figures leave out


@functools.cache
def colorscale(name: str) -> tuple[tuple[float, str], ...]:
    """A named Plotly colour scale as the (position, colour) pairs Plotly's checks expand it to. A name left
    as it is in an unchecked figure would be read by plotly.js, whose scales of the same names differ."""
    return tuple(go.layout.Coloraxis(colorscale=name).colorscale)


@functools.lru_cache(maxsize=64)
def _row_of_subplots(titles: tuple[str, ...], spacing: float) -> dict:
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=spacing)
    return {k: v for k, v in fig.layout.to_plotly_json().items() if k != "template"}


def row_of_subplots(titles: Sequence[str], spacing: float) -> dict:
    """The axes (`xaxis`, `xaxis2`, ...) and subplot titles of one row of subplots, as `make_subplots` lays
    them out (`subplot_axis` names them): made once per titles and spacing, copied for each figure."""
    return copy.deepcopy(_row_of_subplots(tuple(titles), spacing))


def subplot_axis(letter: str, col: int) -> tuple[str, str]:
    """('x', 'xaxis'), ('x2', 'xaxis2'), ...: how a trace names subplot column `col`'s axis (1-based), and
    that axis's key in the layout."""
    suffix = "" if col == 1 else str(col)
    return letter + suffix, f"{letter}axis{suffix}"


def _bottom_row(fig: go.Figure) -> Callable[[Any], bool]:
    """A selector of the x axes whose subplot is in the figure's lowest row (every x axis of a one-row figure
    or of one without subplots)."""

    def bottom(ax: Any) -> float | None:
        anchor = ax.anchor
        return fig.layout["yaxis" + anchor[1:]].domain[0] if anchor and anchor.startswith("y") else None

    starts = [b for b in map(bottom, fig.select_xaxes()) if b is not None]
    lowest = min(starts, default=0.0)
    return lambda ax: bottom(ax) is None or bottom(ax) <= lowest + 1e-9


def layout(
    fig: go.Figure, title: str, x: str, y: str, *, log_y: bool = False, height: int = 420, legend_y: float = 1.03
) -> go.Figure:
    """The shared look, set on a figure built call by call (see `figure` for the faster way). A figure with
    subplot titles gets its legend in a higher band: at the usual height it covered the first title."""
    if any(a.yref == "paper" and a.y is not None and a.y >= 0.99 for a in fig.layout.annotations):
        legend_y = max(legend_y, 1.12)
    fig.update_layout(look(title, height=height, legend_y=legend_y))
    # In a grid of subplots the x title goes under the bottom row only: above it, it sat on the next row's
    # subplot titles (Limits > Cost).
    fig.update_xaxes(title_text=x, selector=_bottom_row(fig))
    # A y axis shared with the panel to its left (make_subplots' shared_yaxes) has no tick labels, and its
    # title sat on that panel's lines: only the first of each shared row is titled.
    fig.update_yaxes(title_text=y, selector=lambda ax: ax.matches is None)
    if log_y:  # else Plotly picks the type from the data: forcing "linear" left layer-name axes (heatmaps) empty
        fig.update_yaxes(**LOG_AXIS)
    return fig


def thin(frame: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Every row for short traces; evenly spaced rows (first and last kept) for long ones."""
    if len(frame) <= max_points:
        return frame
    return frame.iloc[thin_positions(np.arange(len(frame)), max_points)]


def thin_positions(positions: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """`thin` for an array of row positions: all of them, or evenly spaced ones (first and last kept)."""
    if len(positions) <= max_points:
        return positions
    return positions[np.unique(np.linspace(0, len(positions) - 1, max_points).round().astype(int))]


def positive(values: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """Log axes cannot show 0: clamp to a tiny floor so a vanished gradient is still drawn."""
    return np.clip(values, 1e-12, None)
