"""Shared widgets: the lab configuration form, URL sync, charts with captions, the sidebar status."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from hashlib import sha256
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from resnet_viz.data import DATASETS, FILE_DATASETS, UPLOAD, DataConfig
from resnet_viz.lab import PRESETS, LabConfig, UrlIssue, decode, encode, preset_from, setting_label, setup_markdown
from resnet_viz.models import FAMILY_NORMS, ModelConfig
from resnet_viz.options import OPTIONS, Range
from resnet_viz.training import TrainConfig

from .data_upload import dataset_options, from_choice
from .text import safe_text

STATE_KEY = "lab.config"  # the LabConfig the widgets currently show
URL_ERRORS_KEY = "lab.url_errors"  # (config decoded from the URL, issues about values it did not use)
SEEN_KEY = "lab.form_seen"  # (config, widget states) as the form last drew them
# Every widget key of the lab form (and the non-widget config keys it seeds beside them).
FORM_KEYS = tuple(
    f"lab.{part}.{name}"
    for part, fields in (("data", DataConfig()), ("train", TrainConfig()), ("a", ModelConfig()), ("b", ModelConfig()))
    for name in fields.to_dict()
) + ("lab.linked",)
WIDTHS = list(OPTIONS["width"].ticks)  # the width slider's stops (any width in range is allowed)
DATASET_HELP = {
    "digits": "scikit-learn's 8x8 handwritten digits, 10 classes",
    "shapes": "generated squares, disks, triangles, crosses with ground-truth masks",
    "corners": "a square or a cross in two opposite corners: same shape or not (needs a global view)",
    "spirals": "two interleaved 2-D spirals (MLPs)",
    "moons": "two interleaved half circles (MLPs)",
    "circles": "a ring around a disk (MLPs)",
    "xor": "four quadrants, diagonal classes alike (MLPs)",
    "sort": "sequences of digits to sort, position by position (Transformers)",
    "sbm": "small graphs of four communities with noisy node features (graph networks)",
}
# The size and count widgets of sequence and graph data: (size label, its help, count label)
SIZES = {
    "sort": ("Sequence length", "tokens per sequence; every output token depends on all of them", "Sequences"),
    "sbm": ("Nodes per graph", "four communities of equal size; about 3 neighbours inside, 1 outside", "Graphs"),
}
ORDER_HELP = {
    "cnn": "post: conv-BN-ReLU, add, ReLU (He et al. 2015); pre: BN-ReLU-conv, add (He et al. 2016)",
    "mlp": "post: linear-BN-ReLU, add, ReLU (He et al. 2015); pre: BN-ReLU-linear, add (He et al. 2016)",
    "transformer": "post-LN: x = LN(x + F(x)) (Vaswani et al. 2017); pre-LN: x = x + F(LN(x)) (Xiong et al. 2020)",
    "gcn": "post: conv-norm, add, ReLU (a plain GCN layer); pre: norm-ReLU-conv, add (DeepGCN res+)",
}
WIDTH_HELP = {
    "cnn": "channels of the first stage (doubling at each stage)",
    "mlp": "hidden units of every layer",
    "transformer": "d_model: the width of every token's vector along the residual stream",
    "gcn": "hidden features per node",
}


# Plotly's own options. A short mode bar (save, zoom, pan, reset), upright by the shared template
# (`figures.common`). The buttons dropped here are rarely used, but for Plotly.js 3's "Share chart..." (on
# the live board), which uploads the chart to Plotly Cloud: a classroom's charts, of its own uploaded data
# too, stay on its server.
CHART_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png"},
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d", "sendChartToCloud"],
}


def relabelled_key(key: str, options: Sequence[Any], *labelled_by: object) -> str:
    """The widget key of a box whose option labels depend on `labelled_by` (the models shown, ...).

    Streamlit keeps a keyed box's shown label when only its options' labels change: after a switch of models
    the attributions image box read "true triangle" over a digit. So the widget's key names what labels it;
    the value picked last, kept under `key` (set it after the widget), carries over when it is an option.
    """
    widget = f"{key}.{sha256(repr(labelled_by).encode()).hexdigest()[:12]}"
    state = st.session_state
    if state.get(widget) not in options:
        if state.get(key) in options:
            state[widget] = state[key]
        else:
            state.pop(widget, None)
    return widget


def chart(fig: go.Figure, caption: str, key: str) -> None:
    """A Plotly chart at full width with its one-line 'what to look for' caption."""
    st.plotly_chart(fig, key=key, config=CHART_CONFIG)
    st.caption(caption)


def fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# --------------------------------------------------------------------------------------------------
# URL <-> widgets


def _set_widgets(cfg: LabConfig) -> None:
    """Seed every widget's state from a config (first load, preset link, pasted URL)."""
    state = st.session_state
    for part, obj in (("data", cfg.data), ("train", cfg.train), ("a", cfg.a), ("b", cfg.b)):
        for name, value in obj.to_dict().items():
            state[f"lab.{part}.{name}"] = value
    state["lab.linked"] = cfg.linked
    state[STATE_KEY] = cfg


