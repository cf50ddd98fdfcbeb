"""A model's summary computed from its step records and config alone, as `training.summarize` computes it.

An imported run brings its own ``summary.json``; believing it would let a forged file show losses its
records never had. Everything in a summary follows from the records, the configs and the data size,
so the store recomputes it on import (and refuses a file whose summary disagrees) with this function:
the same arithmetic as `training.summarize` (``np.mean`` over the same values in the same order), but
without a Trainer or trained weights. The net is built on the meta device for its size and layer names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .models import ModelConfig, Net, conv_layer_names, count_params, flops_per_example
from .training import StepRecord, TrainConfig


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
        net = Net(cfg)
    steps = records[-1].step if records else 0
    last_epoch = [r.loss for r in records if r.step > steps - per_epoch]
    vals = [r for r in records if r.val_loss is not None]
    convs = conv_layer_names(net)
    first, last = list(layer_names).index(convs[0]), list(layer_names).index(convs[-1])
    early = [r.probes["grad_norm"] for r in records[:10] if r.probes]
    nan = math.nan
    return {
        "model": key,
        "status": "finished" if steps == per_epoch * train.epochs else "diverged",
        "message": message,
        "steps": steps,
        "params": count_params(net),
        "final_train_loss": float(np.mean(last_epoch)) if last_epoch else nan,
        "final_train_acc": float(np.mean([r.acc for r in records[-len(last_epoch) :]])) if last_epoch else nan,
        "final_val_loss": vals[-1].val_loss if vals else nan,
        "final_val_acc": vals[-1].val_acc if vals else nan,
        "first_layer_grad_norm": float(np.mean([g[first] for g in early])) if early else nan,
        "last_layer_grad_norm": float(np.mean([g[last] for g in early])) if early else nan,
        "seconds": records[-1].seconds if records else 0.0,
        "flops": flops_per_example(net, cfg),
    }
