"""Receptive-field figures: how the theoretical and effective fields grow, ERF maps, an overlay, a table.

Pure builders: `RFInfo` / `ERFResult` records from `resnet_viz.receptive_field` in, Plotly figures
(or a table) out. Every radius is Chebyshev, in input pixels: the half-side of a square centred on
the probed unit, so the theoretical field (a square of side ``size``) has radius ``(size - 1) / 2``
and compares like with like with the ERF radii holding 50% / 90% of the gradient mass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resnet_viz.receptive_field import ERFResult, RFInfo

from .common import color, layout

MASS_LEVELS = (0.5, 0.9)
THEORY_COLOR = "#222222"  # the theoretical field where it is one outline for both models


# --------------------------------------------------------------------------------------------------
# Data helpers


def layer_sort_key(name: str) -> tuple[int, ...]:
    """Network order of our layer names: ``stem.conv`` first, then (stage, block, conv) numerically."""
    if name.startswith("stem"):
        return (0,)
    if name == "head":
        return (10**6,)
    numbers = tuple(int(n) for n in re.findall(r"\d+", name))
    if not numbers:
        return (10**5,)
    return numbers + (10**3,) if re.fullmatch(r"stage\d+\.block\d+", name) else numbers  # a block after its convs


def merged_order(names: Sequence[Sequence[str]]) -> list[str]:
    """Every name of several models' layer lists once, in network order (models may differ in depth)."""
    seen: dict[str, int] = {}
    for part in names:
        for name in part:
            seen.setdefault(name, len(seen))
    return sorted(seen, key=lambda n: (layer_sort_key(n), seen[n]))


def erf_offset(result: ERFResult, info: RFInfo) -> tuple[int, int]:
    """Shift from canvas to image pixels: the ERF's centre moved onto the centre of `info`'s field."""
    return (info.centre[0] - result.centre[0], info.centre[1] - result.centre[1])


def mass_outside_image(result: ERFResult, info: RFInfo) -> float:
    """Fraction of the ERF mass that falls beyond the image edge once centred on the image's probed unit."""
    erf = np.nan_to_num(result.map)
    total = erf.sum()
    if total <= 0:
        return math.nan
    dr, dc = erf_offset(result, info)
    height, width = info.input_shape
    rows = np.arange(erf.shape[0]) + dr
    cols = np.arange(erf.shape[1]) + dc
    inside = erf[np.ix_((rows >= 0) & (rows < height), (cols >= 0) & (cols < width))].sum()
    return float(1.0 - inside / total)


def _rect(region: Sequence[int]) -> dict[str, float]:
    """Plotly shape coordinates around whole pixels ``(top, left, bottom, right)`` inclusive."""
    top, left, bottom, right = region
    return {"x0": left - 0.5, "x1": right + 0.5, "y0": top - 0.5, "y1": bottom + 0.5}


def _theory_equal(rows: Mapping[str, Sequence[dict[str, object]]]) -> bool:
    sizes = [[(r["layer"], r["rf_size"]) for r in part] for part in rows.values()]
    return len(sizes) > 1 and all(s == sizes[0] for s in sizes[1:])


# --------------------------------------------------------------------------------------------------
# Growth chart


