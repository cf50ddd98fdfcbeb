"""Extreme Hessian eigenvalues by Hessian-vector products and Lanczos (Li et al. 2018, Sec. 6).

Li et al. check what a 2-D picture cannot prove: whether the loss is locally convex. A minimum of a
convex region has a positive semi-definite Hessian; large negative eigenvalues mean non-convex
directions the random plane may have missed. They map ``|lambda_min / lambda_max|`` over the
surface (their Fig. 7): near zero for the smooth ResNet-56, large for the chaotic plain net.

The Hessian of a net with a million weights is never formed: `hvp` computes ``H v`` by
differentiating the gradient again with `torch.func` (reverse over reverse: measured faster than
forward over reverse on the CPU here), and `lanczos` builds a small tridiagonal matrix from a few
dozen such products whose extreme eigenvalues converge to the Hessian's first (Lanczos 1950;
Golub and Van Loan, Sec. 10.1). Full re-orthogonalisation keeps the Krylov basis exact enough in
float32 for the handful of steps used here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, vjp

from .evaluate import Objective
from .params import Flat, Params

BREAKDOWN = 1e-6  # relative size of a new Lanczos vector below which the Krylov space is exhausted


def hvp(objective: Objective, params: Params) -> Callable[[Params], Params]:
    """``v -> H v`` at `params`: the vector-Jacobian product of the gradient (H is symmetric)."""
    gradient = grad(objective.loss)

    def product(v: Params) -> Params:
        _, pullback = vjp(gradient, params)
        return pullback(v)[0]

    return product


@dataclass
class Eigen:
    """What Lanczos found: the extreme eigenvalues and how it got there."""

    lambda_max: float  # largest Hessian eigenvalue
    lambda_min: float  # smallest (most negative) Hessian eigenvalue
    ritz: list[float]  # every Ritz value (eigenvalue of the tridiagonal matrix), ascending
    products: int  # Hessian-vector products used

    @property
    def ratio(self) -> float:
        """Li et al.'s non-convexity measure |lambda_min / lambda_max| (0 for a convex minimum)."""
        return abs(self.lambda_min / self.lambda_max) if self.lambda_max != 0 else float("nan")


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    iterations: int,
    on_step: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> Eigen:
    """Lanczos with full re-orthogonalisation on a symmetric operator; returns its extreme Ritz values.

    Stops early when the Krylov space is exhausted (then the Ritz values are exact eigenvalues) or
    when `stop` is set (then it returns what it has, if anything).
    """
    basis: list[torch.Tensor] = []
    alphas: list[float] = []
    betas: list[float] = []
    q = start / start.norm()
    scale = 0.0
    for j in range(iterations):
        if stop is not None and stop.is_set() and alphas:
            break
        w = matvec(q)
        alpha = float(torch.dot(w, q))
        w = w - alpha * q - (betas[-1] * basis[-1] if basis else 0.0)
        basis.append(q)
        for _ in range(2):  # twice is enough (Parlett's "twice is enough")
            for b in basis:
                w = w - torch.dot(w, b) * b
        alphas.append(alpha)
        beta = float(w.norm())
        scale = max(scale, abs(alpha), beta)
        if on_step is not None:
            on_step(j + 1)
        if beta <= BREAKDOWN * max(scale, 1e-30) or j == iterations - 1:
            break
        betas.append(beta)
        q = w / beta
    tri = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1) + np.diag(betas[: len(alphas) - 1], -1)
    ritz = np.linalg.eigvalsh(tri.astype(np.float64))
    return Eigen(float(ritz[-1]), float(ritz[0]), ritz.tolist(), len(alphas))


def extreme_eigenvalues(
    objective: Objective,
    params: Params,
    iterations: int = 20,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> Eigen:
    """Largest and smallest Hessian eigenvalue of the objective at `params` (all parameters)."""
    flat = Flat.of(params)
    product = hvp(objective, params)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return flat.vector(product(flat.unflatten(v))).detach()

    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(flat.size, generator=generator).to(next(iter(params.values())).device)
    return lanczos(matvec, start, iterations, on_step, stop)
