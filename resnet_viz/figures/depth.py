"""Depth-study figures: error and loss vs depth, training curves per depth, block responses, size and cost.

Pure builders: the sweep's tidy tables in (`resnet_viz.sweep.results_frame`, `curves_frame`,
`responses_frame`), Plotly figure out. Plain nets are vermillion and residual nets blue everywhere;
the spread over seeds is drawn as min-max error bars around the mean.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import color, layout, positive, thin

MODELS = ("plain", "residual")
LABELS = {"plain": "plain net", "residual": "residual net"}
CURVE_COLUMNS = 3  # small multiples per row
LOG_SPAN = 20.0  # use a log axis when the largest value is this many times the smallest


def _legend_below(fig: go.Figure) -> go.Figure:
    """Half-width charts have long titles: the legend goes under the x axis instead of beside the title."""
    fig.update_layout(
        height=420,
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0.0},
        margin={"t": 80, "b": 120},
    )
    return fig


def _decade_ticks(fig: go.Figure, values: pd.Series) -> None:
    """On a log axis spanning decades, label only the powers of ten (the 2s and 5s crowd a short chart)."""
    values = pd.to_numeric(values, errors="coerce")
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > 10:
        fig.update_yaxes(dtick=1)


def _models(frame: pd.DataFrame) -> list[str]:
    """plain, residual first (in that order), then any other model keys the frame holds."""
    present = list(dict.fromkeys(frame["model"])) if "model" in frame else []
    return [m for m in MODELS if m in present] + [m for m in present if m not in MODELS]


def _label(model: str) -> str:
    return LABELS.get(model, model)


def spread(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean, min, max and number of seeds of `column` per (model, depth), over finite values only.

    A diverged run is left out of the statistics, so `n` may be below the seed count: one whose value is
    not finite, and one whose status says so (the engine stops a run whose loss passed its divergence
    bound, and that last loss is finite: a loss of 29,647 once pulled a mean up to 12,089).
    """
    columns = ["model", "depth", "mean", "min", "max", "n"]
    if "status" in results:
        results = results[results.status == "finished"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    values = results[["model", "depth", column]].copy()
    values[column] = pd.to_numeric(values[column], errors="coerce")
    values = values[np.isfinite(values[column])]
    if values.empty:
        return pd.DataFrame(columns=columns)
    grouped = values.groupby(["model", "depth"])[column].agg(["mean", "min", "max", "count"]).reset_index()
    return grouped.rename(columns={"count": "n"}).sort_values(["model", "depth"], ignore_index=True)


def _spread_trace(
    stats: pd.DataFrame, model: str, index: int, name: str, scale: float = 1.0, dash: str = "solid", floor: bool = False
) -> go.Scatter:
    rows = stats[stats.model == model]
    mean, low, high = rows["mean"] * scale, rows["min"] * scale, rows["max"] * scale
    if floor:  # a log axis cannot show 0
        mean, low, high = positive(mean), positive(low), positive(high)
    seeds = rows["n"].astype(int).astype(str) + " seed(s)"
    return go.Scatter(
        x=rows.depth,
        y=mean,
        name=name,
        mode="lines+markers",
        line={"color": color(model, index), "dash": dash, "width": 2},
        marker={
            "size": 8,
            "symbol": "circle" if dash == "solid" else "circle-open",
            "line": {"width": 2, "color": color(model, index)},
        },
        error_y={"type": "data", "symmetric": False, "array": high - mean, "arrayminus": mean - low, "width": 4},
        customdata=np.stack([low, high, seeds], axis=-1) if len(rows) else None,
        hovertemplate="depth %{x}: %{y:.4g} (min %{customdata[0]:.4g}, max %{customdata[1]:.4g}, "
        "%{customdata[2]})<extra>" + name + "</extra>",
    )


def _depth_axis(fig: go.Figure, depths: list[int], **where: int) -> None:
    fig.update_xaxes(tickmode="array", tickvals=depths, **where)


def degradation_verdict(results: pd.DataFrame, tolerance: float = 0.02) -> str:
    """What this sweep shows, for the error chart's caption: each model's mean final training error at the
    shallowest and the deepest depth, and whether it rose by more than `tolerance` (He et al. 2015, Fig. 1:
    the plain net's rises, the residual net's does not). A short or shallow sweep may show neither, or a
    badly tuned one the opposite: the caption says what happened, not what should have."""
    train = spread(results, "final_train_error")
    rose, parts = {}, []
    for model in ("plain", "residual"):
        rows = train[train.model == model].sort_values("depth")
        if len(rows) < 2:
            return ""
        first, last = rows.iloc[0], rows.iloc[-1]
        rose[model] = last["mean"] - first["mean"] > tolerance
        parts.append(f"{model} {first['mean']:.1%} at depth {first.depth} → {last['mean']:.1%} at depth {last.depth}")
    text = "Here, final training error: " + "; ".join(parts) + ". "
    if rose["plain"] and not rose["residual"]:
        return text + "The plain nets degrade with depth and the residual nets do not, as in He et al."
    if rose["plain"]:
        return text + "Both degrade with depth at this budget."
    if rose["residual"]:
        return text + "The residual nets degrade and the plain ones do not, against He et al."
    return text + "Neither degrades at these depths and this budget."


def error_vs_depth_figure(results: pd.DataFrame) -> go.Figure:
    """Final training error (solid) and validation error (dashed) vs depth, in percent, per model.

    Markers are the mean over seeds, error bars the min-max spread (He et al. 2015, Fig. 1 and 6).
    """
    fig = go.Figure()
    train, val = spread(results, "final_train_error"), spread(results, "final_val_error")
    for i, model in enumerate(_models(results)):
        fig.add_trace(_spread_trace(train, model, i, f"{_label(model)}: training", scale=100.0))
        fig.add_trace(_spread_trace(val, model, i, f"{_label(model)}: validation", scale=100.0, dash="dash"))
    _depth_axis(fig, sorted(set(results.depth)) if len(results) else [])
    layout(
        fig, "Final error vs depth: training (solid) and validation (dashed)", "depth (weighted layers)", "error (%)"
    )
    fig.update_yaxes(rangemode="tozero")
    return _legend_below(fig)


def loss_vs_depth_figure(results: pd.DataFrame) -> go.Figure:
    """Final training loss (mean over the last epoch) vs depth per model, log y, min-max over seeds."""
    fig = go.Figure()
    stats = spread(results, "final_train_loss")
    for i, model in enumerate(_models(results)):
        fig.add_trace(_spread_trace(stats, model, i, _label(model), floor=True))
    _depth_axis(fig, sorted(set(results.depth)) if len(results) else [])
    layout(
        fig,
        "Final training loss vs depth (mean over the last epoch)",
        "depth (weighted layers)",
        "cross-entropy loss (nats, log)",
        log_y=True,
    )
    if len(results):
        _decade_ticks(fig, results.final_train_loss)
    return _legend_below(fig)


def curves_figure(curves: pd.DataFrame, columns: int = CURVE_COLUMNS) -> go.Figure:
    """Training loss per step, one panel per depth, both models; every seed is one line. Shared log y."""
    depths = sorted(set(curves.depth)) if len(curves) else []
    cols = max(1, min(columns, len(depths)))
    rows = max(1, math.ceil(len(depths) / cols))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"depth {d}" for d in depths] or [""],
        shared_yaxes=True,
        horizontal_spacing=0.04,
        vertical_spacing=min(0.12, 0.35 / rows),
    )
    shown: set[str] = set()
    for n, depth in enumerate(depths):
        row, col = n // cols + 1, n % cols + 1
        at_depth = curves[curves.depth == depth]
        for i, model in enumerate(_models(curves)):
            for j, seed in enumerate(sorted(set(at_depth.seed))):
                line = thin(at_depth[(at_depth.model == model) & (at_depth.seed == seed)].sort_values("step"))
                if line.empty:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=line.step,
                        y=positive(line.loss),
                        name=_label(model),
                        legendgroup=model,
                        showlegend=model not in shown,
                        mode="lines",
                        opacity=1.0 if j == 0 else 0.6,
                        line={"color": color(model, i), "width": 1.5},
                        hovertemplate=f"{_label(model)} {depth}, seed {seed}<br>step %{{x}}: loss %{{y:.4g}}"
                        "<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
                shown.add(model)
    layout(
        fig,
        "Training loss per step at every depth (one line per seed)",
        "step",
        "",
        log_y=True,
        height=max(300, 90 + 230 * rows),
    )
    if len(curves):
        _decade_ticks(fig, curves.loss)
    for row in range(1, rows + 1):
        fig.update_yaxes(title_text="loss (nats, log)", row=row, col=1)
    fig.update_layout(
        margin={"t": 90, "r": 130},
        legend={"orientation": "v", "yanchor": "top", "y": 1.0, "xanchor": "left", "x": 1.01},
    )
    return fig