def growth_figure(
    rows: Mapping[str, Sequence[dict[str, object]]], labels: Mapping[str, str], *, log_y: bool = False
) -> go.Figure:
    """Theoretical radius (dashed) and ERF radii holding 50% (solid) / 90% (dotted) of the mass, per layer.

    `rows` maps a model key to `growth_rows` / `rf_growth` rows. The theoretical lines of the models
    are drawn on top of each other (wide under narrow) so identical fields show as one line.
    """
    fig = go.Figure()
    order = merged_order([[str(r["layer"]) for r in part] for part in rows.values()])
    keys = [k for k in labels if k in rows]
    for i, key in enumerate(keys):
        part = pd.DataFrame(list(rows[key]))
        if part.empty:
            continue
        theory = (part.rf_size.astype(float) - 1) / 2
        fig.add_trace(
            go.Scatter(
                x=part.layer,
                y=_loggable(theory, log_y),
                customdata=part.rf_size,
                name=f"{labels[key]}: theoretical",
                legendgroup=key,
                mode="lines+markers",
                line={"color": color(key, i), "dash": "dash", "width": 6 - 3 * min(i, 1)},
                marker={"size": 9 - 4 * min(i, 1), "symbol": "square-open"},
                hovertemplate="%{x}<br>theoretical field %{customdata} px (radius %{y:.1f})<extra>"
                + labels[key]
                + "</extra>",
            )
        )
        for level, dash in zip(MASS_LEVELS, ("solid", "dot"), strict=True):
            column = f"erf_radius{round(level * 100)}"
            fig.add_trace(
                go.Scatter(
                    x=part.layer,
                    y=_loggable(part[column].astype(float), log_y),
                    name=f"{labels[key]}: ERF {level:.0%} mass",
                    legendgroup=key,
                    mode="lines+markers",
                    line={"color": color(key, i), "dash": dash, "width": 2.5},
                    marker={"size": 6},
                    hovertemplate=f"%{{x}}<br>{level:.0%} of the gradient within radius %{{y}} px"
                    f"<extra>{labels[key]}</extra>",
                )
            )
    _mark_strides(fig, rows, order)
    if _theory_equal(rows):
        fig.add_annotation(
            text="theoretical: A and B identical (dashed lines overlap)",
            xref="paper",
            yref="paper",
            x=0.01,
            y=0.98,
            xanchor="left",
            yanchor="top",
            showarrow=False,
            font={"size": 12, "color": THEORY_COLOR},
            bgcolor="rgba(255,255,255,0.8)",
        )
    fig = layout(
        fig,
        "Receptive field per layer: theoretical (dashed) vs effective radius (50% solid, 90% dotted)",
        "layer (input → output)",
        "radius (px, half-side of the square)" + (", log" if log_y else ""),
        log_y=log_y,
        height=500,
    )
    fig.update_xaxes(categoryorder="array", categoryarray=order, tickangle=-45)
    fig.update_layout(margin={"t": 130, "b": 110})  # two legend rows above, rotated layer names below
    return fig


def _loggable(values: pd.Series, log_y: bool) -> pd.Series:
    """A log axis cannot show a radius of 0 (all mass in one pixel): leave such points out there."""
    return values.where(values > 0) if log_y else values


def _mark_strides(fig: go.Figure, rows: Mapping[str, Sequence[dict[str, object]]], order: list[str]) -> None:
    """A faint vertical line where the jump grows (a stride-2 stage starts): the field grows faster after it."""
    jumps: dict[str, int] = {}
    for part in rows.values():
        for r in part:
            jumps.setdefault(str(r["layer"]), int(r["jump"]))
    previous = None
    for index, name in enumerate(order):
        jump = jumps.get(name)
        if previous is not None and jump is not None and jump > previous:
            fig.add_vline(
                x=index - 0.5,
                line={"color": "#999999", "width": 1, "dash": "dot"},
                annotation_text=f"jump {jump}",
                annotation_position="top left",
                annotation_font={"size": 10, "color": "#666666"},
            )
        previous = jump if jump is not None else previous


# --------------------------------------------------------------------------------------------------
# ERF maps side by side


