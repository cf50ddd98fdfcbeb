"""Plain and residual networks that differ only in their shortcuts.

One `ModelConfig` builds either a CIFAR-style CNN (He et al. 2015, Sec. 4.2: a 3x3 stem, three
stages of widths w, 2w, 4w, global average pooling, a linear head) or a residual MLP for 2-D data.
Turning `skip` off gives the plain net of the same config: the very same modules, so with
parameter-free identity shortcuts (He et al. 2015, option A) a plain and a residual net built from
one seed start from identical weights, which makes the comparison controlled.

Every block computes ``out = f(x) + alpha * shortcut(x)`` where alpha is the skip scale: 0 is the
plain net, 1 the ResNet, and it may change while training (`set_skip_scale`).

Every weighted layer and block has one stable name (``stem.conv``, ``stage2.block3.conv1``,
``head``); `layer_names` and `block_names` list them in network order, and every probe, table and
chart uses them. Each activation is its own `nn.ReLU` and nothing is inplace, so Captum's hooks
and our probes see every tensor.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .options import DEPTH_RULES, OPTIONS, OptionError, allowed_depths, depth_rule, describe_depths

Family = Literal["cnn", "mlp", "transformer", "gcn"]
BlockKind = Literal["basic", "bottleneck"]
Shortcut = Literal["identity", "projection"]
Norm = Literal["batch", "layer", "none"]
Order = Literal["post", "pre"]
Init = Literal["kaiming", "xavier", "pytorch"]

CHOICES: dict[str, tuple[str, ...]] = {
    name: OPTIONS[name].values for name in ("family", "block", "shortcut", "norm", "order", "init")
}
BOTTLENECK_EXPANSION = 4  # output channels of a bottleneck block = 4 x its inner width (He et al. 2015)
# The norms each family offers: BatchNorm for CNNs and MLPs (He et al.), LayerNorm for Transformers (Vaswani
# et al. 2017; Xiong et al. 2020 compare where it sits), either for GCNs (Li et al. 2019 use BatchNorm).
FAMILY_NORMS: dict[str, tuple[str, ...]] = {
    "cnn": ("batch", "none"),
    "mlp": ("batch", "none"),
    "transformer": ("layer", "none"),
    "gcn": ("batch", "layer", "none"),
}


class ConfigError(ValueError):
    """Invalid configuration value; `field` names the offending field for the UI and the CLI."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a network. Validated by `validate()`; `build_model` calls it."""

    family: Family = "cnn"  # "cnn" images, "mlp" 2-D points, "transformer" token sequences, "gcn" graphs
    depth: int = 20  # main-path layers: 6n+2 (basic), 9n+2 (bottleneck), 2n+2 (mlp; transformer: n layers), n+2 (gcn)
    width: int = 16  # channels of the first stage (cnn), hidden units (mlp, gcn) or d_model (transformer)
    block: BlockKind = "basic"  # basic: 3x3-3x3; bottleneck: 1x1-3x3-1x1 (cnn only)
    heads: int = 2  # attention heads of a transformer (must divide the width); unused by other families
    skip: bool = True  # shortcuts on (ResNet) or off (plain net: alpha forced to 0)
    skip_scale: float = 1.0  # alpha in [0, 1] multiplying every shortcut while skip is on
    shortcut: Shortcut = "identity"  # identity with zero-padding (option A) or 1x1 projection (option B)
    norm: Norm = "batch"  # BatchNorm (cnn, mlp, gcn), LayerNorm (transformer, gcn), or no normalisation
    order: Order = "post"  # post: He et al. 2015 / post-LN; pre: full pre-activation, He et al. 2016 / pre-LN
    init: Init = "kaiming"  # weight init: Kaiming normal (fan_out), Xavier normal, or PyTorch's default
    zero_init_last: bool = False  # zero the last BN gamma (or last weight) of each residual block
    init_gain: float = 1.0  # multiplies the init std of every weighted layer but the head (1: the scheme as is)
    in_channels: int = 1  # image channels (cnn) or input features (mlp); set from the dataset
    input_size: int = 8  # image side in pixels (cnn); set from the dataset
    num_classes: int = 10  # outputs of the head; set from the dataset

    @property
    def alpha(self) -> float:
        """The effective skip scale: `skip_scale` with skips on, 0 for a plain net."""
        return self.skip_scale if self.skip else 0.0

    @property
    def blocks_per_stage(self) -> int:
        per_block, _ = DEPTH_RULES[depth_rule(self.family, self.block)]
        return (self.depth - 2) // per_block

    def allowed_depths(self, limit: int | None = None) -> list[int]:
        """Depths this family/block accepts (options.DEPTH_RULES), e.g. 8, 14, 20, ... for basic CNN blocks."""
        return allowed_depths(self.family, self.block, limit)

    def validate(self) -> ModelConfig:
        """Raise `ConfigError` naming the field and the allowed values; return self when valid."""
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(name, f"must be one of {', '.join(allowed)}; got {value!r}")
        if self.family != "cnn" and self.block != "basic":
            raise ConfigError("block", f"{self.family} nets have one kind of block: basic; got {self.block!r}")
        if self.norm not in FAMILY_NORMS[self.family]:
            allowed = ", ".join(FAMILY_NORMS[self.family])
            raise ConfigError("norm", f"must be one of {allowed} for {self.family} nets; got {self.norm!r}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth not in self.allowed_depths():
            raise ConfigError("depth", f"must be {describe_depths(self.family, self.block)}; got {self.depth!r}")
        for name in ("width", "heads", "skip_scale", "init_gain"):
            try:
                OPTIONS[name].check(getattr(self, name))
            except OptionError as err:
                raise ConfigError(name, f"{err.problem}; got {getattr(self, name)!r}") from None
        if self.family == "transformer" and self.width % self.heads:
            divisors = ", ".join(str(h) for h in range(1, 5) if self.width % h == 0)
            raise ConfigError(
                "heads", f"must divide the width {self.width} (d_model): one of {divisors}; got {self.heads}"
            )
        if self.in_channels < 1 or self.num_classes < 2:
            raise ConfigError("num_classes", "needs at least 1 input channel and 2 classes")
        if self.family != "mlp" and self.input_size < 4:
            raise ConfigError("input_size", f"must be at least 4 (pixels, tokens or nodes); got {self.input_size}")
        return self

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def with_skip(self, skip: bool) -> ModelConfig:
        """The same net with shortcuts on or off: the plain/residual pair of one config."""
        return replace(self, skip=skip)


# --------------------------------------------------------------------------------------------------
# Shortcuts


class IdentityShortcut(nn.Module):
    """Parameter-free shortcut (He et al. 2015, option A): subsample by the stride, zero-pad channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, spatial: bool) -> None:
        super().__init__()
        self.pad, self.stride, self.spatial = out_ch - in_ch, stride, spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial and self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            pad = (0, 0, 0, 0, 0, self.pad) if self.spatial else (0, self.pad)
            x = F.pad(x, pad)
        return x


class ProjectionShortcut(nn.Module):
    """1x1 convolution (or linear map) plus norm where the shape changes (He et al. 2015, option B)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, spatial: bool, norm: Norm) -> None:
        super().__init__()
        if spatial:
            self.conv: nn.Module = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
            self.bn: nn.Module = nn.BatchNorm2d(out_ch) if norm == "batch" else nn.Identity()
        else:
            self.conv = nn.Linear(in_ch, out_ch, bias=norm == "none")
            self.bn = nn.BatchNorm1d(out_ch) if norm == "batch" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


