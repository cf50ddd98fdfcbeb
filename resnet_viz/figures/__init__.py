"""Pure figure builders (data in, Plotly figure out), one module per page; shared look in `common`."""

from . import families, landscape
from .common import COLORS, color, layout, positive, thin
from .lab import (
    accuracy_figure,
    block_figure,
    decision_boundary_figure,
    grad_profile_figure,
    heatmap_figure,
    latest,
    layer_order,
    loss_figure,
    profile_figure,
    profile_verdict,
)

__all__ = [
    "COLORS",
    "accuracy_figure",
    "block_figure",
    "color",
    "decision_boundary_figure",
    "families",
    "grad_profile_figure",
    "heatmap_figure",
    "landscape",
    "layout",
    "positive",
    "latest",
    "layer_order",
    "loss_figure",
    "profile_figure",
    "profile_verdict",
    "thin",
]
