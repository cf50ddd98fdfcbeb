"""Attribution-page figures: the test-image gallery, maps over the image, Grad-CAM by stage, sanity and localisation.

Pure builders: arrays and tidy frames in, Plotly figure out. Every attribution map is scaled for
display by `resnet_viz.attribution.normalize_map` (the one display normalisation), so a colour means
the same in every chart: [0, 1] of the 99th percentile of |map| for unsigned methods, [-1, 1] for
signed ones. Images are drawn in grey (each scaled to its own range) with the map on top as a
semi-transparent layer whose zero is fully transparent. Model A and B keep their colours (titles,
lines and bars); the map colours are chosen to clash with neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.attribution import METHODS, normalize_map

from .common import color, layout

# Unsigned maps: transparent at 0, then dark purple -> orange -> yellow, more opaque as they grow (inferno-like).
ABS_SCALE = [
    [0.0, "rgba(0,0,4,0)"],
    [0.15, "rgba(40,11,84,0.15)"],
    [0.35, "rgba(120,28,109,0.55)"],
    [0.6, "rgba(217,72,40,0.75)"],
    [0.8, "rgba(251,155,6,0.85)"],
    [1.0, "rgba(252,255,164,0.95)"],
]
# Signed maps: purple below zero, green above (PRGn), transparent at zero; neither is a model colour.
SIGNED_SCALE = [
    [0.0, "rgba(64,0,75,0.95)"],
    [0.25, "rgba(153,112,171,0.75)"],
    [0.45, "rgba(231,212,232,0.1)"],
    [0.5, "rgba(247,247,247,0)"],
    [0.55, "rgba(217,240,211,0.1)"],
    [0.75, "rgba(90,174,97,0.75)"],
    [1.0, "rgba(0,68,27,0.95)"],
]
METHOD_DASH = {"saliency": "solid", "gradcam": "dash"}
METHOD_SYMBOL = {"saliency": "circle", "gradcam": "diamond"}


def unit_image(image: np.ndarray) -> np.ndarray:
    """An image (H, W) scaled to [0, 1] for display (a constant image becomes mid grey)."""
    img = np.asarray(image, dtype=np.float64)
    low, high = float(img.min()), float(img.max())
    return np.full_like(img, 0.5) if high <= low else (img - low) / (high - low)


def _grey(image: np.ndarray, name: str) -> go.Heatmap:
    return go.Heatmap(
        z=unit_image(image),
        colorscale="gray",
        zmin=0,
        zmax=1,
        showscale=False,
        name=name,
        hovertemplate="x %{x} px, y %{y} px<br>intensity %{z:.2f}<extra>" + name + "</extra>",
    )


def _image_axes(fig: go.Figure, n_axes: int, *, ticks: bool) -> None:
    """Pixel axes with square pixels and row 0 at the top, for every subplot."""
    for i in range(1, n_axes + 1):
        suffix = "" if i == 1 else str(i)
        fig.update_layout(
            {
                f"xaxis{suffix}": {
                    "constrain": "domain",
                    "showgrid": False,
                    "zeroline": False,
                    "showticklabels": ticks,
                },
                f"yaxis{suffix}": {
                    "scaleanchor": f"x{suffix}",
                    "autorange": "reversed",
                    "constrain": "domain",
                    "showgrid": False,
                    "zeroline": False,
                    "showticklabels": ticks,
                },
            }
        )


def _colorbar(signed: bool, x: float = 1.0) -> dict:
    text = "signed attribution<br>(÷ 99th pct of |map|)" if signed else "|attribution|<br>(÷ 99th pct)"
    return {"title": {"text": text, "side": "right"}, "x": x, "len": 0.8, "thickness": 12, "tickformat": ".1f"}


def _overlay(attr: np.ndarray, signed: bool, name: str, *, showscale: bool, coloraxis: str | None = None) -> go.Heatmap:
    z = normalize_map(attr, "signed" if signed else "abs")
    trace = go.Heatmap(
        z=z,
        name=name,
        hovertemplate="x %{x} px, y %{y} px<br>attribution %{z:.2f}<extra>" + name + "</extra>",
    )
    if coloraxis:
        trace.update(coloraxis=coloraxis)
    else:
        trace.update(
            colorscale=SIGNED_SCALE if signed else ABS_SCALE,
            zmin=-1 if signed else 0,
            zmax=1,
            showscale=showscale,
            colorbar=_colorbar(signed),
        )
    return trace


def gallery_figure(
    images: np.ndarray,
    indices: Sequence[int],
    truth: Sequence[str],
    correct: Mapping[str, Sequence[bool]],
    selected: int | None = None,
    columns: int = 8,
) -> go.Figure:
    """Thumbnails of test images: index, true class, and ✓/✗ per model in the model's colour.

    `images` is (N, H, W); `correct` maps a model key ("A", "B") to one flag per image. The
    `selected` test index, if shown, gets a frame.
    """
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, -(-n // cols))
    titles = []
    for j, (idx, name) in enumerate(zip(indices, truth, strict=True)):
        marks = " ".join(
            f"<span style='color:{color(k, i)}'>{k} {'✓' if flags[j] else '✗'}</span>"
            for i, (k, flags) in enumerate(correct.items())
        )
        titles.append(f"#{idx} {name}<br>{marks}")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.2)
    for j in range(n):
        fig.add_trace(_grey(images[j], f"test image #{indices[j]}"), row=j // cols + 1, col=j % cols + 1)
    fig = layout(
        fig,
        "Test images: index, true class, and whether each model gets it right (✓/✗)",
        "",
        "",
        height=170 * rows + 70,
    )
    _image_axes(fig, rows * cols, ticks=False)
    fig.update_annotations(font={"size": 12})
    fig.update_layout(margin={"l": 10, "r": 10, "t": 80, "b": 10})
    if selected is not None and selected in list(indices):
        j = list(indices).index(selected)
        suffix = "" if j == 0 else str(j + 1)
        fig.add_shape(
            type="rect",
            xref=f"x{suffix} domain",
            yref=f"y{suffix} domain",
            x0=-0.04,
            x1=1.04,
            y0=-0.04,
            y1=1.04,
            line={"color": "#1B2631", "width": 3},
        )
    return fig


def map_figure(
    image: np.ndarray,
    attr: np.ndarray,
    *,
    method: str,
    label: str,
    key: str,
    class_name: str,
) -> go.Figure:
    """One model's map for one image: the input alone, and the normalised map over it."""
    info = METHODS[method]
    # Short subplot titles in a small font: in a half-page column, "input image" and "<method> over the
    # image" ran into each other.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("input", f"{info.label} map"), horizontal_spacing=0.08)
    fig.add_trace(_grey(image, f"{label}: input"), row=1, col=1)
    fig.add_trace(_grey(image, f"{label}: input"), row=1, col=2)
    fig.add_trace(_overlay(attr, info.signed, f"{label}: {info.label}", showscale=True), row=1, col=2)
    fig = layout(fig, f"{label}: {info.label} for class “{class_name}”", "x (px)", "y (px)", height=330)
    fig.update_layout(title_font_color=color(key), margin={"l": 40, "r": 20, "t": 70, "b": 40})
    _image_axes(fig, 2, ticks=True)
    fig.update_xaxes(title_text="x (px)")
    fig.update_yaxes(title_text="y (px)", row=1, col=1)
    fig.update_yaxes(title_text="", showticklabels=False, row=1, col=2)  # the same rows as the input's
    fig.update_annotations(font={"size": 12})
    return fig


