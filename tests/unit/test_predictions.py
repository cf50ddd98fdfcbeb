"""Predictions of a compared pair and the gallery's filter language (resnet_viz.predictions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from resnet_viz.predictions import (
    FILTERS,
    Predictions,
    describe_filter,
    describe_image,
    filter_mask,
    probabilities,
)

CLASSES = ("square", "disk", "triangle")
LABELS = np.array([0, 1, 2, 1])


def _predictions(rows: list[list[float]]) -> Predictions:
    return Predictions(np.array(rows, dtype=float), LABELS)


A = _predictions([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])  # right, right, wrong, wrong
B = _predictions([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [np.nan] * 3])  # wrong, right, right, none


def test_probabilities_are_a_softmax_in_batches_and_nan_where_outputs_are_not_finite():
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x[:, 0], torch.zeros(len(x))], dim=1)

    x = torch.tensor([[0.0], [float("inf")], [np.log(3.0)]]).repeat(400, 1)  # 1,200 rows: three batches
    probs = probabilities(Fixed(), x)
    assert probs.shape == (1200, 2) and probs.dtype == np.float64
    np.testing.assert_allclose(probs[0], [0.5, 0.5])
    assert np.isnan(probs[1]).all()  # softmax of an infinite logit: no prediction
    np.testing.assert_allclose(probs[2], [0.75, 0.25])


def test_predictions_mark_missing_rows_and_explain_the_truth_there():
    assert B.finite.tolist() == [True, True, True, False]
    assert B.predicted.tolist() == [1, 1, 2, -1] and B.correct.tolist() == [False, True, True, False]
    assert B.targets("predicted").tolist() == [1, 1, 2, 1]  # the true class where B has no prediction
    assert A.targets("true").tolist() == LABELS.tolist()
    with pytest.raises(ValueError, match="target must be one of predicted, true"):
        A.targets("best")


@pytest.mark.parametrize(
    ("mode", "cls", "expected"),
    [
        ("all", -1, [0, 1, 2, 3]),
        ("A+", -1, [0, 1]),
        ("A-", -1, [2, 3]),
        ("B-", -1, [0, 3]),
        ("A-B+", -1, [2]),
        ("A+B-", -1, [0]),
        ("all", 1, [1, 3]),
        ("A-", 1, [3]),
    ],
)
def test_filter_mask_combines_model_terms_and_the_class(mode: str, cls: int, expected: list[int]):
    correct = {"A": A.correct, "B": B.correct}
    assert np.flatnonzero(filter_mask(mode, correct, LABELS, cls)).tolist() == expected


def test_a_filter_about_a_model_not_shown_matches_nothing_and_unknown_filters_are_refused():
    assert not filter_mask("B+", {"A": A.correct}, LABELS).any()
    assert set(FILTERS) >= {"all", "A-B+"}
    with pytest.raises(ValueError, match="filter must be one of all, A\\+"):
        filter_mask("C+", {"A": A.correct}, LABELS)


def test_descriptions_name_the_models_and_the_predictions():
    labels = {"A": "A · plain 14", "B": "B · residual 14"}
    assert describe_filter("A-B+", labels) == "wrong for A · plain 14, correct for B · residual 14"
    assert describe_filter("all", labels) == "all test images"
    preds = {"A": A, "B": B}
    assert describe_image(2, CLASSES, preds) == "#2 · true triangle · A: square 50% · B: triangle 80%"
    assert describe_image(3, CLASSES, preds) == "#3 · true disk · A: square 60% · B: –"
