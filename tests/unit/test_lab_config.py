"""Lab config: presets, URL codec round trips, lenient decoding of bad values."""

from dataclasses import replace

import pytest

from resnet_viz.lab import PRESETS, LabConfig, decode, encode, setup_markdown
from resnet_viz.models import ConfigError, ModelConfig
from resnet_viz.training import TrainConfig


@pytest.mark.parametrize("key", list(PRESETS))
def test_presets_round_trip_through_the_url(key):
    cfg = PRESETS[key].config.normalized().validate()
    decoded, errors = decode(encode(cfg))
    assert errors == []
    assert decoded == cfg


def test_defaults_encode_to_an_empty_url():
    assert encode(LabConfig().normalized()) == {}
    assert decode({})[0] == LabConfig().normalized()


def test_presets_are_what_their_titles_say():
    depth = PRESETS["depth"].config.normalized()
    assert (depth.a.depth, depth.a.skip, depth.b.skip) == (56, False, True)
    vanishing = PRESETS["vanishing"].config.normalized()
    assert vanishing.a.norm == vanishing.b.norm == "none" and vanishing.a.depth == 32
    preact = PRESETS["preact"].config.normalized()
    assert preact.a.skip and preact.b.skip and (preact.a.order, preact.b.order) == ("post", "pre")
    assert {f for f in ModelConfig.__dataclass_fields__ if getattr(preact.a, f) != getattr(preact.b, f)} == {"order"}
    spirals = PRESETS["spirals"].config.normalized()
    assert spirals.a.family == spirals.b.family == "mlp" and spirals.a.num_classes == 2


def test_linked_models_differ_only_in_skip():
    cfg = LabConfig(a=ModelConfig(depth=32, norm="none", skip=False), b=ModelConfig(skip=True, skip_scale=0.5))
    b = cfg.normalized().b
    assert (b.depth, b.norm, b.skip, b.skip_scale) == (32, "none", True, 0.5)
    unlinked = LabConfig(a=ModelConfig(depth=32), b=ModelConfig(depth=8), linked=False).normalized()
    assert unlinked.b.depth == 8


def test_bad_url_values_are_reported_by_field_and_replaced():
    cfg, errors = decode(
        {"a.depth": "21", "a.skip_scale": "3", "lr": "-1", "dataset": "cifar", "a.norm": "x", "epochs": "ten"}
    )
    assert sorted(e.key for e in errors) == sorted(("a.depth", "a.skip_scale", "lr", "dataset", "a.norm", "epochs"))
    assert cfg == LabConfig().normalized()  # every bad value falls back to its default
    cfg.validate()


def test_dataset_decides_the_family_and_depth_rule():
    cfg, errors = decode({"dataset": "spirals", "a.depth": "20"})
    assert errors == [] and cfg.a.family == cfg.b.family == "mlp" and cfg.a.depth == 20
    cfg, errors = decode({"dataset": "moons", "a.depth": "9"})
    assert errors[0].key == "a.depth" and cfg.a.depth == 20  # the default depth, valid for the 2n+2 rule


def test_validate_prefixes_model_fields():
    with pytest.raises(ConfigError) as err:
        LabConfig(a=ModelConfig(depth=21)).validate()
    assert err.value.field == "A.depth"
    with pytest.raises(ConfigError, match="lr"):
        LabConfig(train=TrainConfig(lr=0)).validate()


def test_setup_markdown_shows_what_the_form_shows_for_each_family():
    """The locked lab shows its setup as this table: every setting the form has, per model, and no other."""
    text = setup_markdown(replace(LabConfig(), b=ModelConfig(skip_scale=0.5), linked=True))
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["Skip connections"] == "| Skip connections | off | on, α = 0.5 |"
    assert rows["Depth (weighted layers)"] == "| Depth (weighted layers) | 20 | 20 |"
    assert {"Block", "Shortcut", "Block order"} <= rows.keys() and "Attention heads" not in rows
    assert "**Data**: digits (8 px)" in text
    assert "**Training**: 10 epochs · batch 128 · SGD, lr 0.1, momentum 0.9" in text
    transformer = setup_markdown(PRESETS["transformer"].config)
    assert "| Attention heads | 4 | 4 |" in transformer and "| LayerNorm position | pre | pre |" in transformer
    assert "| Block |" not in transformer and "| Shortcut |" not in transformer
    assert "**Data**: sort (length 8, 2000 sequences)" in transformer and "Adam, lr 0.001" in transformer
    graphs = setup_markdown(PRESETS["oversmooth"].config)
    assert "**Data**: sbm (24 nodes per graph, 700 graphs, noise 0.1)" in graphs
