"""Lab figures of the families beyond CNNs: a Transformer's sub-layers and attention, a GCN's oversmoothing.

Pure builders: the live chart table (`layers`) or a run's pictures (`pictures.picture`) in, a figure out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import axis, color, figure, layout, look, positive
from .lab import latest

_SUBLAYER = re.compile(r"layer(\d+)\.(attn|mlp)\.\w+")
SUBLAYERS = {"attn": ("attention", "solid"), "mlp": ("MLP", "dash")}


def sublayer_grads(layers: pd.DataFrame) -> pd.DataFrame:
    """Gradient norm per encoder layer and sub-layer at each model's latest probed step: the norm over all
    weights of the sub-layer (q, k, v and output projection; or both MLP layers). Columns: model, step,
    layer (1-based), sublayer ("attn" or "mlp"), value."""
    rows = latest(layers, "grad_norm")
    parts = rows.layer.astype(str).str.extract(_SUBLAYER)
    rows = rows.assign(index=pd.to_numeric(parts[0]), sublayer=parts[1]).dropna(subset=["sublayer"])
    squared = rows.assign(sq=rows.value**2).groupby(["model", "step", "index", "sublayer"], as_index=False).sq.sum()
    return pd.DataFrame(
        {
            "model": squared.model,
            "step": squared.step,
            "layer": squared["index"].astype(int),
            "sublayer": squared.sublayer,
            "value": np.sqrt(squared.sq),
        }
    )


def sublayer_grad_figure(layers: pd.DataFrame, labels: Mapping[str, str]) -> go.Figure:
    """‖∂L/∂W‖ of each encoder layer's attention and MLP sub-layer (Xiong et al. 2020, Fig. 3): post-LN's grow
    towards the output at initialisation, pre-LN's stay level."""
    table = sublayer_grads(layers)
    traces = []
    for i, (key, label) in enumerate(labels.items()):
        part = table[table.model == key]
        step = int(part.step.max()) if len(part) else 0
        for sub, (name, dash) in SUBLAYERS.items():
            rows = part[part.sublayer == sub].sort_values("layer")
            traces.append(
                {
                    "type": "scatter",
                    "x": rows.layer,
                    "y": positive(rows.value),
                    "name": f"{label}: {name} (step {step})",
                    "mode": "lines+markers",
                    "line": {"color": color(key, i), "dash": dash, "width": 2},
                    "marker": {"size": 6, "symbol": "circle" if sub == "attn" else "square"},
                }
            )
    title = "Gradient norm: attention and MLP sub-layers"  # half a row wide: a longer one was cut
    return figure(
        traces,
        {**look(title), "xaxis": axis("encoder layer", dtick=1), "yaxis": axis("‖∂L/∂W‖ (log)", type="log")},
    )


def attention_figure(pictures: Mapping[str, tuple], labels: Mapping[str, str], step: int) -> go.Figure:
    """Attention weights of one test sequence: for each model, its first and last encoder layer (rows, named on
    the left), one heatmap per head (columns), queries down, keys across, labelled token·position."""
    keys = [k for k in labels if k in pictures]
    rows: list[tuple[str, int]] = []
    for key in keys:
        maps = pictures[key][0]
        rows += [(key, 0)] + ([(key, len(maps) - 1)] if len(maps) > 1 else [])
    heads = max((pictures[k][0].shape[1] for k in keys), default=1)
    fig = make_subplots(
        rows=max(1, len(rows)),
        cols=heads,
        column_titles=[f"head {h + 1}" for h in range(heads)],
        horizontal_spacing=0.03,
        vertical_spacing=0.07,
    )
    for r, (key, layer) in enumerate(rows, start=1):
        maps, tokens, _ = pictures[key]
        ticks = [f"{t}·{i}" for i, t in enumerate(tokens)]  # token·position: repeated digits stay apart
        for h in range(maps.shape[1]):
            fig.add_trace(
                go.Heatmap(
                    z=maps[layer, h],
                    x=ticks,
                    y=ticks,
                    coloraxis="coloraxis",
                    hovertemplate="query %{y} → key %{x}<br>weight %{z:.2f}<extra></extra>",
                ),
                row=r,
                col=h + 1,
            )
            title = f"{labels[key]}<br>{pictures[key][2][layer]}" if h == 0 else ""
            fig.update_yaxes(
                autorange="reversed",
                row=r,
                col=h + 1,
                tickfont={"size": 9},
                title={"text": title, "font": {"size": 11}},
            )
            fig.update_xaxes(row=r, col=h + 1, tickfont={"size": 9}, tickangle=0)
    fig.update_layout(
        coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1, "colorbar": {"title": {"text": "weight"}}}
    )
    fig = layout(
        fig,
        f"Attention of one test sequence at step {step}: first and last layer, every head",
        "",
        "",
        height=max(360, 260 * len(rows)),
    )
    fig.update_layout(margin={"t": 120, "l": 80})
    for r, (key, layer) in enumerate(rows, start=1):  # after `layout`, which clears axis titles
        title = {"text": f"{labels[key]}<br>{pictures[key][2][layer]}", "font": {"size": 11}}
        fig.update_yaxes(title=title, row=r, col=1)
    return fig


def smoothing_figure(pictures: Mapping[str, tuple], labels: Mapping[str, str], step: int) -> go.Figure:
    """Normalised Dirichlet energy of the node features after every layer (log y): near 0 means every node of
    a graph carries the same features, so no layer after it can tell the communities apart."""
    traces = []
    for i, (key, label) in enumerate(labels.items()):
        if key not in pictures:
            continue
        energies, names = pictures[key]
        traces.append(
            {
                "type": "scatter",
                "x": list(names),
                "y": np.clip(energies, 1e-6, None),
                "name": label,
                "mode": "lines+markers",
                "line": {"color": color(key, i), "width": 2},
                "marker": {"size": 5},
            }
        )
    return figure(
        traces,
        {
            **look(f"Oversmoothing: Dirichlet energy of the node features per layer, step {step}"),
            "xaxis": axis("layer (input → output)", tickangle=-45),
            "yaxis": axis("normalised Dirichlet energy (log)", type="log"),
        },
    )
