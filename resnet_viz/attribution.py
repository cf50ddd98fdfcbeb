"""Attribution maps through Captum, and the checks that say whether to trust them.

Every method runs on a snapshot of the model (`models.frozen_copy`: a hook-free deep copy in eval mode with
frozen parameters), never on the net a training job is updating. Attributions are summed over
channels into one (N, H, W) map per image, and `normalize_map` is the single display normalisation
every figure uses.

Methods (`METHODS`): Saliency (Simonyan et al. 2014), Input x Gradient (Shrikumar et al. 2016),
Integrated Gradients (Sundararajan et al. 2017), SmoothGrad (Smilkov et al. 2017), Grad-CAM
(Selvaraju et al. 2017), Occlusion (Zeiler & Fergus 2014) and DeepLift (Shrikumar et al. 2017).

Checks:

- `sanity_check`: cascading randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency
  Maps"). A map that explains the model must change as the model's weights are destroyed.
- `localisation`: on ``shapes``, how much positive attribution falls inside the ground-truth mask
  compared with the mask's area (chance), and the pointing game (Zhang et al. 2016).
- `completeness_error`: Integrated Gradients must sum to F(x) - F(baseline) (Sundararajan et al.
  2017, Prop. 1); the relative gap is a per-image quality badge.

Nothing here imports Streamlit. Every method either returns finite maps of the input's spatial
shape or raises `MethodUnavailable` with a reason a page can show.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
from captum.attr import (
    DeepLift,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from torch import nn

from .data import DataConfig
from .models import ModelConfig, Net, block_names, frozen_copy
from .training import TrainConfig, train_models

NormMode = Literal["abs", "signed"]
Target = int | Sequence[int] | np.ndarray | torch.Tensor
Baseline = float | torch.Tensor | None

IG_STEPS = 32  # Gauss-Legendre steps to start from; images short of IG_TOLERANCE get more
IG_TOLERANCE = 0.05  # completeness target: |sum(attr) - (F(x) - F(b))| within 5% of F(x) - F(b)
IG_MAX_STEPS = 256  # most steps per image when refining (Sundararajan et al. 2017: 20 to 300 suffice)
SMOOTHGRAD_SAMPLES = 50  # noisy copies per image, as Smilkov et al. 2017 recommend
SMOOTHGRAD_NOISE = 0.15  # noise std as a fraction of the data range (Smilkov et al. 2017: 10-20%)
BATCH_ROWS = 512  # rows per forward pass for IG, SmoothGrad and Occlusion: speed at bounded memory
DEEPLIFT_TOLERANCE = 0.01  # DeepLift sums to F(x) - F(b) exactly up to rounding; a larger gap means broken rules
COMPLETENESS_EPS = 1e-3  # logits: smallest |F(x) - F(baseline)| used as the relative error's denominator


@dataclass(frozen=True)
class MethodInfo:
    """How a method is named, shown and cited."""

    name: str  # key passed to `attribute`
    label: str  # human label for menus and legends
    signed: bool  # maps carry a meaningful sign: show them with normalize_map(mode="signed")
    reference: str  # paper the method comes from


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("saliency", "Saliency", False, "Simonyan et al. 2014"),
        MethodInfo("input_x_gradient", "Input x Gradient", True, "Shrikumar et al. 2016"),
        MethodInfo("integrated_gradients", "Integrated Gradients", True, "Sundararajan et al. 2017"),
        MethodInfo("smoothgrad", "SmoothGrad", True, "Smilkov et al. 2017"),
        MethodInfo("gradcam", "Grad-CAM", False, "Selvaraju et al. 2017"),
        MethodInfo("occlusion", "Occlusion", True, "Zeiler & Fergus 2014"),
        MethodInfo("deeplift", "DeepLift", True, "Shrikumar et al. 2017"),
    )
}


class MethodUnavailable(RuntimeError):
    """A method cannot explain this model (or these inputs); `reason` is meant for the page."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"{method}: {reason}")
        self.method = method
        self.reason = reason