def depth_figure(
    image: np.ndarray,
    maps: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, str],
    class_names: Mapping[str, str],
) -> go.Figure:
    """Grad-CAM at the end of each stage (columns) for each model (rows), over the image, one colour scale.

    `maps` is model key -> stage name -> (H, W) map, as `gradcam_across_depth` returns for one image.
    """
    keys = [k for k in labels if k in maps]
    stages = sorted({s for k in keys for s in maps[k]})
    titles = [
        f"<span style='color:{color(k, i)}'>{labels[k]}</span>: end of {s}" for i, k in enumerate(keys) for s in stages
    ]
    fig = make_subplots(
        rows=max(1, len(keys)),
        cols=max(1, len(stages)),
        subplot_titles=titles,
        horizontal_spacing=0.04,
        vertical_spacing=0.12,
    )
    for r, key in enumerate(keys, start=1):
        for c, stage in enumerate(stages, start=1):
            if stage not in maps[key]:
                continue
            fig.add_trace(_grey(image, f"{labels[key]}: input"), row=r, col=c)
            name = f"{labels[key]}: Grad-CAM at {stage} ({class_names.get(key, '')})"
            fig.add_trace(_overlay(maps[key][stage], False, name, showscale=False, coloraxis="coloraxis"), row=r, col=c)
    fig.update_layout(coloraxis={"colorscale": ABS_SCALE, "cmin": 0, "cmax": 1, "colorbar": _colorbar(False)})
    fig = layout(
        fig,
        "Grad-CAM across depth: where the class evidence sits at the end of each stage",
        "",
        "",
        height=250 * max(1, len(keys)) + 80,
    )
    _image_axes(fig, max(1, len(keys)) * max(1, len(stages)), ticks=False)
    fig.update_layout(margin={"l": 20, "r": 20, "t": 90, "b": 20})
    return fig