def sync_from_url() -> tuple[LabConfig, list[UrlIssue], str | None]:
    """The lab config to show: from the URL when it carries a different one, else the session's.

    Returns (config, issues about URL values that were not used, preset key if the URL names one).
    """
    params = {key: st.query_params.get_all(key) for key in st.query_params}
    current: LabConfig | None = st.session_state.get(STATE_KEY)
    preset, preset_issues = preset_from(params)
    config_params = {k: v for k, v in params.items() if k != "preset"}
    if current is not None and not config_params and not preset and not preset_issues:
        return current, [], None  # navigation dropped the URL: keep what the user set (written back below)
    cfg, issues = decode(config_params, PRESETS[preset].config if preset else None)  # `?preset=depth` alone works
    if current is None or cfg != current:
        _set_widgets(cfg)
        st.session_state[URL_ERRORS_KEY] = (cfg, preset_issues + issues)
    # Messages about the URL stay up until the user changes the config they were about.
    shown_for, messages = st.session_state.get(URL_ERRORS_KEY, (None, []))
    if preset and PRESETS[preset].config.normalized() != cfg:
        preset = None  # the URL names a preset but carries another config: it is no longer that demo
    return cfg, messages if shown_for == cfg else [], preset


def url_issue(issue: UrlIssue) -> None:
    """One ignored URL value as a warning: key, problem and default are ours, the value is shown as literal text."""
    got = safe_text(issue.value) + issue.cut
    st.warning(f"Ignored a value in the URL: {issue.key} {issue.problem}; got {got}, using {issue.used}.")


def write_url(cfg: LabConfig, preset: str | None, run_id: str | None = None) -> None:
    """The config (and the live run this tab watches, so a reload re-attaches to it) into the URL."""
    params = encode(cfg)
    if preset and PRESETS[preset].config.normalized() == cfg:
        params["preset"] = preset
    if run_id:
        params["run"] = run_id
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


# --------------------------------------------------------------------------------------------------
# The form


def default(key: str, value: Any) -> None:
    """Give a widget's state its first value (a widget with a key takes its value from the state)."""
    if key not in st.session_state:
        st.session_state[key] = value


def _nearest(key: str, options: list[Any]) -> None:
    """Make a choice widget's state one of its options: the nearest depth when the block rule changes."""
    value = st.session_state[key]
    if value not in options:
        st.session_state[key] = min(options, key=lambda o: abs(o - value))


def _stops(key: str, name: str) -> list[float]:
    """A select slider's stops for setting `name`: its ticks plus the current (allowed) value."""
    option = OPTIONS[name]
    assert isinstance(option, Range)
    return option.options(st.session_state[key])


