"""How far a loss surface is from a smooth bowl: two numbers to compare nets by.

Li et al. 2018 (Fig. 5) show it by eye: the plain net's surface is chaotic, the ResNet's nearly
convex. `local_minima` counts the grid points lower than all eight neighbours (a bowl has one);
`non_quadratic` is the share of the surface's variation that the best-fitting quadratic
``c0 + c1 a + c2 b + c3 a^2 + c4 ab + c5 b^2`` leaves unexplained, ``sqrt(1 - R^2)``: 0 for a perfect
bowl (or saddle), near 1 for noise.
"""

from __future__ import annotations

import numpy as np

NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]


def local_minima(loss: np.ndarray) -> int:
    """Interior grid points strictly lower than their eight neighbours (non-finite values count as +inf)."""
    z = np.where(np.isfinite(loss), loss, np.inf)
    rows, cols = z.shape
    if rows < 3 or cols < 3:
        return 0
    centre = z[1:-1, 1:-1]
    is_min = np.isfinite(centre)
    for di, dj in NEIGHBOURS:
        is_min &= centre < z[1 + di : rows - 1 + di, 1 + dj : cols - 1 + dj]
    return int(is_min.sum())


def quadratic_fit(alphas: np.ndarray, betas: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares quadratic in (a, b) through the finite grid values; returns (coefficients, fitted grid)."""
    a, b = np.meshgrid(np.asarray(alphas, float), np.asarray(betas, float))
    design = np.stack([np.ones_like(a), a, b, a * a, a * b, b * b], axis=-1)
    ok = np.isfinite(loss)
    coefficients, *_ = np.linalg.lstsq(design[ok], loss[ok], rcond=None)
    return coefficients, design @ coefficients


def non_quadratic(alphas: np.ndarray, betas: np.ndarray, loss: np.ndarray) -> float:
    """sqrt(1 - R^2) of the best quadratic fit over the finite points: 0 smooth bowl, 1 nothing like one."""
    ok = np.isfinite(loss)
    if ok.sum() < 7:
        return float("nan")
    _, fitted = quadratic_fit(alphas, betas, loss)
    residual = loss[ok] - fitted[ok]
    spread = loss[ok] - loss[ok].mean()
    total = float((spread**2).sum())
    return float(np.sqrt((residual**2).sum() / total)) if total > 0 else 0.0
