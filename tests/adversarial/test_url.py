"""Hostile and clumsy URLs (issue 10, item 3): every value is checked against the options table, any
odd value gives one message naming the key and a working page, and nothing from the URL renders as
markdown or HTML."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resnet_viz.data import ALL_DATASETS, DataConfig
from resnet_viz.lab import PRESETS, URL_KEYS, LabConfig, decode, encode, preset_from
from resnet_viz.models import CHOICES, ConfigError, ModelConfig
from resnet_viz.options import OPTIONS, allowed_depths
from resnet_viz.training import TrainConfig
from resnet_viz.ui.text import safe_text

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LAB = "pages/lab.py"
DEFAULT = LabConfig().normalized()
LINK = "[Click to log in](https://evil.example/login)"
ODD_VALUES = [
    "",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "-1e400",
    "9" * 5000,  # past Python's int() digit limit
    "x" * 30_000,
    "bäsic",
    "٨",  # an Arabic-Indic eight: int() would accept it
    "1_0",
    " 8",
    LINK,
    "![x](https://evil.example/pixel.png)",
    "<img src=x onerror=alert(1)>",
    ":red[alarm] :material/warning: $x^2$",
    "```",
]
ODD_KEYS = [
    "a.block",
    "b.block",
    "a.depth",
    "b.depth",
    "a.width",
    "a.skip_scale",
    "a.skip",
    "dataset",
    "input_size",
    "noise",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "optimizer",
    "seed",
    "linked",
]


# --------------------------------------------------------------------------------------------------
# The codec, library level


@pytest.mark.parametrize("key", ODD_KEYS)
def test_every_odd_value_gives_one_issue_and_the_default(key):
    for value in ODD_VALUES:
        cfg, issues = decode({key: value})
        assert [i.key for i in issues] == [key], (key, value[:40])
        assert cfg == DEFAULT, (key, value[:40])
        cfg.validate()
        assert len(issues[0].value) <= 240  # a 30 kB value is cut, not echoed whole


@pytest.mark.parametrize("key", ["a.block", "b.block"])
@pytest.mark.parametrize("value", ["foo", "bäsic", "Basic"])
def test_an_unknown_block_is_a_message_not_a_key_error(key, value):
    _, issues = decode({key: value})
    assert str(issues[0]) == f"{key}: must be one of basic, bottleneck; got {value!r}; using basic"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"a.depth": "200"},
            "a.depth: must be one of 8, 14, 20, 26, ..., 110 (6n+2 for cnn/basic); got '200'; using 20",
        ),
        (
            {"a.block": "bottleneck", "a.depth": "14"},
            "a.depth: must be one of 11, 20, 29, 38, ..., 110 (9n+2 for cnn/bottleneck); got '14'; using 20",
        ),
        (
            {"dataset": "spirals", "a.depth": "66"},
            "a.depth: must be one of 4, 6, 8, 10, ..., 64 (2n+2 for mlp/basic); got '66'; using 20",
        ),
        ({"a.width": "512"}, "a.width: must be an integer from 4 to 128; got '512'; using 16"),
        ({"batch_size": "4096"}, "batch_size: must be an integer from 2 to 512; got '4096'; using 128"),
        ({"lr": "1e-300"}, "lr: must be a number from 1e-05 to 1000; got '1e-300'; using 0.1"),
        ({"a.depth": ["8", "14"]}, "a.depth: must be given once, not 2 times; got '8, 14'; using 20"),
    ],
)
def test_out_of_range_values_are_named_never_clamped(params, message):
    cfg, issues = decode(params)
    assert [str(i) for i in issues] == [message]
    assert cfg == decode({k: v for k, v in params.items() if k in ("a.block", "dataset")})[0]  # the rest: defaults


def test_the_limits_themselves_are_accepted():
    edges = {
        "a.depth": "110",
        "a.width": "64",
        "batch_size": "512",
        "lr": "1e-05",
        "epochs": "1000",
        "momentum": "0.99",
        "noise": "1",
        "input_size": "32",
        "seed": str(2**31 - 1),
        "linked": "0",
    }
    cfg, issues = decode(edges)
    assert issues == []
    assert (cfg.a.depth, cfg.a.width, cfg.train.batch_size, cfg.train.lr) == (110, 64, 512, 1e-5)
    assert decode(encode(cfg)) == (cfg, [])
    for key, value in (("a.depth", "116"), ("a.width", "3"), ("batch_size", "513"), ("lr", "9e-06")):
        assert [i.key for i in decode({key: value})[1]] == [key]


def test_widths_off_the_slider_stops_are_allowed_and_round_trip():
    cfg, issues = decode({"a.width": "12", "batch_size": "100", "input_size": "20"})
    assert issues == [] and (cfg.a.width, cfg.train.batch_size, cfg.data.input_size) == (12, 100, 20)
    assert decode(encode(cfg)) == (cfg, [])


def test_floats_round_trip_exactly():
    cfg = LabConfig(train=TrainConfig(lr=0.123456789, weight_decay=3e-5)).normalized()
    assert decode(encode(cfg)) == (cfg, [])


def test_other_keys_are_ignored_however_large():
    cfg, issues = decode({"k" * 30_000: "v", "run": "abc", "page": LINK})
    assert (cfg, issues) == (DEFAULT, [])


def test_a_model_setting_without_its_model_is_named_with_both_spellings():
    cfg, issues = decode({"depth": "56", "skip": "0"})
    assert cfg == DEFAULT and [i.key for i in issues] == ["depth", "skip"]
    assert "a.depth (model A) or b.depth (model B)" in str(issues[0])


def test_a_setting_the_data_family_has_not_is_named_not_swapped_silently():
    """?dataset=spirals&a.block=bottleneck loaded basic blocks without a word: MLPs have no bottleneck."""
    cfg, issues = decode(
        {"dataset": "spirals", "a.block": "bottleneck", "a.norm": "layer", "b.norm": "none", "linked": "0"}
    )
    assert (cfg.a.block, cfg.a.norm, cfg.b.norm) == ("basic", "batch", "none")
    assert [str(i) for i in issues] == [
        "a.block: must be basic for the mlp nets of spirals data; got 'bottleneck'; using basic",
        "a.norm: must be one of batch, none for the mlp nets of spirals data; got 'layer'; using batch",
    ]
    cfg, issues = decode({"dataset": "sort", "a.width": "64", "a.heads": "3", "b.heads": "4", "linked": "0"})
    assert (cfg.a.heads, cfg.b.heads) == (2, 4)
    assert [str(i) for i in issues] == [
        "a.heads: must divide the width (64) for the transformer nets of sort data; got '3'; using 2"
    ]


def test_a_setting_of_model_b_while_linked_is_named():
    """B mirrors A but for its skip settings while linked (the default): b.depth=8 was dropped without a word."""
    cfg, issues = decode({"b.depth": "8", "b.norm": "none", "b.skip": "0", "a.depth": "14"})
    assert (cfg.b.depth, cfg.b.norm, cfg.b.skip) == (14, "batch", False)
    assert sorted(str(i) for i in issues) == [
        "b.depth: follows model A while the models are linked: add linked=0 to give B its own; got '8'; using 14",
        "b.norm: follows model A while the models are linked: add linked=0 to give B its own; got 'none'; using batch",
    ]
    assert decode({"b.depth": "14", "a.depth": "14", "b.skip": "0"})[1] == []  # the same as A's: nothing to say
    assert [i.key for i in decode({"b.depth": "7"})[1]] == ["b.depth"]  # a bad depth is said once


def test_a_long_value_is_cut_with_its_full_length():
    _, issues = decode({"a.depth": "9" * 5_000})
    assert issues[0].value == "9" * 200 and issues[0].length == 5_000
    assert str(issues[0]).endswith("'9999' … (5,000 characters); using 20".replace("'9999'", repr("9" * 200)))


def test_a_preset_alone_loads_its_config_and_an_unknown_one_is_named():
    assert preset_from({"preset": "depth"}) == ("depth", [])
    cfg, issues = decode({"a.depth": "oops"}, PRESETS["depth"].config)
    assert cfg == PRESETS["depth"].config.normalized() and issues[0].used == "56"  # the preset's value
    key, issues = preset_from({"preset": LINK})
    assert key is None and issues[0].key == "preset" and issues[0].value == LINK
    assert preset_from({"preset": ["depth", "spirals"]})[1][0].key == "preset"


def test_validators_read_the_same_table():
    assert OPTIONS["dataset"].values == ALL_DATASETS
    assert all(CHOICES[name] == OPTIONS[name].values for name in CHOICES)
    assert ModelConfig(depth=110).validate() and ModelConfig(family="mlp", depth=64).validate()
    with pytest.raises(ConfigError, match="depth: must be one of 8, 14"):
        ModelConfig(depth=116).validate()
    with pytest.raises(ConfigError, match="width: must be an integer from 4 to 128"):
        ModelConfig(width=512).validate()
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=4096).validate()
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=math.nan).validate()
    with pytest.raises(ConfigError, match="input_size"):
        DataConfig(input_size=64).validate()
    assert allowed_depths("cnn", "bottleneck")[:3] == [11, 20, 29]


# --------------------------------------------------------------------------------------------------
# Text safety


def test_safe_text_shows_markup_literally_in_one_short_line():
    assert safe_text(LINK) == f"`{LINK}`"  # a code span: markdown shows its content verbatim
    assert safe_text("a`b") == "``a`b``" and safe_text("`x") == "`` `x ``"
    assert safe_text("line one\n# line two\u202e") == "`line one # line two`"
    assert safe_text("") == "(empty)"
    long = safe_text("x" * 30_000)
    assert long == f"`{'x' * 200}` … (30,000 characters)"


def _outside_code(body: str) -> str:
    """The markdown of a message with its code spans removed: what markdown would interpret."""
    return re.sub(r"(`+)(?:(?!\1).)*?\1", "", body)


def _open_lab(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(LAB).run()
    return at


def _working(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert any(b.label == "Train" for b in at.button)


def test_markup_in_every_url_key_renders_as_literal_text():
    hostile = {key: f"{LINK} <b>{key}</b>" for key in URL_KEYS}
    at = _open_lab(hostile)
    _working(at)
    warnings = [w.value for w in at.warning if w.value.startswith("Ignored a value in the URL")]
    assert len(warnings) == len(URL_KEYS)
    for key in URL_KEYS:
        body = next(w for w in warnings if w.startswith(f"Ignored a value in the URL: {key} "))
        assert safe_text(hostile[key]) in body
        outside = _outside_code(body)
        assert "](" not in outside and "<" not in outside and "evil" not in outside, body
    assert at.query_params.get("epochs") is None  # the bad values left the URL: a reload works


@pytest.mark.parametrize(
    "params",
    [
        {"a.block": "foo"},
        {"b.block": "foo", "linked": "0"},
        {"a.block": "bäsic"},
        {"epochs": LINK},
        {"lr": "x" * 30_000},
        {"a.depth": ["8", "14"]},
        {"preset": "<script>alert(1)</script>"},
    ],
)
def test_the_lab_page_works_and_names_each_bad_value(params):
    at = _open_lab(params)
    _working(at)
    key = next(iter(params))  # the bad one comes first
    warnings = [w.value for w in at.warning if w.value.startswith(f"Ignored a value in the URL: {key} ")]
    assert len(warnings) == 1, [w.value for w in at.warning]
    value = params[key] if isinstance(params[key], str) else ", ".join(params[key])
    assert safe_text(value[:200]) in warnings[0] or value[:200] in warnings[0]
    assert len(warnings[0]) < 600
    if len(value) > 200:  # the length of the value given, not of the cut one
        assert f"… ({len(value):,} characters)" in warnings[0]


def test_widgets_accept_exactly_the_url_ranges():
    at = _open_lab({"a.width": "12", "batch_size": "100"})
    _working(at)
    assert at.select_slider(key="lab.a.width").value == 12  # off the stops, kept: not clamped
    assert at.select_slider(key="lab.train.batch_size").value == 100
    assert at.query_params["a.width"] == "12"
    lr = at.number_input(key="lab.train.lr")
    assert (lr.min, lr.max) == (OPTIONS["lr"].low, OPTIONS["lr"].high)
    epochs = at.number_input(key="lab.train.epochs")
    assert (epochs.min, epochs.max) == (OPTIONS["epochs"].low, OPTIONS["epochs"].high)
    assert at.select_slider(key="lab.a.depth").options == [str(d) for d in allowed_depths("cnn", "basic")]


def test_an_emptied_number_box_keeps_its_last_number_and_says_so():
    """Streamlit's number input put its minimum into a box the user emptied: a learning rate of 1e-05 in the
    URL and the next run, without a word."""
    at = _open_lab({"lr": "0.05"})
    at.number_input(key="lab.train.lr").set_value(None).run()
    _working(at)
    assert at.query_params["lr"] == "0.05"  # what the next run trains with, and the link shares
    assert any("Learning rate is empty: 0.05 is used" in c.value for c in at.caption), [c.value for c in at.caption]
    at.number_input(key="lab.train.lr").set_value(0.2).run()
    assert at.query_params["lr"] == "0.2" and not any("is empty" in c.value for c in at.caption)
