"""Figures of the Limits & pitfalls page: lesions, paths, calibration, robustness, cost, init, global reasoning.

Pure functions: tables from `resnet_viz.limits` in, Plotly figures out. Models keep their colours
(A/plain vermillion, B/residual blue); `labels` maps a model key to its legend label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import LOG_AXIS, color, layout

DASHES = {"basic": "solid", "bottleneck": "dot"}


def _label(labels: dict[str, str] | None, key: str) -> str:
    return (labels or {}).get(key, key)


def lesion_single_figure(single: pd.DataFrame, base_error: dict[str, float], labels: dict[str, str]) -> go.Figure:
    """Test error after deleting one block, per block (Veit et al. 2016, Fig. 3); downsampling blocks marked."""
    fig = go.Figure()
    for i, (key, rows) in enumerate(single.groupby("model", sort=False)):
        c = color(key, i)
        fig.add_trace(
            go.Scatter(
                x=rows.block,
                y=rows.error,
                mode="lines+markers",
                name=_label(labels, key),
                line={"color": c},
                marker={
                    "symbol": np.where(rows.downsampling, "x", "circle").tolist(),
                    "size": np.where(rows.downsampling, 12, 7).tolist(),
                },
            )
        )
        fig.add_hline(
            y=base_error[key],
            line={"color": c, "dash": "dash", "width": 1},
            annotation_text=f"{_label(labels, key)}: intact",
            annotation_font_color=c,
            # at opposite ends and sides of their lines: two intact nets' errors are often almost equal
            annotation_position="top left" if i % 2 == 0 else "bottom right",
        )
    fig.update_yaxes(range=[0, 1])
    return layout(
        fig, "Test error after deleting one block (x: downsampling block)", "deleted block", "test error (fraction)"
    )


def lesion_k_figure(k_random: pd.DataFrame, labels: dict[str, str]) -> go.Figure:
    """Mean test error after deleting k random blocks, min-max band (Veit et al. 2016, Fig. 5)."""
    fig = go.Figure()
    for i, (key, rows) in enumerate(k_random.groupby("model", sort=False)):
        c = color(key, i)
        fig.add_trace(
            go.Scatter(
                x=rows.k,
                y=rows.max_error,
                mode="lines",
                line={"width": 0, "color": c},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=rows.k,
                y=rows.min_error,
                mode="lines",
                line={"width": 0, "color": c},
                fill="tonexty",
                opacity=0.2,
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(x=rows.k, y=rows.mean_error, mode="lines+markers", name=_label(labels, key), line={"color": c})
        )
    fig.update_yaxes(range=[0, 1])
    return layout(
        fig,
        "Test error after deleting k random blocks (mean, min to max)",
        "blocks deleted (k)",
        "test error (fraction)",
    )


def paths_figure(paths: pd.DataFrame, labels: dict[str, str]) -> go.Figure:
    """Path-length distribution (binomial), gradient per path length, and their product (Veit et al. Fig. 6)."""
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("paths of each length (share)", "gradient norm per path (log)", "share of the total gradient"),
        horizontal_spacing=0.1,  # room for each panel's own y title
    )
    for i, (key, rows) in enumerate(paths.groupby("model", sort=False)):
        c, name = color(key, i), _label(labels, key)
        fig.add_trace(go.Bar(x=rows.length, y=rows.share, name=name, marker_color=c, legendgroup=key), 1, 1)
        fig.add_trace(
            go.Scatter(
                x=rows.length,
                y=rows.grad_norm.clip(lower=1e-12),
                mode="lines+markers",
                name=name,
                line={"color": c},
                legendgroup=key,
                showlegend=False,
            ),
            1,
            2,
        )
        fig.add_trace(
            go.Bar(x=rows.length, y=rows.contribution, name=name, marker_color=c, legendgroup=key, showlegend=False),
            1,
            3,
        )
    fig = layout(
        fig, "Paths through the residual net: how many, and how much gradient each length carries", "path length", ""
    )
    fig.update_yaxes(**LOG_AXIS, row=1, col=2)
    for col, title in enumerate(("share of paths", "‖∂L/∂x‖ per path (log)", "share of the gradient"), start=1):
        fig.update_yaxes(title_text=title, row=1, col=col)
    return fig.update_xaxes(title_text="path length (residual branches on the path)")


def reliability_figure(reliability: pd.DataFrame, labels: dict[str, str]) -> go.Figure:
    """Accuracy per confidence bin against the diagonal, before and after temperature scaling (Guo et al. Fig. 1)."""
    keys = list(dict.fromkeys(reliability.model))
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[_label(labels, k) for k in keys], shared_yaxes=True)
    for col, key in enumerate(keys, start=1):
        for scaled in (False, True):
            rows = reliability[(reliability.model == key) & (reliability.scaled == scaled) & (reliability["count"] > 0)]
            centre = (rows.lower + rows.upper) / 2
            fig.add_trace(
                go.Bar(
                    x=centre,
                    y=rows.accuracy,
                    width=(rows.upper - rows.lower) * (0.45 if scaled else 0.9),
                    # each model's own entries: one pair in A's colour read as the key to B's bars as well
                    name=f"{_label(labels, key)}: {'after temperature scaling' if scaled else 'before'}",
                    marker_color=color(key, col - 1),
                    opacity=0.45 if scaled else 0.9,
                    customdata=rows["count"],
                    hovertemplate="confidence %{x:.2f}: accuracy %{y:.2f} (n=%{customdata})",
                ),
                1,
                col,
            )
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                line={"color": "grey", "dash": "dash"},
                name="perfect calibration",
                showlegend=col == 1,
            ),
            1,
            col,
        )
    fig.update_xaxes(range=[0, 1], title_text="confidence (max softmax probability)")
    return layout(fig, "Reliability: accuracy per confidence bin (15 bins)", "confidence", "accuracy (fraction)")


def robustness_figure(robustness: pd.DataFrame, labels: dict[str, str]) -> go.Figure:
    """Accuracy against severity, one panel per corruption and one for the mean over corruptions."""
    names = list(dict.fromkeys(robustness.corruption))
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[n.replace("_", " ") for n in names], shared_yaxes=True)
    for col, name in enumerate(names, start=1):
        for i, (key, rows) in enumerate(robustness[robustness.corruption == name].groupby("model", sort=False)):
            fig.add_trace(
                go.Scatter(
                    x=rows.severity,
                    y=rows.accuracy,
                    mode="lines+markers",
                    name=_label(labels, key),
                    line={"color": color(key, i)},
                    showlegend=col == 1,
                ),
                1,
                col,
            )
    fig.update_xaxes(title_text="severity (0: clean)", dtick=1)
    fig.update_yaxes(range=[0, 1.02])
    return layout(fig, "Test accuracy under input corruptions", "severity", "test accuracy (fraction)")


def cost_figure(cost: pd.DataFrame) -> go.Figure:
    """Parameters, FLOPs, latency and activation memory against depth; plain/residual, basic/bottleneck."""
    panels = [
        ("params", "parameters"),
        ("flops", "FLOPs per image"),
        ("latency_b1_ms", "latency, batch 1 (ms/image)"),
        ("latency_b64_ms", "latency, batch 64 (ms/image)"),
        ("inference_peak_kib", "inference peak (KiB/image)"),
        ("train_activation_kib", "training activations (KiB/image)"),
    ]
    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for _, t in panels], vertical_spacing=0.16)
    for n, (column, _) in enumerate(panels):
        for (block, skip), rows in cost.groupby(["block", "skip"], sort=False):
            kind = "residual" if skip else "plain"
            fig.add_trace(
                go.Scatter(
                    x=rows.depth,
                    y=rows[column],
                    mode="lines+markers",
                    name=f"{kind}, {block}",
                    legendgroup=kind + block,
                    line={"color": color(kind), "dash": DASHES.get(block, "solid")},
                    showlegend=n == 0,
                ),
                n // 3 + 1,
                n % 3 + 1,
            )
    fig.update_yaxes(**LOG_AXIS)
    return layout(fig, "What depth costs: size, compute, latency and memory per image (CPU)", "depth", "", height=640)


def accuracy_latency_figure(frame: pd.DataFrame) -> go.Figure:
    """Validation accuracy against latency per depth; the knee (where more depth stops paying) ringed."""
    fig = go.Figure()
    for i, (key, rows) in enumerate(frame.groupby("model", sort=False)):
        c = color(key, i)
        fig.add_trace(
            go.Scatter(
                x=rows.latency_ms,
                y=rows.val_acc,
                mode="lines+markers+text",
                name=key,
                text=[f"{d}" for d in rows.depth],
                # plain and residual nets of one depth have about the same latency: their labels apart, off
                # the knee's ring
                textposition="top left" if i % 2 == 0 else "bottom right",
                textfont={"color": c},
                line={"color": c},
            )
        )
        knee = rows[rows.knee]
        fig.add_trace(
            go.Scatter(
                x=knee.latency_ms,
                y=knee.val_acc,
                mode="markers",
                name=f"{key}: depth stops paying",
                marker={"size": 22, "color": "rgba(0,0,0,0)", "line": {"color": c, "width": 3}},
            )
        )
    return layout(
        fig,
        "Accuracy against latency (labels: depth)",
        "CPU latency, batch 1 (ms per image)",
        "validation accuracy (fraction)",
    )


def init_figure(table: pd.DataFrame) -> go.Figure:
    """Final training loss per init scheme (every seed a point), plain vs residual; failures as crosses."""
    fig = go.Figure()
    for i, (key, rows) in enumerate(table.groupby("model", sort=False)):
        fig.add_trace(
            go.Box(
                x=rows.scheme,
                y=rows.final_train_loss.clip(lower=1e-6),
                name=key,
                marker_color=color(key, i),
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                offsetgroup=key,
            )
        )
        failed = rows[rows.failed]
        fig.add_trace(
            go.Scatter(
                x=failed.scheme,
                y=failed.final_train_loss.clip(lower=1e-6).fillna(10.0),
                mode="markers",
                name=f"{key}: failed",
                offsetgroup=key,
                marker={"symbol": "x", "size": 12, "color": color(key, i)},
            )
        )
    fig.update_layout(boxmode="group")
    return layout(
        fig,
        "Final training loss by initialisation (each seed a point)",
        "init scheme",
        "final training loss (log)",
        log_y=True,
    )


def _depth_labels(x: pd.Series, y: pd.Series, depths: pd.Series) -> list[str]:
    """'d14, d20' on the first of the points that coincide (nets that all see the whole image and solve the task
    sit on one spot), '' on the others: labels drawn on top of each other cannot be read."""
    spots: dict[tuple[float, float], list[int]] = {}
    for i, spot in enumerate(zip(x.round(3), y.round(3), strict=True)):
        spots.setdefault(spot, []).append(i)
    labels = [""] * len(depths)
    for at in spots.values():
        labels[at[0]] = ", ".join(f"d{depths.iloc[j]}" for j in at)
    return labels


def global_reasoning_figure(table: pd.DataFrame) -> go.Figure:
    """Test accuracy against the share of the image inside the last block's theoretical and effective field."""
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        subplot_titles=("theoretical field of the last block", "effective field (90% of the gradient)"),
    )
    for col, share in enumerate(("rf_share", "erf_share"), start=1):
        for i, (key, rows) in enumerate(table.groupby("model", sort=False)):
            fig.add_trace(
                go.Scatter(
                    x=rows[share],
                    y=rows.test_acc,
                    mode="markers+text",
                    name=key,
                    text=_depth_labels(rows[share], rows.test_acc, rows.depth),
                    textposition="top center" if i % 2 == 0 else "bottom center",  # the models' labels apart
                    marker={"color": color(key, i), "size": 11},
                    showlegend=col == 1,
                ),
                1,
                col,
            )
        fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash"}, row=1, col=col)
    fig.update_xaxes(range=[0, 1.15], title_text="share of the image inside the field")  # labels at 1 fit
    fig.update_yaxes(range=[0.3, 1.12])  # room for the labels above 100%
    return layout(
        fig,
        "Corners task: accuracy against how much of the image the last block sees (chance: dashed)",
        "share of the image",
        "test accuracy (fraction)",
        legend_y=1.12,  # above the subplot titles
    )
