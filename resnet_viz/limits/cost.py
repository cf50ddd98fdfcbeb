"""Inference cost and unnecessary depth: what each extra block costs, and when it stops paying.

Skip connections let depth be trained; they do not make it free. Every block adds parameters,
FLOPs, latency and training memory linearly (He et al. 2015, Table 1: ResNet-152 is 11.3 GFLOPs
against ResNet-50's 3.8 for 1.5 points of top-1 error), while accuracy saturates: past some depth the
extra blocks are paid for and do nothing (He et al. 2015, Sec. 4.2: ResNet-1202 is worse than
ResNet-110 on CIFAR-10). Identity shortcuts themselves cost nothing but an addition.

Measured per model: parameters; forward FLOPs of one example (`torch.utils.flop_counter`, a
multiply-add counts 2); CPU latency per image at batch 1 and 64 (best of warm repeats); the peak of
live intermediate tensors during one inference pass (no grad), and the activations a training step
keeps for backward, both per image. Inference memory does not grow with depth (each block's input is
freed once the next has run); training memory does.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import replace

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..models import ModelConfig, build_model, count_params, flop_counter
from ..store import StoredRun

DEFAULT_DEPTHS = {"basic": (8, 20, 56), "bottleneck": (11, 20, 56)}  # 6n+2 and 9n+2
BATCHES = (1, 64)
REPEATS, WARMUP = 7, 2  # timed runs (the fastest counts) after warm-up runs
KNEE_TOLERANCE = 0.01  # accuracy within 1 point of the best counts as "as good"


def input_shape(cfg: ModelConfig, batch: int = 1) -> tuple[int, ...]:
    return (batch, cfg.in_channels, cfg.input_size, cfg.input_size) if cfg.family == "cnn" else (batch, cfg.in_channels)


def count_flops(model: nn.Module, shape: Sequence[int]) -> int:
    """Forward FLOPs for an input of `shape` (`models.flop_counter`: matmuls and convolutions, 2 per multiply-add)."""
    counter = flop_counter()
    with counter, torch.no_grad():
        model.eval()(torch.zeros(tuple(shape)))
    return int(counter.get_total_flops())


def latency(model: nn.Module, shape: Sequence[int], repeats: int = REPEATS, warmup: int = WARMUP) -> float:
    """Seconds per image of a CPU forward pass on a batch of `shape` (inference mode, warm): the fastest of
    `repeats`. On a server that trains other runs meanwhile, a pass can wait for the CPU or the GIL, which
    only ever adds time: a median of five once put a depth-8 net at 100 ms and its depth-20 twin at 5 ms."""
    model = model.eval().cpu()
    x = torch.zeros(tuple(shape))
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return min(times) / shape[0]


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensors created inside it that are still alive, and their peak.

    Every output of an op is counted once per storage (views share it) and uncounted when the last
    Python tensor on that storage is collected. Storages in `exclude` (weights, the input) are ignored.
    """

    def __init__(self, exclude: Iterable[int]) -> None:
        super().__init__()
        self.exclude, self.sizes, self.refs = set(exclude), {}, {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the dispatcher's signature
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                key = t.untyped_storage().data_ptr()
                if key == 0 or key in self.exclude:
                    continue
                if key not in self.refs:
                    self.refs[key], self.sizes[key] = 0, t.untyped_storage().nbytes()
                    self.current += self.sizes[key]
                    self.peak = max(self.peak, self.current)
                self.refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.sizes.pop(key)
            del self.refs[key]


def _storages(model: nn.Module, x: torch.Tensor) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}


def inference_peak_bytes(model: nn.Module, shape: Sequence[int]) -> int:
    """Peak bytes of live intermediate tensors during one no-grad forward pass (input and weights excluded)."""
    model = model.eval().cpu()
    x = torch.zeros(tuple(shape))
    tracker = _LiveBytes(_storages(model, x))
    with torch.no_grad(), tracker:
        model(x)
    return tracker.peak


