"""The depth study's custom sweep form: one model config, a training budget and a grid of depths and seeds.

Every limit comes from the option table (`resnet_viz.options`) that the lab form, the URL and the
CLI use, so a sweep accepts exactly the values a lab run accepts; the grid follows the depth rule of
the chosen block (6n+2 basic, 9n+2 bottleneck, 2n+2 MLP; He et al. 2015, Sec. 4.2). The form's values
survive a visit to another page (Streamlit drops widget state there; a plain copy is kept).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from resnet_viz.data import DataConfig
from resnet_viz.models import FAMILY_NORMS, ConfigError, ModelConfig
from resnet_viz.options import OPTIONS, Range, allowed_depths, depth_rule
from resnet_viz.sweep import DEFAULT_DEPTHS, MAX_SEEDS, ORDER_LABELS, SweepConfig, classroom_sweep
from resnet_viz.training import TrainConfig

from .data_upload import dataset_options, from_choice
from .widgets import DATASET_HELP, default, number

K = "depth."  # the depth study's widget prefix


def _choice(key: str, options: list[Any]) -> None:
    """Keep a choice widget's state one of its options."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]


def _range(name: str) -> Range:
    option = OPTIONS[name]
    assert isinstance(option, Range)
    return option


def _number(label: str, name: str, disabled: bool, note: str, **kwargs: Any) -> Any:
    """The options table's number input for setting `name`, with what it is for and its limits as help."""
    text = f"{note}; {_range(name).describe()}"
    return number(label, K + name, name, disabled=disabled, help=text, **kwargs)


def _seed_defaults() -> list[str]:
    """Put the last values (or the classroom sweep's) into the form's widget state; returns the field names."""
    preset = classroom_sweep()
    values = {
        "depths": list(preset.depths),
        "seeds": len(preset.seeds),
        "block": preset.model.block,
        "width": preset.model.width,
        "norm": preset.model.norm,
        "order": preset.model.order,
        "shortcut": preset.model.shortcut,
        "dataset": preset.data.name,
        "epochs": preset.train.epochs,
        "lr": preset.train.lr,
        "batch_size": preset.train.batch_size,
        "warmup_steps": preset.train.warmup_steps,
    }
    saved = st.session_state.get(K + "form", {})  # widget state is dropped on other pages; this copy is not
    for name, value in values.items():
        default(K + name, saved.get(name, value))
    return list(values)


def _sync_depths(kind: str, options: list[int]) -> None:
    """Keep the chosen depths valid when the block or data family changes (their depth rules differ)."""
    key = K + "depths"
    chosen = [d for d in st.session_state.get(key, []) if d in options]
    if st.session_state.get(K + "depth_kind", kind) != kind and not chosen:
        chosen = list(DEFAULT_DEPTHS[kind])
    st.session_state[key] = chosen
    st.session_state[K + "depth_kind"] = kind


def _radio(label: str, name: str, disabled: bool, **kwargs: Any) -> str:
    """A horizontal radio over the values the option table allows for setting `name`."""
    values = list(OPTIONS[name].values)
    return st.radio(label, values, key=K + name, horizontal=True, disabled=disabled, **kwargs)


def _train_column(disabled: bool, slots: dict[str, Any]) -> tuple[DataConfig, TrainConfig]:
    st.markdown("**Data and training**")
    current = DataConfig(**from_choice(st.session_state.get(K + "dataset", "digits")))
    options = dataset_options(current, sequences_and_graphs=False)
    _choice(K + "dataset", list(options))
    choice = st.selectbox(
        "Dataset",
        list(options),
        key=K + "dataset",
        disabled=disabled,
        format_func=lambda d: f"{d}: {DATASET_HELP[d]}" if d in DATASET_HELP else options[d],
        help="built-in sets, MNIST/CIFAR files found in the data folder, and the uploads of the training lab",
    )
    slots["dataset"] = st.empty()
    epochs = _number("Epochs", "epochs", disabled, "the same budget for every run; time grows with it", step=1)
    slots["epochs"] = st.empty()
    lr = _number(
        "Learning rate", "lr", disabled, "peak learning rate of SGD with momentum 0.9 (cosine schedule)", format="%.4g"
    )
    slots["lr"] = st.empty()
    batches = _range("batch_size").options(st.session_state[K + "batch_size"])
    batch = st.select_slider("Batch size", batches, key=K + "batch_size", disabled=disabled)
    slots["batch_size"] = st.empty()
    warmup = _number(
        "Warm-up steps", "warmup_steps", disabled, "linear warm-up of the learning rate; deep nets need a little"
    )
    slots["warmup_steps"] = st.empty()
    train = TrainConfig(epochs=int(epochs), lr=float(lr), batch_size=int(batch), warmup_steps=int(warmup))
    return DataConfig(**from_choice(choice)), train


