"""The loss as a function of the weights, evaluated at many weight settings at once.

A landscape is hundreds of forward passes of one net on one set of examples, each with other
weights. `Objective` is that function, ``params -> mean loss``, through `torch.func.functional_call`
with BatchNorm in eval mode: its running statistics are those of the trained net and stay fixed
(Li et al. 2018 evaluate the same way), so the loss at a grid point depends on the weights only.

`evaluate_points` batches the grid: on CUDA it stacks a chunk of weight settings and runs them in
one `vmap`-ed call (grouped convolutions keep the GPU busy where one small net would not); on the
CPU a chunk of one is fastest, with channels-last tensors (measured 1.5x over NCHW here, and
`benchmarks/bench_landscape.py` reports the ratio to a naive loop).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .params import Params

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> mean loss over the batch
CPU_MEMORY_BUDGET = 256 * 2**20  # bytes of activations one evaluation may hold on the CPU
CUDA_MEMORY_FRACTION = 0.25  # share of the free GPU memory one evaluation may hold
MAX_CHUNK = 64  # weight settings per vmap-ed call on CUDA
LIVE_TENSORS = 4  # activations alive at once in a forward pass (input, output, shortcut, temporary)


def _largest_activation(model: nn.Module, example: torch.Tensor) -> int:
    """Elements of the largest module output for one example (sizes example batches to a memory budget)."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel())) for m in model.modules()]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


class Objective:
    """``params -> mean loss`` of `model` on the examples `x`, `y`, with fixed buffers (BN in eval mode).

    The model itself is only a template for `functional_call`: its own weights are never read or
    changed. Examples are evaluated in batches that fit the memory budget; `criterion` must be a mean
    over its batch (cross-entropy by default), so batches combine by their share of the examples.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        criterion: Criterion = F.cross_entropy,
        chunk: int | None = None,
    ) -> None:
        self.model = model.eval()
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        # Channels-last convolutions are faster on the CPU for these small nets; CUDA picks its own layout.
        self.channels_last = x.dim() == 4 and self.device.type == "cpu"
        self.x, self.y = self.format(x.to(self.device)), y.to(self.device)
        self.criterion = criterion
        self.params = {n: self.format(p.detach()) for n, p in model.named_parameters()}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        self.n = len(self.y)
        per_example = 4 * LIVE_TENSORS * _largest_activation(model, self.x)
        if self.device.type == "cuda":
            budget = int(torch.cuda.mem_get_info(self.device)[0] * CUDA_MEMORY_FRACTION)
            self.chunk = chunk or max(1, min(MAX_CHUNK, budget // max(1, per_example * self.n)))
        else:
            budget = CPU_MEMORY_BUDGET
            self.chunk = chunk or 1
        self.batch = max(1, min(self.n, budget // max(1, per_example * self.chunk)))

    def format(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor in the layout the evaluation runs in (channels-last for 4-D tensors on the CPU)."""
        if self.channels_last and tensor.dim() == 4:
            return tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def loss(self, params: Params, buffers: Params | None = None) -> torch.Tensor:
        """The mean loss over all examples at these parameters (differentiable: torch.func can take its grad)."""
        state = (params, self.buffers if buffers is None else buffers)
        total = torch.zeros((), device=self.device)
        for start in range(0, self.n, self.batch):
            xb, yb = self.x[start : start + self.batch], self.y[start : start + self.batch]
            total = total + self.criterion(functional_call(self.model, state, (xb,)), yb) * (len(yb) / self.n)
        return total

    def __call__(self, params: Params) -> float:
        with torch.no_grad():
            return float(self.loss(params))


