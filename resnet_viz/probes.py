"""Per-step instruments: gradient norms, residual-stream gradients, layer responses, update ratios.

A `Probe` attaches to one model and measures, on the steps it is armed for:

- ``grad_norm``: the L2 norm of each weighted layer's weight gradient (what shrinks to nothing in a
  deep plain net without normalisation, and explodes in one with BatchNorm);
- ``block_grad_norm``: the L2 norm of the loss gradient with respect to each block's output, i.e. the
  gradient flowing back through the residual stream (He et al. 2016, Eq. 5: the shortcut carries
  dL/dx_L to every earlier block unchanged);
- ``act_std``: the std of each block's residual-branch response f(x), after its last norm and before
  the addition and ReLU: the "layer responses" of He et al. 2015, Fig. 7;
- ``update_ratio``: ||w_after - w_before|| / ||w_before|| per weighted layer (a learning-rate health
  check: around 1e-3 is the usual rule of thumb).

The probe is each block's observer (`models.BlockObserver`: no module hooks, which slow every call of
a hooked module) and puts one tensor hook on each block output on armed steps. It only reads tensors
(detached, no inplace), so a probed run computes exactly what an unprobed one does. Norms are computed
with `torch._foreach_norm` where they can be, and sums of squares and of a tensor's values as BLAS dot
products (under half the time of `vector_norm` and `sum` on CPU), and read back to Python once per step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .models import block_names, layer_names

METRICS = ("grad_norm", "update_ratio", "block_grad_norm", "act_std")
LAYER_METRICS = ("grad_norm", "update_ratio")  # indexed by layer_names; the others by block_names


def _momentum_buffers(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether each step of `optimizer` moves every weight by exactly lr x its momentum buffer: SGD with
    momentum, no dampening, Nesterov or maximize (the buffer then holds grad + weight decay, summed with
    momentum). `update_ratio` is then read from the buffers instead of from a copy of the weights taken
    before the step, which saves two tensor ops per layer and step (a tenth of the probes' time at depth 56)."""
    if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    return group["momentum"] > 0 and not (group["dampening"] or group["nesterov"] or group["maximize"])


class Probe:
    """Measures one model's internals on armed steps. Call `arm()` before forward, `read()` after step."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """`optimizer`: the model's, when `update_ratio` may be read from its momentum buffers."""
        self.layers = layer_names(model)
        self.blocks = block_names(model)
        self.weights = [model.get_submodule(n).weight for n in self.layers]
        self._optimizer = optimizer if _momentum_buffers(optimizer) else None
        self.armed = False
        self._sums: list[torch.Tensor] = []  # per block response on the armed step: its sum
        self._squares: list[torch.Tensor] = []  # ... its sum of squares
        self._sizes: list[int] = []  # ... its number of values
        self._block_grads: list[torch.Tensor] = []  # per block, last first: the squared norm of dL/d(output)
        self._ones: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}  # sums as dot products
        self._before: list[torch.Tensor] = []  # the weights before the step (without momentum buffers)
        self._sizes_before: list[torch.Tensor] = []  # their norms
        self._grad_norms: list[torch.Tensor] = []
        self._blocks = [model.get_submodule(name) for name in self.blocks]
        for block in self._blocks:
            block.observer = self

    def response(self, f: torch.Tensor) -> None:
        """A block's residual branch f(x) (`models.BlockObserver`), in forward order."""
        if self.armed and torch.is_grad_enabled():
            # std from a sum and a sum of squares, each a dot product (a third of the time of Tensor.std()
            # here; float32 agrees to ~1e-6), the arithmetic done once for all blocks in `read`
            x = f.detach().reshape(-1)
            self._sums.append(torch.dot(x, self._ones_like(x)))
            self._squares.append(torch.dot(x, x))
            self._sizes.append(x.numel())

    def output(self, out: torch.Tensor) -> None:
        """A block's output: the gradient flowing back through it is read in backward."""
        if self.armed and torch.is_grad_enabled() and out.requires_grad:
            out.register_hook(self._on_block_grad)

    def _on_block_grad(self, grad: torch.Tensor) -> None:
        g = grad.reshape(-1)
        self._block_grads.append(torch.dot(g, g))

    def _ones_like(self, x: torch.Tensor) -> torch.Tensor:
        """A vector of ones as long as `x` (kept: a block's response has the same size at every step)."""
        key = (x.numel(), x.dtype, x.device)
        if key not in self._ones:
            self._ones[key] = torch.ones_like(x)
        return self._ones[key]

    def arm(self) -> None:
        """Measure the next forward/backward/step."""
        self.armed = True
        self._sums, self._squares, self._sizes, self._block_grads = [], [], [], []

    def before_step(self) -> None:
        """After backward, before the optimizer step: read gradients, keep the weights."""
        if self.armed:
            self._grad_norms = torch._foreach_norm([w.grad for w in self.weights])
            if self._optimizer is not None:
                self._sizes_before = torch._foreach_norm([w.detach() for w in self.weights])
            else:
                self._before = [w.detach().clone() for w in self.weights]

    def read(self) -> dict[str, list[float]] | None:
        """After the optimizer step: the measurements of this step (None when not armed)."""
        if not self.armed:
            return None
        self.armed = False
        ratio = self._update_ratio()
        # Backward visits blocks last-to-first; store them in network order.
        return {
            "grad_norm": torch.stack(self._grad_norms).tolist(),
            "update_ratio": ratio.tolist(),
            "block_grad_norm": torch.stack(self._block_grads[::-1]).sqrt().tolist() if self._block_grads else [],
            "act_std": self._response_stds(),
        }

    def _update_ratio(self) -> torch.Tensor:
        """||w_after - w_before|| / ||w_before|| per layer of the step just taken."""
        if self._optimizer is not None:
            state, lr = self._optimizer.state, self._optimizer.param_groups[0]["lr"]
            update = torch.stack(torch._foreach_norm([state[w]["momentum_buffer"] for w in self.weights])) * lr
            size = torch.stack(self._sizes_before)
        else:
            after = [w.detach() for w in self.weights]
            update = torch.stack(torch._foreach_norm(torch._foreach_sub(after, self._before)))
            size = torch.stack(torch._foreach_norm(self._before))
        return update / size.clamp_min(1e-12)

    def _response_stds(self) -> list[float]:
        """Sample std of each block's response from its sums: var = (sum x^2 - (sum x)^2 / n) / (n - 1)."""
        if not self._sums:
            return []
        total, squares = torch.stack(self._sums), torch.stack(self._squares)
        n = torch.tensor(self._sizes, dtype=total.dtype, device=total.device)
        return ((squares - total * total / n) / (n - 1).clamp_min(1)).clamp_min(0).sqrt().tolist()

    def close(self) -> None:
        """Detach from every block: the model is left exactly as it was found."""
        for block in self._blocks:
            block.observer = None
        self._blocks = []


@torch.no_grad()
def decision_grid(
    model: nn.Module, low: tuple[float, float], high: tuple[float, float], n: int = 80
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(class 1) of a 2-D classifier on an n x n grid: (xs, ys, probs[y, x]), in eval mode.

    Runs in the thread that trains the model (between steps), so it never races the optimizer.
    """
    xs = torch.linspace(low[0], high[0], n)
    ys = torch.linspace(low[1], high[1], n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).to(device))
    model.train(was_training)
    probs = torch.softmax(logits, 1)[:, 1].reshape(n, n).cpu().numpy()
    return xs.numpy(), ys.numpy(), probs
