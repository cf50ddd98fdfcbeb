"""The training lab's configuration: two models, one dataset, one training recipe; presets; URL codec.

`LabConfig` is what the lab page edits and what a shared URL carries. The codec writes only the
fields that differ from the defaults (short URLs) under stable keys (``depth``, ``a.skip``,
``lr``...), and reads back leniently: an unknown or invalid value is reported by field name and
replaced by the default, so a hand-edited URL never crashes the page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .data import DATASETS, FILE_DATASETS, GRAPH_DATASETS, IMAGE_DATASETS, SEQUENCE_DATASETS, UPLOAD, DataConfig
from .models import FAMILY_NORMS, ConfigError, ModelConfig
from .options import OPTIONS, OptionError, describe_depths
from .training import TrainConfig, fit_model

MODEL_KEYS = ("A", "B")
# The model fields a user sets; the rest (family, channels, size, classes) come from the dataset.
MODEL_FIELDS = (
    "depth",
    "width",
    "block",
    "heads",
    "skip",
    "skip_scale",
    "shortcut",
    "norm",
    "order",
    "init",
    "zero_init_last",
)
TRAIN_FIELDS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "warmup_steps",
    "schedule",
    "seed",
)
DATA_FIELDS = ("name", "input_size", "noise", "n_samples", "color", "upload")
# Linked settings share everything except the skip setting.
SKIP_FIELDS = ("skip", "skip_scale")


@dataclass(frozen=True)
class LabConfig:
    """Two models trained side by side on one dataset with one recipe."""

    a: ModelConfig = ModelConfig(skip=False)  # model A: plain by default
    b: ModelConfig = ModelConfig(skip=True)  # model B: residual by default
    train: TrainConfig = TrainConfig()  # shared training recipe (same batches, same init seed)
    data: DataConfig = DataConfig()  # shared dataset
    linked: bool = True  # B mirrors A except for the skip setting

    def models(self) -> dict[str, ModelConfig]:
        return {"A": self.a, "B": self.b}

    def normalized(self) -> LabConfig:
        """Apply the dataset to both models and the link: what will actually be trained."""
        a, b = _fit(self.a, self.data), _fit(self.b, self.data)
        if self.linked:
            b = replace(a, **{k: getattr(b, k) for k in SKIP_FIELDS})
        return replace(self, a=a, b=b)

    def validate(self) -> LabConfig:
        """Raise ConfigError naming the field (prefixed "A."/"B." for model fields)."""
        self.data.validate()
        self.train.validate()
        for key, cfg in self.models().items():
            try:
                cfg.validate()
            except ConfigError as err:
                raise ConfigError(f"{key}.{err.field}", err.message) from None
        return self


def setting_label(name: str, family: str) -> str:
    """The lab form's label of model setting `name` (the setup table names the settings the same way)."""
    if name == "order":
        return "LayerNorm position" if family == "transformer" else "Block order"
    return MODEL_LABELS[name]


# The labels of the model settings in the lab form and its setup table ("order" depends on the family).
MODEL_LABELS = {
    "block": "Block",
    "depth": "Depth (weighted layers)",
    "width": "Width",
    "heads": "Attention heads",
    "skip": "Skip connections",
    "skip_scale": "Skip scale α",
    "shortcut": "Shortcut",
    "norm": "Normalisation",
    "init": "Init",
    "zero_init_last": "Zero-init last layer of each block",
}


def _model_rows(a: ModelConfig, b: ModelConfig) -> list[tuple[str, str, str]]:
    """(setting, A's value, B's value) for the settings the lab form shows for this family."""

    def skip(m: ModelConfig) -> str:
        return f"on, α = {m.skip_scale:g}" if m.skip else "off"

    rows = [(MODEL_LABELS["skip"], skip(a), skip(b))]
    family = a.family
    names = ["block"] if family == "cnn" else []
    names += ["depth", "width"] + (["heads"] if family == "transformer" else [])
    names += ["shortcut"] if family in ("cnn", "mlp") else []
    for name in names + ["norm", "order", "init", "zero_init_last"]:
        values = [getattr(m, name) for m in (a, b)]
        label = setting_label(name, family)
        rows.append((label, *("yes" if v is True else "no" if v is False else str(v) for v in values)))
    return rows