def erf_maps_figure(results: Mapping[str, ERFResult], labels: Mapping[str, str]) -> go.Figure:
    """Each model's ERF map (normalised to its peak, shared colour scale) with its theoretical field
    outlined (dashed) and the squares holding 50% / 90% of the gradient mass (dotted), equal aspect."""
    keys = [k for k in labels if k in results]
    titles = [f"{labels[k]}: {results[k].name}" for k in keys]
    fig = make_subplots(rows=1, cols=max(1, len(keys)), subplot_titles=titles, horizontal_spacing=0.1)
    for col, key in enumerate(keys, start=1):
        result = results[key]
        erf = np.nan_to_num(np.asarray(result.map, dtype=float))
        peak = erf.max()
        z = erf / peak if peak > 0 else erf
        axis = "" if col == 1 else str(col)
        fig.add_trace(
            go.Heatmap(
                z=z,
                coloraxis="coloraxis",
                name=labels[key],
                hovertemplate="row %{y}, col %{x}<br>|∂y/∂x| = %{z:.3f} × peak<extra>" + labels[key] + "</extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_shape(
            type="rect",
            **_rect(result.theoretical.region),
            line={"color": "white", "width": 2, "dash": "dash"},
            xref=f"x{axis}",
            yref=f"y{axis}",
        )
        cy, cx = result.centre
        for level, radius in zip(MASS_LEVELS, (result.radius50, result.radius90), strict=True):
            if not math.isfinite(radius):
                continue
            r = int(radius)
            fig.add_shape(
                type="rect",
                **_rect((cy - r, cx - r, cy + r, cx + r)),
                line={"color": color(key, col - 1), "width": 2, "dash": "dot" if level > 0.5 else "solid"},
                xref=f"x{axis}",
                yref=f"y{axis}",
            )
        top, left, bottom, right = result.theoretical.region
        fig.add_annotation(
            text=f"theoretical {result.theoretical.size} px",
            x=left - 0.5,
            y=top - 0.5,
            xanchor="left",
            yanchor="bottom",
            showarrow=False,
            font={"size": 11, "color": "white"},
            xref=f"x{axis}",
            yref=f"y{axis}",
        )
        size = result.canvas_size
        fig.update_xaxes(range=[-0.5, size - 0.5], constrain="domain", title_text="input column (px)", row=1, col=col)
        fig.update_yaxes(
            range=[size - 0.5, -0.5],
            scaleanchor=f"x{axis}",
            constrain="domain",
            title_text="input row (px)" if col == 1 else "",
            row=1,
            col=col,
        )
    fig.update_layout(
        coloraxis={
            "colorscale": "Viridis",
            "cmin": 0,
            "cmax": 1,
            "colorbar": {"title": {"text": "|∂y/∂x|<br>(× peak)"}, "thickness": 14},
        }
    )
    fig = layout(
        fig,
        "Effective receptive field of the centre unit: |∂ output / ∂ input| per input pixel",
        "input column (px)",
        "input row (px)",
        height=500,
    )
    return fig


# --------------------------------------------------------------------------------------------------
# Overlay on a real image, to scale


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def overlay_figure(
    image: np.ndarray,
    results: Mapping[str, ERFResult],
    infos: Mapping[str, RFInfo],
    labels: Mapping[str, str],
) -> go.Figure:
    """One panel per model: a test image at its true pixel scale (grey), the model's ERF over it as a
    translucent layer in its colour with the squares holding 50% (solid) / 90% (dotted) of the mass,
    and the theoretical field (dashed). The ERF is centred on the field of the layer's centre unit on
    this image; both fields usually reach far beyond the image edge (green) into padding."""
    img = np.asarray(image, dtype=float)
    height, width = img.shape
    keys = [k for k in labels if k in results and k in infos]
    fig = make_subplots(
        rows=1, cols=max(1, len(keys)), subplot_titles=[labels[k] for k in keys], horizontal_spacing=0.08
    )
    extent = [-0.5, -0.5, height - 0.5, width - 0.5]  # top, left, bottom, right of everything drawn
    for col, key in enumerate(keys, start=1):
        result, info = results[key], infos[key]
        axis = "" if col == 1 else str(col)
        refs = {"xref": f"x{axis}", "yref": f"y{axis}"}
        fig.add_trace(
            go.Heatmap(
                z=img,
                x=np.arange(width),
                y=np.arange(height),
                colorscale="gray",
                showscale=False,
                name="image",
                hovertemplate="row %{y}, col %{x}<br>pixel %{z:.2f}<extra>image</extra>",
            ),
            row=1,
            col=col,
        )
        dr, dc = erf_offset(result, info)
        erf = np.nan_to_num(np.asarray(result.map, dtype=float))
        peak = erf.max()
        hue = color(key, col - 1)
        fig.add_trace(
            go.Heatmap(
                z=erf / peak if peak > 0 else erf,
                x=np.arange(erf.shape[1]) + dc,
                y=np.arange(erf.shape[0]) + dr,
                zmin=0,
                zmax=1,
                colorscale=[[0.0, _rgba(hue, 0.0)], [1.0, _rgba(hue, 0.75)]],
                showscale=False,
                name=f"{labels[key]}: ERF",
                hovertemplate="row %{y}, col %{x}<br>|∂y/∂x| = %{z:.2f} × peak<extra>" + labels[key] + "</extra>",
            ),
            row=1,
            col=col,
        )
        cy, cx = info.centre
        for level, radius in zip(MASS_LEVELS, (result.radius50, result.radius90), strict=True):
            if not math.isfinite(radius):
                continue
            r = int(radius)
            square = (cy - r, cx - r, cy + r, cx + r)
            fig.add_shape(
                type="rect",
                **_rect(square),
                line={"color": hue, "width": 2, "dash": "dot" if level > 0.5 else "solid"},
                **refs,
            )
            extent = _grow(extent, square)
        fig.add_shape(
            type="rect", **_rect(info.region), line={"color": THEORY_COLOR, "width": 2, "dash": "dash"}, **refs
        )
        extent = _grow(extent, info.region)
        fig.add_annotation(
            text=f"theoretical {info.size} px",
            x=info.region[1] - 0.5,
            y=info.region[0] - 0.5,
            xanchor="left",
            yanchor="bottom",
            showarrow=False,
            font={"size": 11, "color": THEORY_COLOR},
            **refs,
        )
        fig.add_shape(
            type="rect", **_rect((0, 0, height - 1, width - 1)), line={"color": "#009E73", "width": 2}, **refs
        )
        fig.add_annotation(
            text=f"image {height}×{width}",
            x=width - 0.5,
            y=height - 0.5,
            xanchor="right",
            yanchor="top",
            showarrow=False,
            font={"size": 11, "color": "#009E73"},
            **refs,
        )
    fig = layout(
        fig,
        "To scale: each model's ERF over a test image (outside the green edge is padding)",
        "image column (px)",
        "image row (px)",
        height=500,
    )
    pad = 1.5
    for col in range(1, len(keys) + 1):
        axis = "" if col == 1 else str(col)
        fig.update_xaxes(
            range=[extent[1] - pad, extent[3] + pad],
            constrain="domain",
            showgrid=False,
            zeroline=False,
            title_text="image column (px)",
            row=1,
            col=col,
        )
        fig.update_yaxes(
            range=[extent[2] + pad, extent[0] - pad],
            scaleanchor=f"x{axis}",
            constrain="domain",
            showgrid=False,
            zeroline=False,
            title_text="image row (px)" if col == 1 else "",
            row=1,
            col=col,
        )
    fig.update_layout(plot_bgcolor="#F2F2F2", showlegend=False)
    return fig


def _grow(extent: list[float], region: Sequence[int]) -> list[float]:
    return [min(extent[0], region[0]), min(extent[1], region[1]), max(extent[2], region[2]), max(extent[3], region[3])]


# --------------------------------------------------------------------------------------------------
# Table


def _region_text(info: RFInfo) -> str:
    top, left, bottom, right = info.region
    return f"rows {top}…{bottom}, cols {left}…{right}"


def _theory_columns(info: RFInfo | None, prefix: str = "") -> dict[str, object]:
    if info is None:
        return {f"{prefix}RF size (px)": None, f"{prefix}jump (px)": None, f"{prefix}region (centre unit)": None}
    return {
        f"{prefix}RF size (px)": info.size,
        f"{prefix}jump (px)": None if info.is_global else info.jump,
        f"{prefix}region (centre unit)": "whole image (global)" if info.is_global else _region_text(info),
    }


def rf_table(
    infos: Mapping[str, Sequence[RFInfo]], results: Mapping[str, Mapping[str, ERFResult]], labels: Mapping[str, str]
) -> pd.DataFrame:
    """One row per layer (network order): theoretical size, jump and region of the centre unit in image
    pixels (one set of columns when the models agree, else one per model) and each model's ERF radii
    and the share of the theoretical field's area that the 90% square covers."""
    keys = [k for k in labels if k in infos]
    by_name = {k: {i.name: i for i in infos[k]} for k in keys}
    order = merged_order([[i.name for i in infos[k]] for k in keys])
    same = len(keys) > 1 and all(
        [i.to_dict() for i in infos[k]] == [i.to_dict() for i in infos[keys[0]]] for k in keys[1:]
    )
    rows = []
    for name in order:
        row: dict[str, object] = {"layer": name}
        if same or len(keys) == 1:
            row.update(_theory_columns(by_name[keys[0]].get(name)))
        else:
            for key in keys:
                row.update(_theory_columns(by_name[key].get(name), f"{key}: "))
        for key in keys:
            erf = results.get(key, {}).get(name)
            row[f"{key}: ERF r50 (px)"] = None if erf is None else erf.radius50
            row[f"{key}: ERF r90 (px)"] = None if erf is None else erf.radius90
            row[f"{key}: 90% square / RF area"] = None if erf is None else erf.area_fraction90
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column.endswith(("RF size (px)", "jump (px)")):
            frame[column] = frame[column].astype("Int64")  # integers, with an empty cell for global layers
        elif column.endswith(("(px)", "RF area")):  # ERF radii and shares
            frame[column] = frame[column].astype("Float64")  # a layer without an ERF: an empty cell, not "None"
    return frame
