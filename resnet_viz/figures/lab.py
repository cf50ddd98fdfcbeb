"""Training-lab figures: loss, accuracy, gradient profiles and heatmaps, residual stream, boundaries.

Pure builders: tidy data in (`History.steps_frame()` / `layers_frame()`), Plotly figure out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import MAX_HEATMAP_COLUMNS, color, layout, positive, thin


def loss_figure(
    steps: pd.DataFrame,
    labels: Mapping[str, str],
    skip_events: Sequence[tuple[str, int, float]] = (),
    diverged: Mapping[str, int] | None = None,
    fork_step: int = 0,
) -> go.Figure:
    """Training loss per step (solid) and validation loss (dashed, markers), log y, both models.

    `steps` is `History.steps_frame()` or the live chart table (`ChartTables.steps_frame()`, whose
    training rows are bin means and whose validation rows have no training loss). `fork_step` marks
    where this run was forked from a shared one.
    """
    fig = go.Figure()
    for i, (key, label) in enumerate(labels.items()):
        rows = steps[steps.model == key]
        train = thin(rows[rows.loss.notna()])
        fig.add_trace(
            go.Scatter(
                x=train.step,
                y=positive(train.loss),
                name=f"{label}: train",
                mode="lines",
                line={"color": color(key, i), "width": 2},
            )
        )
        val = rows.dropna(subset=["val_loss"])
        fig.add_trace(
            go.Scatter(
                x=val.step,
                y=positive(val.val_loss),
                name=f"{label}: validation",
                mode="lines+markers",
                line={"color": color(key, i), "dash": "dash", "width": 1.5},
                marker={"size": 6},
            )
        )
    _mark_skip_events(fig, skip_events, labels)
    if fork_step:
        fig.add_vline(
            x=fork_step,
            line={"color": "#555555", "dash": "dash", "width": 1.5},
            annotation_text="your copy from here",
            annotation_position="bottom right",
        )
    for key, step in (diverged or {}).items():
        fig.add_vline(
            x=step, line={"color": color(key), "width": 2}, annotation_text=f"{labels.get(key, key)} diverged"
        )
    return layout(
        fig, "Loss: training (solid) and validation (dashed)", "step", "cross-entropy loss (nats, log)", log_y=True
    )


def _mark_skip_events(fig: go.Figure, events: Sequence[tuple[str, int, float]], labels: Mapping[str, str]) -> None:
    for key, step, alpha in events:
        fig.add_vline(
            x=step,
            line={"color": color(key), "dash": "dot", "width": 1.5},
            annotation_text=f"{key}: α={alpha:g}",
            annotation_position="top left",
        )


def accuracy_figure(steps: pd.DataFrame, labels: Mapping[str, str]) -> go.Figure:
    """Training accuracy (smoothed over 10 steps) and validation accuracy, in percent.

    The live chart table brings the 10-step mean as ``acc_smooth``; a full steps frame is smoothed here.
    """
    fig = go.Figure()
    for i, (key, label) in enumerate(labels.items()):
        rows = steps[steps.model == key]
        rows = rows[rows.acc.notna()]
        mean = rows.acc_smooth if "acc_smooth" in rows else rows.acc.rolling(10, min_periods=1).mean()
        train = thin(rows.assign(acc=mean))
        fig.add_trace(
            go.Scatter(
                x=train.step,
                y=100 * train.acc,
                name=f"{label}: train (10-step mean)",
                mode="lines",
                line={"color": color(key, i), "width": 2},
            )
        )
        val = rows.dropna(subset=["val_acc"])
        fig.add_trace(
            go.Scatter(
                x=val.step,
                y=100 * val.val_acc,
                name=f"{label}: validation",
                mode="lines+markers",
                line={"color": color(key, i), "dash": "dash", "width": 1.5},
            )
        )
    fig = layout(fig, "Accuracy: training and validation", "step", "accuracy (%)")
    fig.update_yaxes(range=[0, 100])
    return fig


def layer_order(layers: pd.DataFrame) -> list[str]:
    """Layer/block names in network order, for a category axis shared by models of different depth."""
    ranked = layers.groupby("layer", sort=False).depth_index.max()
    relative = layers.groupby("model").depth_index.transform("max")
    position = (layers.depth_index / relative.replace(0, 1)).groupby(layers.layer).mean()
    return sorted(ranked.index, key=lambda name: (position[name], ranked[name]))


def latest(layers: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of `metric` at each model's latest probed step."""
    rows = layers[layers.metric == metric]
    if rows.empty:
        return rows
    last = rows.groupby("model").step.transform("max")
    return rows[rows.step == last]


