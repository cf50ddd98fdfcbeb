"""Seconds per attribution method on 16 images of a depth-20 net, against the 2-second goal.

For each input size (8x8 digits, 16x16 shapes) a plain and a residual depth-20 net are briefly
trained in lockstep by the library's training loop (`briefly_trained`: trained nets are less linear than
fresh ones, so Integrated Gradients may refine more images), then every method in `METHODS` explains
16 test images. After a warm-up round, every (net, method) cell is timed in `REPEATS` rounds on 2
threads. The best time is judged against the goal (the usual reading of repeated timings: noise only
ever adds), the median is shown beside it, and so is the 1-minute load average, because other work on
the machine slows every number.

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

from resnet_viz.attribution import METHODS, AttributionResult, MethodUnavailable, attribute, briefly_trained
from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.models import ModelConfig, Net

GOAL_SECONDS = 2.0
IMAGES = 16
DEPTH = 20
EPOCHS = 7  # about 150 SGD steps: 7 epochs of 20 to 22 batches
REPEATS = 5
THREADS = 2
DATASETS = {
    "digits_8x8": DataConfig(name="digits", input_size=8),
    "shapes_16x16": DataConfig(name="shapes", input_size=16),
}


def trained_pair(data: DataConfig) -> dict[str, Net]:
    """A residual and a plain depth-20 net from one seed, briefly trained in lockstep, in eval mode."""
    base = replace(ModelConfig(), **{**data.model_fields(), "depth": DEPTH})
    return briefly_trained({"residual": base.with_skip(True), "plain": base.with_skip(False)}, data, EPOCHS)


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
        for net_name, model in trained_pair(data_cfg).items():
            cases[f"{data_name}/{net_name}"] = (model, ds.x_test[:IMAGES], ds.y_test[:IMAGES])
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
        "train_epochs": EPOCHS,
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