def responses_figure(responses: pd.DataFrame) -> go.Figure:
    """Std of each block's residual response for the deepest pair (He et al. 2015, Fig. 7).

    Left: blocks in network order (input to output); right: the same values sorted by magnitude.
    """
    depth = int(responses.depth.iloc[0]) if len(responses) else None
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["in network order", "sorted by magnitude"], horizontal_spacing=0.08
    )
    for i, model in enumerate(_models(responses)):
        rows = responses[responses.model == model].sort_values("depth_index")
        name = f"{_label(model)} {depth}"
        style = {"color": color(model, i), "width": 2}
        fig.add_trace(
            go.Scatter(
                x=rows.depth_index + 1,
                y=rows.act_std,
                name=name,
                legendgroup=model,
                mode="lines+markers",
                line=style,
                marker={"size": 6},
                customdata=rows.block,
                hovertemplate="%{customdata}: std %{y:.3g}<extra>" + name + "</extra>",
            ),
            row=1,
            col=1,
        )
        ranked = rows.sort_values("act_std", ascending=False)
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, len(ranked) + 1),
                y=ranked.act_std,
                name=name,
                legendgroup=model,
                showlegend=False,
                mode="lines+markers",
                line=style,
                marker={"size": 6},
                customdata=ranked.block,
                hovertemplate="%{customdata}: std %{y:.3g}<extra>" + name + "</extra>",
            ),
            row=1,
            col=2,
        )
    values = responses.act_std[np.isfinite(responses.act_std) & (responses.act_std > 0)] if len(responses) else []
    log_y = len(values) > 0 and values.max() / values.min() > LOG_SPAN
    title = f"Block response std at depth {depth} (the deepest pair)" if depth else "Block response std"
    layout(
        fig,
        title,
        "block (input → output)",
        "std of the block's response F(x)" + (" (log)" if log_y else ""),
        log_y=log_y,
    )
    fig.update_xaxes(title_text="block, by magnitude (largest first)", row=1, col=2)
    fig.update_yaxes(title_text="", row=1, col=2)
    if not log_y:
        fig.update_yaxes(rangemode="tozero")
    return _legend_below(fig)


