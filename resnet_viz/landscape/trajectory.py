"""The training path in the plane of its two main directions (Li et al. 2018, Sec. 7, Fig. 9).

Random directions are nearly orthogonal to the path an optimiser took (in a million dimensions two
random vectors almost always are), so a trajectory projected on them looks like it never moved.
Li et al. instead take the weights at several points of training, ``theta_0 ... theta_n``, run PCA
on their differences to the final weights, and draw the path and the loss contour in the plane of
the first two principal directions; the variance these explain (often 40-90 % for the first alone)
says how flat the path really is.

As for the random surface, only conv and linear weights take part: biases and BatchNorm
parameters stay at their final values in this plane too (zero components in both directions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .params import Flat, Params, is_weight

MIN_POINTS = 3  # two principal directions of a centred point cloud need three points


@dataclass
class PCAPlane:
    """The first two principal directions of a training path and the path's coordinates in them."""

    directions: tuple[Params, Params]  # unit vectors in parameter space (zero on biases and BN parameters)
    coords: np.ndarray  # (path + 1, 2): each snapshot's theta_i - theta_final on the directions; last: (0, 0)
    explained: tuple[float, float]  # fraction of the path's variance along each direction


def pca_plane(final: Params, path: list[Params]) -> PCAPlane:
    """PCA of a training path ending at `final`; `path` lists the earlier weights in training order.

    Like Li et al.'s code (sklearn PCA on the rows ``theta_i - theta_final``), the rows are centred
    before the SVD, and the snapshots are projected without centring, so the final weights sit at (0, 0).
    """
    if len(path) + 1 < MIN_POINTS:
        raise ValueError(f"a trajectory needs at least {MIN_POINTS} weight snapshots; got {len(path) + 1}")
    weights = {n: t for n, t in final.items() if is_weight(t)}
    flat = Flat.of(weights)
    origin = flat.vector(weights).float().cpu()
    rows = torch.stack([flat.vector({n: p[n] for n in weights}).float().cpu() - origin for p in path])
    points = torch.cat([rows, torch.zeros(1, rows.shape[1])])  # the final weights are a point of the path
    centred = points - points.mean(dim=0, keepdim=True)
    _, singular, vt = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.double() ** 2
    total = float(variance.sum())
    if total == 0.0:
        raise ValueError("the weights did not move along the path: there is no trajectory to draw")
    explained = (float(variance[0] / total), float(variance[1] / total) if len(variance) > 1 else 0.0)
    pcs = vt[:2]
    coords = (points @ pcs.T).double().numpy()  # the last row: the final weights at (0, 0)

    def direction(vector: torch.Tensor) -> Params:
        parts = flat.unflatten(vector)
        return {n: parts[n].to(t.device, t.dtype) if n in parts else torch.zeros_like(t) for n, t in final.items()}

    return PCAPlane((direction(pcs[0]), direction(pcs[1])), coords, explained)
