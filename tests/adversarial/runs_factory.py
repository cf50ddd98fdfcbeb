"""Exported runs for the adversarial tests: a genuine one (trained) and synthetic ones that are exactly what
training would write for their configs (every derived field right), to forge consistently or to be big."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from safetensors.torch import save as save_safetensors

from resnet_viz.archive import write_run_folder
from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.models import ModelConfig, build_model
from resnet_viz.store import FORMAT, SCHEMA_VERSION, _names
from resnet_viz.summary import summarize_records
from resnet_viz.training import History, StepRecord, TrainConfig, fit_to_data, lr_at, steps_per_epoch

PAIR = {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}
DIGITS = DataConfig(name="digits")


def synthetic_run(folder: Path, train: TrainConfig, loss_scale: float = 1.0) -> Path:
    """Write an exported folder of a run of PAIR on digits whose every field is consistent with `train`."""
    dataset = load_dataset(DIGITS)
    configs = {k: fit_to_data(c, dataset) for k, c in PAIR.items()}
    per_epoch = steps_per_epoch(len(dataset.y_train), train.batch_size)
    total = per_epoch * train.epochs
    names = {k: _names(c) for k, c in configs.items()}
    history = History({k: n[0] for k, n in names.items()}, {k: n[1] for k, n in names.items()})
    rng = random.Random(0)  # full-precision floats, as long in JSON as real measurements
    for step in range(1, total + 1):
        for k, cfg in configs.items():
            val = step % per_epoch == 0
            probed = bool(train.probe_every) and (step - 1) % train.probe_every == 0
            layers, blocks = len(names[k][0]), len(names[k][1])
            probes = {
                m: [rng.random() for _ in range(layers if m in ("grad_norm", "update_ratio") else blocks)]
                for m in ("grad_norm", "update_ratio", "block_grad_norm", "act_std")
            }
            history.records.append(
                StepRecord(
                    model=k,
                    step=step,
                    epoch=step / per_epoch,
                    lr=lr_at(train, step - 1, total),
                    loss=loss_scale * 2.3 * rng.random(),
                    acc=rng.random(),
                    skip_scale=cfg.alpha,
                    seconds=step * 0.01,
                    val_loss=rng.random() if val else None,
                    val_acc=0.9 if val else None,
                    probes=probes if probed else None,
                )
            )
    summaries = {
        k: summarize_records(k, cfg, train, per_epoch, [r for r in history.records if r.model == k], names[k][0])
        for k, cfg in configs.items()
    }
    models = {k: c.to_dict() for k, c in configs.items()}
    config = {"data": DIGITS.to_dict(), "train": train.to_dict(), "models": models}
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "key": "x",
        "created": time.time(),
        "models": list(configs),
    }
    weights = {k: save_safetensors(build_model(c).state_dict()) for k, c in configs.items()}
    return write_run_folder(folder, manifest, config, summaries, history, [], weights)


def edit_json(folder: Path, name: str, edit) -> None:
    path = folder / name
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))
