"""Test-split predictions of the models an analysis compares, and the gallery's filter language.

An attribution map explains one class score of one image; which images are worth explaining depends
on what the models got right: "wrong for A, correct for B" shows where the residual net succeeds and
the plain one fails. A filter is "all" or one to two terms of a model key and a sign ("A-B+").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

BATCH = 512  # test images per forward pass
FILTERS = {
    "all": "all test images",
    "A+": "correct for A",
    "A-": "wrong for A",
    "B+": "correct for B",
    "B-": "wrong for B",
    "A-B+": "wrong for A, correct for B",
    "A+B-": "correct for A, wrong for B",
}
TARGETS = {"predicted": "Predicted class (each model's own)", "true": "True class"}


def probabilities(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Softmax over `x`, (N, classes) in float64; NaN rows where the model's outputs are not finite."""
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
    return torch.softmax(logits.double(), dim=1).numpy()


@dataclass(frozen=True)
class Predictions:
    """One model's class probabilities on a split with the true labels."""

    probs: np.ndarray  # (N, classes) softmax; NaN rows where the outputs are not finite
    labels: np.ndarray  # (N,) true classes

    @cached_property
    def finite(self) -> np.ndarray:
        """Rows with a prediction (a diverged model has none)."""
        return np.isfinite(self.probs).all(axis=1)

    @cached_property
    def predicted(self) -> np.ndarray:
        """The argmax class, -1 where there is no prediction."""
        return np.where(self.finite, np.nan_to_num(self.probs).argmax(axis=1), -1)

    @cached_property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    def targets(self, mode: str) -> np.ndarray:
        """The class each image's map explains: the model's prediction ("predicted") or the truth ("true");
        the truth where the model has no prediction."""
        if mode not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {mode!r}")
        chosen = self.predicted if mode == "predicted" else self.labels
        return np.where(chosen < 0, self.labels, chosen)


def filter_mask(mode: str, correct: Mapping[str, np.ndarray], labels: np.ndarray, cls: int = -1) -> np.ndarray:
    """Images that match filter `mode` (see FILTERS) and class `cls` (-1: every class).

    A term about a model that is not compared (B when only A is shown) matches nothing.
    """
    if mode not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}; got {mode!r}")
    mask = labels == cls if cls >= 0 else np.ones(len(labels), dtype=bool)
    if mode == "all":
        return mask
    for part in (mode[i : i + 2] for i in range(0, len(mode), 2)):
        key, want = part[0], part[1] == "+"
        if key not in correct:
            return np.zeros(len(labels), dtype=bool)
        mask &= correct[key] == want
    return mask


def describe_filter(mode: str, labels: Mapping[str, str]) -> str:
    """The filter in words with the models' labels: "correct for A · plain 20"."""
    text = FILTERS[mode]
    for key, label in labels.items():
        text = text.replace(f"for {key}", f"for {label}")
    return text


def describe_image(index: int, classes: Sequence[str], predictions: Mapping[str, Predictions]) -> str:
    """ "#12 · true disk · A: square 61% · B: disk 98%": an image option of the gallery."""
    some = next(iter(predictions.values()))
    parts = [
        f"{key}: {classes[p.predicted[index]]} {p.probs[index].max():.0%}" if p.finite[index] else f"{key}: –"
        for key, p in predictions.items()
    ]
    return f"#{index} · true {classes[some.labels[index]]} · " + " · ".join(parts)
