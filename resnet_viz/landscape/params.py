"""Parameter sets as flat vectors and back: the arithmetic every landscape method shares.

A landscape moves a net's weights along directions in parameter space, ``theta + a*d1 + b*d2``
(Li et al. 2018, Eq. 1). Parameters stay a name -> tensor dict for `torch.func.functional_call`;
Lanczos and PCA want one flat vector, so `Flat` converts between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

Params = dict[str, torch.Tensor]


def parameters(model: nn.Module) -> Params:
    """The model's parameters, detached copies (changing them leaves the model alone)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def buffers(model: nn.Module) -> Params:
    """The model's buffers (BatchNorm running statistics), detached copies."""
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def is_weight(tensor: torch.Tensor) -> bool:
    """Conv and linear weights (two or more dims); biases and BatchNorm scales/shifts are 1-D (Li et al. Sec. 4)."""
    return tensor.dim() > 1


@dataclass(frozen=True)
class Flat:
    """The layout of a parameter dict as one vector: names in order, their shapes and sizes."""

    names: tuple[str, ...]  # parameter names, in model order
    shapes: tuple[torch.Size, ...]  # their shapes

    @classmethod
    def of(cls, params: Params) -> Flat:
        return cls(tuple(params), tuple(p.shape for p in params.values()))

    @property
    def size(self) -> int:
        return sum(s.numel() for s in self.shapes)

    def vector(self, params: Params) -> torch.Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, vector: torch.Tensor) -> Params:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            out[name] = vector[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return out