def number(label: str, key: str, name: str, **kwargs: Any) -> Any:
    """A number input with the range of setting `name` from the options table (whole numbers for
    integer settings); every form uses it, so a widget never allows what the validators refuse.

    A box the user empties keeps its last number, and says so: Streamlit's own number input put its
    minimum in an emptied box (a learning rate of 1e-05, one epoch) without a word."""
    option = OPTIONS[name]
    assert isinstance(option, Range)
    low, high = (int(option.low), int(option.high)) if option.integer else (option.low, option.high)
    value = st.number_input(label, min_value=low, max_value=high, value=None, key=key, **kwargs)
    last = f"{key}.last"
    if value is None:
        value = st.session_state.get(last, low)
        st.caption(f"{label} is empty: {value:g} is used. Type a number from {low:g} to {high:g}.")
    st.session_state[last] = value
    return value


def _valid(key: str, options: list[Any], fallback: Any) -> None:
    """Make a choice widget's state one of its options: another family's choice becomes this family's."""
    if st.session_state[key] not in options:
        st.session_state[key] = fallback


def _model_form(part: str, cfg: ModelConfig, *, skip_only: bool, disabled: bool) -> ModelConfig:
    """Widgets for one model; returns the config they describe. Depth choices follow the block rule, the
    other choices the family (heads for Transformers, each family's norms)."""
    k = f"lab.{part}."
    for name, value in cfg.to_dict().items():
        default(k + name, value)
    values: dict[str, Any] = {}
    family = cfg.family
    if not skip_only:
        if cfg.family == "cnn":
            values["block"] = st.radio(
                setting_label("block", family),
                OPTIONS["block"].values,
                key=k + "block",
                horizontal=True,
                disabled=disabled,
                help="basic: 3x3-3x3 (6n+2 layers); bottleneck: 1x1-3x3-1x1 (9n+2 layers)",
            )
        probe = replace(cfg, **values)
        depths = probe.allowed_depths()
        _nearest(k + "depth", depths)  # the block changed: the nearest depth its rule allows
        depth_help = {"transformer": "2 per encoder layer (attention, MLP) plus embedding and head"}.get(family)
        values["depth"] = st.select_slider(
            setting_label("depth", family), depths, key=k + "depth", disabled=disabled, help=depth_help
        )
        values["width"] = st.select_slider(
            setting_label("width", family),
            _stops(k + "width", "width"),
            key=k + "width",
            disabled=disabled,
            help=WIDTH_HELP[family],
        )
        if family == "transformer":
            heads = [h for h in range(1, int(OPTIONS["heads"].high) + 1) if values["width"] % h == 0]
            _valid(k + "heads", heads, max(heads))
            values["heads"] = st.select_slider(
                setting_label("heads", family),
                heads,
                key=k + "heads",
                disabled=disabled,
                help="each head sees width/heads features",
            )
    values["skip"] = st.toggle(setting_label("skip", family), key=k + "skip", disabled=disabled)
    values["skip_scale"] = st.slider(
        setting_label("skip_scale", family),
        0.0,
        1.0,
        step=0.05,
        key=k + "skip_scale",
        disabled=disabled or not values["skip"],
        help="out = F(x) + α·x: 0 is the plain net, 1 the ResNet. Can be changed while training.",
    )
    if skip_only:
        return replace(cfg, **values)
    if family in ("cnn", "mlp"):  # the width never changes in Transformers and GCNs: identity only
        values["shortcut"] = st.radio(
            setting_label("shortcut", family),
            OPTIONS["shortcut"].values,
            key=k + "shortcut",
            horizontal=True,
            disabled=disabled,
            help="identity: zero-padded where channels grow, no parameters (He et al. option A); "
            "projection: 1x1 conv where the shape changes (option B)",
        )
        if values["shortcut"] == "projection" and not values["skip"]:
            st.caption("A plain net has no shortcuts, so the shortcut type has no effect.")
    norms = list(FAMILY_NORMS[family])
    _valid(k + "norm", norms, cfg.norm)  # `cfg` is fitted to the data: its norm is one of its family's
    values["norm"] = st.radio(setting_label("norm", family), norms, key=k + "norm", horizontal=True, disabled=disabled)
    values["order"] = st.radio(
        setting_label("order", family),
        OPTIONS["order"].values,
        key=k + "order",
        horizontal=True,
        disabled=disabled,
        help=ORDER_HELP[family],
    )
    values["init"] = st.selectbox(
        setting_label("init", family), OPTIONS["init"].values, key=k + "init", disabled=disabled
    )
    values["zero_init_last"] = st.checkbox(
        setting_label("zero_init_last", family),
        key=k + "zero_init_last",
        disabled=disabled,
        help="each residual block starts as the identity (Goyal et al. 2017)",
    )
    if values["zero_init_last"] and not values["skip"]:
        st.caption("Ignored for a plain net: a zero last layer would cut its signal.")
    return replace(cfg, **values)


