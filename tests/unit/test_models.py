"""Models: shapes, parameter counts, plain/residual twins, skip scale, names, init, FLOPs."""

import itertools
import threading

import pytest
import torch
from torch import nn

from resnet_viz.models import (
    ConfigError,
    ModelConfig,
    ResidualBlock,
    block_names,
    build_model,
    conv_layer_names,
    count_params,
    flop_counter,
    flops_per_example,
    layer_names,
    set_skip_scale,
)

COMBOS = list(
    itertools.product(
        [("cnn", "basic", 14), ("cnn", "bottleneck", 11), ("mlp", "basic", 6)],
        ["post", "pre"],
        ["batch", "none"],
        ["identity", "projection"],
    )
)


def _config(family: str, block: str, depth: int, order: str, norm: str, shortcut: str, **kw) -> ModelConfig:
    return ModelConfig(
        family=family,
        block=block,
        depth=depth,
        order=order,
        norm=norm,
        shortcut=shortcut,
        width=8,
        in_channels=1 if family == "cnn" else 2,
        input_size=8,
        **kw,
    )


def _inputs(cfg: ModelConfig, n: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (n, 1, 8, 8) if cfg.family == "cnn" else (n, 2)
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize(("arch", "order", "norm", "shortcut"), COMBOS)
def test_shapes_params_and_twins(arch, order, norm, shortcut):
    cfg = _config(*arch, order, norm, shortcut)
    residual, plain = build_model(cfg, seed=3), build_model(cfg.with_skip(False), seed=3)
    initial = [{k: v.clone() for k, v in m.state_dict().items()} for m in (residual, plain)]
    x = _inputs(cfg)
    assert residual(x).shape == (5, 10)
    assert plain(x).shape == (5, 10)
    assert len(layer_names(residual)) == cfg.depth  # depth counts weighted layers on the main path
    assert len(block_names(residual)) == cfg.blocks_per_stage * (3 if cfg.family == "cnn" else 1)
    extra = count_params(residual) - count_params(plain)
    if shortcut == "identity" or cfg.family == "mlp":  # no shape change in an MLP: no projection needed
        assert extra == 0
        # Same seed, same modules: a controlled comparison starts from identical weights.
        for (k, a), (_, b) in zip(initial[0].items(), initial[1].items(), strict=True):
            assert torch.equal(a, b), k
    else:
        assert extra > 0  # option B adds 1x1 projections where the shape changes
        for k, v in initial[0].items():
            if ".shortcut." not in k:  # shortcuts are initialised last: the main path still matches
                assert torch.equal(v, initial[1][k]), k


def test_resnet20_has_027m_params():
    # He et al. 2015, Table 6: ResNet-20 on CIFAR-10 has 0.27M parameters (here 1 input channel, not 3).
    assert round(count_params(build_model(ModelConfig(depth=20, in_channels=3))) / 1e6, 2) == 0.27
    # ... and ResNet-56 0.85M, ResNet-110 1.7M.
    assert round(count_params(build_model(ModelConfig(depth=56, in_channels=3))) / 1e6, 2) == 0.85
    assert round(count_params(build_model(ModelConfig(depth=110, in_channels=3))) / 1e6, 1) == 1.7


@pytest.mark.parametrize("order", ["post", "pre"])
def test_alpha_zero_is_exactly_the_plain_net(order):
    cfg = ModelConfig(depth=14, width=8, order=order)
    residual, plain = build_model(cfg, seed=0).eval(), build_model(cfg.with_skip(False), seed=0).eval()
    x = _inputs(cfg)
    assert not torch.equal(residual(x), plain(x))
    set_skip_scale(residual, 0.0)
    assert torch.equal(residual(x), plain(x))
    set_skip_scale(residual, 0.5)
    assert not torch.equal(residual(x), plain(x))


def test_names_are_stable_and_readable():
    model = build_model(ModelConfig(depth=20))
    names = layer_names(model)
    assert names[0] == "stem.conv" and names[-1] == "head"
    assert names[1:3] == ["stage1.block1.conv1", "stage1.block1.conv2"]
    assert "stage2.block3.conv2" in names
    assert block_names(model)[:2] == ["stage1.block1", "stage1.block2"]
    assert conv_layer_names(model)[0] == "stem.conv" and conv_layer_names(model)[-1] == "stage3.block3.conv2"
    assert names == layer_names(build_model(ModelConfig(depth=20), seed=9))


def test_captum_ready_relus_are_unique_and_not_inplace():
    model = build_model(ModelConfig(depth=14, block="basic"))
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 1 + 2 * 6  # stem + two per block
    assert not any(m.inplace for m in relus)


def test_build_does_not_touch_global_rng():
    before = torch.get_rng_state()
    build_model(ModelConfig(depth=20, init="pytorch"), seed=5)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("init", ["kaiming", "xavier", "pytorch"])
def test_inits_are_seeded_and_distinct(init):
    a, b = build_model(ModelConfig(depth=8, init=init), 1), build_model(ModelConfig(depth=8, init=init), 1)
    c = build_model(ModelConfig(depth=8, init=init), 2)
    w = "stage1.block1.conv1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_init_scales():
    # Kaiming (He et al. 2015b) fan_out for a 3x3 conv with 16 outputs: std = sqrt(2 / (9 * 16)).
    w = build_model(ModelConfig(depth=56, init="kaiming")).get_submodule("stage1.block1.conv1").weight
    assert abs(w.std().item() - (2 / (9 * 16)) ** 0.5) < 0.01
    # Xavier (Glorot & Bengio 2010): std = sqrt(2 / (fan_in + fan_out)) = sqrt(2 / (9*16 + 9*16)).
    w = build_model(ModelConfig(depth=56, init="xavier")).get_submodule("stage1.block1.conv1").weight
    assert abs(w.std().item() - (2 / (2 * 9 * 16)) ** 0.5) < 0.01


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("order", ["post", "pre"])
def test_zero_init_last_makes_every_residual_branch_zero(norm, order):
    model = build_model(ModelConfig(depth=14, width=8, zero_init_last=True, norm=norm, order=order)).eval()
    branches = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: branches.append(mod.residual(inp[0])))
        for m in model.modules()
        if isinstance(m, ResidualBlock)
    ]
    model(_inputs(model.config))
    for h in hooks:
        h.remove()
    assert len(branches) == 6
    assert all(torch.count_nonzero(b) == 0 for b in branches)
    # A plain net ignores it: zeroing its last layers would cut the signal.
    plain = build_model(ModelConfig(depth=14, width=8, zero_init_last=True, skip=False))
    assert torch.count_nonzero(plain(_inputs(plain.config))) > 0


