"""A small Transformer encoder whose sub-layers are residual blocks: pre-LN or post-LN, skips on or off.

Each encoder layer is two residual sub-layers, multi-head self-attention and a two-layer MLP (Vaswani
et al. 2017). Where LayerNorm sits is the `order` setting (Xiong et al. 2020, "On Layer Normalization
in the Transformer Architecture", Fig. 1):

- post-LN (the original Transformer): ``x = LN(x + f(x))``. The norm is on the residual stream, so the
  gradient reaching early layers passes every later norm; at initialisation it is largest near the
  output, and a large learning rate without warm-up trains badly (Xiong et al. 2020, Thm. 1, Fig. 3);
- pre-LN: ``x = x + f(LN(x))``. The stream itself is never normalised: the shortcut is a pure identity,
  as in the pre-activation ResNet (He et al. 2016), and a final LN precedes the head.

As in the CNNs, the skip is scaled by alpha (``x = f(x) + alpha * x``): alpha 0 is the plain stack.
Names follow the one scheme every chart uses: ``stem.embed``, ``layer3.attn`` (a block) with its
weighted layers ``layer3.attn.qkv`` and ``layer3.attn.proj``, ``layer3.mlp.fc1``/``fc2``, ``head``.
Depth counts residual sub-layers plus the embedding and the head: 2n+2 for n encoder layers.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from .models import ModelConfig, ResidualBlock, _norm


class TokenStem(nn.Module):
    """Token embedding plus a learned position embedding (one vector per position)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.in_channels, cfg.width)
        self.pos = nn.Parameter(torch.empty(cfg.input_size, cfg.width))

    def init_from(self, generator: torch.Generator) -> None:
        """Unit-variance embeddings, as `nn.Embedding` starts, but from the run's own generator."""
        nn.init.normal_(self.embed.weight, generator=generator)
        nn.init.normal_(self.pos, generator=generator)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens) + self.pos[: tokens.shape[1]]


class SubLayer(ResidualBlock):
    """One residual sub-layer: ``x + alpha * ...`` with LayerNorm before f (pre-LN) or after the sum (post-LN)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.order, cfg.alpha)
        self.norm = _norm(cfg.norm, cfg.width, spatial=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "pre":
            return self.add_shortcut(self.residual(self.norm(x)), lambda: x, None)
        return self.add_shortcut(self.residual(x), lambda: x, self.norm)

    def response(self) -> nn.Module:
        """f's last weighted layer: its output is what the sub-layer adds to the stream."""
        return getattr(self, self.layer_keys[-1])

    def zero_init_last(self) -> None:
        """Start the sub-layer as the identity: f's last layer outputs zeros (its norm sits on the stream)."""
        last = self.response()
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)


class AttentionBlock(SubLayer):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017, Eq. 1), every position to every other.

    Written out rather than fused so that the attention weights can be kept for drawing (`keep_maps`).
    """

    layer_keys = ("qkv", "proj")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.keep_maps = False  # keep the attention weights of the next forward in `maps`
        self.maps: torch.Tensor | None = None  # (batch, heads, query, key) when kept

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        if self.keep_maps:
            self.maps = weights.detach()
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class FeedForwardBlock(SubLayer):
    """Position-wise MLP, width -> 4 x width -> width, ReLU in between."""

    layer_keys = ("fc1", "fc2")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.fc1, self.relu1 = nn.Linear(cfg.width, 4 * cfg.width), nn.ReLU()
        self.fc2 = nn.Linear(4 * cfg.width, cfg.width)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu1(self.fc1(x)))


class TransformerNet(nn.Module):
    """Embedding, n encoder layers (attention and MLP sub-layers), (pre-LN: final LN), a per-token head.

    Returns logits as (batch, classes, positions): the layout `F.cross_entropy` takes for token targets.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.stem = TokenStem(cfg)
        for i in range(1, cfg.blocks_per_stage + 1):
            layer = nn.Sequential(OrderedDict(attn=AttentionBlock(cfg), mlp=FeedForwardBlock(cfg)))
            self.add_module(f"layer{i}", layer)
        self.num_layers = cfg.blocks_per_stage
        self.final_norm = _norm(cfg.norm, cfg.width, spatial=False) if cfg.order == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.width, cfg.num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.stem(tokens)
        for i in range(1, self.num_layers + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.head(self.final_norm(x)).transpose(1, 2)


def attention_blocks(model: nn.Module) -> list[tuple[str, AttentionBlock]]:
    """(name, block) of every attention sub-layer, input to output."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionBlock)]


@torch.no_grad()
def attention_maps(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head for one sequence: (layers, heads, query, key), eval mode.

    `model` should be a copy nobody trains (`models.frozen_copy`) or be called between two steps.
    """
    blocks = [block for _, block in attention_blocks(model)]
    was_training = model.training
    model.eval()
    for block in blocks:
        block.keep_maps = True
    try:
        model(tokens[None].to(next(model.parameters()).device))
        return torch.stack([block.maps[0] for block in blocks]).cpu()
    finally:
        for block in blocks:
            block.keep_maps, block.maps = False, None
        model.train(was_training)