def training_activation_bytes(model: nn.Module, shape: Sequence[int]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward (weights and input excluded)."""
    model = model.eval().cpu()
    x = torch.zeros(tuple(shape))
    exclude, saved = _storages(model, x), {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in exclude:
            saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(saved.values())


def measure(cfg: ModelConfig, batches: Sequence[int] = BATCHES, repeats: int = REPEATS) -> dict[str, object]:
    """Size and cost of the net `cfg` describes (weights do not matter: a fresh build)."""
    model = build_model(cfg).eval()
    row: dict[str, object] = {"params": count_params(model), "flops": count_flops(model, input_shape(cfg))}
    for b in batches:
        row[f"latency_b{b}_ms"] = 1e3 * latency(model, input_shape(cfg, b), repeats)
    row["inference_peak_kib"] = inference_peak_bytes(model, input_shape(cfg)) / 1024
    row["train_activation_kib"] = training_activation_bytes(model, input_shape(cfg)) / 1024
    return row


def cost_table(
    base: ModelConfig,
    depths: dict[str, Sequence[int]] | None = None,
    batches: Sequence[int] = BATCHES,
    repeats: int = REPEATS,
) -> pd.DataFrame:
    """One row per block kind, depth and skip setting (all else as `base`): block, depth, skip, params,
    flops, latency_b<batch>_ms (per image), inference_peak_kib and train_activation_kib (per image).
    MLP configs have basic blocks only."""
    depths = depths or ({"basic": DEFAULT_DEPTHS["basic"]} if base.family == "mlp" else DEFAULT_DEPTHS)
    if base.family == "mlp":
        depths = {"basic": [d for d in depths.get("basic", ()) if (d - 2) % 2 == 0]}
    rows = []
    for block, ds in depths.items():
        for depth in ds:
            for skip in (False, True):
                cfg = replace(base, block=block, depth=depth, skip=skip).validate()
                rows.append({"block": block, "depth": depth, "skip": skip, **measure(cfg, batches, repeats)})
    return pd.DataFrame(rows)


def depth_study_runs(runs: Iterable[StoredRun]) -> list[StoredRun]:
    """The runs of the largest depth sweep among `runs`: plain/residual pairs of one recipe (everything
    but depth, skip and seed equal), the recipe with the most depths."""
    groups: dict[str, list[StoredRun]] = {}
    for run in runs:
        if set(run.configs) != {"plain", "residual"}:
            continue
        recipe = replace(run.configs["residual"], depth=0)
        key = repr((recipe, replace(run.train, seed=0), run.data))
        groups.setdefault(key, []).append(run)
    if not groups:
        return []
    return max(groups.values(), key=lambda g: len({r.configs["residual"].depth for r in g}))


def describe_sweep(runs: Sequence[StoredRun]) -> str:
    """One line naming the depth sweep `depth_study_runs` picked: a store can hold several, and the chart
    drawn from one says nothing about the others."""
    first = runs[0]
    residual = first.configs["residual"]
    depths = sorted({r.configs["residual"].depth for r in runs})
    epochs, seeds = first.train.epochs, len({r.train.seed for r in runs})
    return (
        f"From the stored depth sweep with the most depths: {first.data.name}, {residual.block} blocks of width "
        f"{residual.width}, {epochs} epoch{'s' if epochs > 1 else ''}, depths {', '.join(map(str, depths))}, "
        f"{seeds} seed{'s' if seeds > 1 else ''} per depth."
    )


def accuracy_vs_latency(
    runs: Sequence[StoredRun], tolerance: float = KNEE_TOLERANCE, repeats: int = REPEATS
) -> pd.DataFrame:
    """Validation accuracy against CPU latency (batch 1) of each model and depth of a depth sweep, with
    `knee` marking, per model, the shallowest depth within `tolerance` of that model's best accuracy:
    deeper nets cost more and are no better. Columns: model, depth, val_acc (mean over seeds), seeds,
    latency_ms, flops, knee, beyond_knee."""
    rows = []
    for run in runs:
        for key, cfg in run.configs.items():
            rows.append({"model": key, "depth": cfg.depth, "val_acc": run.summaries[key]["final_val_acc"], "cfg": cfg})
    if not rows:
        columns = ["model", "depth", "val_acc", "seeds", "latency_ms", "flops", "knee", "beyond_knee"]
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    out = frame.groupby(["model", "depth"], as_index=False).agg(
        val_acc=("val_acc", "mean"), seeds=("val_acc", "size"), cfg=("cfg", "first")
    )
    out["latency_ms"] = [1e3 * latency(build_model(c), input_shape(c), repeats) for c in out.cfg]
    out["flops"] = [count_flops(build_model(c), input_shape(c)) for c in out.cfg]
    best = out.groupby("model").val_acc.transform("max")
    good = out[out.val_acc >= best - tolerance].groupby("model").depth.min()
    out["knee"] = out.depth == out.model.map(good)
    out["beyond_knee"] = out.depth > out.model.map(good)
    return out.drop(columns="cfg").sort_values(["model", "depth"], ignore_index=True)
