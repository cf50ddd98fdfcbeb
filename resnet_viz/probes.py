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
a hooked module) and puts one backward hook on each block output's autograd node on armed steps. It only
reads tensors (detached, no inplace), so a probed run computes exactly what an unprobed one does. With SGD on
the CPU the probe takes the optimizer's step itself (`Probe.step`, bit for bit SGD's) and reads each layer's
norms between its ops, while its tensors are in cache; otherwise with `torch._foreach_norm`. Sums of squares
and of a tensor's values are BLAS dot products (under half the time of `vector_norm` and `sum` on CPU), and
everything is read back to the host once per step, where NumPy does the arithmetic on a few hundred values.

With SGD on the CPU the probe takes the optimizer's step itself on armed steps (`Probe.step`): SGD's own
arithmetic, op for op, with each layer's gradient, weight and momentum-buffer norms taken while that layer's
tensors are in cache for the update. Read in separate passes after backward and after the step, the three
sets of norms read the parameters' memory three more times (10 MB a step at depth 56, about 2% of its time).

A branch that ends in a BatchNorm in training mode (post order, the lab's default) needs no pass over its
response at all: BN's output is gamma * x_hat + beta per channel, where x_hat sums to 0 and its squares to
n * var / (var + eps) (Ioffe & Szegedy 2015, Algorithm 1), so the response's sum and sum of squares follow
exactly from gamma, beta and the 1 / sqrt(var + eps) BN computed, which its autograd node keeps. Reading
each response again cost ~110 us a block in a training step (a cold pass over memory; 3% of a depth-56
step), against ~13 us for the same dot products timed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .models import block_names, layer_names

METRICS = ("grad_norm", "update_ratio", "block_grad_norm", "act_std")
LAYER_METRICS = ("grad_norm", "update_ratio")  # indexed by layer_names; the others by block_names


@dataclass
class _NormOutput:
    """A response that is a training-mode BatchNorm's output: what its sum and sum of squares follow from."""

    gamma: torch.Tensor  # BN's weight, the parameter itself: read in `before_step`, before the step moves it
    beta: torch.Tensor  # BN's bias, likewise
    invstd: torch.Tensor  # per channel, 1 / sqrt(batch variance + eps) as BN computed it in this forward
    eps: float  # BN's eps
    size: int  # values in the response (batch x channels x pixels)


@dataclass(frozen=True)
class _Layout:
    """Where each response's sum and sum of squares come from, fixed for a given set of responses (kept: it is the
    same at every step but an epoch's last, shorter batch)."""

    norm_at: np.ndarray  # forward positions of the BatchNorm outputs
    dot_at: np.ndarray  # forward positions of the responses read by dot products
    starts: np.ndarray  # each BatchNorm output's first channel among all their channels
    count: np.ndarray  # per channel, its values (batch x pixels), float64
    neg_eps: np.ndarray  # per channel, -eps of its BatchNorm
    sizes: np.ndarray  # per response, in forward order, its values (float64)


def _layout(responses: list[tuple[torch.Tensor, torch.Tensor, int] | _NormOutput]) -> _Layout:
    """The `_Layout` of one step's responses, in forward order."""
    norms = [r for r in responses if isinstance(r, _NormOutput)]
    channels = np.array([o.gamma.numel() for o in norms], dtype=np.int64)
    return _Layout(
        norm_at=np.array([i for i, r in enumerate(responses) if isinstance(r, _NormOutput)], dtype=np.int64),
        dot_at=np.array([i for i, r in enumerate(responses) if not isinstance(r, _NormOutput)], dtype=np.int64),
        starts=np.concatenate([[0], np.cumsum(channels)[:-1]]).astype(np.int64),
        count=np.repeat([o.size / o.gamma.numel() for o in norms], channels).astype(np.float64),
        neg_eps=np.repeat([-o.eps for o in norms], channels).astype(np.float64),
        sizes=np.array([r.size if isinstance(r, _NormOutput) else r[2] for r in responses], dtype=np.float64),
    )


def _norm_moments(stats: np.ndarray, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Sum and sum of squares of each BatchNorm output, in float64, from its statistics alone (`stats`: every
    output's gamma, then every beta, then every 1 / sqrt(var + eps), channel by channel).

    Per channel of n values, y = gamma * x_hat + beta with sum(x_hat) = 0 and sum(x_hat^2) = n * var / (var +
    eps) = n * (1 - eps * invstd^2) (Ioffe & Szegedy 2015, Algorithm 1), so sum(y) = n * beta and sum(y^2) =
    n * (gamma^2 * (1 - eps * invstd^2) + beta^2). A dead channel (var 0) gives gamma^2 * 0, as BN's output
    does: exact, unlike a batch variance recovered from the running statistics' update. In NumPy, on the host:
    a few hundred values, where each torch op would cost more than its arithmetic.
    """
    gamma, beta, invstd = stats.reshape(3, -1)
    spread = np.clip(1 + layout.neg_eps * invstd * invstd, 0, None)  # var / (var + eps)
    squares = layout.count * (gamma * gamma * spread + beta * beta)
    return np.add.reduceat(layout.count * beta, layout.starts), np.add.reduceat(squares, layout.starts)


def _square(x: torch.Tensor) -> torch.Tensor:
    """The squared L2 norm of `x` as a dot product of its flat view (a third of `vector_norm`'s time on the
    largest layers here)."""
    flat = x.reshape(-1)
    return torch.dot(flat, flat)


def _momentum_buffers(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether each step of `optimizer` moves every weight by exactly lr x its momentum buffer: SGD with
    momentum, no dampening, Nesterov or maximize (the buffer then holds grad + weight decay, summed with
    momentum). `update_ratio` is then read from the buffers instead of from a copy of the weights taken
    before the step, which saves two tensor ops per layer and step (a tenth of the probes' time at depth 56)."""
    if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    return group["momentum"] > 0 and not (group["dampening"] or group["nesterov"] or group["maximize"])


def _steps_itself(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether `Probe.step` may take `optimizer`'s step itself: SGD as `_momentum_buffers` asks, on the CPU, in
    its single-tensor path (CUDA's default foreach kernels step every layer in a few launches; a loop per layer
    would undo that), with plain float hyperparameters."""
    if not _momentum_buffers(optimizer):
        return False
    group = optimizer.param_groups[0]
    return (
        not (group["foreach"] or group["fused"] or group["differentiable"])
        and all(isinstance(group[k], float | int) for k in ("lr", "momentum", "weight_decay"))
        and all(p.device.type == "cpu" for p in group["params"])
    )


class Probe:
    """Measures one model's internals on armed steps. Call `arm()` before forward, `before_step()` after backward,
    `step()` for the optimizer's step, `read()` after it."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """`optimizer`: the model's, when `update_ratio` may be read from its momentum buffers."""
        self.layers = layer_names(model)
        self.blocks = block_names(model)
        self.weights = [model.get_submodule(n).weight for n in self.layers]
        self._optimizer = optimizer if _momentum_buffers(optimizer) else None
        # SGD's parameters in its order, each with its place in `weights` (None: not measured), when `step` takes
        # SGD's step itself; else empty
        index = {w: i for i, w in enumerate(self.weights)}
        params = optimizer.param_groups[0]["params"] if _steps_itself(optimizer) else []
        self._params: list[tuple[nn.Parameter, int | None]] = [(p, index.get(p)) for p in params]
        self.armed = False
        # per block response on the armed step, in forward order: (its sum, its sum of squares, its size) as
        # dot products, or a BatchNorm output's statistics (`_NormOutput`)
        self._responses: list[tuple[torch.Tensor, torch.Tensor, int] | _NormOutput] = []
        # what `before_step` kept of them: BatchNorm outputs' statistics and the dot products, as one tensor each
        self._kept: list[torch.Tensor] = []
        self._layout: _Layout | None = None  # where each response's values are in `_kept`
        self._layouts: dict[tuple, _Layout] = {}  # kept by the responses' shapes
        # each affine BatchNorm's weight (by id) -> its bias: a response's BN is found from its autograd node
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.affine]
        self._biases = {id(m.weight): m.bias for m in norms}
        self._block_grads: list[torch.Tensor] = []  # per block, last first: the squared norm of dL/d(output)
        self._ones: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}  # sums as dot products
        self._before: list[torch.Tensor] = []  # the weights before the step (without momentum buffers)
        # per layer: gradient norms, weight norms before the step, then the update's norm (with SGD's momentum
        # buffers: the buffer's, which lr scales: `_update_scale`); brought to the host in one piece by `read`
        self._layer_norms: list[torch.Tensor] = []
        self._blocks = [model.get_submodule(name) for name in self.blocks]
        for block in self._blocks:
            block.observer = self

    def response(self, f: torch.Tensor) -> None:
        """A block's residual branch f(x) (`models.BlockObserver`), in forward order."""
        if self.armed and torch.is_grad_enabled():
            norm = self._norm_output(f)
            if norm is not None:
                self._responses.append(norm)
                return
            # std from a sum and a sum of squares, each a dot product (a third of the time of Tensor.std()
            # here; float32 agrees to ~1e-6), the arithmetic done once for all blocks in `read`
            x = f.detach().reshape(-1)
            self._responses.append((torch.dot(x, self._ones_like(x)), torch.dot(x, x), x.numel()))

    def _norm_output(self, f: torch.Tensor) -> _NormOutput | None:
        """`f`'s BatchNorm statistics when `f` is the output of an affine BatchNorm in training mode, else None.

        Read from f's autograd node, which keeps BN's weight and 1 / sqrt(var + eps) for backward (CPU's
        kernel; cuDNN's node is another, and its responses take the dot products)."""
        node = f.grad_fn
        if node is None or node.name() != "NativeBatchNormBackward0" or not node._saved_training:
            return None
        gamma = node._saved_weight
        beta = self._biases.get(id(gamma)) if gamma is not None else None
        if beta is None:
            return None
        return _NormOutput(gamma, beta, node._saved_result2, node._saved_eps, f.numel())

    def output(self, out: torch.Tensor) -> None:
        """A block's output: the gradient flowing back through it is read in backward, by a pre-hook on the node
        that made it (the node's first incoming gradient is dL/d(out) when out is its first output; half the
        registration time of a tensor hook, ~0.5% of a depth-56 step), else by a hook on the tensor."""
        if self.armed and torch.is_grad_enabled() and out.requires_grad:
            if out.grad_fn is not None and out.output_nr == 0:
                out.grad_fn.register_prehook(self._on_block_grads)
            else:
                out.register_hook(self._on_block_grad)

    def _on_block_grads(self, grads: tuple[torch.Tensor, ...]) -> None:
        self._on_block_grad(grads[0])

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
        self._responses, self._kept, self._layout, self._block_grads, self._layer_norms = [], [], None, [], []

    def before_step(self) -> None:
        """After backward, before the optimizer step: read gradients, keep the weights, and the responses'
        moments (a BatchNorm's gamma and beta as the forward used them)."""
        if self.armed:
            self._keep_responses()
            if self._params:  # `step` reads the gradients and weights
                return
            self._layer_norms = [torch.stack(torch._foreach_norm([w.grad for w in self.weights]))]
            if self._optimizer is not None:
                self._layer_norms.append(torch.stack(torch._foreach_norm([w.detach() for w in self.weights])))
            else:
                self._before = [w.detach().clone() for w in self.weights]

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.step()`. On an armed step with SGD on the CPU (`_steps_itself`), taken here instead: the
        same tensor ops in the same order as torch.optim.SGD's single-tensor path (so the weights and buffers are
        bit for bit what SGD would make: tests/unit/test_training.py), with each measured layer's gradient norm,
        weight norm (before its update) and new momentum buffer's norm taken between them, while that layer's
        tensors are in cache. Squared norms (`_square`), one square root for all."""
        if not (self.armed and self._params):
            optimizer.step()
            return
        if optimizer is not self._optimizer:  # `before_step` left the norms to this step
            raise ValueError("Probe.step: the optimizer must be the one the probe was made with")
        group, state = optimizer.param_groups[0], optimizer.state
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        count = len(self.weights)
        squares: list[torch.Tensor | None] = [None] * (3 * count)  # per layer: gradient, weight, buffer
        with torch.no_grad():
            for param, i in self._params:
                grad = param.grad
                if grad is None:  # SGD skips a parameter without a gradient
                    continue
                if i is not None:
                    squares[i], squares[count + i] = _square(grad), _square(param)
                if decay != 0:
                    grad = grad.add(param, alpha=decay)
                buffer = state[param].get("momentum_buffer")
                if buffer is None:
                    buffer = state[param]["momentum_buffer"] = grad.detach().clone()
                else:
                    buffer.mul_(momentum).add_(grad)  # dampening 0 (`_momentum_buffers`)
                if i is not None:
                    squares[2 * count + i] = _square(buffer)
                param.add_(buffer, alpha=-lr)
            self._layer_norms = [torch.stack(squares).sqrt_()]  # type: ignore[arg-type]  # all have gradients

    def read(self) -> dict[str, list[float]] | None:
        """After the optimizer step: the measurements of this step (None when not armed). Everything is brought to
        the host as one tensor (one copy from a GPU) and the arithmetic on a few hundred values done in NumPy."""
        if not self.armed:
            return None
        self.armed = False
        self._update_norms()
        count, blocks = len(self.weights), len(self._block_grads)
        block_squares = [torch.stack(self._block_grads)] if blocks else []
        pieces = [*self._layer_norms, *block_squares, *self._kept]
        host = torch.cat(pieces).cpu().numpy().astype(np.float64)
        grads, sizes, updates = host[: 3 * count].reshape(3, count)
        # Backward visits blocks last-to-first; store them in network order.
        block_grads = np.sqrt(host[3 * count : 3 * count + blocks][::-1])
        return {
            "grad_norm": grads.tolist(),
            "update_ratio": (self._update_scale() * updates / np.maximum(sizes, 1e-12)).tolist(),
            "block_grad_norm": block_grads.tolist(),
            "act_std": self._response_stds(host[3 * count + blocks :]),
        }

    def _update_norms(self) -> None:
        """Complete `_layer_norms` with the weights' norms before the step and the update's, where the step was not
        taken by `step`."""
        if self._params:
            return  # `step` took them all
        if self._optimizer is not None:
            buffers = [self._optimizer.state[w]["momentum_buffer"] for w in self.weights]
            self._layer_norms.append(torch.stack(torch._foreach_norm(buffers)))
        else:
            after = [w.detach() for w in self.weights]
            self._layer_norms.append(torch.stack(torch._foreach_norm(self._before)))
            self._layer_norms.append(torch.stack(torch._foreach_norm(torch._foreach_sub(after, self._before))))

    def _update_scale(self) -> float:
        """What the third set of `_layer_norms` is multiplied by to be ||w_after - w_before||: lr for SGD's momentum
        buffers (the step moved each weight by lr x its buffer), else 1."""
        return self._optimizer.param_groups[0]["lr"] if self._optimizer is not None else 1.0

    def _keep_responses(self) -> None:
        """The responses' BatchNorm statistics (gamma and beta as the forward used them: before the step moves
        them) and dot products, each set as one tensor, for `read`."""
        if not self._responses:
            return
        key = tuple(
            (r.size, r.gamma.numel(), r.eps) if isinstance(r, _NormOutput) else (r[2],) for r in self._responses
        )
        if key not in self._layouts:
            self._layouts[key] = _layout(self._responses)
        self._layout = self._layouts[key]
        norms = [r for r in self._responses if isinstance(r, _NormOutput)]
        dots = [r for r in self._responses if not isinstance(r, _NormOutput)]
        with torch.no_grad():
            if norms:
                stats = [o.gamma for o in norms] + [o.beta for o in norms] + [o.invstd for o in norms]
                self._kept.append(torch.cat(stats).float())
            if dots:
                self._kept.append(torch.stack([d[0] for d in dots] + [d[1] for d in dots]).float())

    def _response_stds(self, kept: np.ndarray) -> list[float]:
        """Sample std of each block's response from its sums: var = (sum x^2 - (sum x)^2 / n) / (n - 1)."""
        layout = self._layout
        if layout is None:
            return []
        total, squares = np.empty(len(layout.sizes)), np.empty(len(layout.sizes))
        channels = len(layout.count)
        if channels:
            total[layout.norm_at], squares[layout.norm_at] = _norm_moments(kept[: 3 * channels], layout)
        if len(layout.dot_at):
            total[layout.dot_at], squares[layout.dot_at] = kept[3 * channels :].reshape(2, -1)
        n = layout.sizes
        return np.sqrt(np.clip((squares - total * total / n) / np.maximum(n - 1, 1), 0, None)).tolist()

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