def _model_column(disabled: bool, family: str, slots: dict[str, Any]) -> dict[str, Any]:
    st.markdown("**Model** (both nets)")
    widths = _range("width").options(st.session_state[K + "width"])
    values: dict[str, Any] = {}
    values["width"] = st.select_slider(
        "Width",
        widths,
        key=K + "width",
        disabled=disabled,
        help="channels of the first stage (doubling per stage) or hidden units",
    )
    slots["width"] = st.empty()
    norms = list(FAMILY_NORMS[family])  # the option table also lists LayerNorm, which CNNs and MLPs do not take
    _choice(K + "norm", norms)
    values["norm"] = st.radio("Normalisation", norms, key=K + "norm", horizontal=True, disabled=disabled)
    slots["norm"] = st.empty()
    values["order"] = _radio(
        "Block order",
        "order",
        disabled,
        format_func=lambda o: ORDER_LABELS.get(o, o),
        help="post: conv-BN-ReLU, add, ReLU (He et al. 2015); pre: BN-ReLU-conv, add",
    )
    slots["order"] = st.empty()
    shortcut = _radio(
        "Shortcut",
        "shortcut",
        disabled or family == "mlp",
        help="identity: zero-padded, no parameters (option A); projection: 1x1 conv where the shape changes (option B)",
    )
    values["shortcut"] = shortcut if family == "cnn" else "identity"
    slots["shortcut"] = st.empty()
    return values


def _grid_column(disabled: bool, family: str, slots: dict[str, Any]) -> tuple[str, list[int], int]:
    st.markdown("**Grid**")
    block = _radio(
        "Block",
        "block",
        disabled or family == "mlp",
        help="basic: 3x3-3x3 (depth 6n+2); bottleneck: 1x1-3x3-1x1 (depth 9n+2)",
    )
    if family == "mlp":
        st.caption("2-D point data trains MLPs: basic blocks, depth 2n+2.")
        block = "basic"
    slots["block"] = st.empty()
    options = allowed_depths(family, block)
    _sync_depths(depth_rule(family, block), options)
    depths = st.multiselect(
        "Depths (weighted layers)",
        options,
        key=K + "depths",
        disabled=disabled,
        help=f"each depth trains a plain and a residual net; allowed: {options[0]}, {options[1]}, ... up to "
        f"{options[-1]}",
    )
    slots["depths"] = st.empty()
    seeds = st.slider(
        "Seeds per depth",
        1,
        MAX_SEEDS,
        key=K + "seeds",
        disabled=disabled,
        help="seeds 0, 1, 2: different init and batch order; charts show the spread",
    )
    slots["seeds"] = st.empty()
    return block, depths, seeds


def sweep_form(disabled: bool) -> tuple[SweepConfig, dict[str, Any]]:
    """Widgets for a custom sweep; returns the config and an empty slot per validated field for its message."""
    names = _seed_defaults()
    slots: dict[str, Any] = {}
    grid, model_col, train_col = st.columns(3, gap="medium")
    with train_col:
        data, train = _train_column(disabled, slots)
    family = data.model_fields()["family"]
    with model_col:
        model = _model_column(disabled, family, slots)
    with grid:
        block, depths, seeds = _grid_column(disabled, family, slots)
    st.session_state[K + "form"] = {name: st.session_state[K + name] for name in names}
    config = SweepConfig(
        depths=tuple(sorted(depths)),
        seeds=tuple(range(int(seeds))),
        model=ModelConfig(family=family, block=block, **model),
        train=train,
        data=data,
    )
    return config, slots


def validate(config: SweepConfig, slots: dict[str, Any]) -> ConfigError | None:
    """The config's first problem, also shown next to its control when the form has one for its field."""
    try:
        config.validate()
    except ConfigError as err:
        if err.field in slots:
            slots[err.field].error(f"**{err.field}**: {err.message}")
        return err
    return None