def test_flops_match_hand_count():
    cfg = ModelConfig(depth=8, width=16)
    model = build_model(cfg)
    expected = 0
    size = 8
    for name in layer_names(model):
        m = model.get_submodule(name)
        if isinstance(m, nn.Conv2d):
            size = size // m.stride[0]
            expected += 2 * m.in_channels * m.out_channels * m.kernel_size[0] ** 2 * size * size
        else:
            expected += 2 * m.in_features * m.out_features
    assert flops_per_example(model, cfg) == expected


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"depth": 21}, "depth"),
        ({"depth": 14, "block": "bottleneck"}, "depth"),
        ({"skip_scale": 1.5}, "skip_scale"),
        ({"skip_scale": -0.1}, "skip_scale"),
        ({"family": "rnn"}, "family"),
        ({"norm": "layer"}, "norm"),
        ({"width": 0}, "width"),
        ({"family": "mlp", "block": "bottleneck", "depth": 11}, "block"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        ModelConfig(**kwargs).validate()
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_supports_8_to_110_layers():
    for depth in (8, 110):
        model = build_model(ModelConfig(depth=depth, width=4))
        assert len(layer_names(model)) == depth
    assert ModelConfig(block="bottleneck").allowed_depths()[:3] == [11, 20, 29]


def test_counting_flops_in_one_thread_leaves_gradients_in_another_alone():
    """FlopCounterMode's module tracker hooks every module of the process while it counts: another thread's
    input-gradient pass (a receptive field, while a Train click was costed) raised a RuntimeError. The app's
    counter counts in its own thread only, and counts the same total."""
    net = build_model(ModelConfig(depth=8, width=8), seed=0).eval()
    counting, done = threading.Event(), threading.Event()

    def hold() -> None:
        with flop_counter():
            counting.set()
            done.wait(60)

    other = threading.Thread(target=hold)
    other.start()
    try:
        assert counting.wait(60)
        x = torch.randn(2, 1, 8, 8, requires_grad=True)
        (grad,) = torch.autograd.grad(net(x).sum(), x)
        assert grad.shape == x.shape
    finally:
        done.set()
        other.join()
    counter = flop_counter()
    with counter, torch.no_grad():
        net(torch.zeros(1, 1, 8, 8))
    assert counter.get_total_flops() == flops_per_example(net, ModelConfig(depth=8, width=8)) > 0
