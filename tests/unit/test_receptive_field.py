"""Receptive fields: hand-computed cases, gradient-support cross-checks, and effective-field properties.

References: Araujo, Norris & Sim 2019, "Computing Receptive Fields of Convolutional Neural Networks"
(Distill) for the theoretical field; Luo, Li, Urtasun & Zemel 2016, "Understanding the Effective
Receptive Field in Deep Convolutional Neural Networks" (NeurIPS) for the effective field.
"""

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from torch import nn

from resnet_viz.models import ModelConfig, block_names, build_model, layer_names
from resnet_viz.receptive_field import (
    ERFResult,
    RFInfo,
    UnsupportedOperation,
    _canvas_inputs,
    block_rf,
    effective_rf,
    erf_all_layers,
    erf_layer_names,
    rf_growth,
    rf_layer_names,
    theoretical_rf,
)

NET_CONFIGS = [
    ModelConfig(depth=8, width=4),
    ModelConfig(depth=14, width=4, order="pre"),
    ModelConfig(depth=11, width=4, block="bottleneck"),
    ModelConfig(depth=8, width=4, shortcut="projection"),
    ModelConfig(depth=8, width=4, norm="none"),
]


def _by_name(infos: list[RFInfo]) -> dict[str, RFInfo]:
    return {info.name: info for info in infos}