def _data_form(cfg: DataConfig, disabled: bool) -> DataConfig:
    k = "lab.data."
    for name, value in cfg.to_dict().items():
        default(k + name, value)
    if st.session_state[k + "name"] == UPLOAD:  # an uploaded data set is chosen by its content hash
        st.session_state[k + "name"] = st.session_state[k + "upload"]
    options = dataset_options(cfg)
    if st.session_state[k + "name"] not in options:  # e.g. an upload chosen in another tab's store view
        st.session_state[k + "name"] = cfg.name if cfg.name in options else DataConfig().name
    labels = {d: f"{d}: {DATASET_HELP[d]}" if d in DATASET_HELP else text for d, text in options.items()}
    choice = st.selectbox("Dataset", list(options), key=k + "name", disabled=disabled, format_func=labels.get)
    values: dict[str, Any] = from_choice(choice)
    same = values["name"] == cfg.name and cfg.name not in FILE_DATASETS  # keep what the widgets do not show
    values |= {"color": "grey", "n_samples": cfg.n_samples if same else DataConfig().n_samples}
    image = replace(cfg, **values).is_image
    if values["name"] in ("digits", "shapes") or (image and values["name"] not in DATASETS):
        values["input_size"] = st.select_slider(
            "Image size (px)",
            _stops(k + "input_size", "input_size"),
            key=k + "input_size",
            disabled=disabled,
            help="digits are 8x8; larger sizes upsample them (slower: about 2.5x per doubling)",
        )
    if image and values["name"] not in DATASETS:
        values["color"] = st.radio(
            "Colour",
            OPTIONS["color"].values,
            key=k + "color",
            horizontal=True,
            disabled=disabled,
            help="grey: 1 channel (luma); rgb: 3 channels",
        )
    if values["name"] in SIZES:
        label, help_text, count = SIZES[values["name"]]
        values["input_size"] = st.select_slider(
            label, _stops(k + "input_size", "input_size"), key=k + "input_size", disabled=disabled, help=help_text
        )
        values["n_samples"] = number(
            count,
            k + "n_samples",
            "n_samples",
            step=100,
            disabled=disabled,
            help="70% train, 15% validation, 15% test",
        )
    if values["name"] in FILE_DATASETS:
        values["n_samples"] = number(
            "Examples (subset of the training files)", k + "n_samples", "n_samples", step=100, disabled=disabled
        )
    if values["name"] in DATASETS and values["name"] not in ("digits", "sort"):
        noise = OPTIONS["noise"]
        values["noise"] = st.slider("Noise", noise.low, noise.high, step=0.05, key=k + "noise", disabled=disabled)
    return replace(cfg, **values)


