"""Benchmark: theoretical and effective receptive fields of CIFAR-style nets on 2 CPU threads.

Run from the repository root: ``python -m benchmarks.bench_receptive_field [--repeats 3]``.
Prints one JSON object. Every case runs once to warm up, then `repeats` times; we report the best
run (the cost of the code: on a shared machine the other runs also measure the neighbours, which
the 1-minute load averages before and after show) and the median. The goal is every default layer
of a depth-56 net, plain and residual, in under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from resnet_viz.models import ModelConfig, build_model  # noqa: E402
from resnet_viz.receptive_field import DEFAULT_SAMPLES, erf_all_layers, theoretical_rf  # noqa: E402

GOAL_S = 2.0  # every default ERF layer of a depth-56 net
THREADS = 2  # the target machine: 2 CPU cores
INPUT_SIZE = 32  # image side for the theoretical fields (they do not depend on it)


def _timed(fn: Callable[[], object], repeats: int) -> tuple[dict[str, float], object]:
    """Best and median wall-clock seconds of `repeats` runs after one warm-up; the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {"best": round(min(times), 3), "median": round(statistics.median(times), 3)}, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case, after one warm-up")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()[0]

    model56 = build_model(ModelConfig(depth=56), seed=0)
    theory, infos = _timed(lambda: theoretical_rf(model56, INPUT_SIZE), args.repeats)
    theory["layers"] = len(infos)

    erf: dict[str, dict[str, object]] = {}
    for depth in (20, 56):
        for skip, kind in ((False, "plain"), (True, "residual")):
            model = build_model(ModelConfig(depth=depth, skip=skip), seed=0)
            timing, results = _timed(lambda model=model: erf_all_layers(model), args.repeats)
            timing["layers"] = len(results)
            timing["canvases"] = sorted({r.canvas_size for r in results.values()})
            timing["deepest_rf"] = max(r.theoretical.size for r in results.values())
            erf[f"depth{depth}_{kind}"] = timing

    deep = [erf["depth56_plain"]["best"], erf["depth56_residual"]["best"]]
    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "erf_samples_per_layer": DEFAULT_SAMPLES,
        "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "theoretical_rf_depth56_s": theory,
        "erf_all_default_layers_s": erf,
        "goal_s": GOAL_S,
        "goal": "erf_all_layers on every default layer of depth 56, plain and residual, best run",
        "goal_met": max(deep) < GOAL_S,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
