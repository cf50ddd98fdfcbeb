"""Filter-normalised random directions (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", Sec. 4).

A plain random direction means different things for differently scaled nets: the same step moves a
layer with small weights much further than one with large weights, and BatchNorm makes a net
invariant to the scale of its filters. Li et al. therefore rescale each filter of a Gaussian
direction to the norm of the corresponding filter of the weights, ``d_ij <- d_ij / |d_ij| * |theta_ij|``
(a "filter" is one output channel of a conv, one row of a linear layer), and set the directions of
biases and BatchNorm parameters to zero (their ``--xignore biasbn`` option). Only then do the
surfaces of two nets compare: the plane spans the same relative change of every filter.
"""

from __future__ import annotations

import torch

from .params import Params, is_weight

EPS = 1e-10  # as Li et al.'s code: keeps an all-zero direction filter finite


def filter_norms(tensor: torch.Tensor) -> torch.Tensor:
    """The norm of each filter (slice along the first dim) of a weight tensor."""
    return tensor.reshape(tensor.shape[0], -1).norm(dim=1)


def filter_normalize(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`direction` with each filter rescaled to the norm of the same filter of `weight`."""
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return direction * (filter_norms(weight) / (filter_norms(direction) + EPS)).view(shape)


def random_direction(params: Params, generator: torch.Generator) -> Params:
    """A filter-normalised Gaussian direction: weights' filters rescaled, biases and BN parameters zero.

    The Gaussian is drawn on the CPU from `generator` in parameter order, so one seed gives the same
    raw direction on every device, and for every net of one config: a plain net and its residual
    twin (identical parameter shapes) are cut along the same random plane before normalisation.
    """
    out = {}
    for name, weight in params.items():
        if not is_weight(weight):
            out[name] = torch.zeros_like(weight)
            continue
        raw = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
        out[name] = filter_normalize(raw.to(weight.device, weight.dtype), weight)
    return out


def random_plane(params: Params, seed: int) -> tuple[Params, Params]:
    """Two filter-normalised random directions from one seed (the first, then the second)."""
    generator = torch.Generator().manual_seed(seed)
    first = random_direction(params, generator)
    return first, random_direction(params, generator)
