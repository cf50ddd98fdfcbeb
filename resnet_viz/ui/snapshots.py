"""Pick models A and B for analysis pages: from this session's lab run at a stored step, or fresh.

Analysis never touches a model a job is training: a snapshot is loaded into a fresh copy
(`training.model_at`), in eval mode, and cached per (run, model, step) for this session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st
from torch import nn

from resnet_viz.data import DataConfig
from resnet_viz.lab import LabConfig
from resnet_viz.models import ModelConfig, build_model
from resnet_viz.training import Snapshot, model_at

from .session import session_jobs
from .widgets import STATE_KEY, model_label

LAB_RUN, FRESH = "Lab run of this session", "Fresh from the lab setup (at initialisation)"
CACHE_KEY = "snapshots.models"  # session_state: {(run id, model key, step): nn.Module}


@dataclass
class ChosenModel:
    """One model to analyse: a fresh copy in eval mode, never the one being trained."""

    key: str  # "A" or "B"
    label: str  # legend label, as on the lab page ("A · plain 56")
    config: ModelConfig  # its config, input fields set by the data
    model: nn.Module  # the weights at `step`, eval mode
    step: int  # optimizer steps behind these weights (0: initialisation)
    seed: int = 0  # the run's seed: build_model(config, seed) gives its initial weights
    run_key: str | None = None  # store key of the run the weights come from; None for untrained models
    snapshots: list[Snapshot] = field(default_factory=list)  # the run's weight snapshots, by step (may be empty)


def _cached(run: int, key: str, step: int, build) -> nn.Module:
    cache: dict = st.session_state.setdefault(CACHE_KEY, {})
    if (run, key, step) not in cache:
        if len(cache) > 8:  # a handful of models at most per session
            cache.clear()
        cache[(run, key, step)] = build()
    return cache[(run, key, step)]


def choose_models(page: str) -> tuple[dict[str, ChosenModel], DataConfig, str]:
    """Widgets to pick the models; returns them, their dataset, and a sentence saying what they are."""
    jobs = session_jobs()
    job, cfg = jobs.lab, jobs.lab_config
    sources = [LAB_RUN, FRESH] if job is not None else [FRESH]
    source = st.radio("Models", sources, key=f"{page}.source", horizontal=True)
    if source == FRESH:
        setup: LabConfig = st.session_state.get(STATE_KEY) or LabConfig().normalized()
        seed = setup.train.seed
        chosen = {
            key: ChosenModel(key, model_label(key, c), c,
                             _cached(0, f"{key}:{hash(c)}:{seed}", 0, lambda c=c: build_model(c, seed).eval()), 0)
            for key, c in setup.models().items()
        }  # fmt: skip
        return chosen, setup.data, "Freshly built from the lab's setup, at initialisation (no training)."
    steps = sorted(set.intersection(*({s.step for s in snaps} for snaps in job.trainer.snapshots.values())))
    step = steps[-1]
    if len(steps) > 1:
        step = st.select_slider(
            "Training step (stored snapshots)", steps, value=steps[-1], key=f"{page}.step",
            format_func=lambda s: "init" if s == 0 else str(s),
        )  # fmt: skip
    chosen = {}
    for key, model_cfg in job.trainer.configs.items():
        snapshot = next(s for s in job.trainer.snapshots[key] if s.step == step)
        model = _cached(id(job), key, step, lambda key=key, snapshot=snapshot: model_at(job.trainer, key, snapshot))
        chosen[key] = ChosenModel(key, model_label(key, cfg.models()[key]), model_cfg, model, step)
    status = "still training" if not job.done else job.status
    return chosen, cfg.data, f"The lab run of this session ({status}), at step {step}."