def profile_figure(
    layers: pd.DataFrame, labels: Mapping[str, str], metric: str, title: str, y_title: str, *, log_y: bool = True
) -> go.Figure:
    """One value per layer (network order on x) at each model's latest probed step."""
    rows = latest(layers, metric)
    fig = go.Figure()
    for i, (key, label) in enumerate(labels.items()):
        part = rows[rows.model == key].sort_values("depth_index")
        step = int(part.step.max()) if len(part) else 0
        fig.add_trace(
            go.Scatter(
                x=part.layer,
                y=positive(part.value) if log_y else part.value,
                name=f"{label} (step {step})",
                mode="lines+markers",
                line={"color": color(key, i), "width": 2},
                marker={"size": 5},
            )
        )
    fig = layout(fig, title, "layer (input → output)", y_title, log_y=log_y)
    fig.update_xaxes(categoryorder="array", categoryarray=layer_order(rows) if len(rows) else [], tickangle=-45)
    return fig


def grad_profile_figure(layers: pd.DataFrame, labels: Mapping[str, str]) -> go.Figure:
    return profile_figure(layers, labels, "grad_norm", "Gradient norm per layer, now", "‖∂L/∂W‖ (log)")


def heatmap_figure(layers: pd.DataFrame, labels: Mapping[str, str], metric: str = "grad_norm") -> go.Figure:
    """Layer x step heatmap of log10(metric) for each model, one shared colour scale.

    Rows of metric ``<metric>_binned`` (the live chart table: log10 values already binned over steps)
    are used when present; otherwise the raw rows are logged and binned here.
    """
    binned = layers[layers.metric == f"{metric}_binned"]
    keys = list(labels)
    grids = {
        k: _log_grid(binned[binned.model == k], True)
        if len(binned)
        else _log_grid(layers[(layers.metric == metric) & (layers.model == k)], False)
        for k in keys
    }
    drawn = [g for g in grids.values() if g is not None]
    # Models with the same layers (the usual pair, which differs only in its skips) share the layer
    # names on the left; otherwise each panel names its own, and needs room for them.
    same_layers = len({tuple(names) for _, names in drawn}) == 1
    fig = make_subplots(
        rows=1,
        cols=len(keys),
        shared_yaxes=False,
        subplot_titles=[labels[k] for k in keys],
        horizontal_spacing=0.04 if same_layers else 0.22,
    )
    zmin = min((float(np.nanmin(g[0].values)) for g in drawn), default=0.0)
    zmax = max((float(np.nanmax(g[0].values)) for g in drawn), default=1.0)
    for col, key in enumerate(keys, start=1):
        if grids[key] is None:
            continue
        grid, names = grids[key]
        fig.add_trace(
            go.Heatmap(
                z=grid.values,
                x=grid.columns,
                y=names,
                coloraxis="coloraxis",
                hovertemplate="step %{x}<br>%{y}<br>log10 = %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        labelled = len(names) <= 40 and (col == 1 or not same_layers)
        fig.update_yaxes(autorange="reversed", row=1, col=col, showticklabels=labelled)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(
        coloraxis={
            "colorscale": "Viridis",
            "cmin": zmin,
            "cmax": zmax,
            "colorbar": {"title": {"text": "log10 ‖∂L/∂W‖"}},
        }
    )
    fig = layout(fig, "Gradient norm per layer over training (log colour, shared scale)", "step", "", height=420)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="")
    fig.update_yaxes(title_text="layer (input at top)", row=1, col=1)
    return fig


def _log_grid(part: pd.DataFrame, binned: bool) -> tuple[pd.DataFrame, np.ndarray] | None:
    """(layer x step grid of log10 values, layer names) of one model; None when it has no rows.

    Binned chart-table rows come step by step with every layer in network order, so the grid is a
    reshape; raw history rows are logged, pivoted and binned to at most MAX_HEATMAP_COLUMNS columns.
    """
    if part.empty:
        return None
    if binned:
        layers = int(part.depth_index.max()) + 1
        values = part.value.to_numpy().reshape(-1, layers).T
        steps = part.step.to_numpy()[::layers]
        return pd.DataFrame(values, columns=steps), part.layer.to_numpy()[:layers]
    grid = part.assign(log=np.log10(part.value.clip(lower=1e-12))).pivot_table(
        index="depth_index", columns="step", values="log"
    )
    names = part.drop_duplicates("depth_index").set_index("depth_index").layer.reindex(grid.index)
    return _bin_columns(grid), names.values


def _bin_columns(grid: pd.DataFrame) -> pd.DataFrame:
    """Average neighbouring steps so a long run still fits MAX_HEATMAP_COLUMNS columns."""
    if grid.shape[1] <= MAX_HEATMAP_COLUMNS:
        return grid
    bins = np.linspace(0, grid.shape[1], MAX_HEATMAP_COLUMNS + 1).astype(int)
    cols = [grid.iloc[:, a:b].mean(axis=1) for a, b in zip(bins[:-1], bins[1:], strict=True)]
    steps = [int(grid.columns[b - 1]) for b in bins[1:]]
    return pd.DataFrame(np.stack(cols, axis=1), index=grid.index, columns=steps)


def block_figure(layers: pd.DataFrame, labels: Mapping[str, str]) -> go.Figure:
    """Two panels per block: the gradient through the block output, and the std of its response."""
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.14,
        subplot_titles=("gradient ‖∂L/∂x‖", "response std of F(x)"),
    )
    grads, stds = latest(layers, "block_grad_norm"), latest(layers, "act_std")
    for i, (key, label) in enumerate(labels.items()):
        for col, rows in ((1, grads), (2, stds)):
            part = rows[rows.model == key].sort_values("depth_index")
            y = positive(part.value) if col == 1 else part.value
            fig.add_trace(
                go.Scatter(
                    x=part.layer,
                    y=y,
                    name=label,
                    legendgroup=key,
                    showlegend=col == 1,
                    mode="lines+markers",
                    line={"color": color(key, i), "width": 2},
                ),
                row=1,
                col=col,
            )
    fig = layout(fig, "Residual stream per block, now", "block", "", height=460, legend_y=1.12)
    fig.update_yaxes(type="log", row=1, col=1, title_text="‖∂L/∂x‖ (log)")
    # Linear from 0: after BatchNorm every response starts at std 1; what matters is how it moves.
    top = float(stds.value.max()) * 1.15 if len(stds) else 1.0
    fig.update_yaxes(type="linear", row=1, col=2, title_text="response std", range=[0, max(top, 1e-6)])
    order = layer_order(pd.concat([grads, stds])) if len(grads) or len(stds) else []
    fig.update_xaxes(categoryorder="array", categoryarray=order, tickangle=-45, title_text="block")
    return fig