def evaluate_points(
    objective: Objective,
    origin: Params,
    directions: list[Params],
    coefficients: np.ndarray,
    on_chunk: Callable[[int, np.ndarray], None] | None = None,
    stop: threading.Event | None = None,
) -> np.ndarray:
    """The loss at ``origin + sum_k c_k * directions[k]`` for each row c of `coefficients` (points x k).

    Only parameters with a non-zero direction are stacked per point; the others (biases and BN
    parameters of filter-normalised directions) are shared. `on_chunk(first index, losses)` reports
    each finished chunk; when `stop` is set the rest stays NaN.
    """
    coefficients = np.asarray(coefficients, dtype=np.float64).reshape(len(coefficients), len(directions))
    moving = [n for n in origin if any(bool(d[n].any()) for d in directions)]
    base = {n: objective.format(t.to(objective.device)) for n, t in origin.items()}
    dirs = [{n: objective.format(d[n].to(objective.device)) for n in moving} for d in directions]
    fixed = {n: t for n, t in base.items() if n not in moving}
    out = np.full(len(coefficients), np.nan)

    def batched(stacked: Params) -> torch.Tensor:
        return objective.loss({**fixed, **stacked})

    with torch.no_grad():
        for start in range(0, len(coefficients), objective.chunk):
            if stop is not None and stop.is_set():
                break
            coeffs = torch.as_tensor(
                coefficients[start : start + objective.chunk], dtype=torch.float32, device=objective.device
            )
            if len(coeffs) == 1:
                point = {n: _combine(base[n], [d[n] for d in dirs], coeffs[0]) for n in moving}
                values = objective.loss({**fixed, **point}).reshape(1)
            else:
                stacked = {n: _stack(base[n], [d[n] for d in dirs], coeffs) for n in moving}
                values = vmap(batched)(stacked)
            values = values.double().cpu().numpy()
            out[start : start + len(coeffs)] = np.where(np.isfinite(values), values, np.inf)  # NaN: not evaluated
            if on_chunk is not None:
                on_chunk(start, out[start : start + len(coeffs)])
    return out


def _combine(base: torch.Tensor, dirs: list[torch.Tensor], coeffs: torch.Tensor) -> torch.Tensor:
    out = base
    for c, d in zip(coeffs, dirs, strict=True):
        out = out + c * d
    return out


def _stack(base: torch.Tensor, dirs: list[torch.Tensor], coeffs: torch.Tensor) -> torch.Tensor:
    """(chunk, *shape): base + coeffs @ dirs for every point of the chunk."""
    stacked = torch.stack([d.reshape(-1) for d in dirs])  # (k, numel)
    return (base.reshape(1, -1) + coeffs @ stacked).reshape(len(coeffs), *base.shape)


def interpolate_buffers(start: Params, end: Params, t: float) -> Params:
    """BatchNorm statistics between two nets: means linearly, variances log-linearly, counters from `end`.

    Log-linear variances stay positive beyond the end points (a linear blend of a variance of 1 at
    initialisation and a small trained one turns negative just past t = 1).
    """
    out = {}
    for name, b in end.items():
        a = start[name]
        if not b.is_floating_point():
            out[name] = b
        elif name.endswith("running_var"):
            out[name] = torch.exp((1 - t) * a.clamp_min(1e-12).log() + t * b.clamp_min(1e-12).log())
        else:
            out[name] = (1 - t) * a + t * b
    return out


def interpolate(
    objective: Objective,
    start: tuple[Params, Params],
    end: tuple[Params, Params],
    ts: np.ndarray,
    stop: threading.Event | None = None,
) -> np.ndarray:
    """The loss along the straight line ``(1 - t) * start + t * end`` (Goodfellow et al. 2015, Sec. 2).

    `start` and `end` are (parameters, buffers); parameters move linearly, BatchNorm statistics by
    `interpolate_buffers`, so t = 0 and t = 1 give exactly the losses of the two nets in eval mode.
    """
    (p0, b0), (p1, b1) = start, end
    p0 = {n: objective.format(t.to(objective.device)) for n, t in p0.items()}
    p1 = {n: objective.format(t.to(objective.device)) for n, t in p1.items()}
    b0 = {n: t.to(objective.device) for n, t in b0.items()}
    b1 = {n: t.to(objective.device) for n, t in b1.items()}
    out = np.full(len(ts), np.nan)
    with torch.no_grad():
        for i, t in enumerate(ts):
            if stop is not None and stop.is_set():
                break
            t = float(t)
            params = {n: p1[n] if t == 1 else p0[n] if t == 0 else (1 - t) * p0[n] + t * p1[n] for n in p1}
            buffers = b1 if t == 1 else b0 if t == 0 else interpolate_buffers(b0, b1, t)
            value = float(objective.loss(params, buffers))
            out[i] = value if math.isfinite(value) else np.inf
    return out
