"""Calibration: are the nets' confidences probabilities? (Guo et al. 2017, ICML, "On Calibration of
Modern Neural Networks").

Guo et al. find deep ResNets overconfident (Fig. 1: ResNet-110 on CIFAR-100 has an ECE of 16.5% where
LeNet has 3%), worse with depth and with training long past the point of fitting, and that one scalar,
a softmax temperature fitted on held-out data, repairs most of it without changing a single
prediction (Sec. 4.2, Table 1). Skip connections make deep nets trainable; they do nothing for this.

- Expected calibration error (Guo et al. Eq. 3): bin the test examples by confidence into 15 equal-width
  bins, and average |accuracy - confidence| over bins, weighted by their share of the examples.
- The reliability diagram (Fig. 1, bottom): accuracy per confidence bin against the diagonal.
- Temperature scaling (Sec. 4.2): logits / T with T minimising the NLL on the validation split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from .common import analysis_copy, check_finite, logits_of

BINS = 15  # Guo et al. 2017, Sec. 2 and Fig. 1
BETA_RANGE = (1e-3, 50.0)  # search range of the inverse temperature 1/T


def reliability_table(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> pd.DataFrame:
    """Per equal-width confidence bin: lower, upper, count, confidence (mean max probability), accuracy.

    A confidence of exactly 1 falls in the last bin, 0 (impossible for a max-probability) in the first;
    empty bins have count 0 and NaN means.
    """
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double().numpy()
    conf = conf.double().numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # bins are (lower, upper]
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append(
            [
                edges[b],
                edges[b + 1],
                n,
                conf[inside].mean() if n else math.nan,
                correct[inside].mean() if n else math.nan,
            ]
        )
    return pd.DataFrame(rows, columns=["lower", "upper", "count", "confidence", "accuracy"])


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """Expected calibration error (Guo et al. Eq. 3): sum over bins of |B|/n * |acc(B) - conf(B)|."""
    table = reliability_table(probs, labels, bins)
    full = table[table["count"] > 0]
    return float((full["count"] * (full.accuracy - full.confidence).abs()).sum() / len(labels))


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    return float(F.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) (Guo et al. Sec. 4.2).

    The NLL is convex in beta = 1/T (a log-sum-exp of linear functions minus a linear one), so a golden
    section search on beta finds the minimum; T = 1 is kept when nothing beats it.
    """
    z = logits.double()

    def loss(beta: float) -> float:
        return float(F.cross_entropy(z * beta, labels))

    lo, hi = BETA_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    beta = (lo + hi) / 2
    return 1.0 / beta if loss(beta) < loss(1.0) else 1.0


@dataclass
class CalibrationResult:
    """Calibration of each model on the test split, before and after temperature scaling."""

    summary: pd.DataFrame  # model, accuracy, ece, nll, temperature, ece_scaled, nll_scaled, val_nll, val_nll_scaled
    reliability: pd.DataFrame  # model, scaled (bool), lower, upper, count, confidence, accuracy
    bins: int  # equal-width confidence bins


def calibration_study(models: Mapping[str, nn.Module], data: Dataset, bins: int = BINS) -> CalibrationResult:
    """ECE, NLL and reliability of every model on the test split; the temperature is fitted on the
    validation split (never on the test examples it is judged on)."""
    check_finite(models)
    summary, tables = [], []
    for key, original in models.items():
        model = analysis_copy(original)
        val, test = logits_of(model, data.x_val), logits_of(model, data.x_test)
        t = fit_temperature(val, data.y_val)
        row = {"model": key, "accuracy": float((test.argmax(1) == data.y_test).float().mean())}
        for suffix, temp in (("", 1.0), ("_scaled", t)):
            probs = F.softmax(test.double() / temp, dim=1)
            row[f"ece{suffix}"] = ece(probs, data.y_test, bins)
            row[f"nll{suffix}"] = nll(test, data.y_test, temp)
            row[f"val_nll{suffix}"] = nll(val, data.y_val, temp)
            tables.append(reliability_table(probs, data.y_test, bins).assign(model=key, scaled=bool(suffix)))
        summary.append({**row, "temperature": t})
    columns = ["model", "accuracy", "ece", "nll", "temperature", "ece_scaled", "nll_scaled"]
    columns += ["val_nll", "val_nll_scaled"]
    reliability = pd.concat(tables, ignore_index=True)
    reliability = reliability[["model", "scaled", "lower", "upper", "count", "confidence", "accuracy"]]
    return CalibrationResult(pd.DataFrame(summary)[columns], reliability, bins)


def verdict(summary: pd.DataFrame, labels: Mapping[str, str], tolerance: float = 0.05) -> str:
    """What the fitted temperatures say about these models, for the chart's caption (the caption's general
    story, overconfidence, does not hold for every net). T > 1 means the net was overconfident on the
    validation split, T < 1 underconfident (Guo et al. 2017, Sec. 4.2: T softens or sharpens the softmax);
    within `tolerance` of 1 it was about calibrated. ECE before and after the scaling follows."""
    parts = []
    for row in summary.itertuples():
        t = float(row.temperature)
        kind = "overconfident" if t > 1 + tolerance else "underconfident" if t < 1 - tolerance else "about calibrated"
        parts.append(f"{labels[row.model]} was {kind} (T = {t:.2f}; ECE {row.ece:.3f} → {row.ece_scaled:.3f})")
    return "Here: " + "; ".join(parts) + "."
