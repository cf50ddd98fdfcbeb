"""What a run will cost before it is built: training FLOPs, peak memory, and the server's limits.

A classroom server has two cores and a few GB for thirty students. The widgets allow a 110-layer,
64-wide net on 32x32 images for 1,000 epochs (about two weeks of training here), and one step of
it at batch 32 takes about 2 GB. So every request is costed first, on the meta device (shapes only:
no memory, no initialisation), and refused with a message naming what to lower when it exceeds the
server owner's limits. Nothing heavy is built for a run until it gets a slot.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from ..data import DataConfig, load_dataset
from ..models import ModelConfig, example_input, flop_counter, network
from ..training import TrainConfig, fit_to_data, steps_per_epoch

BYTES = 4  # float32
ASSUMED_FLOPS_PER_CORE = 2e10  # training FLOP/s of one core here (measured 1.5e10 to 3e10), until measured


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class Limits:
    """The server owner's limits (environment variables, read once per server)."""

    max_run_tflop: float  # RESNET_VIZ_MAX_RUN_TFLOP: training FLOPs of one run (all its models)
    max_run_mb: float  # RESNET_VIZ_MAX_RUN_MB: estimated peak memory of one run
    memory_mb: float  # RESNET_VIZ_MEMORY_MB: estimated memory of all runs training at once
    max_queue: int  # RESNET_VIZ_MAX_QUEUE: runs waiting on the whole server
    max_per_viewer: int  # RESNET_VIZ_MAX_PER_VIEWER: runs one viewer (browser tab) may have queued or running

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_run_tflop=_env_float("RESNET_VIZ_MAX_RUN_TFLOP", 30.0),
            max_run_mb=_env_float("RESNET_VIZ_MAX_RUN_MB", 1024.0),
            memory_mb=_env_float("RESNET_VIZ_MEMORY_MB", 3072.0),
            max_queue=int(_env_float("RESNET_VIZ_MAX_QUEUE", 64)),
            max_per_viewer=int(_env_float("RESNET_VIZ_MAX_PER_VIEWER", 3)),
        )


class RunRefused(ValueError):
    """A request the server will not queue; the message says why and what to lower."""


@dataclass(frozen=True)
class Estimate:
    """A run's cost, computed from shapes alone."""

    steps: int  # optimizer steps of the whole run
    steps_per_epoch: int  # optimizer steps per epoch
    train_flops: float  # forward + backward FLOPs of all its models over all steps (backward ~ 2x forward)
    peak_mb: float  # weights, gradients, optimizer state, snapshots and activations of all its models
    family: str  # "cnn" when any model is a CNN (it gets the threads), else "mlp": small matrices, one thread

    def seconds(self, flops_per_second: float) -> float:
        return self.train_flops / max(flops_per_second, 1.0)


_MEASURING = [threading.Lock() for _ in range(16)]  # one config is measured by one thread (others wait)


def _shape_costs(cfg: ModelConfig, batch: int) -> tuple[int, int, int]:
    """(parameters and buffers, activation values per batch, forward FLOPs per example), measured once.

    A meta-device pass costs 0.2-0.5 s (1.7 s the first time), and a class clicking Train at once asks
    for the same config thirty times in the same second: without the lock every click measured it
    (a quarter of the server's CPU in the classroom benchmark at N = 10)."""
    with _MEASURING[hash((cfg, batch)) % len(_MEASURING)]:
        return _measure(cfg, batch)


@lru_cache(maxsize=256)
def _measure(cfg: ModelConfig, batch: int) -> tuple[int, int, int]:
    """`_shape_costs` on the meta device (shapes only: no memory, no initialisation)."""
    with torch.device("meta"):
        net = network(cfg)
    activations = 0

    def count(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal activations
        activations += out.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    counter = flop_counter()
    with counter:
        net(example_input(cfg, batch, "meta"))
    for h in handles:
        h.remove()
    state = sum(t.numel() for t in net.state_dict().values())
    return state, activations, int(counter.get_total_flops()) // batch


def estimate(models: Mapping[str, ModelConfig], train: TrainConfig, data: DataConfig) -> Estimate:
    """Cost of training `models` with `train` on `data` (validated configs)."""
    dataset = load_dataset(data)
    per_epoch = steps_per_epoch(len(dataset.y_train), train.batch_size)
    steps = per_epoch * train.epochs
    flops, peak, family = 0.0, 0.0, "mlp"
    for cfg in models.values():
        fitted = fit_to_data(cfg, dataset)
        family = "cnn" if fitted.family == "cnn" else family
        state, acts, fwd = _shape_costs(fitted, train.batch_size)
        flops += 3.0 * fwd * train.batch_size * steps
        optimizer_copies = 2 if train.optimizer == "adam" else 1
        # weights + gradients + optimizer moments + the probe's copy of the weights + kept snapshots
        copies = 3 + optimizer_copies + train.max_snapshots
        # autograd keeps about every activation for backward, and backward holds as much again at its peak
        peak += (copies * state + 2 * acts) * BYTES
    return Estimate(steps, per_epoch, flops, peak / 2**20, family)


def check(est: Estimate, limits: Limits) -> None:
    """Raise RunRefused when one run alone is over the server's per-run limits."""
    tflop = est.train_flops / 1e12
    if tflop > limits.max_run_tflop:
        raise RunRefused(
            f"This run needs about {tflop:,.0f} TFLOP of training ({est.steps:,} steps), over this server's "
            f"limit of {limits.max_run_tflop:g} TFLOP per run (RESNET_VIZ_MAX_RUN_TFLOP). Lower the epochs, "
            "depth, width, image size or batch size."
        )
    if est.peak_mb > limits.max_run_mb:
        raise RunRefused(
            f"This run needs about {est.peak_mb:,.0f} MB of memory, over this server's limit of "
            f"{limits.max_run_mb:,.0f} MB per run (RESNET_VIZ_MAX_RUN_MB). Lower the batch size, image size, "
            "width or depth."
        )
