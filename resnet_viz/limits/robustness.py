"""Robustness: accuracy under input corruptions at five severities.

Skip connections make a net trainable, not robust: a ResNet's accuracy still falls as its inputs are
corrupted, much as a plain net's does (Hendrycks & Dietterich 2019, ICLR, "Benchmarking Neural Network
Robustness to Common Corruptions", Fig. 3 and Table 1: architecture gains in clean accuracy do not
close the corruption gap). Here each corruption comes at severities 1 to 5 (0 is the clean input):

- ``gaussian_noise``: additive N(0, s^2) pixel noise (images are standardised to unit std);
- ``blur``: Gaussian blur of std s pixels, proportional to the image side;
- ``contrast``: every pixel pulled towards its image's mean by a factor c;
- ``occlusion``: a square patch of background (the image's median) over a fraction of the image;
- ``point_noise`` (2-D point data): Gaussian jitter of the points.

Common random numbers: one noise draw and one patch position per example serve every severity, so
accuracy against severity is a smooth curve, and both models see the identical corrupted inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from .common import accuracy, analysis_copy, check_finite, logits_of

SEVERITIES = {  # severity 1..5 -> strength
    "gaussian_noise": (0.2, 0.4, 0.7, 1.0, 1.5),  # noise std in units of the data's std
    "blur": (0.04, 0.07, 0.1, 0.14, 0.2),  # blur std as a fraction of the image side
    "contrast": (0.7, 0.5, 0.35, 0.2, 0.1),  # factor on each pixel's distance from the image mean
    "occlusion": (0.2, 0.3, 0.4, 0.5, 0.6),  # patch side as a fraction of the image side
    "point_noise": (0.05, 0.1, 0.2, 0.3, 0.5),  # point jitter std (the 2-D sets span about [-1, 1])
}
IMAGE_CORRUPTIONS = ("gaussian_noise", "blur", "contrast", "occlusion")
POINT_CORRUPTIONS = ("point_noise",)


def _blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma_px))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma_px**2))
    k = k / k.sum()
    c = x.shape[1]
    pad = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(pad, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """`x` under corruption `name` at `severity` (0 = unchanged, 1..5 = stronger). Deterministic in `seed`;
    the same seed gives the same noise draw and patch positions at every severity."""
    if name not in SEVERITIES:
        raise ValueError(f"corruption must be one of {', '.join(SEVERITIES)}; got {name!r}")
    if not 0 <= severity <= 5:
        raise ValueError(f"severity must be 0 to 5; got {severity}")
    if severity == 0:
        return x
    s = SEVERITIES[name][severity - 1]
    g = torch.Generator().manual_seed(seed)
    if name in ("gaussian_noise", "point_noise"):
        return x + s * torch.randn(x.shape, generator=g, dtype=x.dtype)
    if x.dim() != 4:
        raise ValueError(f"{name} needs images (N, C, H, W); got shape {tuple(x.shape)}")
    side = x.shape[-1]
    if name == "blur":
        return _blur(x, s * side)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    if name == "contrast":
        return mean + s * (x - mean)
    patch = max(1, round(s * side))
    u = torch.rand(len(x), 2, generator=g)  # one position per example, reused at every severity
    top, left = ((side - patch) * u[:, 0]).long(), ((side - patch) * u[:, 1]).long()
    rows = torch.arange(side).view(1, -1)
    inside_r = (rows >= top[:, None]) & (rows < top[:, None] + patch)
    inside_c = (rows >= left[:, None]) & (rows < left[:, None] + patch)
    mask = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
    background = x.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    return torch.where(mask, background, x)


def robustness_study(models: Mapping[str, nn.Module], data: Dataset, seed: int = 0) -> pd.DataFrame:
    """Test accuracy of every model under every corruption fitting the data, severities 0 (clean) to 5,
    plus the mean over corruptions (``corruption == "mean"``). Columns: model, corruption, severity, accuracy."""
    check_finite(models)
    names = IMAGE_CORRUPTIONS if data.x_test.dim() == 4 else POINT_CORRUPTIONS
    inputs = {(c, s): corrupt(data.x_test, c, s, seed) for c in names for s in range(6)}
    rows = []
    for key, original in models.items():
        model = analysis_copy(original)
        clean = accuracy(logits_of(model, data.x_test), data.y_test)
        for (c, s), x in inputs.items():
            rows.append([key, c, s, clean if s == 0 else accuracy(logits_of(model, x), data.y_test)])
    frame = pd.DataFrame(rows, columns=["model", "corruption", "severity", "accuracy"])
    mean = frame.groupby(["model", "severity"], as_index=False, sort=False)["accuracy"].mean()
    return pd.concat([frame, mean.assign(corruption="mean")[frame.columns]], ignore_index=True)


def verdict(frame: pd.DataFrame, labels: Mapping[str, str], tolerance: float = 0.05) -> str:
    """How much accuracy each model loses from clean to the worst severity, averaged over corruptions, and
    whether they lose about as much (within `tolerance`), for the chart's caption: the caption's general
    story (shortcuts do not make inputs safer) is read against these nets, not asserted."""
    mean = frame[frame.corruption == "mean"]
    drops = {}
    for model, rows in mean.groupby("model", sort=False):
        clean = float(rows.accuracy[rows.severity == 0].iloc[0])
        worst = float(rows.accuracy[rows.severity == rows.severity.max()].iloc[0])
        drops[model] = (clean, worst)
    parts = [f"{labels[m]} {c:.1%} → {w:.1%}" for m, (c, w) in drops.items()]
    text = "Here, clean to severity 5 (mean over corruptions): " + "; ".join(parts) + "."
    if len(drops) == 2:
        (a, (ca, wa)), (b, (cb, wb)) = drops.items()
        gap = (ca - wa) - (cb - wb)
        if abs(gap) <= tolerance:
            text += f" They lose about as much (within {tolerance * 100:.0f} points)."
        else:
            more, less = (labels[a], labels[b]) if gap > 0 else (labels[b], labels[a])
            text += f" {more} loses {abs(gap) * 100:.1f} points more than {less}."
    return text
