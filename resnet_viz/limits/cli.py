"""``python -m resnet_viz limits <analysis>``: the analyses of the Limits & pitfalls page on the command line.

``lesions``, ``calibration``, ``robustness`` analyse the plain/residual pair of the config flags, trained
once through the run store; ``cost`` measures that config at several depths; ``init`` and ``global``
train (or load) their grids. ``--json`` prints one line: {"analysis": ..., "tables": {name: rows}}.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace

import pandas as pd

from ..data import DataConfig, load_dataset
from ..models import ConfigError, ModelConfig
from ..runs import RunRequest, RunService
from ..store import RunStore
from ..training import TrainConfig
from .calibration import calibration_study
from .cost import cost_table
from .global_reasoning import corners_grid, global_reasoning_table
from .init_sensitivity import init_grid, init_summary, init_table
from .lesions import lesion_study, path_gradients
from .robustness import robustness_study
from .runs import GridTask

ANALYSES = ("lesions", "calibration", "robustness", "cost", "init", "global")
Configs = Callable[[argparse.Namespace], tuple[ModelConfig, TrainConfig, DataConfig]]


def add_parser(sub: argparse._SubParsersAction, add_config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("limits", help="limits of ResNets, measured: lesions, calibration, robustness, cost, ...")
    p.add_argument("analysis", choices=ANALYSES, help="which analysis")
    add_config_flags(p)
    p.add_argument("--seeds", type=int, default=2, help="init: seeds per scheme (1 to 3)")
    p.add_argument("--store", metavar="DIR", default=None, help="run store folder (default: the app's)")
    p.add_argument("--json", action="store_true", help="print one JSON line with the tables")


def tables_for(args: argparse.Namespace, configs: Configs) -> dict[str, pd.DataFrame]:
    """The analysis' tables; raises ConfigError naming a bad field."""
    model, train, data = configs(args)
    model = replace(model, **data.model_fields()).validate()
    if model.family not in ("cnn", "mlp"):
        raise ConfigError(
            "dataset",
            f"the limits analyses study CNNs and MLPs (image or 2-D point data); {data.name} trains a "
            f"{model.family}: see the training lab's charts, or the loss landscape",
        )
    service = RunService(RunStore(args.store))
    if args.analysis == "cost":
        return {"cost": cost_table(model)}
    if args.analysis in ("init", "global"):
        if not 1 <= args.seeds <= 3:
            raise ConfigError("seeds", f"must be 1 to 3; got {args.seeds}")
        seeds = range(train.seed, train.seed + args.seeds)
        points = init_grid(model, train, data, seeds) if args.analysis == "init" else corners_grid()
        task = GridTask(points, service, "cli")
        task.run()
        if task.status != "finished":
            raise ConfigError("runs", task.message or task.status)
        if args.analysis == "global":
            return {"global_reasoning": global_reasoning_table(task.view().runs)}
        table = init_table(task.view().runs)
        return {"runs": table, "summary": init_summary(table)}
    run = service.fetch(
        RunRequest({"plain": model.with_skip(False), "residual": model.with_skip(True)}, train, data), "cli"
    )
    if run is None:
        raise ConfigError("runs", "the plain/residual pair did not finish training")
    models, dataset = {k: run.model(k) for k in run.configs}, load_dataset(data)
    if args.analysis == "lesions":
        result = lesion_study(models, dataset)
        return {"single": result.single, "k_random": result.k_random, "paths": path_gradients(models, dataset)}
    if args.analysis == "calibration":
        result = calibration_study(models, dataset)
        return {"summary": result.summary, "reliability": result.reliability}
    return {"robustness": robustness_study(models, dataset)}


def run(args: argparse.Namespace, configs: Configs) -> int:
    tables = tables_for(args, configs)
    if args.json:
        rows = {name: json.loads(t.to_json(orient="records")) for name, t in tables.items()}  # NaN -> null
        print(json.dumps({"analysis": args.analysis, "tables": rows}))
    else:
        for name, table in tables.items():
            print(f"== {name}")
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0
