"""Transformers and GCNs: data, blocks, names, the skip toggle, and bad configs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from resnet_viz.cli import main
from resnet_viz.data import COMMUNITIES, VOCAB, DataConfig, load_dataset
from resnet_viz.gcn import dirichlet_energy, normalized_adjacency, smoothing_profile
from resnet_viz.lab import LabConfig, decode, encode
from resnet_viz.models import (
    ConfigError,
    ModelConfig,
    block_names,
    build_model,
    frozen_copy,
    layer_names,
    set_skip_scale,
)
from resnet_viz.pictures import kind, picture
from resnet_viz.probes import Probe
from resnet_viz.training import fit_to_data
from resnet_viz.transformer import attention_maps

SORT = DataConfig(name="sort", n_samples=200)
SBM = DataConfig(name="sbm", input_size=16, n_samples=200)
FAMILIES = {
    "cnn": (DataConfig(), ModelConfig(depth=8, width=8)),
    "mlp": (DataConfig(name="moons"), ModelConfig(depth=6, width=8)),
    "transformer": (SORT, ModelConfig(depth=6, width=16, heads=2, norm="layer")),
    "gcn": (SBM, ModelConfig(depth=6, width=8)),
}


def test_sort_targets_are_the_sorted_inputs() -> None:
    ds = load_dataset(SORT)
    assert ds.x_train.dtype == torch.long and ds.x_train.shape == (140, 8) and ds.family == "transformer"
    assert torch.equal(ds.y_train, ds.x_train.sort(dim=1).values)
    assert int(ds.x_train.min()) >= 0 and int(ds.x_train.max()) < VOCAB


def test_sbm_graphs_are_simple_undirected_and_mostly_within_communities() -> None:
    ds = load_dataset(SBM)
    n = SBM.input_size
    assert ds.x_train.shape == (140, n, n + COMMUNITIES) and ds.y_train.shape == (140, n) and ds.family == "gcn"
    adj = ds.x_train[..., :n]
    assert set(adj.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(adj, adj.transpose(1, 2)) and float(adj.diagonal(dim1=1, dim2=2).abs().sum()) == 0
    same = ds.y_train[:, :, None] == ds.y_train[:, None, :]
    inside, outside = float(adj[same].sum()), float(adj[~same].sum())
    assert inside / (inside + outside) > 0.6  # about 3 neighbours inside the community for 1 outside
    # every community has the same size in every graph
    assert (torch.stack([(ds.y_train == c).sum(1) for c in range(COMMUNITIES)]) == n // COMMUNITIES).all()
    # a node's features alone are a weak clue: nearest one-hot is right well under 80% of the time
    alone = (ds.x_train[..., n:].argmax(-1) == ds.y_train).float().mean()
    assert 0.3 < float(alone) < 0.8


@pytest.mark.parametrize("family", list(FAMILIES))
def test_skip_off_is_alpha_zero_with_the_same_init(family: str) -> None:
    data, cfg = FAMILIES[family]
    ds = load_dataset(data)
    cfg = fit_to_data(cfg, data)
    residual, plain = build_model(cfg, seed=3), build_model(replace(cfg, skip=False), seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(residual.state_dict().values(), plain.state_dict().values(), strict=True)
    )
    x = ds.x_train[:4]
    set_skip_scale(residual, 0.0)
    assert torch.equal(residual.eval()(x), plain.eval()(x))
    set_skip_scale(residual, 1.0)
    assert not torch.allclose(residual(x), plain(x))


def test_names_follow_one_scheme() -> None:
    tf = build_model(fit_to_data(FAMILIES["transformer"][1], SORT))
    assert block_names(tf) == ["layer1.attn", "layer1.mlp", "layer2.attn", "layer2.mlp"]
    assert layer_names(tf) == [
        "stem.embed",
        *[f"layer{i}.{s}" for i in (1, 2) for s in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")],
        "head",
    ]
    gcn = build_model(fit_to_data(FAMILIES["gcn"][1], SBM))
    assert block_names(gcn) == [f"stage1.block{b}" for b in range(1, 5)]
    assert layer_names(gcn) == ["stem.conv", *[f"stage1.block{b}.conv1" for b in range(1, 5)], "head"]


@pytest.mark.parametrize(
    ("data", "change", "field"),
    [
        (SORT, {"width": 30, "heads": 4}, "heads"),
        (SORT, {"norm": "batch"}, "norm"),
        (SBM, {"block": "bottleneck"}, "block"),
        (SBM, {"depth": 40}, "depth"),
        (SORT, {"depth": 5}, "depth"),
        (DataConfig(), {"norm": "layer"}, "norm"),
    ],
)
def test_bad_configs_name_the_field(data: DataConfig, change: dict, field: str) -> None:
    cfg = replace(ModelConfig(norm="layer" if data is SORT else "batch"), **data.model_fields(), **change)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.field == field


def test_lab_carries_settings_across_families() -> None:
    """A form moved from digits to sort or sbm keeps working: the family's norm, basic blocks, dividing heads."""
    cfg = LabConfig(a=ModelConfig(block="bottleneck", depth=20, width=30, heads=4), data=SORT).normalized()
    assert (cfg.a.family, cfg.a.norm, cfg.a.block, cfg.a.heads) == ("transformer", "layer", "basic", 3)
    cfg.validate()
    back = LabConfig(a=replace(cfg.a, family="cnn"), b=cfg.b, data=DataConfig()).normalized()
    assert back.a.norm == "batch"
    decoded, issues = decode(encode(cfg))
    assert decoded == cfg and issues == []
    _, issues = decode({"dataset": "sort", "a.heads": "9"})
    assert [i.key for i in issues] == ["a.heads"]


