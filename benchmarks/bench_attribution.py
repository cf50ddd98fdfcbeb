"""Seconds per attribution method on 16 images of a depth-20 net, against the 2-second goal.

For each input size (8x8 digits, 16x16 shapes) a plain and a residual depth-20 net are briefly
trained with plain PyTorch (trained nets are less linear than fresh ones, so Integrated Gradients
may refine more images), then every method in `METHODS` explains 16 test images. After a warm-up
round, every (net, method) cell is timed in `REPEATS` rounds on 2 threads. The best time is judged
against the goal (the usual reading of repeated timings: noise only ever adds), the median is shown
beside it, and so is the 1-minute load average, because other work on the machine slows every number.

    python -m benchmarks.bench_attribution      # from the repository root; prints one JSON object
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from resnet_viz.attribution import METHODS, AttributionResult, MethodUnavailable, attribute
from resnet_viz.data import DataConfig, Dataset, load_dataset
from resnet_viz.models import ModelConfig, Net, build_model

GOAL_SECONDS = 2.0
IMAGES = 16
DEPTH = 20
TRAIN_STEPS = 150
REPEATS = 5
THREADS = 2
DATASETS = {
    "digits_8x8": DataConfig(name="digits", input_size=8),
    "shapes_16x16": DataConfig(name="shapes", input_size=16),
}


def trained_net(ds: Dataset, skip: bool, seed: int = 0) -> Net:
    """A depth-20 net after `TRAIN_STEPS` SGD steps on batches drawn from a seeded generator."""
    model = build_model(replace(ModelConfig(), **{**ds.model_fields(), "depth": DEPTH, "skip": skip}), seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(TRAIN_STEPS):
        idx = torch.randint(len(ds.x_train), (64,), generator=generator)
        loss = F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def summarize(times: list[float], result: AttributionResult) -> dict[str, object]:
    """Best and median seconds, the verdict, and for IG/DeepLift the steps and completeness reached."""
    row: dict[str, object] = {
        "seconds": round(min(times), 3),
        "median_seconds": round(statistics.median(times), 3),
        "meets_goal": min(times) < GOAL_SECONDS,
    }
    if result.completeness is not None:
        row["max_completeness_error"] = round(float(result.completeness.max()), 4)
    if result.method == "integrated_gradients":
        row["n_steps"] = sorted({int(s) for s in np.asarray(result.options["n_steps"])})
    return row


def main() -> None:
    torch.set_num_threads(THREADS)
    cases: dict[str, tuple[Net, torch.Tensor, torch.Tensor]] = {}
    for data_name, data_cfg in DATASETS.items():
        ds = load_dataset(data_cfg)
        for net_name, skip in (("residual", True), ("plain", False)):
            cases[f"{data_name}/{net_name}"] = (trained_net(ds, skip), ds.x_test[:IMAGES], ds.y_test[:IMAGES])
    times: dict[tuple[str, str], list[float]] = {}
    last: dict[tuple[str, str], AttributionResult] = {}
    unavailable: dict[str, dict[str, str]] = {}
    # Rounds over every (net, method) rather than back-to-back repeats: a burst of load from other
    # processes then spoils one round of many cells instead of every repeat of one cell.
    for round_index in range(REPEATS + 1):  # round 0 warms up
        for case, (model, x, y) in cases.items():
            for method in METHODS:
                start = time.perf_counter()
                try:
                    result = attribute(model, x, y, method)
                except MethodUnavailable as err:
                    unavailable.setdefault(case, {})[method] = err.reason
                    continue
                if round_index:
                    times.setdefault((case, method), []).append(time.perf_counter() - start)
                    last[case, method] = result
    results = {
        case: {m: summarize(times[case, m], last[case, m]) for m in METHODS if (case, m) in times} for case in cases
    }
    report = {
        "benchmark": "attribution seconds per method: best of repeats, snapshot included",
        "images": IMAGES,
        "depth": DEPTH,
        "train_steps": TRAIN_STEPS,
        "repeats": REPEATS,
        "goal_seconds": GOAL_SECONDS,
        "all_meet_goal": all(row["meets_goal"] for rows in results.values() for row in rows.values()),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "unavailable": unavailable,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
