"""Training-lab figures: loss, accuracy, gradient profiles and heatmaps, residual stream, boundaries.

Pure builders: tidy data in (`History.steps_frame()` / `layers_frame()`), Plotly figure out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .common import (
    MAX_HEATMAP_COLUMNS,
    axis,
    color,
    colorscale,
    figure,
    look,
    positive,
    row_of_subplots,
    subplot_axis,
    thin_positions,
)


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
    model, step = _arrays(steps, "model", "step")
    loss, val_loss = _arrays(steps, "loss", "val_loss", dtype=float)
    traces = []
    for i, (key, label) in enumerate(labels.items()):
        mine = model == key
        train = thin_positions(np.flatnonzero(mine & ~np.isnan(loss)))
        traces.append(
            {
                "type": "scatter",
                "x": step[train],
                "y": positive(loss[train]),
                "name": f"{label}: train",
                "mode": "lines",
                "line": {"color": color(key, i), "width": 2},
            }
        )
        val = np.flatnonzero(mine & ~np.isnan(val_loss))
        traces.append(
            {
                "type": "scatter",
                "x": step[val],
                "y": positive(val_loss[val]),
                "name": f"{label}: validation",
                "mode": "lines+markers",
                "line": {"color": color(key, i), "dash": "dash", "width": 1.5},
                "marker": {"size": 6},
            }
        )
    fig = figure(
        traces,
        {
            **look("Loss: training (solid) and validation (dashed)"),
            "xaxis": axis("step"),
            "yaxis": axis("cross-entropy loss (nats, log)", type="log"),
        },
    )
    _mark_skip_events(fig, skip_events, labels, int(step.max()) if len(step) else 0)
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
    return fig


SKIP_LABEL_GAP = 0.03  # skip changes of one model closer than this fraction of the x range share one label


def _mark_skip_events(
    fig: go.Figure, events: Sequence[tuple[str, int, float]], labels: Mapping[str, str], extent: int
) -> None:
    """A dotted line at each live skip change, labelled with the α it set. A slider moved with the arrow keys
    changes α once per step (0.05 a press), and each label printed over the last ("AAαα0.05"): changes of a
    model closer together than SKIP_LABEL_GAP of the x range are labelled once, at the last, with the α they
    ended at. Each model's labels sit on their own line, so A's and B's at one step do not overlap."""
    gap = max(1.0, SKIP_LABEL_GAP * extent)
    for i, key in enumerate(labels):
        mine = sorted((step, alpha) for k, step, alpha in events if k == key)
        for j, (step, alpha) in enumerate(mine):
            line = {"color": color(key, i), "dash": "dot", "width": 1.5}
            if j < len(mine) - 1 and mine[j + 1][0] - step <= gap:  # the next change is close: its label says
                fig.add_vline(x=step, line=line)
                continue
            label = {"annotation_text": f"{key}: α={alpha:g}", "annotation_yshift": -16 * i}
            fig.add_vline(x=step, line=line, annotation_position="top left", **label)


def accuracy_figure(steps: pd.DataFrame, labels: Mapping[str, str]) -> go.Figure:
    """Training accuracy (smoothed over 10 steps) and validation accuracy, in percent.

    The live chart table brings the 10-step mean as ``acc_smooth``; a full steps frame is smoothed here.
    Validation points are every row with a validation accuracy (the live table's have no training values).
    """
    model, step = _arrays(steps, "model", "step")
    acc, val_acc = _arrays(steps, "acc", "val_acc", dtype=float)
    smooth = _arrays(steps, "acc_smooth", dtype=float)[0] if "acc_smooth" in steps else None
    traces = []
    for i, (key, label) in enumerate(labels.items()):
        mine = model == key
        rows = np.flatnonzero(mine & ~np.isnan(acc))
        mean = smooth[rows] if smooth is not None else pd.Series(acc[rows]).rolling(10, min_periods=1).mean().to_numpy()
        train = thin_positions(np.arange(len(rows)))
        traces.append(
            {
                "type": "scatter",
                "x": step[rows][train],
                "y": 100 * mean[train],
                "name": f"{label}: train",
                "mode": "lines",
                "line": {"color": color(key, i), "width": 2},
            }
        )
        val = np.flatnonzero(mine & ~np.isnan(val_acc))
        traces.append(
            {
                "type": "scatter",
                "x": step[val],
                "y": 100 * val_acc[val],
                "name": f"{label}: validation",
                "mode": "lines+markers",
                "line": {"color": color(key, i), "dash": "dash", "width": 1.5},
            }
        )
    return figure(
        traces,
        {
            **look("Accuracy: training (10-step mean) and validation"),
            "xaxis": axis("step"),
            "yaxis": axis("accuracy (%)", range=[0, 100]),
        },
    )