def test_attention_maps_are_distributions_per_query() -> None:
    ds = load_dataset(SORT)
    model = build_model(fit_to_data(FAMILIES["transformer"][1], SORT))
    maps = attention_maps(model, ds.x_test[0])
    assert maps.shape == (2, 2, 8, 8) and model.training  # mode restored
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 8))
    shown, tokens, names = picture(model, ds)
    assert kind(SORT) == "attention" and names == ["layer1", "layer2"] and tokens.tolist() == ds.x_test[0].tolist()
    assert np.allclose(shown, maps.numpy())


def test_dirichlet_energy_is_zero_for_smooth_features_and_scale_free() -> None:
    """Cai & Wang 2020: the energy vanishes on the null space of the normalised Laplacian (D^1/2 1)."""
    ds = load_dataset(SBM)
    adj = normalized_adjacency(ds.x_train[:8, :, : SBM.input_size])
    eigen = torch.linalg.eigvalsh(adj)
    assert float(eigen.max()) == pytest.approx(1.0, abs=1e-5) and float(eigen.min()) > -1 - 1e-5
    degree_scaled = (ds.x_train[:8, :, : SBM.input_size].sum(-1) + 1).sqrt()[..., None] * torch.ones(1, 1, 3)
    assert dirichlet_energy(degree_scaled, adj).abs().max() < 1e-5
    h = torch.randn(8, SBM.input_size, 5)
    assert torch.allclose(dirichlet_energy(h, adj), dirichlet_energy(7 * h, adj))
    assert (dirichlet_energy(h, adj) > 0.1).all()  # random features are far from smooth


def test_deep_plain_gcn_smooths_with_depth_at_init() -> None:
    """Li, Han & Wu 2018, Sec. 4: repeated graph convolution drives node features to one vector."""
    ds = load_dataset(SBM)
    cfg = fit_to_data(ModelConfig(depth=18, width=16, skip=False), SBM)
    profile = smoothing_profile(build_model(cfg), ds.x_val[:32])
    assert len(profile) == 17 and profile[-1] < profile[0] / 20
    assert kind(SBM) == "smoothing" and picture(build_model(cfg), ds)[1][:2] == ["stem", "stage1.block1"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_probe_observes_every_block_and_leaves_no_trace(family: str) -> None:
    """The probe is each block's observer while attached; a frozen copy (what analyses use) carries none."""
    data, cfg = FAMILIES[family]
    ds = load_dataset(data)
    model = build_model(fit_to_data(cfg, data)).train()
    probe = Probe(model)
    blocks = [model.get_submodule(name) for name in block_names(model)]
    assert all(block.observer is probe for block in blocks)
    copy = frozen_copy(model)
    assert all(copy.get_submodule(name).observer is None for name in block_names(copy))
    probe.arm()
    loss = torch.nn.functional.cross_entropy(model(ds.x_train[:8]), ds.y_train[:8])
    loss.backward()
    probe.before_step()
    read = probe.read()
    assert len(read["act_std"]) == len(read["block_grad_norm"]) == len(blocks)
    probe.close()
    assert all(block.observer is None for block in blocks)


def test_cli_limits_refuse_transformer_and_gcn_data(tmp_path, capsys) -> None:
    assert main(["limits", "lesions", "--dataset", "sbm", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "dataset: the limits analyses study CNNs and MLPs" in err and "gcn" in err
