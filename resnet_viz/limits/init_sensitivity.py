"""Initialisation sensitivity: does a residual net train from any reasonable start?

The claim is that residual connections "reduce sensitivity to initialisation". What is known: a deep
plain net without normalisation needs a variance-preserving init to train at all (He et al. 2015,
"Delving deep into rectifiers", Fig. 3: a 30-layer plain net with Xavier init does not learn, with
Kaiming init it does), and a residual net's forward signal grows with depth unless the init or the
norm tames it (Zhang et al. 2019, "Fixup", Sec. 2). So the sweep measures it: init schemes and gains
(Kaiming x0.5, x1, x2, Xavier, PyTorch's default) x seeds, plain vs residual at one depth, and reports
the spread of the final training loss and the fraction of runs that fail (diverged, or ended near
chance: a loss of at least `FAIL_SHARE` of ln(classes)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from ..data import DataConfig
from ..models import ModelConfig
from ..runs import RunRequest
from ..store import StoredRun
from ..training import TrainConfig
from .runs import GridPoint

SCHEMES: tuple[tuple[str, float], ...] = (
    ("kaiming", 0.5),
    ("kaiming", 1.0),
    ("kaiming", 2.0),
    ("xavier", 1.0),
    ("pytorch", 1.0),
)
FAIL_SHARE = 0.9  # a final training loss >= 90% of the chance loss ln(classes) counts as a failure


def scheme_label(init: str, gain: float) -> str:
    return f"{init} x{gain:g}" if init == "kaiming" else init


def init_grid(
    base: ModelConfig,
    train: TrainConfig,
    data: DataConfig,
    seeds: Sequence[int] = (0, 1),
    schemes: Sequence[tuple[str, float]] = SCHEMES,
) -> list[GridPoint]:
    """One plain/residual run per scheme and seed (everything else as `base` and `train`)."""
    points = []
    for init, gain in schemes:
        cfg = replace(base, init=init, init_gain=gain)
        for seed in seeds:
            models = {"plain": cfg.with_skip(False), "residual": cfg.with_skip(True)}
            label = (("scheme", scheme_label(init, gain)), ("init", init), ("gain", gain), ("seed", seed))
            points.append(GridPoint(label, RunRequest(models, replace(train, seed=seed), data)))
    return points


def page_grid(depth: int = 20, norm: str = "none", epochs: int = 5, seeds: int = 2) -> list[GridPoint]:
    """The grid the Limits page trains for its widgets (their defaults here; `warm` stores this one): digits,
    SGD at lr 0.1 with BatchNorm and 0.02 without (an unnormalised plain net diverges at 0.1)."""
    data = DataConfig()
    base = ModelConfig(depth=depth, norm=norm, **data.model_fields())
    return init_grid(base, TrainConfig(epochs=epochs, lr=0.02 if norm == "none" else 0.1), data, range(seeds))


def init_table(runs: Sequence[tuple[GridPoint, StoredRun]]) -> pd.DataFrame:
    """One row per run and model: scheme, init, gain, seed, model, status, final_train_loss, failed."""
    rows = []
    for point, run in runs:
        chance = float(np.log(run.configs["residual"].num_classes))
        for model, s in run.summaries.items():
            loss = float(s["final_train_loss"])
            failed = s["status"] != "finished" or not np.isfinite(loss) or loss >= FAIL_SHARE * chance
            rows.append(
                {
                    **dict(point.label),
                    "model": model,
                    "status": s["status"],
                    "final_train_loss": loss,
                    "failed": bool(failed),
                }
            )
    return pd.DataFrame(rows)


def init_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per scheme and model: runs, failure fraction, and the median, min and max final training loss."""
    return table.groupby(["scheme", "model"], as_index=False, sort=False).agg(
        runs=("failed", "size"),
        fail_fraction=("failed", "mean"),
        median_loss=("final_train_loss", "median"),
        min_loss=("final_train_loss", "min"),
        max_loss=("final_train_loss", "max"),
    )


def init_verdict(table: pd.DataFrame) -> str:
    """Which schemes trained every run of a model and which failed some, for the chart's caption (at a small
    depth or budget Kaiming x1 may fail too: the caption reports it rather than claiming it trains)."""
    parts = []
    for model, rows in table.groupby("model", sort=False):
        failed = rows.groupby("scheme", sort=False).failed.mean()
        bad = [f"{scheme} ({share:.0%})" for scheme, share in failed.items() if share > 0]
        parts.append(f"{model}: " + ("every run trained" if not bad else "runs failed with " + ", ".join(bad)))
    return "Here: " + "; ".join(parts) + "." if parts else ""