def cost_figure(results: pd.DataFrame) -> go.Figure:
    """Parameters (left) and forward FLOPs per example (right) per depth, bars per model; log y if they span decades."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["parameters", "forward FLOPs per example"], horizontal_spacing=0.16
    )
    first = results.drop_duplicates(["model", "depth"]).sort_values("depth") if len(results) else results
    for i, model in enumerate(_models(first)):
        rows = first[first.model == model]
        for col, column in ((1, "params"), (2, "flops")):
            fig.add_trace(
                go.Bar(
                    x=rows.depth.astype(str),
                    y=rows[column],
                    name=_label(model),
                    legendgroup=model,
                    showlegend=col == 1,
                    marker_color=color(model, i),
                    hovertemplate="depth %{x}: %{y:,.0f}<extra>" + _label(model) + "</extra>",
                ),
                row=1,
                col=col,
            )
    spans = [first[c].max() / first[c].min() for c in ("params", "flops") if len(first) and first[c].min() > 0]
    log_y = bool(spans) and max(spans) > LOG_SPAN
    y_title = "parameters" + (" (log)" if log_y else "")
    layout(fig, "Size and cost per depth: parameters and FLOPs", "depth (weighted layers)", y_title, log_y=log_y)
    fig.update_yaxes(title_text="FLOPs per example" + (" (log)" if log_y else ""), row=1, col=2)
    fig.update_layout(barmode="group")
    return _legend_below(fig)