# --------------------------------------------------------------------------------------------------
# Blocks


class BlockObserver(Protocol):
    """Sees each block's residual branch f(x) and its output as they are computed (`probes.Probe`).

    A plain attribute read by the block rather than module hooks: a forward hook, even one that does
    nothing, sends every call of its module through PyTorch's slow path (about 85 us a call here),
    which cost a 32-block GCN 10% of its step for each kind of hook.
    """

    def response(self, f: torch.Tensor) -> None: ...

    def output(self, out: torch.Tensor) -> None: ...


class ResidualBlock(nn.Module):
    """Weighted layers ``f`` plus a scaled shortcut: ``out = f(x) + alpha * shortcut(x)``.

    Subclasses create their layers as ``<name>``, ``bn<i>`` and ``relu<i>`` for the i-th weighted
    layer (names every chart and stored weight file uses) and list the weighted ones in
    `layer_keys`. With ``order="post"`` (He et al. 2015) each layer is weight-norm-ReLU except that
    the last ReLU comes after the addition; with ``order="pre"`` (He et al. 2016, full
    pre-activation) each layer is norm-ReLU-weight and nothing follows the addition, which keeps the
    shortcut path a pure identity. The norm layer is injected, so one block serves convolutions and
    linear layers; every ReLU is its own module and nothing is inplace (Captum and the probes hook them).
    """

    layer_keys: tuple[str, ...] = ()  # the weighted layers, input to output

    def __init__(self, order: Order, alpha: float) -> None:
        super().__init__()
        self.order = order
        self.alpha = alpha
        self.observer: BlockObserver | None = None  # told f(x) and the output of every forward (a probe)

    def _layers(self) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
        return [
            (getattr(self, k), getattr(self, f"bn{i}"), getattr(self, f"relu{i}"))
            for i, k in enumerate(self.layer_keys, start=1)
        ]

    def response(self) -> nn.Module:
        """The module whose output is the residual branch f(x) (what `residual` returns, and the observer sees):
        its last norm (post order) or its last weighted layer (pre order)."""
        n = len(self.layer_keys)
        return getattr(self, self.layer_keys[-1]) if self.order == "pre" else getattr(self, f"bn{n}")

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual function f(x) (the whole block output for a plain net)."""
        layers = self._layers()
        for i, (weighted, norm, act) in enumerate(layers, start=1):
            if self.order == "pre":
                x = weighted(act(norm(x)))
            else:
                x = norm(weighted(x))
                if i < len(layers):
                    x = act(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        after = self._layers()[-1][2] if self.order == "post" else None
        return self.add_shortcut(self.residual(x), lambda: self.shortcut(x), after)

    def add_shortcut(
        self,
        f: torch.Tensor,
        shortcut: Callable[[], torch.Tensor],
        after: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """``f + alpha * shortcut()``, then `after` (the post-order ReLU, or a post-LN LayerNorm): the end of
        every block's forward, whatever its family. The observer sees f(x) and the output; the shortcut is
        not computed for a plain net."""
        if self.observer is not None:
            self.observer.response(f)
        out = f + self.alpha * shortcut() if self.alpha != 0.0 else f
        if after is not None:
            out = after(out)
        if self.observer is not None:
            self.observer.output(out)
        return out

    def zero_init_last(self) -> None:
        """Start the block as the identity (Goyal et al. 2017; timm's ``zero_init_last``): zero the last
        BN gamma in post-activation order, else the last weighted layer itself."""
        weighted, norm, _ = self._layers()[-1]
        if isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d) and self.order == "post":
            nn.init.zeros_(norm.weight)
        else:
            nn.init.zeros_(weighted.weight)
            if weighted.bias is not None:
                nn.init.zeros_(weighted.bias)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (He et al. 2015, Fig. 2 left); the first may stride."""

    layer_keys = ("conv1", "conv2")

    def __init__(self, cin: int, mid: int, cout: int, stride: int, cfg: ModelConfig, shortcut: nn.Module) -> None:
        super().__init__(cfg.order, cfg.alpha)
        bias = cfg.norm == "none"  # without BN, layers keep their biases
        self.conv1, self.bn1, self.relu1 = _conv(cin, mid, 3, stride, bias), _block_norm(cfg, cin, mid), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = _conv(mid, cout, 3, 1, bias), _block_norm(cfg, mid, cout), nn.ReLU()
        self.shortcut = shortcut  # registered last: the main path comes first in the state dict


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (which may stride), 1x1 expand (He et al. 2015, Fig. 5 right)."""

    layer_keys = ("conv1", "conv2", "conv3")

    def __init__(self, cin: int, mid: int, cout: int, stride: int, cfg: ModelConfig, shortcut: nn.Module) -> None:
        super().__init__(cfg.order, cfg.alpha)
        bias = cfg.norm == "none"
        self.conv1, self.bn1, self.relu1 = _conv(cin, mid, 1, 1, bias), _block_norm(cfg, cin, mid), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = _conv(mid, mid, 3, stride, bias), _block_norm(cfg, mid, mid), nn.ReLU()
        self.conv3, self.bn3, self.relu3 = _conv(mid, cout, 1, 1, bias), _block_norm(cfg, mid, cout), nn.ReLU()
        self.shortcut = shortcut


class MLPBlock(ResidualBlock):
    """Linear-ReLU-Linear on 2-D point features: the residual MLP's block."""

    layer_keys = ("fc1", "fc2")

    def __init__(self, cin: int, mid: int, cout: int, stride: int, cfg: ModelConfig, shortcut: nn.Module) -> None:
        super().__init__(cfg.order, cfg.alpha)
        bias = cfg.norm == "none"
        self.fc1, self.bn1, self.relu1 = nn.Linear(cin, mid, bias=bias), _block_norm(cfg, cin, mid), nn.ReLU()
        self.fc2, self.bn2, self.relu2 = nn.Linear(mid, cout, bias=bias), _block_norm(cfg, mid, cout), nn.ReLU()
        self.shortcut = shortcut


def _norm(kind: Norm, channels: int, spatial: bool) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "layer":
        return nn.LayerNorm(channels)
    return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


def _block_norm(cfg: ModelConfig, cin: int, cout: int) -> nn.Module:
    """A block layer's norm: in pre-activation order it comes before the layer, so it sees the layer's input."""
    return _norm(cfg.norm, cin if cfg.order == "pre" else cout, cfg.family == "cnn")


BLOCKS: dict[str, type[ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck, "mlp": MLPBlock}


def _make_block(cfg: ModelConfig, cin: int, mid: int, cout: int, stride: int) -> ResidualBlock:
    spatial = cfg.family == "cnn"
    shape_changes = stride != 1 or cin != cout
    if cfg.shortcut == "projection" and cfg.skip and shape_changes:
        shortcut: nn.Module = ProjectionShortcut(cin, cout, stride, spatial, cfg.norm)
    else:
        shortcut = IdentityShortcut(cin, cout, stride, spatial)
    return BLOCKS[depth_rule(cfg.family, cfg.block)](cin, mid, cout, stride, cfg, shortcut)


class Stem(nn.Module):
    """First weighted layer. In pre-activation nets it is the bare layer: the first block normalises."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        spatial = cfg.family == "cnn"
        bias = cfg.norm == "none"
        if spatial:
            self.conv: nn.Module = _conv(cfg.in_channels, cfg.width, 3, 1, bias)
        else:
            self.conv = nn.Linear(cfg.in_channels, cfg.width, bias=bias)
        post = cfg.order == "post"
        self.bn = _norm(cfg.norm, cfg.width, spatial) if post else nn.Identity()
        self.relu = nn.ReLU() if post else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    """Stem, stages of residual blocks, (pre-activation: final norm-ReLU), pooling, linear head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        spatial = cfg.family == "cnn"
        self.stem = Stem(cfg)
        n = cfg.blocks_per_stage
        cin = cfg.width
        stage_widths = [cfg.width, 2 * cfg.width, 4 * cfg.width] if spatial else [cfg.width]
        for s, mid in enumerate(stage_widths, start=1):
            cout = mid * BOTTLENECK_EXPANSION if spatial and cfg.block == "bottleneck" else mid
            blocks = OrderedDict()
            for b in range(1, n + 1):
                stride = 2 if spatial and s > 1 and b == 1 else 1
                blocks[f"block{b}"] = _make_block(cfg, cin, mid, cout, stride)
                cin = cout
            self.add_module(f"stage{s}", nn.Sequential(blocks))
        self.num_stages = len(stage_widths)
        self.features = cin
        pre = cfg.order == "pre"
        self.final_bn = _norm(cfg.norm, cin, spatial) if pre else nn.Identity()
        self.final_relu = nn.ReLU() if pre else nn.Identity()
        self.head = nn.Linear(cin, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{s}")(x)
        return self.final_relu(self.final_bn(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        return self.head(x)


# --------------------------------------------------------------------------------------------------
# Names, skip scale, init, size


def block_names(model: nn.Module) -> list[str]:
    """Residual blocks in network order: ``stage1.block1``, ``stage1.block2``, ..."""
    return [name for name, m in model.named_modules() if isinstance(m, ResidualBlock)]


def layer_names(model: nn.Module) -> list[str]:
    """Weighted layers (conv/linear/token embedding) on the main path, in network order: ``stem.conv`` ... ``head``.

    Projection shortcuts are left out: they are not counted in the depth (He et al. 2015).
    """
    weighted = nn.Conv2d | nn.Linear | nn.Embedding
    return [name for name, m in model.named_modules() if isinstance(m, weighted) and ".shortcut." not in name]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Main-path layers with a spatial kernel > 1 (the 3x3 convs), or hidden linear layers of an MLP."""
    out = []
    for name in layer_names(model):
        m = model.get_submodule(name)
        if (isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1) or (isinstance(m, nn.Linear) and name != "head"):
            out.append(name)
    return out


def set_skip_scale(model: nn.Module, alpha: float) -> None:
    """Change the skip scale of every block, e.g. while training. Takes effect on the next forward."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError("skip_scale", f"must be in [0, 1]; got {alpha}")
    for m in model.modules():
        if isinstance(m, ResidualBlock):
            m.alpha = float(alpha)


def _init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Initialise every parameter from `generator`, main path first and shortcuts last.

    Shortcuts come last so that a residual net with projection shortcuts still shares every
    main-path weight with its plain twin built from the same seed.
    """
    cfg = model.config
    modules = [(n, m) for n, m in model.named_modules() if ".shortcut" not in n]
    modules += [(n, m) for n, m in model.named_modules() if ".shortcut" in n]
    for _, m in modules:
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.LayerNorm):
            if not isinstance(m, nn.LayerNorm):
                m.reset_running_stats()
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif hasattr(m, "init_from"):  # layers with their own scheme (a Transformer's token and position embeddings)
            m.init_from(generator)
        elif isinstance(m, nn.Conv2d | nn.Linear):
            if cfg.init == "kaiming" and m is not model.head:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif cfg.init == "xavier":
                nn.init.xavier_normal_(m.weight, generator=generator)
            else:  # PyTorch's own default (what reset_parameters does), but from our generator
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m is not model.head and cfg.init_gain != 1.0:
                with torch.no_grad():
                    m.weight.mul_(cfg.init_gain)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if cfg.init == "pytorch" or m is model.head else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    if cfg.zero_init_last and cfg.skip:  # a plain net would lose its signal: only residual blocks
        for m in model.modules():
            if isinstance(m, ResidualBlock):
                m.zero_init_last()


def network(cfg: ModelConfig) -> nn.Module:
    """The uninitialised net of `cfg`'s family (on the current default device: pass meta for shapes only)."""
    if cfg.family == "transformer":
        from .transformer import TransformerNet  # imported here: those modules build on this one's blocks

        return TransformerNet(cfg)
    if cfg.family == "gcn":
        from .gcn import GCNNet

        return GCNNet(cfg)
    return Net(cfg)


def example_input(cfg: ModelConfig, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A zero input batch of the shape and type `cfg`'s net takes: images, points, token ids, or graphs
    (each node's adjacency row followed by its features)."""
    if cfg.family == "cnn":
        return torch.zeros(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device=device)
    if cfg.family == "transformer":
        return torch.zeros(batch, cfg.input_size, dtype=torch.long, device=device)
    if cfg.family == "gcn":
        return torch.zeros(batch, cfg.input_size, cfg.input_size + cfg.in_channels, device=device)
    return torch.zeros(batch, cfg.in_channels, device=device)


def build_model(cfg: ModelConfig, seed: int = 0, device: torch.device | str = "cpu") -> Net:
    """Build and initialise a net without touching PyTorch's global RNG.

    Modules are created on the meta device (so their constructors draw no random numbers) and
    then initialised from a private generator seeded with `seed`.
    """
    cfg.validate()
    with torch.device("meta"):
        model = network(cfg)
    model = model.to_empty(device="cpu")
    _init_weights(model, torch.Generator().manual_seed(seed))
    return model.to(device)


def finite_weights(model: nn.Module) -> bool:
    """Whether every weight and statistic of `model` is finite: a diverged run's are not, and an analysis of
    them gives confident nonsense (a NaN net's ECE summed to 0 as "about calibrated")."""
    tensors = [*model.parameters(), *model.buffers()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def load_model(
    cfg: ModelConfig, state: dict[str, torch.Tensor], alpha: float, device: torch.device | str = "cpu"
) -> Net:
    """A fresh net holding `state` (a snapshot or stored weights) with skip scale `alpha`, in eval mode.

    Built on the meta device and filled from `state`: nothing is initialised only to be overwritten.
    """
    with torch.device("meta"):
        model = network(cfg)
    model = model.to_empty(device=device)
    model.load_state_dict(state)
    set_skip_scale(model, alpha)
    return model.eval()


def frozen_copy(model: nn.Module, *, meta: bool = False) -> nn.Module:
    """A hook-free eval-mode copy whose tensors never require grad: what every analysis runs on.

    The model passed in may be training in another thread: only its tensors are read, so its mode,
    BatchNorm statistics, flags and hooks are untouched, and its hooks (a training run's probes) do
    not fire on the copy; Captum may hook and flip flags on the copy freely. With `meta`, the copy
    holds shape-only tensors: reading its graph costs no arithmetic and no memory.
    """

    def clone(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(t, device="meta") if meta else t.detach().clone()

    memo: dict[int, object] = {id(p): nn.Parameter(clone(p), requires_grad=False) for p in model.parameters()}
    memo.update({id(b): clone(b) for b in model.buffers()})
    for module in model.modules():
        for key, value in vars(module).items():
            if "hooks" in key and isinstance(value, dict):
                memo[id(value)] = type(value)()
        if getattr(module, "observer", None) is not None:  # a training run's probe stays with the run
            memo[id(module.observer)] = None
    return copy.deepcopy(model, memo).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _GlobalOnly:
    """A stand-in for FlopCounterMode's module tracker: totals only ("Global"), no module hooks."""

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    """`FlopCounterMode` that counts totals and nothing per module (every caller reads the total).

    Why not as it is: its module tracker installs process-wide module hooks while it counts. Every
    other thread's forward pass then put autograd hooks on its outputs, and an input-gradient pass
    there (receptive fields, attributions, in the server while a tab's Train click was costed)
    raised "A leaf node was passed to _will_engine_execute_node ...". The counting itself is a
    dispatch mode, which holds for its own thread only.
    """
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # torch 2.13's attribute (pinned); read in its __enter__/_count_flops
    return counter


def flops_per_example(model: nn.Module, cfg: ModelConfig) -> int:
    """Forward FLOPs for one example, counted by `torch.utils.flop_counter.FlopCounterMode`.

    Counts multiply-adds as 2 FLOPs (matmul/conv only, as FlopCounterMode does).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = flop_counter()
    with counter, torch.no_grad():
        model(example_input(cfg, 1, device))
    model.train(was_training)
    return int(counter.get_total_flops())
