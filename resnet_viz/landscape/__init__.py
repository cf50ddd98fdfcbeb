"""Loss landscapes of plain and residual nets (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

- `directions`: filter-normalised random directions (Sec. 4).
- `evaluate`: the loss as a function of the weights, batched over grid points; 1-D interpolation
  between two nets (Goodfellow et al. 2015).
- `hessian`: extreme Hessian eigenvalues by Hessian-vector products and Lanczos (Sec. 6).
- `trajectory`: the training path in the plane of its first two principal directions (Sec. 7).
- `roughness`: local minima on the grid and the distance from the best quadratic bowl.
- `analysis`: settings, results and `compute_landscapes` for a few nets; `task`: the same as a
  background task with progress, cached in the run store.

```python
from resnet_viz.landscape import LandscapeConfig, Target, compute_landscapes
results = compute_landscapes([Target("plain", "plain 20", net)], DataConfig(), LandscapeConfig(grid=21))
results["plain"].surface.loss   # 21 x 21 losses around the trained weights
```
"""

from .analysis import (
    Curvature,
    Interpolation,
    LandscapeConfig,
    NetLandscape,
    Progress,
    Surface,
    Target,
    Trajectory,
    compute_landscapes,
)
from .task import LandscapeTask, LandscapeView, cache_params

__all__ = [
    "Curvature",
    "Interpolation",
    "LandscapeConfig",
    "LandscapeTask",
    "LandscapeView",
    "NetLandscape",
    "Progress",
    "Surface",
    "Target",
    "Trajectory",
    "cache_params",
    "compute_landscapes",
]
