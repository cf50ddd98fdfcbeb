"""A model's summary computed from its step records and config alone, as `training.summarize` computes it.

An imported run brings its own ``summary.json``; believing it would let a forged file show losses its
records never had. Everything in a summary follows from the records, the configs and the data size,
so the store recomputes it on import (and refuses a file whose summary disagrees) with this function:
`training.records_summary`, as `training.summarize` uses it, but without a Trainer or trained weights
(the status follows from the step count; the net is built on the meta device for its size and layer
names).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .models import ModelConfig, flops_per_example, network
from .training import StepRecord, TrainConfig, records_summary


def summarize_records(
    key: str,
    cfg: ModelConfig,
    train: TrainConfig,
    per_epoch: int,
    records: Sequence[StepRecord],
    layer_names: Sequence[str],
    message: str = "",
) -> dict[str, object]:
    """The summary of model `key` of a complete run (finished or diverged) plus its forward FLOPs.

    `records` are the model's own records in step order; `cfg` is fitted to the data. The status is
    what the records show: a model that reached the last step finished, one that stopped before it
    diverged (a stopped run is never stored). `message` is the divergence message, kept as given:
    the loss that ended training is not in any record, so the caller checks its form.
    """
    with torch.device("meta"):
        net = network(cfg)
    steps = records[-1].step if records else 0
    status = "finished" if steps == per_epoch * train.epochs else "diverged"
    summary = records_summary(key, net, records, per_epoch, layer_names, status, message)
    return summary | {"flops": flops_per_example(net, cfg)}
