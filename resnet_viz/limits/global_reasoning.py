"""Global reasoning: a label that depends on two marks far apart.

Convolutional nets see the world through receptive fields. In the ``corners`` task (data.py) the label
says whether the marks in the top-left and bottom-right corners are the same shape; each mark alone is
independent of the label, so only a unit whose field holds both corners can do better than chance
(global average pooling adds the units' features, and "same or different" is an XOR of the two
shapes, which no sum of one-corner features followed by a linear head can express). Skip connections
do not enlarge the theoretical field (Araujo et al. 2019) and their effective field is small (Luo et
al. 2016; Veit et al. 2016: mostly short paths): depth, not skips, buys the field, and the field a net
uses is much smaller than the one it has. The study trains plain/residual pairs at several depths and
sets test accuracy against the share of the image inside the last block's theoretical field and its
effective field (the square holding 90% of the input gradient of its centre unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
from torch import nn

from ..data import DataConfig, load_dataset
from ..models import ModelConfig, block_names
from ..receptive_field import block_rf, erf_all_layers
from ..runs import RunRequest
from ..store import StoredRun
from ..training import TrainConfig
from .common import accuracy, analysis_copy, logits_of
from .runs import GridPoint

DEPTHS = (8, 14, 20)  # at 32 px the last block of depth 8 sees 25 px (one corner), depth 14 the whole image
DATA = DataConfig(name="corners", input_size=32, noise=0.1, n_samples=8000)  # 2,000 are memorised, not learned
# The nets that can see both corners stay at chance for a while, then jump to ~100% within an epoch (the units
# that see both marks must first learn each mark). Measured at depth 14: Adam at 3e-3 jumps in epoch 3-4, SGD at
# 0.05 in epoch 6-7 of 15 and not at all in 6 epochs (its cosine schedule has decayed by then).
TRAIN = TrainConfig(epochs=5, optimizer="adam", lr=3e-3)
MODEL = ModelConfig(width=8)


def corners_grid(
    depths: Sequence[int] = DEPTHS, data: DataConfig = DATA, train: TrainConfig = TRAIN, base: ModelConfig = MODEL
) -> list[GridPoint]:
    """One plain/residual run per depth on the corners task."""
    points = []
    for depth in depths:
        cfg = replace(base, depth=depth)
        models = {"plain": cfg.with_skip(False), "residual": cfg.with_skip(True)}
        points.append(GridPoint((("depth", depth),), RunRequest(models, train, data)))
    return points


def _share(top: int, left: int, bottom: int, right: int, size: int) -> float:
    h = max(0, min(bottom, size - 1) - max(top, 0) + 1)
    w = max(0, min(right, size - 1) - max(left, 0) + 1)
    return h * w / size**2


def field_shares(model: nn.Module, input_size: int, n: int = 2) -> dict[str, float | bool | int]:
    """Theoretical and effective field of the last block's centre unit: sides in pixels, shares of the
    image inside them, and whether the theoretical field holds the centres of both corner marks."""
    last = block_names(model)[-1]
    info = block_rf(model, input_size)[last]
    erf = erf_all_layers(model, [last], n=n)[last]
    top, left, bottom, right = info.region_clipped
    half = int(erf.radius90) if erf.radius90 == erf.radius90 else 0  # NaN: no gradient reached the input
    cy, cx = info.centre
    mark = max(1, round(0.12 * input_size))  # mark centres sit about this far from the edges (data._corners)
    corners = [(mark, mark), (input_size - 1 - mark, input_size - 1 - mark)]
    return {
        "rf_side": info.size,
        "rf_share": _share(top, left, bottom, right, input_size),
        "erf_side": 2 * half + 1,
        "erf_share": _share(cy - half, cx - half, cy + half, cx + half, input_size),
        "rf_holds_both_marks": all(top <= r <= bottom and left <= c <= right for r, c in corners),
    }


def global_reasoning_table(runs: Sequence[tuple[GridPoint, StoredRun]]) -> pd.DataFrame:
    """One row per run and model: depth, model, test_acc, and the `field_shares` of its last block."""
    rows = []
    for point, run in runs:
        data = load_dataset(run.data)
        for key in run.configs:
            model = analysis_copy(run.model(key))
            acc = accuracy(logits_of(model, data.x_test), data.y_test)
            rows.append(
                {**dict(point.label), "model": key, "test_acc": acc, **field_shares(model, run.data.input_size)}
            )
    return pd.DataFrame(rows)