def _data_details(data: DataConfig) -> list[str]:
    """What the lab form shows of a built-in or file data set: size, count, noise, colour."""
    if data.name in SEQUENCE_DATASETS:
        details = [f"length {data.input_size}", f"{data.n_samples} sequences"]
    elif data.name in GRAPH_DATASETS:
        details = [f"{data.input_size} nodes per graph", f"{data.n_samples} graphs"]
    elif data.name in FILE_DATASETS:
        details = [f"{data.input_size} px", data.color, f"{data.n_samples} examples"]
    else:
        details = [f"{data.input_size} px"] if data.name in IMAGE_DATASETS else []
    return details + (
        [f"noise {data.noise:g}"] if data.name in DATASETS and data.name not in ("digits", "sort") else []
    )


def setup_markdown(cfg: LabConfig) -> str:
    """The setup of a run as one Markdown table (a row per model setting the lab form shows, a column per
    model) and a line each for data and training: what the lab shows in place of its locked form.
    Values are ours (checked choices and numbers, an upload's hex digest), so nothing here needs escaping.
    """
    fit = cfg.normalized()
    lines = ["| | Model A | Model B |", "| --- | --- | --- |"]
    lines += [f"| {label} | {a} | {b} |" for label, a, b in _model_rows(fit.a, fit.b)]
    data, train = cfg.data, cfg.train
    if data.name == UPLOAD:
        shown = f"uploaded data set {data.upload[:8]}"
    else:
        shown = f"{data.name} ({', '.join(_data_details(data))})"
    optimizer = (
        f"SGD, lr {train.lr:g}, momentum {train.momentum:g}" if train.optimizer == "sgd" else f"Adam, lr {train.lr:g}"
    )
    lines += [
        "",
        f"**Data**: {shown}",
        "",
        f"**Training**: {train.epochs} epochs · batch {train.batch_size} · {optimizer} · weight decay "
        f"{train.weight_decay:g} · warm-up {train.warmup_steps} steps · {train.schedule} schedule · seed {train.seed}",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class UrlIssue:
    """A URL value the lab did not use: which key, what it accepts, what was given, what is used instead.

    `value` is untrusted text from the URL, cut to MAX_ECHO characters: show it as text, never as markdown.
    """

    key: str  # the URL key, e.g. "a.depth" (one of ours: unknown keys are ignored, never echoed)
    problem: str  # what the key accepts, e.g. "must be one of basic, bottleneck"
    value: str  # the value as given (untrusted), cut to MAX_ECHO characters
    used: str  # the value the lab uses instead (the default)
    length: int = 0  # characters of the value as given, when `value` is cut (0: it is whole)

    @classmethod
    def of(cls, key: str, problem: str, text: str, used: str) -> UrlIssue:
        """The issue of a value as given: cut to MAX_ECHO characters, its full length kept for the message."""
        return cls(key, problem, text[:MAX_ECHO], used, len(text) if len(text) > MAX_ECHO else 0)

    @property
    def cut(self) -> str:
        """' … (5,000 characters)' when the value shown is cut, else empty."""
        return f" … ({self.length:,} characters)" if self.length else ""

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}; got {self.value!r}{self.cut}; using {self.used}"


MAX_ECHO = 200  # characters of a URL value quoted back in a message


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def _groups(cfg: LabConfig) -> list[tuple[str, str, object, tuple[str, ...]]]:
    """(URL prefix, part name, config object, fields) for every part of a LabConfig."""
    return [
        ("", "data", cfg.data, DATA_FIELDS),
        ("", "train", cfg.train, TRAIN_FIELDS),
        ("a.", "a", cfg.a, MODEL_FIELDS),
        ("b.", "b", cfg.b, MODEL_FIELDS),
    ]