def sanity_figure(frames: Mapping[str, pd.DataFrame], labels: Mapping[str, str]) -> go.Figure:
    """Similarity to the trained model's maps vs modules randomised (Adebayo et al. 2018, Fig. 2/3).

    `frames` maps a model key to `attribution.sanity_check`'s table. Two panels (Spearman of |map|,
    SSIM of normalised |map|), a line per model (its colour) and method (dash), ±1 std over images.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Spearman rank correlation of |map|", "SSIM of normalised |map|"),
        horizontal_spacing=0.1,
    )
    low = 0.0
    for i, (key, frame) in enumerate(frames.items()):
        for method, rows in frame.groupby("method", sort=False):
            info = METHODS[str(method)]
            for col, metric in ((1, "spearman"), (2, "ssim")):
                low = min(low, float((rows[metric] - rows[f"{metric}_std"]).min()))
                fig.add_trace(
                    go.Scatter(
                        x=rows.stage,
                        y=rows[metric],
                        error_y={"type": "data", "array": rows[f"{metric}_std"], "thickness": 1, "width": 3},
                        customdata=rows.layer,
                        name=f"{labels.get(key, key)}: {info.label}",
                        legendgroup=f"{key}.{method}",
                        showlegend=col == 1,
                        mode="lines+markers",
                        line={"color": color(key, i), "dash": METHOD_DASH.get(str(method), "dot"), "width": 2},
                        marker={"symbol": METHOD_SYMBOL.get(str(method), "square"), "size": 6},
                        hovertemplate="%{y:.2f} after randomising down to %{customdata}<extra>%{fullData.name}</extra>",
                    ),
                    row=1,
                    col=col,
                )
    fig = layout(
        fig,
        "Sanity check: similarity to the trained model's maps as layers are randomised, head first",
        "modules randomised (head → stem)",
        "similarity (1 = unchanged)",
        height=400,
    )
    fig.update_yaxes(range=[min(-0.1, low - 0.05), 1.05], zeroline=True, zerolinecolor="#888")
    fig.update_xaxes(title_text="modules randomised (head → stem)")
    fig.update_yaxes(title_text="similarity (1 = unchanged)", row=1, col=1)
    return fig


def localisation_figure(summary: pd.DataFrame, labels: Mapping[str, str]) -> go.Figure:
    """Per method and model: share of positive attribution in the mask (bars) vs chance (ticks); pointing game.

    `summary` is `attribution.localisation_summary` of both models' tables, `model` holding the key.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("positive attribution inside the mask (ticks: chance)", "pointing game: top pixel in the mask"),
        horizontal_spacing=0.1,
    )
    order = [m for m in METHODS if m in set(summary.method)]
    names = [METHODS[m].label for m in order]
    for i, key in enumerate(labels):
        part = summary[summary.model == key].set_index("method").reindex(order)
        if part.mass_in_mask.isna().all():
            continue
        fig.add_trace(
            go.Bar(
                x=names,
                y=100 * part.mass_in_mask,
                name=labels[key],
                legendgroup=key,
                offsetgroup=key,
                marker_color=color(key, i),
                hovertemplate="%{x}: %{y:.0f}% in the mask<extra>" + labels[key] + "</extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=names,
                y=100 * part.chance,
                name="chance (mask area)",
                legendgroup="chance",
                showlegend=i == 0,
                mode="markers",
                offsetgroup=key,
                marker={"symbol": "line-ew-open", "size": 22, "color": "#1B2631", "line": {"width": 2}},
                hovertemplate="%{x}: chance %{y:.0f}%<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=names,
                y=100 * part.pointing,
                name=labels[key],
                legendgroup=key,
                offsetgroup=key,
                showlegend=False,
                marker_color=color(key, i),
                hovertemplate="%{x}: %{y:.0f}% hits<extra>" + labels[key] + "</extra>",
            ),
            row=1,
            col=2,
        )
    fig = layout(fig, "Localisation on shapes: does the map point at the object?", "method", "images (%)", height=460)
    fig.update_layout(
        barmode="group",
        scattermode="group",
    )
    fig.update_xaxes(title_text="method", tickangle=-30)
    fig.update_yaxes(range=[0, 105], title_text="share of positive attribution (%)", row=1, col=1)
    fig.update_yaxes(range=[0, 105], title_text="images hit (%)", row=1, col=2)
    return fig


def localisation_table(summary: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """The localisation summary for display: model and method labels, percentages, lift over chance."""
    rows = summary.assign(
        order=summary.method.map({m: i for i, m in enumerate(METHODS)}),
        key=summary.model,
    ).sort_values(["order", "key"])
    return pd.DataFrame(
        {
            "method": rows.method.map(lambda m: METHODS[m].label),
            "model": rows.model.map(lambda k: labels.get(k, k)),
            "mass in mask (%)": 100 * rows.mass_in_mask,
            "chance (%)": 100 * rows.chance,
            "lift (× chance)": rows.lift,
            "pointing game (%)": 100 * rows.pointing,
            "images": rows.images,
        }
    ).reset_index(drop=True)
