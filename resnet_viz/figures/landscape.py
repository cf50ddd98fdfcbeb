"""Loss-landscape figures (Li et al. 2018): 1-D interpolation, contour and 3-D surface, training path, curvature.

Pure builders: `resnet_viz.landscape.NetLandscape` results in (model key -> result), Plotly figures
out. Both nets share one colour scale (and one z range) so their surfaces compare at a glance, as
in Li et al.'s Fig. 5; where the loss spans decades the scale is logarithmic, drawn as log10 of the
loss with ticks labelled in loss units. Model A (plain) is vermillion and B (residual) blue, as on
every page; grid points not evaluated yet are NaN and left blank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.landscape import NetLandscape, Surface

from .common import color, layout

Z_TICKS = 5  # labelled decades on a 3-D log z axis, at most
LOG_SPAN = 20.0  # a log colour scale when the largest loss is this many times the smallest
COLORSCALE = "Viridis"


@dataclass(frozen=True)
class LossScale:
    """One colour scale for several surfaces: the shown value is log10(loss) when `log`, else the loss."""

    low: float  # smallest shown value
    high: float  # largest shown value
    log: bool  # whether shown values are log10 of the loss

    def shown(self, loss: np.ndarray) -> np.ndarray:
        loss = np.asarray(loss, dtype=float)
        if not self.log:
            return loss
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(loss > 0, np.log10(np.where(loss > 0, loss, 1.0)), np.nan)

    def colorbar(self) -> dict:
        bar: dict = {"title": {"text": "loss"}, "len": 0.9}
        if self.log:
            ticks = np.arange(np.floor(self.low), np.ceil(self.high) + 1)
            bar |= {"tickvals": ticks.tolist(), "ticktext": [f"{10**t:g}" for t in ticks]}
        return bar

    def axis(self) -> dict:
        """A z axis in loss units (3-D scenes): decade ticks on the log10 values, at most `Z_TICKS` of them (ten
        decades of labels crowded the axis). Untitled: Plotly places a 3-D axis title by the camera, and even
        "loss (log)" was cut at the scene's left edge; the figure's title says what z is."""
        axis: dict = {"title": {"text": ""}, "range": [self.low, self.high]}
        if self.log:
            low, high = np.floor(self.low), np.ceil(self.high)
            step = max(1, int(np.ceil((high - low + 1) / Z_TICKS)))
            ticks = np.arange(low, high + 1, step)
            axis |= {"tickvals": ticks.tolist(), "ticktext": [f"{10**t:g}" for t in ticks]}
        return axis


def loss_scale(surfaces: list[Surface]) -> LossScale:
    """The shared scale of these surfaces: every finite value of every net inside it."""
    values = np.concatenate([s.loss[np.isfinite(s.loss)].ravel() for s in surfaces] or [np.array([])])
    if values.size == 0:
        return LossScale(0.0, 1.0, False)
    low, high = float(values.min()), float(values.max())
    if low > 0 and high / low > LOG_SPAN:
        return LossScale(float(np.log10(low)), float(np.log10(high)), True)
    return LossScale(low, high if high > low else low + 1e-6, False)


def _keys(results: Mapping[str, NetLandscape]) -> list[str]:
    return list(results)


def _coloraxis(scale: LossScale) -> dict:
    return {"colorscale": COLORSCALE, "cmin": scale.low, "cmax": scale.high, "colorbar": scale.colorbar()}


# --------------------------------------------------------------------------------------------------
# 1-D interpolation


def interpolation_figure(results: Mapping[str, NetLandscape]) -> go.Figure:
    """Training (solid) and validation (dashed) loss from the initial (t = 0) to the trained weights (t = 1)."""
    fig = go.Figure()
    values = []
    for index, (key, r) in enumerate(results.items()):
        line = r.interpolation
        if line is None:
            continue
        for name, loss, dash in (("training", line.train_loss, "solid"), ("validation", line.val_loss, "dash")):
            fig.add_trace(
                go.Scatter(
                    x=line.t,
                    y=loss,
                    mode="lines+markers",
                    name=f"{r.label}: {name}",
                    marker={"size": 4},
                    line={"color": color(key, index), "dash": dash},
                )
            )
            values.append(loss[np.isfinite(loss)])
    finite = np.concatenate(values) if values else np.array([])
    log = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN
    for t, text in ((0.0, "initial"), (1.0, "trained")):
        fig.add_vline(x=t, line={"color": "#999999", "dash": "dot", "width": 1}, annotation_text=text)
    return layout(
        fig,
        "Loss on the straight line from the initial to the trained weights",
        "t (0 = initial weights, 1 = trained weights)",
        "cross-entropy loss (nats)",
        log_y=log,
    )


# --------------------------------------------------------------------------------------------------
# 2-D surfaces


def contour_figure(results: Mapping[str, NetLandscape], scale: LossScale | None = None) -> go.Figure:
    """Contours of the loss around each net's trained weights (the centre), one panel per net, one colour scale."""
    keys = _keys(results)
    scale = scale or loss_scale([results[k].surface for k in keys])
    fig = make_subplots(
        rows=1, cols=max(1, len(keys)), subplot_titles=[results[k].label for k in keys], horizontal_spacing=0.08
    )
    for col, key in enumerate(keys, start=1):
        s = results[key].surface
        fig.add_trace(
            go.Contour(
                x=s.alphas,
                y=s.betas,
                z=scale.shown(s.loss),
                coloraxis="coloraxis",
                name=results[key].label,
                contours={"coloring": "heatmap", "showlines": True},
                line={"width": 0.5, "color": "rgba(255,255,255,0.5)"},
                hovertemplate="direction 1: %{x:.2f}<br>direction 2: %{y:.2f}<br>shown value: %{z:.3g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=[0.0],
                y=[0.0],
                mode="markers",
                name=f"{results[key].label}: {weights_name(results).removeprefix('the ')}",
                showlegend=False,
                marker={
                    "symbol": "x",
                    "size": 11,
                    "color": "white",
                    "line": {"color": color(key, col - 1), "width": 2},
                },
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="direction 1 (filter-normalised)", row=1, col=col)
        fig.update_yaxes(title_text="direction 2 (filter-normalised)" if col == 1 else "", row=1, col=col)
    fig.update_layout(coloraxis=_coloraxis(scale))
    title = f"Loss around {weights_name(results)} along two filter-normalised random directions"
    layout(fig, title, "", "", height=480)
    fig.update_xaxes(title_text="direction 1 (filter-normalised)")
    fig.update_yaxes(title_text="direction 2 (filter-normalised)", col=1)
    return fig


def surface_figure(results: Mapping[str, NetLandscape], scale: LossScale | None = None) -> go.Figure:
    """The same surfaces in 3-D, side by side, with the same z range and colour scale."""
    keys = _keys(results)
    scale = scale or loss_scale([results[k].surface for k in keys])
    fig = make_subplots(
        rows=1,
        cols=max(1, len(keys)),
        specs=[[{"type": "surface"}] * max(1, len(keys))],
        subplot_titles=[results[k].label for k in keys],
        horizontal_spacing=0.02,
    )
    for col, key in enumerate(keys, start=1):
        s = results[key].surface
        rows, z = _drawable(scale.shown(s.loss), scale)
        scene = "scene" if col == 1 else f"scene{col}"
        if len(rows) < 2:  # a surface needs two rows: the grid is still being computed
            fig.add_annotation(
                text="drawn when two rows of its grid are computed",
                showarrow=False,
                x=(col - 0.5) / len(keys),
                y=0.5,
                xref="paper",
                yref="paper",
            )
            continue
        fig.add_trace(
            go.Surface(
                x=s.alphas,
                y=s.betas[rows],
                z=z,
                coloraxis="coloraxis",
                name=results[key].label,
                hovertemplate="direction 1: %{x:.2f}<br>direction 2: %{y:.2f}<br>shown value: %{z:.3g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_layout(
            {
                scene: {
                    # the whole grid's span: the rows computed so far (or before a Stop) look like what they
                    # are, a part of it, not a whole surface over a narrower range
                    "xaxis": {"title": {"text": "direction 1"}, "nticks": 5, "range": _span(s.alphas)},
                    "yaxis": {"title": {"text": "direction 2"}, "nticks": 5, "range": _span(s.betas)},
                    "zaxis": scale.axis(),
                    "camera": {"eye": {"x": 1.5, "y": 1.5, "z": 0.9}},
                    "aspectmode": "manual",
                    "aspectratio": {"x": 1, "y": 1, "z": 0.7},
                }
            }
        )
    fig.update_layout(coloraxis=_coloraxis(scale))
    z = "height and colour: loss, log scale" if scale.log else "height and colour: loss"
    return layout(fig, f"The loss surfaces in 3-D ({z}; one scale for both nets)", "", "", height=520)


def _span(values: np.ndarray) -> list[float]:
    return [float(np.min(values)), float(np.max(values))]


def _drawable(shown: np.ndarray, scale: LossScale) -> tuple[np.ndarray, np.ndarray]:
    """(rows to draw, their z) for a WebGL surface: plotly.js's 3-D scene breaks on NaN (an all-NaN
    surface takes the scene down with it). Rows not evaluated yet (all NaN) are left out; a non-finite
    value inside a computed row (the loss overflowed) is drawn at the top of the shared z range."""
    rows = np.flatnonzero(~np.isnan(shown).all(axis=1))
    z = shown[rows]
    return rows, np.where(np.isfinite(z), z, scale.high)


# --------------------------------------------------------------------------------------------------
# Training path


def trajectory_figure(results: Mapping[str, NetLandscape]) -> go.Figure:
    """Each net's training path in the plane of its first two principal directions, over the loss in that plane."""
    keys = [k for k in results if results[k].trajectory is not None]
    scale = loss_scale([results[k].trajectory.surface for k in keys])
    titles = [f"{results[k].label}: {sum(results[k].trajectory.explained):.0%} of the path's variance" for k in keys]
    fig = make_subplots(rows=1, cols=max(1, len(keys)), subplot_titles=titles or [""], horizontal_spacing=0.1)
    for col, key in enumerate(keys, start=1):
        tr = results[key].trajectory
        s = tr.surface
        fig.add_trace(
            go.Contour(
                x=s.alphas,
                y=s.betas,
                z=scale.shown(s.loss),
                coloraxis="coloraxis",
                name=f"{results[key].label}: loss",
                contours={"coloring": "heatmap", "showlines": True},
                line={"width": 0.5, "color": "rgba(255,255,255,0.5)"},
                hovertemplate="PC1: %{x:.3g}<br>PC2: %{y:.3g}<br>shown value: %{z:.3g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=tr.coords[:, 0],
                y=tr.coords[:, 1],
                mode="lines+markers",
                name=f"{results[key].label}: path",
                text=[f"step {s}" for s in tr.steps],
                hovertemplate="%{text}<extra></extra>",
                line={"color": color(key, col - 1), "width": 3},
                marker={
                    "size": [12] + [7] * (len(tr.steps) - 2) + [12],
                    "color": color(key, col - 1),
                    "symbol": ["circle-open"] + ["circle"] * (len(tr.steps) - 2) + ["x"],
                    "line": {"color": "white", "width": 1},
                },
            ),
            row=1,
            col=col,
        )
    fig.update_layout(coloraxis=_coloraxis(scale))
    layout(
        fig, "Training path from the initial weights (open circle) to the trained weights (x)", "PC1", "PC2", height=480
    )
    for col, key in enumerate(keys, start=1):  # after `layout`, which titles every axis alike
        e1, e2 = results[key].trajectory.explained
        fig.update_xaxes(title_text=f"PC1 ({e1:.1%} of variance)", row=1, col=col)
        fig.update_yaxes(title_text=f"PC2 ({e2:.1%} of variance)", row=1, col=col)
    return fig


# --------------------------------------------------------------------------------------------------
# Curvature and the table


def curvature_figure(results: Mapping[str, NetLandscape]) -> go.Figure:
    """Largest and (absolute) smallest Hessian eigenvalue per net; the legend gives |lambda_min / lambda_max|."""
    fig = go.Figure()
    values = []
    for index, (key, r) in enumerate(results.items()):
        c = r.curvature
        if c is None:
            continue
        y = [c.lambda_max, abs(c.lambda_min)]
        values += [v for v in y if v > 0]
        fig.add_trace(
            go.Bar(
                x=["λ_max", "|λ_min| (λ_min < 0)" if c.lambda_min < 0 else "λ_min (≥ 0)"],
                y=y,
                name=f"{r.label}: |λ_min / λ_max| = {c.ratio:.3f}",
                marker={"color": color(key, index)},
                text=[f"{c.lambda_max:.3g}", f"{c.lambda_min:.3g}"],
                textposition="outside",
            )
        )
    log = bool(values) and max(values) / max(min(values), 1e-300) > LOG_SPAN
    fig.update_layout(barmode="group")
    return layout(
        fig,
        f"Extreme Hessian eigenvalues at {weights_name(results)} (Lanczos)",
        "eigenvalue",
        "magnitude (loss per unit² of weight change)",
        log_y=log,
    )


def weights_name(results: Mapping[str, NetLandscape]) -> str:
    """What the centre of the pictures is: "the trained weights", or for nets at step 0 "the initial weights"
    (a fresh pair's landscape was titled "around the trained weights")."""
    return "the trained weights" if any(r.step > 0 for r in results.values()) else "the initial weights"


def surface_verdict(results: Mapping[str, NetLandscape]) -> str:
    """What these surfaces showed, for the contour chart's caption: each net's local minima on the grid and how
    far its surface is from a quadratic bowl (`roughness.non_quadratic`: 0 a bowl, 1 nothing like one).
    Why: Li et al.'s picture (a chaotic plain net, a smooth residual one) is of 56- and 110-layer nets on
    CIFAR-10; the server's default pair (depth 20, digits) showed one basin each, and the plain net had fewer
    local minima on the grid (1) than the residual one (2)."""
    parts = []
    for r in results.values():  # the two surface measures only, not `summary()` (its fits, every redraw)
        minima, rough = r.surface.local_minima, r.surface.non_quadratic
        bowl = f" and {rough:.2f} from a quadratic bowl" if np.isfinite(rough) else ""
        parts.append(f"{r.label}: {minima} local minim{'um' if minima == 1 else 'a'}{bowl}")
    return "Here, on this grid: " + "; ".join(parts) + "." if parts else ""


def curvature_verdict(results: Mapping[str, NetLandscape]) -> str:
    """Which net has the larger |λ_min / λ_max| here (Li et al. found it for the plain net), as a sentence."""
    ratios = {r.label: r.curvature.ratio for r in results.values() if r.curvature and np.isfinite(r.curvature.ratio)}
    if len(ratios) < 2:
        return ""
    ordered = sorted(ratios.items(), key=lambda item: item[1])
    (low, a), (high, b) = ordered[0], ordered[-1]
    return f"Here {high} has the larger ratio ({b:.3f} against {a:.3f} for {low})."


def summary_table(results: Mapping[str, NetLandscape], cached: set[str] | None = None) -> pd.DataFrame:
    """One row per net: the headline numbers of its landscape."""
    rows = []
    for key, r in results.items():
        s = r.summary()
        explained = s["trajectory_explained"]
        rows.append(
            {
                "model": r.label,
                "step": r.step,
                "loss at trained weights": s["trained_loss"],
                "lowest loss on the grid": s["surface_min"],
                "local minima on the grid": s["local_minima"],
                "not explained by a quadratic bowl": s["non_quadratic"],
                "λ_max": s["lambda_max"],
                "λ_min": s["lambda_min"],
                "|λ_min / λ_max|": s["ratio"],
                "path variance in PC1+PC2": sum(explained) if explained else None,
                "source": "run store" if cached and key in cached else f"computed in {r.seconds:.1f} s",
            }
        )
    return pd.DataFrame(rows)
