"""The training lab's configuration: two models, one dataset, one training recipe; presets; URL codec.

`LabConfig` is what the lab page edits and what a shared URL carries. The codec writes only the
fields that differ from the defaults (short URLs) under stable keys (``depth``, ``a.skip``,
``lr``...), and reads back leniently: an unknown or invalid value is reported by field name and
replaced by the default, so a hand-edited URL never crashes the page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .data import DataConfig
from .models import ConfigError, ModelConfig
from .training import TrainConfig

MODEL_KEYS = ("A", "B")
# The model fields a user sets; the rest (family, channels, size, classes) come from the dataset.
MODEL_FIELDS = ("depth", "width", "block", "skip", "skip_scale", "shortcut", "norm", "order", "init", "zero_init_last")
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
DATA_FIELDS = ("name", "input_size", "noise")
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
        fit = self.data.model_fields()
        if fit["family"] == "mlp":
            fit["block"] = "basic"
        a = replace(self.a, **fit)
        b = replace(self.b, **fit)
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


def _parse(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be 1 or 0")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _groups(cfg: LabConfig) -> list[tuple[str, object, tuple[str, ...]]]:
    """(URL prefix, config object, fields) for every part of a LabConfig."""
    return [
        ("", cfg.data, DATA_FIELDS),
        ("", cfg.train, TRAIN_FIELDS),
        ("a.", cfg.a, MODEL_FIELDS),
        ("b.", cfg.b, MODEL_FIELDS),
    ]


def _url_key(prefix: str, name: str) -> str:
    return prefix + ("dataset" if name == "name" else name)


def encode(cfg: LabConfig) -> dict[str, str]:
    """Query parameters for `cfg`: only what differs from the defaults."""
    default = LabConfig()
    params: dict[str, str] = {}
    for (prefix, obj, names), (_, base, _) in zip(_groups(cfg), _groups(default), strict=True):
        for name in names:
            value = getattr(obj, name)
            if value != getattr(base, name):
                params[_url_key(prefix, name)] = _fmt(value)
    if cfg.linked != default.linked:
        params["linked"] = _fmt(cfg.linked)
    return params


def decode(params: dict[str, str]) -> tuple[LabConfig, list[str]]:
    """A LabConfig from query parameters, and one message per value that was ignored."""
    default = LabConfig()
    errors: list[str] = []
    parts: dict[str, dict[str, Any]] = {"data": {}, "train": {}, "a": {}, "b": {}}
    keys = {}
    for (prefix, obj, names), part in zip(_groups(default), parts, strict=True):
        for name in names:
            keys[_url_key(prefix, name)] = (part, name, getattr(obj, name))
    linked = default.linked
    for key, value in params.items():
        if key == "linked":
            try:
                linked = _parse(value, True)
            except ValueError as err:
                errors.append(f"linked: {err}; got {value!r}")
            continue
        if key not in keys:
            continue  # other pages' parameters
        part, name, like = keys[key]
        try:
            parts[part][name] = _parse(value, like)
        except ValueError:
            errors.append(f"{key}: must be {type(like).__name__}; got {value!r}")
    data = _checked(DataConfig, default.data, parts["data"], "", errors)
    train = _checked(TrainConfig, default.train, parts["train"], "", errors)
    a = _checked(ModelConfig, default.a, parts["a"], "a.", errors)
    b = _checked(ModelConfig, default.b, parts["b"], "b.", errors)
    cfg = LabConfig(a=a, b=b, train=train, data=data, linked=linked).normalized()
    for key in ("a", "b") if not linked else ("a",):  # dataset-dependent checks (e.g. depth rule of an MLP)
        model = getattr(cfg, key)
        try:
            model.validate()
        except ConfigError as err:
            errors.append(f"{key}.{err.field}: {err.message}; using {model.allowed_depths()[0]}")
            cfg = replace(cfg, **{key: replace(model, depth=model.allowed_depths()[0])})
    return cfg.normalized(), errors


def _checked(cls: type, default: Any, values: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    """Apply values one at a time, dropping each one that is invalid on its own."""
    obj = default
    for name, value in values.items():
        candidate = replace(obj, **{name: value})
        if cls is ModelConfig:  # depth rules depend on the dataset's family: checked after it is known
            candidate, check = candidate, replace(candidate, depth=candidate.allowed_depths()[0])
        else:
            check = candidate
        try:
            check.validate()
            obj = candidate
        except ConfigError as err:
            if err.field in (name, "dataset", "num_classes") or cls is not ModelConfig:
                errors.append(f"{prefix}{'dataset' if name == 'name' else name}: {err.message}")
            else:
                obj = candidate
    return obj


# --------------------------------------------------------------------------------------------------
# Presets: one click on the Home page opens the lab configured.


@dataclass(frozen=True)
class Preset:
    """A classroom demo: a title, what it shows, and the lab configuration."""

    key: str  # stable id, used in URLs
    title: str  # button label
    point: str  # one sentence: what to look for
    config: LabConfig


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
            "With BatchNorm a deep plain net does not vanish: its first layers get gradients hundreds of "
            "times larger than its last ones. The residual net stays balanced.",
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
    ]


PRESETS: dict[str, Preset] = {p.key: p for p in _preset_configs()}
