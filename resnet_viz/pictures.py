"""What the lab draws from a model's current weights every few steps, per family.

Curves come from the probes at every step; some things can only be seen by running the model on data:

- ``boundary`` (MLPs on two-class 2-D points): P(class 1) over the plane (`probes.decision_grid`);
- ``attention`` (Transformers): the attention weights of every layer and head for one fixed test sequence
  (`transformer.attention_maps`);
- ``smoothing`` (GCNs): the normalised Dirichlet energy of the node features after every layer, on fixed
  validation graphs (`gcn.smoothing_profile`): the oversmoothing measure.

Pictures are computed between two steps by the thread that trains the model (or from a copy of its
weights), in eval mode, so they never race the optimizer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import nn

from .data import DataConfig, Dataset
from .gcn import smoothing_profile
from .models import block_names
from .probes import decision_grid
from .transformer import attention_blocks, attention_maps

Kind = Literal["boundary", "attention", "smoothing"]
SMOOTHING_GRAPHS = 64  # validation graphs the smoothing profile averages over


def due(step: int, total: int, every: int) -> bool:
    """Whether a run that draws pictures `every` steps (0: never) draws one after `step`: every `every`
    steps, and after the last step so the final weights are shown."""
    return bool(every) and (step % every == 0 or step == total)


def kind(data: DataConfig) -> Kind | None:
    """The picture a run on `data` gets, or None (images: their pages draw from stored weights)."""
    fields = data.model_fields()
    if fields["family"] == "transformer":
        return "attention"
    if fields["family"] == "gcn":
        return "smoothing"
    if fields["family"] == "mlp" and fields["num_classes"] == 2:
        return "boundary"
    return None


def picture(model: nn.Module, dataset: Dataset) -> tuple:
    """The picture of `model` on `dataset` (see `kind`), as plain arrays:

    - boundary: (xs, ys, P(class 1) on the grid);
    - attention: (maps (layers, heads, L, L), the sequence's tokens (L,), layer names);
    - smoothing: (energies per layer, layer names: the stem, then every block).
    """
    what = kind(dataset.config)
    if what == "attention":
        tokens = dataset.x_test[0]
        names = [name.rsplit(".", 1)[0] for name, _ in attention_blocks(model)]
        return attention_maps(model, tokens).numpy(), tokens.numpy(), names
    if what == "smoothing":
        energies = smoothing_profile(model, dataset.x_val[:SMOOTHING_GRAPHS])
        return np.asarray(energies), ["stem", *block_names(model)]
    points = dataset.x_train
    low = tuple((points.min(0).values - 0.3).tolist())
    high = tuple((points.max(0).values + 0.3).tolist())
    return decision_grid(model, low, high)