def _option_name(name: str) -> str:
    """The options-table name of a config field (DataConfig.name is the "dataset" setting)."""
    return "dataset" if name == "name" else name


# URL key -> (part, field): "depth" is A's depth ("a.depth"), "dataset" the data's name, ...
URL_KEYS: dict[str, tuple[str, str]] = {
    prefix + _option_name(name): (part, name) for prefix, part, _, names in _groups(LabConfig()) for name in names
} | {"linked": ("lab", "linked")}


def encode(cfg: LabConfig) -> dict[str, str]:
    """Query parameters for `cfg`: only what differs from the defaults."""
    default = LabConfig()
    params: dict[str, str] = {}
    for (prefix, _, obj, names), (_, _, base, _) in zip(_groups(cfg), _groups(default), strict=True):
        for name in names:
            value = getattr(obj, name)
            if value != getattr(base, name):
                params[prefix + _option_name(name)] = _fmt(value)
    if cfg.linked != default.linked:
        params["linked"] = _fmt(cfg.linked)
    return params


def _default_of(default: LabConfig, part: str, name: str) -> Any:
    return default.linked if part == "lab" else getattr(getattr(default, part), name)


def decode(
    params: Mapping[str, str | Sequence[str]], base: LabConfig | None = None
) -> tuple[LabConfig, list[UrlIssue]]:
    """A LabConfig from query parameters, and one UrlIssue per value that was not used.

    Values the URL does not set come from `base` (the defaults, or the preset the URL names).
    Every value is checked against the same table as the widgets (`options.OPTIONS`; depth against
    its family/block rule once the dataset is known). A value given more than once, or out of
    range, or malformed is reported and the base's value used: nothing is clamped. A model setting
    without its model ("depth" for "a.depth") is reported; other keys (other pages') are ignored.
    Lists are repeated keys (``st.query_params.get_all``).
    """
    default = base or LabConfig()
    issues: list[UrlIssue] = []
    given: dict[str, dict[str, Any]] = {"data": {}, "train": {}, "a": {}, "b": {}, "lab": {}}
    depths: dict[str, str] = {}  # checked once the model's family and block are known
    for key, raw in params.items():
        values = [raw] if isinstance(raw, str) else [str(v) for v in raw]
        if key not in URL_KEYS:
            if f"a.{key}" in URL_KEYS:  # "depth=56": a model's setting without the model
                problem = f"is a setting of each model: write a.{key} (model A) or b.{key} (model B)"
                issues.append(UrlIssue.of(key, problem, ", ".join(values), "each model's own"))
            continue
        part, name = URL_KEYS[key]
        fallback = _fmt(_default_of(default, part, name))
        if len(values) != 1:
            issues.append(UrlIssue.of(key, f"must be given once, not {len(values)} times", ", ".join(values), fallback))
        elif name == "depth":
            depths[part] = values[0]
        else:
            try:
                given[part][name] = OPTIONS[_option_name(name)].parse(values[0])
            except OptionError as err:
                issues.append(UrlIssue.of(key, err.problem, values[0], fallback))
    data = replace(default.data, **given["data"])
    try:
        data.validate()  # the values passed one by one; an upload's hash must also name a stored data set
    except ConfigError as err:
        value = str(getattr(data, "name" if err.field == "dataset" else err.field, ""))
        issues.append(UrlIssue.of(err.field, err.message, value, f"{default.data.name} data"))
        data = default.data
    models = {part: _fit(replace(getattr(default, part), **given[part]), data) for part in ("a", "b")}
    for part, model in models.items():  # a setting the data's family has not (a bottleneck MLP): said, not hidden
        nets = f"for the {model.family} nets of {data.name} data"
        rules = {
            "block": f"must be basic {nets}",
            "norm": f"must be one of {', '.join(FAMILY_NORMS[model.family])} {nets}",
            "heads": f"must divide the width ({model.width}) {nets}",
        }
        for name, value in given[part].items():
            if name in rules and getattr(model, name) != value:
                issues.append(UrlIssue.of(f"{part}.{name}", rules[name], _fmt(value), _fmt(getattr(model, name))))
    for part, text in depths.items():
        model = models[part]
        allowed = model.allowed_depths()
        depth = int(text) if re.fullmatch(r"[0-9]{1,4}", text) else None
        if depth in allowed:
            models[part] = replace(model, depth=depth)
        else:
            used = model.depth if model.depth in allowed else allowed[0]
            problem = "must be " + describe_depths(model.family, model.block)
            issues.append(UrlIssue.of(f"{part}.depth", problem, text, str(used)))
            models[part] = replace(model, depth=used)
    cfg = LabConfig(
        a=models["a"],
        b=models["b"],
        train=replace(default.train, **given["train"]),
        data=data,
        linked=given["lab"].get("linked", default.linked),
    ).normalized()
    if cfg.linked:  # B is A but for its skip settings: a B setting beyond those is not used
        asked = {name: _fmt(value) for name, value in given["b"].items() if name not in SKIP_FIELDS}
        if "b" in depths and "b.depth" not in {i.key for i in issues}:
            asked["depth"] = depths["b"]
        for name, text in asked.items():
            if text != _fmt(getattr(cfg.b, name)):
                problem = "follows model A while the models are linked: add linked=0 to give B its own"
                issues.append(UrlIssue.of(f"b.{name}", problem, text, _fmt(getattr(cfg.b, name))))
    return cfg, issues