def _arrays(frame: pd.DataFrame, *names: str, dtype: type | None = None) -> list[np.ndarray]:
    """Columns as NumPy arrays. Why: the figures select rows with NumPy masks; each pandas filter, sort
    or group-by costs 0.1-0.5 ms whatever the number of rows, and the live lab's five charts made
    dozens of them per redraw (about 40 of a redraw's 60 ms, at the live tables' few thousand rows)."""
    return [frame[name].to_numpy(dtype=dtype) for name in names]


def _order(model: np.ndarray, layer: np.ndarray, index: np.ndarray) -> list[str]:
    """`layer_order` on columns: names by their mean relative depth in their models, then by their largest
    depth index; names in the same place keep the order they first appear in."""
    if not len(layer):
        return []
    names, first, of_name = np.unique(layer, return_index=True, return_inverse=True)
    models, of_model = np.unique(model, return_inverse=True)
    deepest = np.zeros(len(models))
    np.maximum.at(deepest, of_model, index)
    relative = index / np.where(deepest == 0, 1, deepest)[of_model]
    position = np.bincount(of_name, weights=relative) / np.bincount(of_name)
    ranked = np.full(len(names), -1)
    np.maximum.at(ranked, of_name, index)
    appearance = np.argsort(first, kind="stable")
    return [str(names[i]) for i in sorted(appearance, key=lambda i: (position[i], ranked[i]))]


def layer_order(layers: pd.DataFrame) -> list[str]:
    """Layer/block names in network order, for a category axis shared by models of different depth."""
    return _order(*_arrays(layers, "model", "layer", "depth_index"))


def _latest(model: np.ndarray, step: np.ndarray, metric: np.ndarray, name: str) -> np.ndarray:
    """Positions of the rows of metric `name` at each model's latest probed step, in their order."""
    rows = metric == name
    keep = np.zeros(len(rows), dtype=bool)
    for key in np.unique(model[rows]):
        mine = rows & (model == key)
        keep |= mine & (step == step[mine].max())
    return np.flatnonzero(keep)