def decision_boundary_figure(
    grids: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    points: np.ndarray,
    targets: np.ndarray,
    labels: Mapping[str, str],
) -> go.Figure:
    """P(class 1) over the plane for each model, with the training points on top."""
    keys = [k for k in labels if k in grids]
    fig = make_subplots(
        rows=1, cols=max(1, len(keys)), subplot_titles=[labels[k] for k in keys], horizontal_spacing=0.08
    )
    for col, key in enumerate(keys, start=1):
        xs, ys, probs = grids[key]
        fig.add_trace(
            go.Heatmap(
                x=xs,
                y=ys,
                z=probs,
                zmin=0,
                zmax=1,
                colorscale="RdBu",
                coloraxis="coloraxis",
                hovertemplate="x %{x:.2f}, y %{y:.2f}<br>P(class 1) = %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        for cls, symbol in ((0, "circle"), (1, "diamond")):
            pts = points[targets == cls]
            fig.add_trace(
                go.Scatter(
                    x=pts[:, 0],
                    y=pts[:, 1],
                    mode="markers",
                    name=f"class {cls}",
                    showlegend=col == 1,
                    legendgroup=str(cls),
                    marker={
                        "size": 4,
                        "symbol": symbol,
                        "color": "#B2182B" if cls == 0 else "#2166AC",
                        "line": {"width": 0.5, "color": "white"},
                    },
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="x₁", row=1, col=col)
        fig.update_yaxes(title_text="x₂" if col == 1 else "", row=1, col=col, scaleanchor=f"x{col if col > 1 else ''}")
    fig.update_layout(
        coloraxis={"colorscale": "RdBu", "cmin": 0, "cmax": 1, "colorbar": {"title": {"text": "P(class 1)"}}}
    )
    fig = layout(
        fig, "Decision boundary: each model's P(class 1) over the plane", "x₁", "x₂", height=460, legend_y=1.12
    )
    fig.update_xaxes(title_text="x₁")
    return fig
