"""One table of options and limits per setting, for the widgets, the URL, the CLI and the store.

Every value a user can set (a lab widget, a shared URL, a CLI flag, an imported run) is checked
against the same entry here, so a value one of them accepts the others accept too, and a value out
of range is refused with a message naming the setting and what it allows, never clamped silently.
The limits are the ones a classroom server can afford (the lab's widget ranges); the config
validators (`ModelConfig`, `TrainConfig`, `DataConfig`) look them up here.

`OPTIONS` maps a setting's name to a `Choice`, a `Range` or a `Flag`; network depth follows a
per-family rule instead (`DEPTH_RULES`, `allowed_depths`): 6n+2 weighted layers for basic blocks,
9n+2 for bottleneck blocks (He et al. 2015, Sec. 4.2), 2n+2 for the residual MLP.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 64  # longest text parsed as a number; longer input is refused unread
# Plain ASCII decimal notation only: no "nan", "inf", "1_000", non-ASCII digits or surrounding blanks.
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


class OptionError(ValueError):
    """A value a setting does not accept; `problem` says what it accepts (no echo of the value)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of values (strings), in display order."""

    values: tuple[str, ...]  # allowed values; the widgets show them in this order

    def describe(self) -> str:
        return "one of " + ", ".join(self.values)

    def check(self, value: Any) -> None:
        if not isinstance(value, str) or value not in self.values:
            raise OptionError(f"must be {self.describe()}")

    def parse(self, text: str) -> str:
        self.check(text)
        return text


@dataclass(frozen=True)
class Range:
    """A number in [low, high] (an integer if `integer`); `ticks` are the values a slider suggests."""

    low: float  # smallest allowed value
    high: float  # largest allowed value
    integer: bool = False  # whole numbers only
    ticks: tuple[float, ...] = ()  # suggested values for select sliders (any value in range is allowed)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} from {_fmt(self.low)} to {_fmt(self.high)}"

    def check(self, value: Any) -> None:
        ok_type = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not (math.isfinite(value) and self.low <= value <= self.high):
            raise OptionError(f"must be {self.describe()}")

    def parse(self, text: str) -> int | float:
        pattern = _INTEGER if self.integer else _NUMBER
        if len(text) > MAX_TEXT or not pattern.fullmatch(text):
            raise OptionError(f"must be {self.describe()}")
        value: int | float = int(text) if self.integer else float(text)
        self.check(value)
        return value

    def options(self, current: float | None = None) -> list[float]:
        """The ticks, plus the current value when it is an allowed value off the ticks."""
        values = set(self.ticks)
        if current is not None:
            self.check(current)
            values.add(current)
        return sorted(values)


@dataclass(frozen=True)
class Flag:
    """On or off: 1/0 (also true/false, yes/no, on/off) in URLs."""

    def describe(self) -> str:
        return "1 or 0"

    def check(self, value: Any) -> None:
        if not isinstance(value, bool):
            raise OptionError(f"must be {self.describe()}")

    def parse(self, text: str) -> bool:
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"must be {self.describe()}")


@dataclass(frozen=True)
class Token:
    """A short ASCII text of a fixed form (e.g. a content hash), or the empty string when `optional`."""

    pattern: str  # a regular expression the whole value must match
    what: str  # what the value is, for messages ("a 64-digit hex content hash")
    optional: bool = True  # the empty string (unset) is allowed

    def describe(self) -> str:
        return self.what + (" (or empty)" if self.optional else "")

    def check(self, value: Any) -> None:
        ok = isinstance(value, str) and len(value) <= MAX_TEXT and value.isascii()
        if not ok or not ((self.optional and value == "") or re.fullmatch(self.pattern, value)):
            raise OptionError(f"must be {self.describe()}")

    def parse(self, text: str) -> str:
        self.check(text)
        return text


Option = Choice | Range | Flag | Token


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


OPTIONS: dict[str, Option] = {
    # model (ModelConfig); depth follows DEPTH_RULES
    "family": Choice(("cnn", "mlp", "transformer", "gcn")),
    "block": Choice(("basic", "bottleneck")),
    "width": Range(4, 128, integer=True, ticks=(4, 8, 16, 32, 64, 128)),
    "heads": Range(1, 4, integer=True, ticks=(1, 2, 4)),
    "skip": Flag(),
    "skip_scale": Range(0.0, 1.0),
    "shortcut": Choice(("identity", "projection")),
    "norm": Choice(("batch", "layer", "none")),
    "order": Choice(("post", "pre")),
    "init": Choice(("kaiming", "xavier", "pytorch")),
    "zero_init_last": Flag(),
    "init_gain": Range(0.1, 4.0),
    # data (DataConfig); the names match data.DATASETS
    "dataset": Choice(
        (
            "digits",
            "shapes",
            "corners",
            "spirals",
            "moons",
            "circles",
            "xor",
            "sort",
            "sbm",
            "mnist",
            "fashion_mnist",
            "cifar10",
            "upload",
        )
    ),
    "color": Choice(("grey", "rgb")),  # channels of MNIST, CIFAR-10 and uploaded images
    "upload": Token(r"[0-9a-f]{64}", "the 64-digit hex content hash of a stored dataset"),
    "input_size": Range(8, 32, integer=True, ticks=(8, 16, 24, 32)),
    "noise": Range(0.0, 1.0),
    "n_samples": Range(100, 20_000, integer=True),
    # training (TrainConfig)
    "epochs": Range(1, 1000, integer=True),
    "batch_size": Range(2, 512, integer=True, ticks=(16, 32, 64, 128, 256, 512)),
    "optimizer": Choice(("sgd", "adam")),
    "lr": Range(1e-5, 1000.0),
    "momentum": Range(0.0, 0.99),
    "weight_decay": Range(0.0, 1.0),
    "warmup_steps": Range(0, 100_000, integer=True),
    "schedule": Choice(("cosine", "step", "constant")),
    "seed": Range(0, 2**31 - 1, integer=True),
    "val_every": Range(0, 1_000_000, integer=True),
    "probe_every": Range(0, 1_000_000, integer=True),
    "max_snapshots": Range(2, 100, integer=True),
    "device": Choice(("auto", "cpu", "cuda")),
    # the lab
    "linked": Flag(),
}


@dataclass(frozen=True)
class UploadLimits:
    """What one uploaded data set may hold: checked before and while it is read (see datasets/uploads.py)."""

    csv_bytes: int = 4 * 2**20  # a CSV file of points
    rows: int = 20_000  # points in a CSV (the n_samples limit)
    zip_bytes: int = 16 * 2**20  # a zip of image folders, as uploaded
    images: int = 5_000  # images in a zip
    image_bytes: int = 4 * 2**20  # one image file, unpacked (read with this cap whatever the zip claims)
    unpacked_bytes: int = 64 * 2**20  # all image files of a zip together, unpacked
    pixels: int = 4096 * 4096  # width x height of one image, checked from its header before it is decoded
    classes: int = 20  # classes (CSV labels or zip folders)
    min_examples: int = 20  # fewer cannot fill the train, validation and test splits
    name_chars: int = 64  # a class or data set name


UPLOADS = UploadLimits()

# Depth rules: (layers per block, deepest net) per family/block; depth = step * n + 2, n >= 1.
# A Transformer layer is two residual sub-layers (attention, MLP): 2n+2 for n = 1..12 encoder layers.
# A GCN block is one graph convolution: n+2 for n = 1..32 (plus the input and output linear maps).
DEPTH_RULES: dict[str, tuple[int, int]] = {
    "basic": (6, 110),
    "bottleneck": (9, 110),
    "mlp": (2, 64),
    "transformer": (2, 26),
    "gcn": (1, 34),
}


def depth_rule(family: str, block: str) -> str:
    """The key of DEPTH_RULES for a model: "mlp", or the CNN's block kind."""
    OPTIONS["family"].check(family)
    if family != "cnn":
        return family
    OPTIONS["block"].check(block)
    return block


def allowed_depths(family: str, block: str, limit: int | None = None) -> list[int]:
    """Depths a family/block accepts, e.g. 8, 14, 20, ..., 110 for basic CNN blocks."""
    step, deepest = DEPTH_RULES[depth_rule(family, block)]
    deepest = deepest if limit is None else min(limit, deepest)
    return list(range(step + 2, deepest + 1, step))


def describe_depths(family: str, block: str) -> str:
    """ "one of 8, 14, 20, ..., 110 (6n+2 for cnn/basic)": what a depth field accepts."""
    rule = depth_rule(family, block)
    depths = allowed_depths(family, block)
    shown = depths if len(depths) <= 8 else [*depths[:4], "...", depths[-1]]
    return f"one of {', '.join(map(str, shown))} ({DEPTH_RULES[rule][0]}n+2 for {family}/{block})"


def check(name: str, value: Any) -> None:
    """Raise OptionError unless `value` is allowed for setting `name`."""
    OPTIONS[name].check(value)
