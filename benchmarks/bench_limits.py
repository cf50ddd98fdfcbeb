"""Benchmark: the Limits & pitfalls analyses of a plain/residual pair on 2 CPU threads.

Run from the repository root: ``python -m benchmarks.bench_limits [--repeats 2]``. Prints one JSON object
with the best and median seconds of each analysis for depth-20 and depth-56 pairs (fresh weights: the
cost does not depend on them) on the digits test split. Goals (issue 12): each analysis of a depth-20
pair under 3 s, of a depth-56 pair under 10 s; single-block lesions of a depth-56 net under 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.limits import calibration, cost, lesions, robustness
from resnet_viz.models import ModelConfig, build_model

THREADS = 2  # the target machine: 2 CPU cores


def _timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"best": round(min(times), 3), "median": round(statistics.median(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    ds = load_dataset(DataConfig())
    results: dict[str, object] = {}
    for depth in (20, 56):
        cfg = ModelConfig(depth=depth)
        pair = {"plain": build_model(cfg.with_skip(False)).eval(), "residual": build_model(cfg).eval()}
        results[f"depth{depth}"] = {
            "lesions": _timed(lambda pair=pair: lesions.lesion_study(pair, ds), args.repeats),
            "single_lesions_one_net": _timed(
                lambda pair=pair: lesions.lesion_study({"r": pair["residual"]}, ds, samples=0, max_ks=0), args.repeats
            ),
            "paths": _timed(lambda pair=pair: lesions.path_gradients(pair, ds), args.repeats),
            "calibration": _timed(lambda pair=pair: calibration.calibration_study(pair, ds), args.repeats),
            "robustness": _timed(lambda pair=pair: robustness.robustness_study(pair, ds), args.repeats),
        }
    results["cost_table"] = _timed(lambda: cost.cost_table(ModelConfig()), 1)
    print(
        json.dumps(
            {
                "threads": args.threads,
                "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
                "seconds": results,
            }
        )
    )


if __name__ == "__main__":
    main()
