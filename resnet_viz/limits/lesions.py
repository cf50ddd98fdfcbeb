"""Lesion studies: delete residual blocks at test time (Veit et al. 2016, NeurIPS, "Residual networks
behave like ensembles of relatively shallow networks").

Deleting a block means its output becomes its shortcut: ``out = shortcut(x)`` (the identity, or the
strided, zero-padded identity / the projection where the block changes the tensor's shape). Veit et
al. find that a trained ResNet barely notices the loss of one block (Fig. 3), except at the
downsampling blocks, and degrades smoothly as more are deleted (Fig. 5), while a plain net falls to
chance. For a plain net the same operation replaces the block by a shortcut it never had in training:
the most charitable lesion there is, and still fatal.

Paths (Veit et al. Sec. 3, Fig. 6): with n blocks a ResNet unrolls into 2^n paths, one per choice of
residual branch or skip at each block; C(n, k) of them pass through k residual branches, a binomial
distribution. `path_gradients` measures the gradient each path length carries by sampling: at the k
chosen blocks the gradient flows only through the residual branch, elsewhere only through the skip
(forward values unchanged), and we take the norm of the gradient of the loss at the first block's input.

Why "a ResNet *is* an ensemble" is a misreading: the paths share their weights, are trained jointly
(not independently, as ensemble members are), and deleting a downsampling block breaks every path
at once. Lesions show that most of the work is done by many short paths, not that they are independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..models import ProjectionShortcut, ResidualBlock
from .common import EVAL_BATCH, analysis_copy, check_finite, device_of

BlockFn = Callable[[int, ResidualBlock, torch.Tensor], torch.Tensor]


def blocks_of(model: nn.Module) -> list[tuple[str, ResidualBlock]]:
    """(name, block) in network order: ``stage1.block1`` ..."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ResidualBlock)]


def changes_shape(block: ResidualBlock) -> bool:
    """A downsampling (or widening) block: its shortcut is not the plain identity."""
    s = block.shortcut
    return isinstance(s, ProjectionShortcut) or s.stride > 1 or s.pad > 0


def _from(model: nn.Module, h: torch.Tensor, block_fn: BlockFn, start: int = 0) -> torch.Tensor:
    """The rest of `Net.forward` from `h`, the input of block `start` (the stem's output for 0), with each
    block's output computed by `block_fn(index, block, input)`."""
    for i, (_, block) in enumerate(blocks_of(model)[start:], start=start):
        h = block_fn(i, block, h)
    h = model.final_relu(model.final_bn(h))
    return model.head(h.mean(dim=(2, 3)) if h.dim() == 4 else h)