def latest(layers: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of `metric` at each model's latest probed step."""
    return layers.iloc[_latest(*_arrays(layers, "model", "step", "metric"), metric)]


class _Latest:
    """The rows of one metric at each model's latest probed step, as arrays: what the "now" charts draw."""

    def __init__(self, layers: pd.DataFrame, metric: str) -> None:
        columns = ("model", "step", "metric", "layer", "value", "depth_index")
        model, step, kind, layer, value, index = _arrays(layers, *columns)
        rows = _latest(model, step, kind, metric)
        self.model, self.step, self.layer = model[rows], step[rows], layer[rows]
        self.value, self.index = value[rows].astype(float), index[rows]

    def __len__(self) -> int:
        return len(self.model)

    def of(self, key: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(layer names, values) of model `key` in network order, and its step (0 when it has none)."""
        mine = np.flatnonzero(self.model == key)
        mine = mine[np.argsort(self.index[mine], kind="stable")]
        return self.layer[mine], self.value[mine], int(self.step[mine].max()) if len(mine) else 0


def profile_figure(
    layers: pd.DataFrame, labels: Mapping[str, str], metric: str, title: str, y_title: str, *, log_y: bool = True
) -> go.Figure:
    """One value per layer (network order on x) at each model's latest probed step."""
    rows = _Latest(layers, metric)
    traces = []
    for i, (key, label) in enumerate(labels.items()):
        names, values, step = rows.of(key)
        traces.append(
            {
                "type": "scatter",
                "x": names,
                "y": positive(values) if log_y else values,
                "name": f"{label} (step {step})",
                "mode": "lines+markers",
                "line": {"color": color(key, i), "width": 2},
                "marker": {"size": 5},
            }
        )
    order = _order(rows.model, rows.layer, rows.index)
    x_axis = axis("layer (input → output)", categoryorder="array", categoryarray=order, tickangle=-45)
    # Without log_y, Plotly picks the y type from the data (forcing "linear" left layer-name axes empty).
    y_axis = axis(y_title, type="log") if log_y else axis(y_title)
    return figure(traces, {**look(title), "xaxis": x_axis, "yaxis": y_axis})


def grad_profile_figure(layers: pd.DataFrame, labels: Mapping[str, str]) -> go.Figure:
    return profile_figure(layers, labels, "grad_norm", "Gradient norm per layer, now", "‖∂L/∂W‖ (log)")


def profile_verdict(layers: pd.DataFrame, labels: Mapping[str, str]) -> str:
    """What the gradient profile shows now, as a sentence: each model's first layer's gradient norm over its last
    layer's. Why: the textbook shape holds at initialisation only. A deep plain net with BatchNorm starts with
    its first layer's gradient about a thousand times its last one's (the exploding preset: 1,242 at step 1),
    and after its first update under a fifth of it (from step 3 on), so a fixed caption about the chart's
    shape contradicted it for most of a run."""
    rows = _Latest(layers, "grad_norm")
    parts = []
    for key, label in labels.items():
        _, values, step = rows.of(key)
        if len(values) >= 2 and values[-1] > 0 and np.isfinite(values[[0, -1]]).all():
            parts.append(f"{label} {values[0] / values[-1]:.2g}× at step {step}")
    if not parts:
        return ""
    return "Here, the first layer's gradient norm over the last layer's: " + "; ".join(parts) + "."


def heatmap_figure(layers: pd.DataFrame, labels: Mapping[str, str], metric: str = "grad_norm") -> go.Figure:
    """Layer x step heatmap of log10(metric) for each model, one shared colour scale.

    Rows of metric ``<metric>_binned`` (the live chart table: log10 values already binned over steps)
    are used when present; otherwise the raw rows are logged and binned here.
    """
    model, kind = _arrays(layers, "model", "metric")
    binned = kind == f"{metric}_binned"
    keys = list(labels)
    if binned.any():
        columns = _arrays(layers, "depth_index", "step", "layer", "value")
        grids = {k: _binned_grid(np.flatnonzero(binned & (model == k)), *columns) for k in keys}
    else:
        grids = {k: _log_grid(layers[(kind == metric) & (model == k)]) for k in keys}
    drawn = [g for g in grids.values() if g is not None]
    # Models with the same layers (the usual pair, which differs only in its skips) share the layer
    # names on the left; otherwise each panel names its own, and needs room for them.
    same_layers = len({tuple(names) for _, names in drawn}) == 1
    grid_layout = row_of_subplots([labels[k] for k in keys], 0.04 if same_layers else 0.22)
    zmin = min((float(np.nanmin(g[0].values)) for g in drawn), default=0.0)
    zmax = max((float(np.nanmax(g[0].values)) for g in drawn), default=1.0)
    traces = []
    for col, key in enumerate(keys, start=1):
        (x_name, x_key), (y_name, y_key) = subplot_axis("x", col), subplot_axis("y", col)
        grid_layout[x_key].update(title={"text": "step"})
        y_axis = grid_layout[y_key]
        # Reversed from the first (maybe empty) draw on: a live chart keeps its axes' autorange through
        # Plotly.react, so an axis first drawn unreversed stayed so, input at the bottom.
        y_axis.update(title={"text": "layer (input at top)" if col == 1 else ""}, autorange="reversed")
        if grids[key] is None:
            continue
        grid, names = grids[key]
        traces.append(
            {
                "type": "heatmap",
                "z": grid.values,
                "x": grid.columns,
                "y": names,
                "coloraxis": "coloraxis",
                "hovertemplate": "step %{x}<br>%{y}<br>log10 = %{z:.2f}<extra></extra>",
                "xaxis": x_name,
                "yaxis": y_name,
            }
        )
        labelled = len(names) <= 40 and (col == 1 or not same_layers)
        y_axis.update(showticklabels=labelled)
        if labelled and len(names) <= 24:  # every layer named (Plotly's own ticks skipped every other one)
            y_axis.update(dtick=1)
    grid_layout["coloraxis"] = {
        "colorscale": colorscale("Viridis"),
        "cmin": zmin,
        "cmax": zmax,
        "colorbar": {"title": {"text": "log10 ‖∂L/∂W‖"}},
    }
    return figure(traces, {**grid_layout, **look("Gradient norm per layer over training (log colour, shared scale)")})


def _binned_grid(
    rows: np.ndarray, index: np.ndarray, step: np.ndarray, layer: np.ndarray, value: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray] | None:
    """(layer x step grid, layer names) of one model's binned chart-table rows (log10 values already), or
    None when it has none. They come step by step with every layer in network order: the grid is a reshape."""
    if not len(rows):
        return None
    layers = int(index[rows].max()) + 1
    grid = pd.DataFrame(value[rows].reshape(-1, layers).T, columns=step[rows][::layers])
    return grid, layer[rows][:layers]


def _log_grid(part: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray] | None:
    """(layer x step grid of log10 values, layer names) of one model's raw history rows, binned to at most
    MAX_HEATMAP_COLUMNS columns; None when it has no rows."""
    if part.empty:
        return None
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
    grid_layout = row_of_subplots(("gradient ‖∂L/∂x‖", "response std of F(x)"), 0.14)
    grads, stds = _Latest(layers, "block_grad_norm"), _Latest(layers, "act_std")
    traces = []
    for i, (key, label) in enumerate(labels.items()):
        for col, rows in ((1, grads), (2, stds)):
            names, values, _ = rows.of(key)
            (x_name, _), (y_name, _) = subplot_axis("x", col), subplot_axis("y", col)
            traces.append(
                {
                    "type": "scatter",
                    "x": names,
                    "y": positive(values) if col == 1 else values,
                    "name": label,
                    "legendgroup": key,
                    "showlegend": col == 1,
                    "mode": "lines+markers",
                    "line": {"color": color(key, i), "width": 2},
                    "xaxis": x_name,
                    "yaxis": y_name,
                }
            )
    both = [np.concatenate([getattr(grads, c), getattr(stds, c)]) for c in ("model", "layer", "index")]
    order = _order(*both)
    for col in (1, 2):
        grid_layout[subplot_axis("x", col)[1]].update(
            axis("block", categoryorder="array", categoryarray=order, tickangle=-45)
        )
    grid_layout["yaxis"].update(axis("‖∂L/∂x‖ (log)", type="log"))
    # Linear from 0: after BatchNorm every response starts at std 1; what matters is how it moves.
    top = float(stds.value.max()) * 1.15 if len(stds) else 1.0
    grid_layout["yaxis2"].update(axis("response std", type="linear", range=[0, max(top, 1e-6)]))
    return figure(traces, {**grid_layout, **look("Residual stream per block, now", height=460, legend_y=1.12)})


def decision_boundary_figure(
    grids: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    points: np.ndarray,
    targets: np.ndarray,
    labels: Mapping[str, str],
) -> go.Figure:
    """P(class 1) over the plane for each model, with the training points on top."""
    keys = [k for k in labels if k in grids]
    grid_layout = row_of_subplots([labels[k] for k in keys] or [""], 0.08)  # no pictures yet: one empty panel
    traces = []
    for col, key in enumerate(keys, start=1):
        (x_name, x_key), (y_name, y_key) = subplot_axis("x", col), subplot_axis("y", col)
        xs, ys, probs = grids[key]
        traces.append(
            {
                "type": "heatmap",
                "x": xs,
                "y": ys,
                "z": probs,
                "zmin": 0,
                "zmax": 1,
                "colorscale": colorscale("RdBu"),
                "coloraxis": "coloraxis",
                "hovertemplate": "x %{x:.2f}, y %{y:.2f}<br>P(class 1) = %{z:.2f}<extra></extra>",
                "xaxis": x_name,
                "yaxis": y_name,
            }
        )
        for cls, symbol in ((0, "circle"), (1, "diamond")):
            pts = points[targets == cls]
            traces.append(
                {
                    "type": "scatter",
                    "x": pts[:, 0],
                    "y": pts[:, 1],
                    "mode": "markers",
                    "name": f"class {cls}",
                    "showlegend": col == 1,
                    "legendgroup": str(cls),
                    "marker": {
                        "size": 4,
                        "symbol": symbol,
                        "color": "#B2182B" if cls == 0 else "#2166AC",
                        "line": {"width": 0.5, "color": "white"},
                    },
                    "xaxis": x_name,
                    "yaxis": y_name,
                }
            )
        grid_layout[x_key].update(axis("x₁"))
        grid_layout[y_key].update(axis("x₂", scaleanchor=x_name))  # equal units on both axes: round stays round
    grid_layout["coloraxis"] = {
        "colorscale": colorscale("RdBu"),
        "cmin": 0,
        "cmax": 1,
        "colorbar": {"title": {"text": "P(class 1)"}},
    }
    title = "Decision boundary: each model's P(class 1) over the plane"
    return figure(traces, {**grid_layout, **look(title, height=460, legend_y=1.12)})