def _conv(k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(1, 1, k, stride=stride, padding=dilation * (k // 2), dilation=dilation)


def _vgg16(width: int = 2) -> nn.Sequential:
    """VGG-16's feature extractor (Simonyan & Zisserman 2015) at a tiny width, plus a linear head."""
    layers: list[nn.Module] = []
    cin = 3
    for convs in (2, 2, 3, 3, 3):
        for _ in range(convs):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * 7 * 7, 10))


def _alexnet(width: int = 2) -> nn.Sequential:
    """AlexNet's feature extractor (Krizhevsky et al. 2012, torchvision layout) at a tiny width."""
    return nn.Sequential(
        nn.Conv2d(3, width, 11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(width, width, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(width, width, 3, padding=1),
        nn.Conv2d(width, width, 3, padding=1),
        nn.Conv2d(width, width, 3, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.AdaptiveAvgPool2d(6),
        nn.Flatten(),
        nn.Linear(width * 36, 10),
    )


# --------------------------------------------------------------------------------------------------
# Theoretical field: analytic cases (Araujo et al. 2019: r_{l-1} = s_l r_l + (k_l - s_l))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_stacked_3x3_convs_see_2n_plus_1(n: int) -> None:
    info = theoretical_rf(nn.Sequential(*[_conv() for _ in range(n)]), 16)[-1]
    # Each stride-1 3x3 conv adds k - 1 = 2 pixels: 1 + 2n. Centre unit of 16 is (16 - 1) // 2 = 7.
    assert (info.size, info.jump) == (2 * n + 1, 1)
    assert info.region == (7 - n, 7 - n, 7 + n, 7 + n)


def test_stride_then_conv_by_hand() -> None:
    infos = theoretical_rf(nn.Sequential(_conv(stride=2), _conv()), 8)
    # conv 3x3 s2 p1: r = 3, jump 2, unit 0 starts at -1 (one pixel of padding).
    # conv 3x3 s1 p1 on top: r = 3 + (3 - 1) * 2 = 7, jump 2, unit 0 starts at -1 - 1 * 2 = -3.
    # Output is 4x4, centre unit (4 - 1) // 2 = 1: rows -3 + 1 * 2 = -1 to -1 + 7 - 1 = 5.
    assert [(i.size, i.jump) for i in infos] == [(3, 2), (7, 2)]
    assert infos[1].output_shape == (4, 4)
    assert infos[1].region == (-1, -1, 5, 5)
    assert infos[1].region_clipped == (0, 0, 5, 5)
    assert infos[1].to_dict() == {
        "layer": "1",
        "size": 7,
        "jump": 2,
        "region": (-1, -1, 5, 5),
        "region_clipped": (0, 0, 5, 5),
        "output_shape": (4, 4),
        "is_global": False,
    }


def test_pooling_by_hand() -> None:
    net = nn.Sequential(_conv(), nn.MaxPool2d(2), _conv(), nn.AvgPool2d(3, stride=2, padding=1))
    infos = theoretical_rf(net, 16)
    # conv 3x3: r = 3, j = 1, start -1.
    # max pool 2 s2: r = 3 + (2 - 1) * 1 = 4, j = 2, start -1.
    # conv 3x3 p1: r = 4 + 2 * 2 = 8, j = 2, start -1 - 1 * 2 = -3.
    # avg pool 3 s2 p1: r = 8 + 2 * 2 = 12, j = 4, start -3 - 1 * 2 = -5.
    assert [(i.size, i.jump) for i in infos] == [(3, 1), (4, 2), (8, 2), (12, 4)]
    # Last output is 4x4 (16 -> 8 -> 8 -> 4), centre unit 1: rows -5 + 1 * 4 = -1 to -1 + 12 - 1 = 10.
    assert infos[-1].output_shape == (4, 4)
    assert infos[-1].region == (-1, -1, 10, 10)


def test_dilation() -> None:
    # A dilated kernel spans d (k - 1) + 1 pixels: 3x3 with dilation 2 spans 5.
    assert theoretical_rf(nn.Sequential(_conv(dilation=2)), 16)[0].size == 5
    # Stacked: 3, then 3 + 2 * (3 - 1) = 7, then 7 + 4 * (3 - 1) = 15 (as in dilated-conv context modules).
    net = nn.Sequential(_conv(), _conv(dilation=2), _conv(dilation=4))
    assert [i.size for i in theoretical_rf(net, 32)] == [3, 7, 15]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_same_padding_string() -> None:
    conv = nn.Conv2d(1, 1, 4, padding="same")
    # "same" with an even kernel pads (k - 1) // 2 = 1 before and 2 after: unit 0 sees -1 .. 2.
    info = theoretical_rf(nn.Sequential(conv), 8)[0]
    assert (info.size, info.origin) == (4, (-1, -1))


def test_vgg16_and_alexnet_fields() -> None:
    # Published values (Araujo et al. 2019, table of common nets): VGG-16 pool5 212 (conv5_3 196), AlexNet pool5 195.
    vgg = _by_name(theoretical_rf(_vgg16(), 224))
    assert (vgg["28"].size, vgg["30"].size, vgg["30"].jump) == (196, 212, 32)
    assert vgg["32"].is_global and vgg["32"].region_clipped == (0, 0, 223, 223)
    alex = theoretical_rf(_alexnet(), 224)
    assert [i.size for i in alex if not i.is_global] == [11, 19, 51, 67, 99, 131, 163, 195, 195]
    assert alex[-2].output_shape == (6, 6) and alex[-1].is_global


def test_unsupported_and_non_convolutional_models_raise() -> None:
    with pytest.raises(UnsupportedOperation):
        theoretical_rf(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, 3, padding=1)), 8, ["1"])
    with pytest.raises(ValueError, match="convolutional"):
        theoretical_rf(build_model(ModelConfig(family="mlp", depth=4, in_channels=2, num_classes=2)), 8)


# --------------------------------------------------------------------------------------------------
# Theoretical field of our nets


def test_default_layers_follow_forward_order_and_model_names() -> None:
    model = build_model(ModelConfig(depth=8, width=4))
    names = [i.name for i in theoretical_rf(model, 8)]
    assert set(names) == set(layer_names(model)) | set(block_names(model)) == set(rf_layer_names(model))
    assert names.index("stage1.block1.conv2") < names.index("stage1.block1") < names.index("stage2.block1.conv1")
    assert names[0] == "stem.conv" and names[-1] == "head"
    assert erf_layer_names(model) == ["stem.conv", *block_names(model)]


@pytest.mark.parametrize("cfg", NET_CONFIGS, ids=lambda c: f"{c.block}-{c.order}-{c.shortcut}-{c.norm}")
def test_skips_do_not_change_the_theoretical_field(cfg: ModelConfig) -> None:
    # Araujo et al. 2019 ("multi-path"): for aligned paths the field is the largest over the paths,
    # and the shortcut path (a strided 1x1 subsample) is always the smaller one.
    def fields(skip: bool) -> list[tuple[object, ...]]:
        model = build_model(cfg.with_skip(skip))
        return [(i.name, i.size_hw, i.jump_hw, i.region) for i in theoretical_rf(model, 17)]

    assert fields(True) == fields(False)


def test_block_output_sees_what_its_last_conv_sees() -> None:
    model = build_model(ModelConfig(depth=14, width=4))
    rf = _by_name(theoretical_rf(model, 16))
    # Basic blocks: 1 (pixel) + stem 2 + 2 per conv in stage 1 (4 convs) = 11; the block adds nothing.
    assert rf["stage1.block2"].size == rf["stage1.block2.conv2"].size == 11
    # The stride-2 conv adds 2 * 1, the next conv 2 * 2 (jump 2 from then on).
    assert rf["stage2.block1"].size == rf["stage2.block1.conv2"].size == 11 + 2 + 4
    blocks = block_rf(model, 16)
    assert list(blocks) == block_names(model) and blocks["stage2.block1"] == rf["stage2.block1"]


def _linearised(model: nn.Module) -> nn.Module:
    """Copy with every ReLU replaced by the identity, max pools by average pools, and all conv weights
    positive, so no path's gradient can vanish: the input-gradient support is exactly the union of
    every path's field. ReLUs are pointwise, so removing them cannot change the theoretical field."""
    clone = copy.deepcopy(model).eval()
    for name, module in list(clone.named_modules()):
        parent, _, attr = name.rpartition(".")
        owner = clone.get_submodule(parent) if parent else clone
        if isinstance(module, nn.ReLU):
            setattr(owner, attr, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            setattr(owner, attr, nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode))
        elif isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.abs() + 0.05
    return clone


def _centre_unit(out: torch.Tensor) -> torch.Tensor:
    """Sum over channels of the centre unit ((h - 1) // 2, (w - 1) // 2) of one (C, H, W) output row."""
    return out.sum() if out.dim() == 1 else out[:, (out.shape[1] - 1) // 2, (out.shape[2] - 1) // 2].sum()


def _support_boxes(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[int, int, int, int]]:
    """Bounding box of the non-zero input gradient of each layer's centre unit (summed over channels).

    One forward and one backward pass for all layers: batch row b holds a copy of `x` and carries the
    probe of layer b; in eval mode rows do not interact, so row b's input gradient is layer b's alone.
    """
    outputs: dict[str, torch.Tensor] = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(lambda _m, _i, o, name=name: outputs.setdefault(name, o))
    rows = x.repeat(len(names), 1, 1, 1).requires_grad_(True)
    model(rows)
    (grad,) = torch.autograd.grad(sum(_centre_unit(outputs[name][b]) for b, name in enumerate(names)), rows)
    boxes = {}
    for b, name in enumerate(names):
        ys, xs = np.nonzero(grad[b].abs().sum(dim=0).numpy())
        boxes[name] = (ys.min(), xs.min(), ys.max(), xs.max())
    return boxes


@pytest.mark.parametrize("size", [9, 16])
@pytest.mark.parametrize("cfg", NET_CONFIGS, ids=lambda c: f"{c.block}-{c.order}-{c.shortcut}-{c.norm}")
@pytest.mark.parametrize("skip", [True, False])
def test_graph_field_equals_input_gradient_support(cfg: ModelConfig, skip: bool, size: int) -> None:
    # The field from the graph must be exactly the region where the centre unit's input gradient
    # can be non-zero (Araujo et al. 2019 check fields the same way, by backpropagating an impulse).
    # Odd and even sizes cover the alignment of the stride-2 conv with the stride-2 identity subsample.
    model = build_model(cfg.with_skip(skip), seed=3)
    infos = theoretical_rf(model, size)
    boxes = _support_boxes(_linearised(model), [i.name for i in infos], torch.randn(1, 1, size, size))
    assert {i.name: i.region_clipped for i in infos} == boxes


@pytest.mark.parametrize("net", [_vgg16, _alexnet], ids=["vgg16", "alexnet"])
def test_sequential_field_equals_input_gradient_support(net: Callable[[], nn.Module]) -> None:
    model = net()
    infos = [i for i in theoretical_rf(model, 227) if i.name in {"0", "2", "5", "7", "12", "16", "23", "30"}]
    boxes = _support_boxes(_linearised(model), [i.name for i in infos], torch.randn(1, 3, 227, 227))
    assert {i.name: i.region_clipped for i in infos} == boxes


# --------------------------------------------------------------------------------------------------
# Effective field (Luo et al. 2016)


def test_single_conv_erf_is_the_absolute_kernel_sum() -> None:
    # Luo et al. 2016, Sec. 2: for a linear layer the ERF is the kernel itself. With y_c(u) =
    # sum_t w[c, 0, t] x(u + t - 1) (cross-correlation, no flip), d(sum_c y_c(u)) / dx(u + t - 1)
    # = sum_c w[c, 0, t], the same for every input, so the mean absolute gradient is |sum_c w[c]|.
    torch.manual_seed(0)  # the same weights whatever ran before (a sum near 0 has float32's error, not 1e-6 of it)
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    result = effective_rf(nn.Sequential(conv), "0", n=3)
    top, left, bottom, right = result.theoretical.region
    expected = np.zeros_like(result.map)
    expected[top : bottom + 1, left : right + 1] = conv.weight.detach().sum(dim=0)[0].abs().double().numpy()
    np.testing.assert_allclose(result.map, expected, rtol=1e-6, atol=1e-9)
    assert result.centre == ((top + bottom) // 2, (left + right) // 2) and not result.clipped


def test_stacked_linear_convs_erf_is_the_kernel_convolution() -> None:
    # Luo et al. 2016, Sec. 2.2: without non-linearities the ERF of stacked layers is the convolution
    # of their kernels (the sum over all paths of the products of the weights along them).
    torch.manual_seed(0)
    first, second = nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.Conv2d(1, 1, 3, padding=1, bias=False)
    result = effective_rf(nn.Sequential(first, second), "1", n=1)
    kernel = convolve2d(first.weight.detach()[0, 0].double().numpy(), second.weight.detach()[0, 0].double().numpy())
    top, left, bottom, right = result.theoretical.region
    # float32 gradients: an entry near 0 is off by float32's rounding of the whole kernel, not 1e-5 of itself
    # (CI saw 4.6594e-05 for 4.6595e-05 with unseeded weights)
    atol = 1e-6 * np.abs(kernel).max()
    np.testing.assert_allclose(result.map[top : bottom + 1, left : right + 1], np.abs(kernel), rtol=1e-5, atol=atol)
    assert result.map.sum() == pytest.approx(np.abs(kernel).sum(), rel=1e-5)


@pytest.mark.parametrize("cfg", NET_CONFIGS[:3], ids=["basic", "pre", "bottleneck"])
@pytest.mark.parametrize("skip", [True, False])
def test_erf_mass_lies_inside_the_theoretical_field(cfg: ModelConfig, skip: bool) -> None:
    results = erf_all_layers(build_model(cfg.with_skip(skip), seed=1), n=1)
    assert list(results) == erf_layer_names(build_model(cfg))
    for r in results.values():
        top, left, bottom, right = r.theoretical.region
        outside = r.map.copy()
        outside[top : bottom + 1, left : right + 1] = 0
        assert not r.clipped and r.map.sum() > 0
        assert np.count_nonzero(outside) == 0, r.name
        assert 0 <= r.radius50 <= r.radius90 and 0 < r.area_fraction50 <= r.area_fraction90 <= 1


def test_erf_radius_grows_with_depth_in_a_plain_net() -> None:
    # Luo et al. 2016, Sec. 2.3 and Fig. 1: the ERF grows with depth (like sqrt(depth) for a fixed stride).
    results = erf_all_layers(
        build_model(ModelConfig(depth=20, width=8, skip=False), seed=0),
        ["stem.conv", "stage1.block3", "stage2.block3", "stage3.block3"],
        n=4,
    )
    radii = [r.radius50 for r in results.values()]
    assert radii == sorted(radii) and len(set(radii)) == len(radii)
    assert [r.theoretical.size for r in results.values()] == [3, 15, 37, 81]


def test_auto_canvas_is_exact_on_a_larger_canvas() -> None:
    # A unit whose whole field is inside the canvas never reads padding, so the same pixels under its
    # field give the same gradient on any larger canvas. Auto canvas for stage3.block1 of a depth-8 net:
    # field 25, jump 4 -> half-width ceil(12 + 2) = 14, plus margin 2 -> 33; a 41-pixel canvas is
    # 4 pixels (one jump) larger on each side, so its centre unit sees the same pixels shifted by 4.
    model = build_model(ModelConfig(depth=8, width=4), seed=2)
    images = torch.randn(3, 1, 41, 41)
    small = effective_rf(model, "stage3.block1", inputs=images)
    large = effective_rf(model, "stage3.block1", inputs=images, canvas=41)
    assert (small.canvas_size, large.canvas_size) == (33, 41)
    np.testing.assert_allclose(large.map[4:37, 4:37], small.map, rtol=1e-4, atol=1e-7)
    assert large.map.sum() == pytest.approx(small.map.sum(), rel=1e-5)
    assert small.n_samples == 3


def test_explicit_small_canvas_reports_clipping() -> None:
    result = effective_rf(build_model(ModelConfig(depth=8, width=4)), "stage3.block1", canvas=15)
    assert result.clipped and result.map.shape == (15, 15)
    assert result.theoretical.region_clipped == (0, 0, 14, 14)


def test_images_are_tiled_around_the_canvas_centre() -> None:
    images = torch.arange(25.0).reshape(1, 1, 5, 5)
    canvas = _canvas_inputs(images, 0, 1, 11, torch.Generator())[0, 0]
    assert canvas[5, 5] == images[0, 0, 2, 2]  # centre pixel on centre pixel
    torch.testing.assert_close(canvas[3:8, 3:8], images[0, 0])
    torch.testing.assert_close(canvas[:, :5], canvas[:, 5:10])  # periodic
    cropped = _canvas_inputs(torch.arange(81.0).reshape(1, 1, 9, 9), 0, 1, 3, torch.Generator())[0, 0]
    torch.testing.assert_close(cropped, torch.arange(81.0).reshape(9, 9)[3:6, 3:6])


def test_erf_never_touches_the_model() -> None:
    model = build_model(ModelConfig(depth=8, width=4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[str] = []
    model.stem.register_forward_hook(lambda *_: calls.append("hook"))
    result = effective_rf(model, "stage2.block1", n=2)
    assert isinstance(result, ERFResult)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert calls == []


def test_erf_is_seeded() -> None:
    model = build_model(ModelConfig(depth=8, width=4))
    a, b = (effective_rf(model, "stage2.block1", seed=5) for _ in range(2))
    np.testing.assert_array_equal(a.map, b.map)
    assert not np.array_equal(a.map, effective_rf(model, "stage2.block1", seed=6).map)


def test_rf_growth_rows() -> None:
    model = build_model(ModelConfig(depth=14, width=4))
    rows = rf_growth(model, n=1)
    assert [row["layer"] for row in rows] == erf_layer_names(model)
    sizes = [row["rf_size"] for row in rows]
    assert sizes == sorted(sizes) and sizes[0] == 3
    assert all(row["erf_radius50"] <= row["erf_radius90"] for row in rows)