def _fit(model: ModelConfig, data: DataConfig) -> ModelConfig:
    """`training.fit_model`, with the settings a form carries over from another family made valid for this
    one: basic blocks beyond CNNs, the family's own norm (LayerNorm for Transformers, BatchNorm for CNNs and
    MLPs), and a head count that divides a Transformer's width."""
    model = fit_model(model, data)
    changes: dict[str, Any] = {}
    if model.family != "cnn":
        changes["block"] = "basic"
    norms = FAMILY_NORMS[model.family]
    if model.norm not in norms:
        changes["norm"] = norms[0]
    if model.family == "transformer" and model.width % model.heads:
        changes["heads"] = max(h for h in range(1, model.heads) if model.width % h == 0)
    return replace(model, **changes) if changes else model


# --------------------------------------------------------------------------------------------------
# Presets: one click on the Home page opens the lab configured.


@dataclass(frozen=True)
class Preset:
    """A classroom demo: a title, what it shows, and the lab configuration."""

    key: str  # stable id, used in URLs
    title: str  # button label
    point: str  # one sentence: what to look for
    config: LabConfig
    group: str = "CNNs and MLPs"  # the Home page's row of demos it sits in


def _preset_configs() -> list[Preset]:
    deep = ModelConfig(depth=56)
    return [
        Preset(
            "depth",
            "Depth hurts plain nets",
            "The 56-layer plain net stalls near chance while its residual twin, same weights at the start, "
            "drives its training loss towards zero (He et al. 2015, Fig. 1).",
            LabConfig(a=replace(deep, skip=False), b=deep),
        ),
        Preset(
            "vanishing",
            "Vanishing gradients",
            "Without normalisation the gradient reaching the first blocks of the plain net is thousands "
            "of times smaller than at the last; the shortcut carries it through.",
            LabConfig(
                a=ModelConfig(depth=32, norm="none", skip=False),
                b=ModelConfig(depth=32, norm="none"),
                train=TrainConfig(lr=0.02),
            ),
        ),
        Preset(
            "exploding",
            "Exploding gradients with BatchNorm",
            "A deep plain net with BatchNorm explodes: at step 1 its first layer's gradient is ~1,000x its last "
            "one's (the heatmap's first column), then its early layers starve. The residual net stays balanced.",
            LabConfig(a=replace(deep, skip=False), b=deep, train=TrainConfig(warmup_steps=0)),
        ),
        Preset(
            "preact",
            "Pre- vs post-activation",
            "Two residual nets, depth 56, that differ only in block order: full pre-activation keeps the "
            "shortcut a pure identity (He et al. 2016).",
            LabConfig(a=deep, b=replace(deep, order="pre"), linked=False),
        ),
        Preset(
            "spirals",
            "Residual MLP on spirals",
            "Two 2-D spirals and two 32-layer MLPs: watch each decision boundary form. The residual net "
            "wraps around the arms within a few epochs; its plain twin lags behind.",
            LabConfig(
                a=ModelConfig(family="mlp", depth=32, width=32, skip=False),
                b=ModelConfig(family="mlp", depth=32, width=32),
                data=DataConfig(name="spirals", noise=0.1),
                train=TrainConfig(epochs=40, batch_size=64),
            ),
        ),
        Preset(
            "overconfident",
            "Overconfident ResNet",
            "A residual net trained 60 epochs without weight decay fits every training digit and grows "
            "overconfident: see Limits & pitfalls, Calibration (Guo et al. 2017, Fig. 1).",
            LabConfig(
                a=ModelConfig(depth=20, skip=False),
                b=ModelConfig(depth=20),
                train=TrainConfig(epochs=60, weight_decay=0.0),
            ),
        ),
    ] + _beyond_cnns()


