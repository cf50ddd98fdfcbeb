"""Take a run home: "Python for this run" (a script that retrains it with the library) and "Download model".

The script comes from `codegen.run_script` for the run the lab shows (its configs, data, seed and live
skip-scale changes), or for the setup that Train would start when nothing has run yet. `st.code` has
a copy button; the download buttons build their files only when clicked.
"""

from __future__ import annotations

import functools
from pathlib import Path

import streamlit as st

from resnet_viz.codegen import LOAD_SNIPPET, data_file_name, model_bundle, run_script
from resnet_viz.data import FILE_DATASETS, UPLOAD, DataConfig, load_dataset
from resnet_viz.datasets import registry
from resnet_viz.lab import LabConfig
from resnet_viz.models import ModelConfig
from resnet_viz.runs import LiveRun, Replay
from resnet_viz.training import TrainConfig

from .text import safe_text


@functools.lru_cache(maxsize=64)
def _script(
    models: tuple[tuple[str, ModelConfig], ...],
    train: TrainConfig,
    data: DataConfig,
    events: tuple[tuple[str, int, float], ...],
    folder: Path | None,
) -> str:
    """`run_script`, written once per run: every full rerun of the lab (thirty at once when a class clicks
    Train) draws this panel, and writing the script took 3-8 ms of the server's CPU."""
    return run_script(dict(models), train, data, events, folder)


def python_panel(cfg: LabConfig, run: LiveRun | Replay | None) -> None:
    """The script for the shown run (or the current setup), with copy (on the code) and download buttons."""
    if run is not None:
        request, events = run.request, run.skip_events()
        st.caption(
            "Retrains the run shown below with the library: same configs, data and seed, so the same "
            "losses on a CPU with as many threads as the server gave it."
        )
    else:
        request, events = None, []
        st.caption("Trains the setup above with the library, as the Train button would.")
    models = request.models if request else cfg.models()
    train, data = (request.train, request.data) if request else (cfg.train, cfg.data)
    folder = registry.folder() if data.name in FILE_DATASETS else None
    try:
        script = _script(tuple(models.items()), train, data, tuple(events), folder)
    except ValueError as err:  # a data set that is no longer there
        st.error(safe_text(err, 300))
        return
    st.code(script, language="python")
    left, right, _ = st.columns([1, 1, 2])
    left.download_button(
        "Download script",
        script,
        "resnet_viz_run.py",
        "text/x-python",
        key="code.script",
        icon=":material/download:",
        on_click="ignore",
    )
    if data.name == UPLOAD:
        right.download_button(
            "Download data",
            lambda: registry.upload(data.upload).to_safetensors(),
            data_file_name(data.upload),
            "application/octet-stream",
            key="code.data",
            icon=":material/download:",
            on_click="ignore",
            help="the uploaded data set as safetensors: keep it beside the script",
        )


def _bundle(run: LiveRun | Replay) -> bytes:
    if isinstance(run, Replay):
        stored = run.run
        configs, states = stored.configs, {k: stored.weights(k) for k in stored.configs}
        scales = {k: stored.final_skip_scale(k) for k in stored.configs}
    else:
        trainer = run.trainer
        configs, states = trainer.configs, {k: m.state_dict() for k, m in trainer.models.items()}
        scales = {k: run.skip_scale(k) for k in trainer.configs}
    data = run.request.data
    return model_bundle(configs, states, scales, data, load_dataset(data).classes)


def model_panel(run: LiveRun | Replay | None) -> None:
    """Final weights (safetensors) and configs (JSON) of a finished run, and the snippet that loads them."""
    if run is None or not run.done or (isinstance(run, LiveRun) and run.trainer is None):
        st.caption("Train a run to the end to download its models.")
        return
    st.download_button(
        "Download model (zip)",
        lambda: _bundle(run),
        f"resnet_viz_models_{run.id[:8]}.zip",
        "application/zip",
        key="code.model",
        icon=":material/download:",
        on_click="ignore",
        help="<model>.safetensors (weights) and <model>.json (config, skip scale, classes) per model, "
        "and load_model.py",
    )
    st.code("import torch\n" + LOAD_SNIPPET, language="python")