def _rows(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    return mask.view(-1, *([1] * (ndim - 1)))


def _tile(t: torch.Tensor, times: int) -> torch.Tensor:
    return t.repeat(times, *([1] * (t.dim() - 1)))


@torch.no_grad()
def lesioned_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, deleted: torch.Tensor) -> np.ndarray:
    """Test error of `model` for each row of `deleted` ((configs, blocks) bool: True = block deleted).

    Batched: the intact net's input to every block is computed once; a configuration starts from its
    first deleted block with the inputs repeated once per configuration, and every block picks, per
    example, its own output or its shortcut. Eval-mode BatchNorm is per example, so the result equals
    one separate forward pass per configuration.
    """
    device = device_of(model)
    x, y = x.to(device), y.to(device)
    blocks = [b for _, b in blocks_of(model)]
    inputs = [model.stem(x)]
    for block in blocks:
        inputs.append(block(inputs[-1]))
    n, count = len(blocks), len(y)
    has = deleted.any(dim=1)
    first = torch.where(has, deleted.float().argmax(dim=1), torch.full_like(has, n, dtype=torch.long))
    errors = np.empty(len(deleted))
    per_chunk = max(1, EVAL_BATCH // count)
    for start in sorted(set(first.tolist())):
        rows = torch.nonzero(first == start).flatten()
        for chunk in rows.split(per_chunk):
            masks = deleted[chunk].to(device).repeat_interleave(count, dim=0)  # (configs * examples, blocks)

            def block_fn(i: int, block: ResidualBlock, h: torch.Tensor, masks: torch.Tensor = masks) -> torch.Tensor:
                gone = masks[:, i]
                if not gone.any():
                    return block(h)
                if gone.all():
                    return block.shortcut(h)
                return torch.where(_rows(gone, h.dim()), block.shortcut(h), block(h))

            logits = _from(model, _tile(inputs[start], len(chunk)), block_fn, start)
            wrong = (logits.argmax(1) != y.repeat(len(chunk))).view(len(chunk), count).float().mean(1)
            errors[chunk.numpy()] = wrong.cpu().numpy()
    return errors


def _subsets(eligible: list[int], k: int, samples: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Every k-subset when there are at most `samples` of them, or k is 1 (each single deletion, which the
    single-block chart shows: 4 random ones put the k = 1 band's top at 32% error where one deletion gave 74%),
    else `samples` distinct random ones."""
    if k == 1 or math.comb(len(eligible), k) <= samples:
        return list(combinations(eligible, k))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < samples:
        chosen.add(tuple(sorted(rng.choice(eligible, size=k, replace=False).tolist())))
    return sorted(chosen)


def k_values(n: int, max_ks: int) -> list[int]:
    """1..n, or `max_ks` of them evenly spread (1 and n always included)."""
    if n <= max_ks:
        return list(range(1, n + 1))
    return sorted({int(round(v)) for v in np.linspace(1, n, max_ks)})


@dataclass
class LesionResult:
    """Errors after deleting blocks, per model."""

    single: pd.DataFrame  # model, block, index, downsampling, error, increase (over the intact net's error)
    k_random: pd.DataFrame  # model, k, mean_error, std_error, min_error, max_error, subsets
    base_error: dict[str, float]  # model -> test error of the intact net
    include_downsampling: bool  # whether the k-random deletions could pick downsampling blocks


def lesion_study(
    models: Mapping[str, nn.Module],
    data: Dataset,
    *,
    samples: int = 4,
    max_ks: int = 10,
    seed: int = 0,
    include_downsampling: bool = False,
    max_examples: int | None = None,
) -> LesionResult:
    """Test error after deleting each single block (Veit et al. Fig. 3) and k random blocks (Fig. 5), k from 1
    to all eligible ones (at most `max_ks` values, evenly spread), averaged over `samples` subsets per k.
    Downsampling blocks are marked in the single-block table and, unless `include_downsampling`, left
    out of the random deletions (Veit et al. delete them separately: they break every path)."""
    check_finite(models)
    x, y = data.x_test[:max_examples], data.y_test[:max_examples]
    single, k_rows, base = [], [], {}
    for key, original in models.items():
        model = analysis_copy(original)
        blocks = blocks_of(model)
        n = len(blocks)
        down = [changes_shape(b) for _, b in blocks]
        eligible = [i for i in range(n) if include_downsampling or not down[i]]
        rng = np.random.default_rng(seed)
        subsets = [(k, s) for k in k_values(len(eligible), max_ks) for s in _subsets(eligible, k, samples, rng)]
        deleted = torch.zeros(1 + n + len(subsets), n, dtype=torch.bool)
        deleted[1 : n + 1] = torch.eye(n, dtype=torch.bool)
        for row, (_, subset) in enumerate(subsets, start=n + 1):
            deleted[row, list(subset)] = True
        errors = lesioned_errors(model, x, y, deleted)
        base[key] = float(errors[0])
        for i, (name, _) in enumerate(blocks):
            single.append([key, name, i, down[i], float(errors[1 + i]), float(errors[1 + i] - errors[0])])
        by_k = pd.DataFrame({"k": [k for k, _ in subsets], "error": errors[n + 1 :]}).groupby("k")["error"]
        for k, values in by_k:
            k_rows.append([key, int(k), values.mean(), values.std(ddof=0), values.min(), values.max(), len(values)])
    return LesionResult(
        single=pd.DataFrame(single, columns=["model", "block", "index", "downsampling", "error", "increase"]),
        k_random=pd.DataFrame(
            k_rows, columns=["model", "k", "mean_error", "std_error", "min_error", "max_error", "subsets"]
        ),
        base_error=base,
        include_downsampling=include_downsampling,
    )


def is_residual(model: nn.Module) -> bool:
    """True when the blocks add a shortcut (alpha > 0): only then does the net unroll into paths."""
    return any(block.alpha > 0 for _, block in blocks_of(model))


def path_gradients(
    models: Mapping[str, nn.Module], data: Dataset, *, samples: int = 6, images: int = 16, seed: int = 0
) -> pd.DataFrame:
    """Path-length distribution and gradient per path length of each residual model (Veit et al. Fig. 6).

    For every length k = 0..n, `samples` random sets of k blocks each route the gradient of `images`
    test examples: through the residual branch at those blocks, through the skip elsewhere. Columns:
    model, length, paths (C(n, k)), share (C(n, k) / 2^n), grad_norm (mean norm of the loss gradient at
    the first block's input), contribution (paths x grad_norm, as a fraction of the sum over k).
    Plain models (no paths) are left out.
    """
    rows = []
    for key, original in models.items():
        if not is_residual(original):
            continue
        model = analysis_copy(original)
        device = device_of(model)
        n = len(blocks_of(model))
        rng = np.random.default_rng(seed)
        x, y = data.x_test[:images].to(device), data.y_test[:images].to(device)
        masks, lengths = [], []
        for k in range(n + 1):
            for _ in range(samples):
                m = torch.zeros(n, dtype=torch.bool)
                m[rng.choice(n, size=k, replace=False)] = True
                masks.append(m)
                lengths.append(k)
        mask = torch.stack(masks).to(device)
        norms = []
        for chunk in mask.split(max(1, EVAL_BATCH // len(y))):
            norms.append(
                _path_grad_norms(
                    model, _tile(x, len(chunk)), y.repeat(len(chunk)), chunk.repeat_interleave(len(y), dim=0)
                )
            )
        per_example = torch.cat(norms).view(len(masks), len(y)).mean(1).cpu().numpy()
        frame = pd.DataFrame({"length": lengths, "grad_norm": per_example}).groupby("length", as_index=False).mean()
        frame["paths"] = [float(math.comb(n, int(k))) for k in frame.length]
        frame["share"] = frame.paths / 2.0**n
        weight = frame.paths * frame.grad_norm
        frame["contribution"] = weight / weight.sum() if weight.sum() > 0 else 0.0
        rows.append(frame.assign(model=key))
    columns = ["model", "length", "paths", "share", "grad_norm", "contribution"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def _path_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, through: torch.Tensor) -> torch.Tensor:
    """Per-example gradient norm at the first block's input, routed by `through` ((rows, blocks): True =
    residual branch, False = skip). Forward values are those of the intact net."""
    with torch.no_grad():
        h0 = model.stem(x)
    h0.requires_grad_(True)

    def block_fn(i: int, block: ResidualBlock, h: torch.Tensor) -> torch.Tensor:
        f, s = block.residual(h), block.alpha * block.shortcut(h)
        m = _rows(through[:, i], h.dim())
        out = torch.where(m, f, f.detach()) + torch.where(m, s.detach(), s)
        return getattr(block, f"relu{len(block.layer_keys)}")(out) if block.order == "post" else out

    logits = _from(model, h0, block_fn)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), h0)
    return grad.flatten(1).norm(dim=1).detach()


MATTERS_POINTS = 10.0  # an error increase (points) from one deletion that the lesion verdict names the block of


def sampling_note(result: LesionResult) -> str:
    """For the k-deletions chart's caption: how many sets of k blocks each point averages, so that a reader
    knows a band over a few random sets is not the whole spread (the fewest and most, k > 1; k = 1 is every
    single deletion)."""
    counts = result.k_random[result.k_random.k > 1].subsets
    if counts.empty:
        return ""
    low, high = int(counts.min()), int(counts.max())
    many = f"{low}" if low == high else f"{low} to {high}"
    return (
        f"Each point for k > 1 averages {many} sets of k blocks (random ones where there are more; all where "
        "there are fewer), and its band runs from the best to the worst of them: a few random sets, not every one."
    )


def verdict(result: LesionResult, labels: Mapping[str, str]) -> str:
    """For the single-block chart's caption: each model's median and largest error increase when one block
    other than a downsampling one is deleted (Veit et al. 2016, Fig. 3 shows small increases for a residual
    net, chance for a plain one). Read from these nets, so the caption says what this pair did."""
    rows = result.single[~result.single.downsampling]
    parts = []
    for model, group in rows.groupby("model", sort=False):
        increase = group.increase * 100
        worst = group.block.iloc[int(np.argmax(group.increase.to_numpy()))]
        # A block whose deletion costs 10 points or more is named: the textbook pattern did not hold for it.
        which = f", deleting {worst}" if increase.max() >= MATTERS_POINTS else ""
        parts.append(
            f"{labels[model]} {result.base_error[model]:.1%} intact, {increase.median():+.1f} points at the median "
            f"deletion ({increase.max():+.1f} at most{which})"
        )
    return "Here, deleting one block that does not downsample: " + "; ".join(parts) + "." if parts else ""