@dataclass(frozen=True)
class AttributionResult:
    """The maps of one method for a batch of images, with what it took to make them."""

    method: str  # key of METHODS
    maps: np.ndarray  # (N, H, W) float32, attributions summed over input channels; finite
    target: np.ndarray  # (N,) int64, the class each map explains
    delta: np.ndarray | None = None  # (N,) convergence delta sum(attr) - (F(x) - F(b)): IG and DeepLift only
    completeness: np.ndarray | None = None  # (N,) |delta| / |F(x) - F(b)|, the quality badge: IG and DeepLift
    gap: np.ndarray | None = None  # (N,) F(x) - F(b) in logits: IG and DeepLift; near 0 makes the badge ill-conditioned
    layer: str | None = None  # Grad-CAM's layer
    options: dict[str, object] = field(default_factory=dict)  # the parameters actually used
    seconds: float = 0.0  # wall time of the attribution


# --------------------------------------------------------------------------------------------------
# Snapshot and inputs


def _inputs(inputs: torch.Tensor) -> torch.Tensor:
    """A private float copy that requires grad, so Captum never flips flags on shared dataset tensors."""
    if inputs.dim() != 4:
        raise ValueError(f"attribution maps need image inputs (N, C, H, W); got shape {tuple(inputs.shape)}")
    return inputs.detach().to(torch.float32).clone().requires_grad_(True)


def _targets(target: Target, n: int, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(target), dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"need one target per image ({n}); got {t.numel()}")
    if bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(f"targets must be class indices in [0, {num_classes}); got {t.tolist()}")
    return t.clone()


