"""Loss-landscape speed: a 21 x 21 grid on 1,000 examples for a depth-20 pair, 51 x 51 for a depth-56 pair.

Goals (issue 14): under 10 s and under 90 s on 2 CPU cores. Also the ratio to a naive loop (load
each grid point's weights into the model, one forward pass each, NCHW) and to `vmap` chunks on
this device. By default only the first `--rows` grid rows of each surface are timed and the
whole grid extrapolated (the points cost the same); `--full` times every point.

    python -m benchmarks.bench_landscape [--rows 2] [--full] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.landscape.directions import random_plane
from resnet_viz.landscape.evaluate import Objective, evaluate_points
from resnet_viz.landscape.params import parameters
from resnet_viz.models import ModelConfig, build_model
from resnet_viz.training import resolve_device


def _points(grid: int, rows: int) -> np.ndarray:
    axis = np.linspace(-1, 1, grid)
    a, b = np.meshgrid(axis, axis[:rows])
    return np.stack([a.ravel(), b.ravel()], axis=1)


def _naive(model: torch.nn.Module, params: dict, directions: list[dict], points: np.ndarray, x, y) -> float:
    """One forward per point: copy the point's weights into the model, run it (the reference code's way)."""
    started = time.perf_counter()
    with torch.no_grad():
        for a, b in points:
            for name, p in model.named_parameters():
                p.copy_(params[name] + float(a) * directions[0][name] + float(b) * directions[1][name])
            F.cross_entropy(model(x), y).item()
    return time.perf_counter() - started


def bench_pair(depth: int, grid: int, rows: int, examples: int, device: torch.device) -> dict:
    ds = load_dataset(DataConfig())
    x, y = ds.x_train[:examples].to(device), ds.y_train[:examples].to(device)
    rows = grid if rows <= 0 else min(rows, grid)
    points = _points(grid, rows)
    out: dict = {
        "depth": depth,
        "grid": grid,
        "examples": len(y),
        "points_timed": len(points) * 2,
        "points_total": grid * grid * 2,
    }
    seconds = {"batched": 0.0, "naive": 0.0, "vmap8": 0.0}
    for skip in (False, True):
        model = build_model(ModelConfig(depth=depth, width=16, skip=skip), seed=0).to(device).eval()
        params = parameters(model)
        directions = list(random_plane(params, seed=0))
        objective = Objective(model, x, y)
        evaluate_points(objective, params, directions, points[:1])  # warm-up
        started = time.perf_counter()
        evaluate_points(objective, params, directions, points)
        seconds["batched"] += time.perf_counter() - started
        vmapped = Objective(model, x, y, chunk=8)
        started = time.perf_counter()
        evaluate_points(vmapped, params, directions, points)
        seconds["vmap8"] += time.perf_counter() - started
        seconds["naive"] += _naive(model, params, directions, points, x, y)
    scale = grid / rows
    out |= {f"{k}_seconds": round(v * scale, 2) for k, v in seconds.items()}
    out["extrapolated_from_rows"] = rows if rows < grid else None
    out["speedup_vs_naive"] = round(seconds["naive"] / seconds["batched"], 2)
    out["vmap8_vs_batched"] = round(seconds["vmap8"] / seconds["batched"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2, help="grid rows timed per surface (the rest extrapolated)")
    parser.add_argument("--full", action="store_true", help="time every grid point")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    rows = 0 if args.full else args.rows
    results = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "depth20_21x21": bench_pair(20, 21, rows, 1000, device) | {"goal_seconds": 10},
        "depth56_51x51": bench_pair(56, 51, rows, 1000, device) | {"goal_seconds": 90},
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