BEYOND = "Beyond CNNs"


def _beyond_cnns() -> list[Preset]:
    """Transformers and graph networks: the same skip toggle, the same charts (Xiong et al. 2020; Li et al. 2019)."""
    sort = DataConfig(name="sort", n_samples=2000)
    layers4 = ModelConfig(family="transformer", depth=10, width=64, heads=4, norm="layer", init="xavier")
    layers6 = replace(layers4, depth=14, order="pre")
    adam = TrainConfig(epochs=8, batch_size=64, optimizer="adam", weight_decay=0.0)
    gcn = ModelConfig(family="gcn", depth=34, width=32)
    return [
        Preset(
            "postln",
            "Post-LN needs warm-up",
            "Two 4-layer Transformers sorting digits, differing only in where LayerNorm sits, Adam at lr 0.01 "
            "with no warm-up: post-LN stalls at chance while pre-LN learns (Xiong et al. 2020). Give it 100 "
            "warm-up steps and post-LN learns too.",
            LabConfig(
                a=replace(layers4, order="post"),
                b=replace(layers4, order="pre"),
                train=replace(adam, lr=0.01, warmup_steps=0),
                data=sort,
                linked=False,
            ),
            BEYOND,
        ),
        Preset(
            "transformer",
            "Transformer without residuals",
            "Two 6-layer pre-LN Transformers, with and without residual connections: the plain stack barely "
            "moves off chance, the residual one learns to sort every position.",
            LabConfig(
                a=replace(layers6, skip=False), b=layers6, train=replace(adam, lr=0.001, warmup_steps=20), data=sort
            ),
            BEYOND,
        ),
        Preset(
            "oversmooth",
            "Deep GCNs oversmooth",
            "32 graph convolutions on community graphs: without shortcuts every node's features blur into one "
            "and accuracy falls to chance; with them the deep GCN learns (Li et al. 2019). See the Dirichlet "
            "energy per layer.",
            LabConfig(
                a=replace(gcn, skip=False),
                b=gcn,
                train=TrainConfig(epochs=10, batch_size=32),
                data=DataConfig(name="sbm", input_size=24, n_samples=700),
            ),
            BEYOND,
        ),
    ]


PRESETS: dict[str, Preset] = {p.key: p for p in _preset_configs()}


def preset_from(params: Mapping[str, str | Sequence[str]]) -> tuple[str | None, list[UrlIssue]]:
    """The preset a URL names (``preset=depth``), or None; an unknown or repeated one is an issue."""
    raw = params.get("preset")
    if raw is None:
        return None, []
    values = [raw] if isinstance(raw, str) else [str(v) for v in raw]
    if len(values) == 1 and values[0] in PRESETS:
        return values[0], []
    return None, [UrlIssue.of("preset", "must be one of " + ", ".join(PRESETS), ", ".join(values), "none")]