def _baseline(x: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """The reference input; by default zeros, i.e. the training-set mean image after standardisation."""
    b = torch.as_tensor(0.0 if baseline is None else baseline, dtype=x.dtype)
    return b.expand_as(x).detach().clone()


def _target_logits(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x.detach()).gather(1, target[:, None])[:, 0]


# --------------------------------------------------------------------------------------------------
# Methods. Each returns the raw attribution (N, C or 1, H, W), the convergence delta or None, and
# the options it used.

_Raw = tuple[torch.Tensor, torch.Tensor | None, dict[str, object]]


def _saliency(net: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: Baseline) -> _Raw:
    """|dF/dx| (Simonyan et al. 2014), summed rather than maxed over channels like every method here."""
    return Saliency(net).attribute(x, target=target, abs=True), None, {}


def _input_x_gradient(net: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: Baseline) -> _Raw:
    return InputXGradient(net).attribute(x, target=target), None, {}


def _relative_error(delta: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """|delta| / |F(x) - F(b)|, the denominator floored at `COMPLETENESS_EPS` logits."""
    return delta.detach().abs() / gap.abs().clamp_min(COMPLETENESS_EPS)


def _integrated_gradients(
    net: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: Baseline,
    n_steps: int = IG_STEPS,
    method: str = "gausslegendre",
    tolerance: float = IG_TOLERANCE,
    max_steps: int = IG_MAX_STEPS,
) -> _Raw:
    """Integrated Gradients, with the steps doubled for images that are not yet complete.

    Sundararajan et al. 2017 (Sec. 5) advise checking that the attributions add up to within 5% of
    F(x) - F(baseline) and raising the number of steps until they do ("between 20 and 300 steps").
    Images whose relative error exceeds `tolerance` are recomputed with twice the steps, up to
    `max_steps`; the rest keep the cheap result. `options["n_steps"]` lists the steps per image.
    """
    b = _baseline(x, baseline)
    xs = x.detach()
    gap = _target_logits(net, xs, target) - _target_logits(net, b, target)
    attr, delta = torch.empty_like(xs), torch.empty(len(xs))
    steps_used = np.zeros(len(xs), dtype=np.int64)
    pending, steps = torch.arange(len(xs)), n_steps
    while len(pending):
        a, d = IntegratedGradients(net).attribute(
            xs[pending].requires_grad_(True),
            baselines=b[pending],
            target=target[pending],
            n_steps=steps,
            method=method,
            internal_batch_size=max(BATCH_ROWS, 2 * len(pending)),
            return_convergence_delta=True,
        )
        attr[pending], delta[pending], steps_used[pending.numpy()] = a.detach(), d.detach(), steps
        failing = _relative_error(d, gap[pending]) > tolerance
        pending, steps = (pending[failing], 2 * steps) if 2 * steps <= max_steps else (pending[:0], steps)
    return attr, delta, {"n_steps": steps_used, "method": method, "tolerance": tolerance, "max_steps": max_steps}


def _smoothgrad(
    net: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: Baseline,
    nt_samples: int = SMOOTHGRAD_SAMPLES,
    noise_level: float = SMOOTHGRAD_NOISE,
    data_range: float | None = None,
    seed: int = 0,
) -> _Raw:
    """Mean signed gradient over noisy copies (Smilkov et al. 2017, Eq. 3).

    The noise std is `noise_level` times the data range (that of `inputs` unless given). Captum
    draws the noise from PyTorch's global generator, so it runs inside a forked, seeded RNG state:
    deterministic, and the caller's global RNG is restored afterwards.
    """
    span = float(x.detach().max() - x.detach().min()) if data_range is None else float(data_range)
    stdev = noise_level * span
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attr = NoiseTunnel(Saliency(net)).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=nt_samples,
            nt_samples_batch_size=max(1, min(nt_samples, BATCH_ROWS // len(x))),
            stdevs=stdev,
            target=target,
            abs=False,
        )
    return attr, None, {"nt_samples": nt_samples, "noise_level": noise_level, "stdev": stdev, "seed": seed}


def default_gradcam_layer(model: nn.Module) -> str:
    """The last stage (its last block's output): coarsest, most class-specific maps, as in Selvaraju et al."""
    stages = [name for name, _ in model.named_children() if name.startswith("stage")]
    if not stages:
        raise MethodUnavailable("gradcam", "the model has no stage1, stage2, ... children; pass a layer name")
    return stages[-1]


def _gradcam(
    net: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: Baseline,
    layer: str | None = None,
    relu: bool = True,
    interpolate_mode: str = "bilinear",
) -> _Raw:
    """Grad-CAM on any named layer, upsampled to the input (bilinear, as Selvaraju et al. 2017).

    The ReLU keeps only evidence for the target class, as in the paper.
    """
    name = layer or default_gradcam_layer(net)
    try:
        module = net.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"no layer named {name!r} in the model") from err
    cam = LayerGradCam(net, module).attribute(x, target=target, relu_attributions=relu)
    if cam.dim() != 4:
        raise MethodUnavailable("gradcam", f"layer {name!r} has no spatial output (shape {tuple(cam.shape)})")
    up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode=interpolate_mode)
    return up, None, {"layer": name, "relu": relu, "interpolate_mode": interpolate_mode}


def occlusion_window(size: int) -> tuple[int, int]:
    """(window, stride) for an image side: stride about size/8, window twice the stride.

    16 px -> 4 px windows every 2 px, 8 px -> 2 every 1: 7 x 7 = 49 occlusions per image either way.
    Where the stride does not divide evenly, Captum cuts the last window at the border: every pixel is covered.
    """
    stride = max(1, (size + 4) // 8)
    return min(2 * stride, size), stride


def _occlusion(
    net: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: Baseline,
    window: int | None = None,
    stride: int | None = None,
) -> _Raw:
    """Drop in the target logit when a square patch is set to the baseline (Zeiler & Fergus 2014)."""
    auto_window, auto_stride = occlusion_window(min(x.shape[-2:]))
    window, stride = window or auto_window, stride or auto_stride
    channels = x.shape[1]
    attr = Occlusion(net).attribute(
        x,
        sliding_window_shapes=(channels, window, window),
        strides=(channels, stride, stride),
        baselines=_baseline(x, baseline),
        target=target,
        perturbations_per_eval=max(1, BATCH_ROWS // len(x)),
    )
    return attr, None, {"window": window, "stride": stride}


def _deeplift(net: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: Baseline) -> _Raw:
    """DeepLift's Rescale rule (Shrikumar et al. 2017) via Captum's hooks on every nn.ReLU.

    It needs each non-linearity to be its own module, used once per forward; when Captum rejects
    the model the error becomes `MethodUnavailable`.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
        try:
            attr, delta = DeepLift(net).attribute(
                x, baselines=_baseline(x, baseline), target=target, return_convergence_delta=True
            )
        except (RuntimeError, AssertionError, TypeError, ValueError) as err:
            raise MethodUnavailable("deeplift", f"Captum's DeepLift cannot run on this model: {err}") from err
    return attr, delta, {}


_RUNNERS: dict[str, Callable[..., _Raw]] = {
    "saliency": _saliency,
    "input_x_gradient": _input_x_gradient,
    "integrated_gradients": _integrated_gradients,
    "smoothgrad": _smoothgrad,
    "gradcam": _gradcam,
    "occlusion": _occlusion,
    "deeplift": _deeplift,
}


def _run(
    net: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    method: str,
    baseline: Baseline,
    options: Mapping[str, object],
) -> AttributionResult:
    """`attribute` on a net that is already a snapshot (no copy): sanity checks randomise it in place."""
    if method not in _RUNNERS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    x = _inputs(inputs)
    start = time.perf_counter()
    with torch.no_grad():
        logits = net(x.detach())
    if not bool(torch.isfinite(logits).all()):
        raise MethodUnavailable(method, "the model's outputs are not finite (did training diverge?)")
    t = _targets(target, len(x), logits.shape[1])
    with torch.enable_grad():
        attr, delta, used = _RUNNERS[method](net, x, t, baseline, **options)
    maps = attr.detach().sum(dim=1).numpy().astype(np.float32)
    if not np.isfinite(maps).all():
        raise MethodUnavailable(method, "the attribution is not finite on these inputs")
    gap = completeness = None
    if delta is not None:
        gap = _target_logits(net, x, t) - _target_logits(net, _baseline(x, baseline), t)
        completeness = _relative_error(delta, gap).numpy()
    return AttributionResult(
        method=method,
        maps=maps,
        target=t.numpy(),
        delta=None if delta is None else delta.detach().numpy(),
        completeness=completeness,
        gap=None if gap is None else gap.numpy(),
        layer=str(used["layer"]) if "layer" in used else None,
        options=used,
        seconds=time.perf_counter() - start,
    )


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    method: str,
    *,
    layer: str | None = None,
    baseline: Baseline = None,
    **opts: object,
) -> AttributionResult:
    """Explain `target` (one class index, or one per image) for `inputs` (N, C, H, W) with `method`.

    Runs on `frozen_copy(model)`, so the model itself is never changed. `layer` is Grad-CAM's layer
    (default: the last stage); `baseline` (float or tensor broadcastable to the inputs, default 0,
    the mean image) serves IG, DeepLift and Occlusion. Method options (defaults):

    - integrated_gradients: n_steps=32, method="gausslegendre", tolerance=0.05, max_steps=256
    - smoothgrad: nt_samples=50, noise_level=0.15, data_range=None (that of `inputs`), seed=0
    - gradcam: relu=True, interpolate_mode="bilinear"
    - occlusion: window=None, stride=None (from `occlusion_window`)

    Raises `MethodUnavailable` when the method cannot explain this model.
    """
    options = dict(opts)
    if method == "gradcam":
        options["layer"] = layer
    elif layer is not None:
        raise ValueError(f"`layer` applies to gradcam only, not {method!r}")
    return _run(frozen_copy(model), inputs, target, method, baseline, options)


_PROBE_OPTIONS: dict[str, dict[str, object]] = {"integrated_gradients": {"n_steps": 4, "max_steps": 4}}


def available_methods(model: nn.Module, inputs: torch.Tensor | None = None) -> dict[str, str | None]:
    """Method name -> None when it runs on this model, else the reason it does not.

    Tries every method on one probe image (the first of `inputs`, or a seeded random image of the
    model config's shape). DeepLift must also satisfy its summation-to-delta property (Shrikumar et
    al. 2017): a large delta means Captum's rules were not applied to some non-linearity.
    """
    if inputs is None:
        cfg = getattr(model, "config", None)
        if cfg is None or cfg.family != "cnn":
            return dict.fromkeys(METHODS, "attribution maps need an image (cnn) model")
        shape = (1, cfg.in_channels, cfg.input_size, cfg.input_size)
        inputs = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if inputs.dim() != 4:
        return dict.fromkeys(METHODS, "attribution maps need image inputs (N, C, H, W)")
    net = frozen_copy(model)
    out: dict[str, str | None] = {}
    for method in METHODS:
        try:
            result = _run(net, inputs[:1], 0, method, None, _PROBE_OPTIONS.get(method, {}))
        except MethodUnavailable as err:
            out[method] = err.reason
            continue
        broken = method == "deeplift" and float(np.max(result.completeness)) > DEEPLIFT_TOLERANCE
        out[method] = "DeepLift's attributions do not sum to F(x) - F(baseline)" if broken else None
    return out


def gradcam_across_depth(model: nn.Module, inputs: torch.Tensor, target: Target) -> dict[str, np.ndarray]:
    """Grad-CAM at the end of every stage ("stage1", "stage2", ...), each (N, H, W) at input size.

    Shows where the evidence for the class sits as depth grows: fine and local early, coarse and
    class-specific late (Selvaraju et al. 2017 use the last conv layer only).
    """
    net = frozen_copy(model)
    stages = [name for name, _ in net.named_children() if name.startswith("stage")]
    return {name: _run(net, inputs, target, "gradcam", None, {"layer": name}).maps for name in stages}


def completeness_error(
    model: nn.Module, inputs: torch.Tensor, target: Target, baseline: Baseline = None, **ig_options: object
) -> np.ndarray:
    """Per image |sum(IG) - (F(x) - F(b))| / |F(x) - F(b)| (Sundararajan et al. 2017, Prop. 1).

    The denominator is floored at `COMPLETENESS_EPS` logits so images whose logit barely moves
    from the baseline do not divide by zero. `ig_options` go to Integrated Gradients, e.g.
    ``n_steps=32, max_steps=32`` for a fixed number of steps without refinement.
    """
    result = attribute(model, inputs, target, "integrated_gradients", baseline=baseline, **ig_options)
    assert result.completeness is not None
    return result.completeness


# --------------------------------------------------------------------------------------------------
# Display normalisation


def normalize_map(attr: np.ndarray | torch.Tensor, mode: NormMode = "abs", clip_pct: float = 99.0) -> np.ndarray:
    """Scale each map (last two axes) for display: [0, 1] for "abs", [-1, 1] for "signed".

    Every figure uses this one function so colours mean the same everywhere. The scale is the
    `clip_pct` percentile of |attr| per map, and values beyond it are clipped: a few extreme pixels
    would otherwise wash out the rest (Smilkov et al. 2017, Sec. 3 clip at the 99th percentile).
    A map whose percentile is 0 but that is not all zero falls back to its maximum; all-zero maps
    stay zero. Sign is kept in "signed" mode and dropped in "abs" mode.
    """
    if mode not in ("abs", "signed"):
        raise ValueError(f"mode must be 'abs' or 'signed'; got {mode!r}")
    if not 0.0 < clip_pct <= 100.0:
        raise ValueError(f"clip_pct must be in (0, 100]; got {clip_pct}")
    a = np.asarray(attr.detach().cpu() if isinstance(attr, torch.Tensor) else attr, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"need maps of at least 2 dimensions (H, W); got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("attribution maps must be finite")
    mag = np.abs(a)
    scale = np.percentile(mag, clip_pct, axis=(-2, -1), keepdims=True)
    scale = np.where(scale > 0, scale, mag.max(axis=(-2, -1), keepdims=True))
    scaled = np.divide(mag if mode == "abs" else a, scale, out=np.zeros_like(a), where=scale > 0)
    low = 0.0 if mode == "abs" else -1.0
    return np.clip(scaled, low, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Sanity checks (Adebayo et al. 2018)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float | None = None) -> float:
    """Mean structural similarity of two 2-D maps (Wang et al. 2004), with a Gaussian window.

    Standard constants K1 = 0.01, K2 = 0.03 and sigma = 1.5; the data range defaults to the span
    of both maps together. Borders are reflected rather than cropped: our maps are 8-16 px wide.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two 2-D maps of one shape; got {a.shape} and {b.shape}")
    span = float(max(a.max(), b.max()) - min(a.min(), b.min())) if data_range is None else data_range
    if span == 0.0:
        return 1.0  # both maps are the same constant
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma, mode="reflect", truncate=3.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of |a| and |b| (Adebayo et al. 2018 compare absolute maps).

    A constant map has no ranking to compare, so it scores 0 rather than NaN.
    """
    x, y = np.abs(np.asarray(a)).ravel(), np.abs(np.asarray(b)).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def cascade_layers(model: nn.Module) -> list[str]:
    """Modules randomised one after the other, top down: head, final norm (if any), blocks, stem."""
    top = ["head"] + [name for name in ("final_bn",) if any(True for _ in model.get_submodule(name).parameters())]
    return top + list(reversed(block_names(model))) + ["stem"]


def randomize_module(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter of `module` from a normal with that tensor's own mean and std.

    Keeps each layer's scale (so activations neither vanish nor explode) while erasing what was
    learned: the re-initialisation Adebayo et al. 2018 use, made deterministic by `generator`.
    BatchNorm running statistics are left as they are.
    """
    with torch.no_grad():
        for p in module.parameters():
            std = float(p.std()) if p.numel() > 1 else 0.0
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            p.copy_(p.mean() + std * noise)


def sanity_check(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    methods: Sequence[str] = ("saliency", "gradcam"),
    *,
    seed: int = 0,
    options: Mapping[str, Mapping[str, object]] | None = None,
) -> pd.DataFrame:
    """Cascading randomisation (Adebayo et al. 2018, Sec. 3.1 and Fig. 2).

    Randomises `cascade_layers(model)` cumulatively, head first, and after each step compares every
    method's maps with the original ones (same targets): Spearman rank correlation of absolute values
    and SSIM of the display-normalised absolute maps, each averaged over images. A method that
    explains the model must lose similarity as more layers are randomised; one that stays similar is
    reacting to the input, not to the model.

    Returns one row per (stage, method): stage (0 = nothing randomised), layer (the last randomised
    module, "none" at stage 0), method, spearman, ssim, and their standard deviations over images.
    `options` maps a method name to its `attribute` options.
    """
    options = options or {}
    net = frozen_copy(model)
    generator = torch.Generator().manual_seed(seed)
    original = {m: _run(net, inputs, target, m, None, options.get(m, {})).maps for m in methods}
    rows: list[dict[str, object]] = []
    for stage, name in enumerate(["none", *cascade_layers(net)]):
        if name != "none":
            randomize_module(net.get_submodule(name), generator)
        for method in methods:
            maps = _run(net, inputs, target, method, None, options.get(method, {})).maps
            rho = [rank_correlation(a, b) for a, b in zip(original[method], maps, strict=True)]
            sim = [ssim(a, b) for a, b in zip(normalize_map(original[method]), normalize_map(maps), strict=True)]
            rows.append(
                {
                    "stage": stage,
                    "layer": name,
                    "method": method,
                    "spearman": float(np.mean(rho)),
                    "ssim": float(np.mean(sim)),
                    "spearman_std": float(np.std(rho)),
                    "ssim_std": float(np.std(sim)),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Localisation on shapes


def mass_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, the fraction of positive attribution inside the mask; NaN where none is positive."""
    pos = np.clip(maps, 0.0, None)
    total = pos.sum(axis=(-2, -1))
    inside = (pos * masks).sum(axis=(-2, -1))
    return np.divide(inside, total, out=np.full(total.shape, np.nan), where=total > 0)


def pointing_hits(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, whether the top pixel lies in the mask (Zhang et al. 2016, no tolerance margin).

    A map without any positive value points nowhere and counts as a miss.
    """
    flat = maps.reshape(len(maps), -1)
    top = flat.argmax(axis=1)
    hit = masks.reshape(len(masks), -1)[np.arange(len(flat)), top]
    return hit & (flat.max(axis=1) > 0)


def localisation(
    model: nn.Module,
    inputs: torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    target: Target,
    methods: Sequence[str] = tuple(METHODS),
    *,
    model_name: str = "model",
    options: Mapping[str, Mapping[str, object]] | None = None,
) -> pd.DataFrame:
    """Does the attribution point at the object? One row per (method, image).

    Columns: model, method, image (row in `inputs`), target, mass_in_mask (share of positive
    attribution inside the ground-truth mask), chance (the mask's area fraction: what a uniform map
    scores) and pointing_hit (top pixel inside the mask). Methods that cannot run are left out and
    listed with their reasons in ``table.attrs["unavailable"]``.
    """
    options = options or {}
    m = np.asarray(masks, dtype=bool)
    if m.shape != (inputs.shape[0], *inputs.shape[-2:]):
        raise ValueError(f"masks must be (N, H, W) like the inputs; got {m.shape} for {tuple(inputs.shape)}")
    net = frozen_copy(model)
    frames, unavailable = [], {}
    for method in methods:
        try:
            result = _run(net, inputs, target, method, None, options.get(method, {}))
        except MethodUnavailable as err:
            unavailable[method] = err.reason
            continue
        frames.append(
            pd.DataFrame(
                {
                    "model": model_name,
                    "method": method,
                    "image": np.arange(len(m)),
                    "target": result.target,
                    "mass_in_mask": mass_in_mask(result.maps, m),
                    "chance": m.mean(axis=(1, 2)),
                    "pointing_hit": pointing_hits(result.maps, m),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.attrs["unavailable"] = unavailable
    return table


def localisation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Means per (model, method): mass_in_mask, chance, pointing (hit rate), their ratio lift, images."""
    summary = (
        table.groupby(["model", "method"], sort=False)
        .agg(
            mass_in_mask=("mass_in_mask", "mean"),
            chance=("chance", "mean"),
            pointing=("pointing_hit", "mean"),
            images=("image", "count"),
        )
        .reset_index()
    )
    summary["lift"] = summary["mass_in_mask"] / summary["chance"]
    return summary


# --------------------------------------------------------------------------------------------------
# Nets to explain

# A short plain-SGD run: constant lr, no warm-up, weight decay or probes, on the CPU.
BRIEF_TRAINING = TrainConfig(
    batch_size=64,
    lr=0.05,
    weight_decay=0.0,
    warmup_steps=0,
    schedule="constant",
    probe_every=0,
    max_snapshots=2,
    device="cpu",
)


def briefly_trained(models: Mapping[str, ModelConfig], data: DataConfig, epochs: int) -> dict[str, Net]:
    """`models` after `epochs` of BRIEF_TRAINING in lockstep (one seed, the same batches), in eval mode.

    A trained net is less linear than a fresh one, which changes what its maps and their checks show
    (Adebayo et al. 2018): the attribution tests and benchmark explain nets trained this way.
    """
    trainer, _ = train_models(models, replace(BRIEF_TRAINING, epochs=epochs), data)
    return {key: model.eval() for key, model in trainer.models.items()}