def _train_form(cfg: TrainConfig, disabled: bool) -> TrainConfig:
    k = "lab.train."
    for name, value in cfg.to_dict().items():
        default(k + name, value)
    v: dict[str, Any] = {}
    v["epochs"] = number("Epochs", k + "epochs", "epochs", step=1, disabled=disabled)
    v["batch_size"] = st.select_slider(
        "Batch size", _stops(k + "batch_size", "batch_size"), key=k + "batch_size", disabled=disabled
    )
    v["optimizer"] = st.radio(
        "Optimizer", OPTIONS["optimizer"].values, key=k + "optimizer", horizontal=True, disabled=disabled
    )
    v["lr"] = number(
        "Learning rate",
        k + "lr",
        "lr",
        format="%.4g",
        disabled=disabled,
        help=f"{OPTIONS['lr'].describe()}; above about 1 most nets diverge, and the run stops and says so",
    )
    if v["optimizer"] == "sgd":
        momentum = OPTIONS["momentum"]
        v["momentum"] = st.slider(
            "Momentum", momentum.low, momentum.high, step=0.01, key=k + "momentum", disabled=disabled
        )
    v["weight_decay"] = number("Weight decay", k + "weight_decay", "weight_decay", format="%.4g", disabled=disabled)
    v["warmup_steps"] = number("Warm-up steps", k + "warmup_steps", "warmup_steps", disabled=disabled)
    v["schedule"] = st.radio(
        "LR schedule", OPTIONS["schedule"].values, key=k + "schedule", horizontal=True, disabled=disabled
    )
    v["seed"] = number("Seed", k + "seed", "seed", disabled=disabled)
    return replace(cfg, **v)


def _form_values() -> dict[str, Any]:
    """The lab form's widget states as they are now (those the session has)."""
    state = st.session_state
    return {key: state[key] for key in FORM_KEYS if key in state}


def _edits(cfg: LabConfig) -> dict[str, Any] | None:
    """The form's widget values the browser sent that differ from what the form last drew for
    `cfg` (a number typed, then Train at once, come in one rerun); None when it has not drawn `cfg`.

    A widget state that is gone was not edited: a locked run does not draw the form, Streamlit drops
    the state of widgets it does not draw, and the form seeds them from `cfg` when it is drawn again.
    """
    seen = st.session_state.get(SEEN_KEY)
    if seen is None or seen[0] != cfg:
        return None
    state = st.session_state
    return {key: state[key] for key, value in seen[1].items() if state.get(key, value) != value}


def lab_form(cfg: LabConfig, disabled: bool) -> LabConfig:
    """The whole lab setup in three columns (A, B, data and training); returns the edited config.

    Locked (`disabled`: a run trains, or Train was just clicked), the setup is shown as a table
    (`lab.setup_markdown`), not as ~40 disabled widgets: each radio, number input and slider scans
    every session key, and the form was about a quarter of a Train click's server CPU, thirty times
    over when a class clicks Train at once.
    """
    if disabled:
        edits = _edits(cfg)
        if edits == {}:
            st.markdown(setup_markdown(cfg))
            st.caption("Locked while this run trains: Stop it, or Reset, to change the setup.")
            return cfg
        for key, value in (edits or {}).items():  # a disabled widget drops what the browser sent; set, it counts
            st.session_state[key] = value
    col_a, col_b, col_t = st.columns(3, gap="medium")
    with col_t:
        st.markdown("**Data and training** (shared)")
        data = _data_form(cfg.data, disabled)
        train = _train_form(cfg.train, disabled)
    fit = replace(cfg, data=data).normalized()
    with col_a:
        st.markdown("**Model A**")
        a = _model_form("a", fit.a, skip_only=False, disabled=disabled)
    with col_b:
        st.markdown("**Model B**")
        default("lab.linked", cfg.linked)
        linked = st.toggle(
            "Link settings to A",
            key="lab.linked",
            disabled=disabled,
            help="B keeps everything of A except the skip setting",
        )
        if linked:
            b = _model_form(
                "b", replace(a, skip=fit.b.skip, skip_scale=fit.b.skip_scale), skip_only=True, disabled=disabled
            )
            st.caption("Everything else as model A.")
        else:
            b = _model_form("b", fit.b, skip_only=False, disabled=disabled)
    new = LabConfig(a=a, b=b, train=train, data=data, linked=linked).normalized()
    st.session_state[STATE_KEY] = new
    st.session_state[SEEN_KEY] = (new, _form_values())
    return new
