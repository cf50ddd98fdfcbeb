"""Helpers shared by the analyses: a device, batched logits in eval mode, accuracy."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from ..models import finite_weights
from ..training import resolve_device

EVAL_BATCH = 1024  # rows per forward pass: larger batches got slower per row on the 2-core target (cache)


def analysis_copy(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A deep copy in eval mode on `device` (CUDA when present): analyses never touch a model in use."""
    return copy.deepcopy(model).to(device or resolve_device("auto")).eval()


def check_finite(models: Mapping[str, nn.Module]) -> None:
    """Raise ValueError naming each model with non-finite weights or statistics: what it would be measured to
    do (an ECE of 0, no loss to deleting a block) is not a property of a network."""
    broken = [key for key, model in models.items() if not finite_weights(model)]
    if broken:
        raise ValueError(f"{', '.join(broken)}: non-finite weights (did the training diverge?); nothing to measure")


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Logits of `model` (eval mode, no grad) for every row of `x`, on the CPU."""
    device = device_of(model)
    return torch.cat([model(x[i : i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())
