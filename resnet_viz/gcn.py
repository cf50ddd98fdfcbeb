"""A deep graph convolutional network (Kipf & Welling 2017) whose layers are residual blocks.

Each block is one graph convolution ``Â H W`` with ``Â = D^-1/2 (A + I) D^-1/2``: every node averages
its neighbours' features (and its own). Stacked without shortcuts, the averaging repeats: node features
within a connected graph converge to one vector (up to degree scaling) and the classes become
indistinguishable: oversmoothing (Li, Han & Wu 2018; measured by the Dirichlet energy, Cai & Wang
2020). With shortcuts, ``x = x + f(x)``, every layer keeps what the earlier ones computed, and deep
GCNs train (Li et al. 2019, "DeepGCNs: Can GCNs Go as Deep as CNNs?", Fig. 1 and Sec. 3).

A batch is a set of graphs of the same size, each node's input its adjacency row followed by its
features: (graphs, nodes, nodes + features). Names: ``stem.conv`` (features to width),
``stage1.block3`` (a block) with its graph convolution ``stage1.block3.conv1``, ``head`` (per node).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .models import ModelConfig, ResidualBlock


class NodeBatchNorm(nn.BatchNorm1d):
    """BatchNorm over every node of every graph in the batch: (graphs, nodes, d) read as (graphs x nodes, d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def node_norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return NodeBatchNorm(width)
    return nn.LayerNorm(width) if kind == "layer" else nn.Identity()


class GraphConv(nn.Linear):
    """One graph convolution (Kipf & Welling 2017, Eq. 2): ``Â (H W)``, a linear map then neighbour averaging."""

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return adj @ super().forward(x)


def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` for a batch of 0/1 adjacency matrices (graphs, nodes, nodes): the renormalisation
    trick of Kipf & Welling 2017, Sec. 2."""
    a = adj + torch.eye(adj.shape[-1], device=adj.device, dtype=adj.dtype)
    d = a.sum(-1).rsqrt()
    return d[..., :, None] * a * d[..., None, :]


class GCNBlock(ResidualBlock):
    """``out = f(x) + alpha * x`` with f one graph convolution: post order conv-norm, add, ReLU (a plain GCN
    layer when alpha is 0); pre order norm-ReLU-conv, add (DeepGCNs' "res+", Li et al. 2020)."""

    layer_keys = ("conv1",)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.order, cfg.alpha)
        self.conv1 = GraphConv(cfg.width, cfg.width, bias=cfg.norm == "none")
        self.bn1, self.relu1 = node_norm(cfg.norm, cfg.width), nn.ReLU()

    def residual(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.order == "pre":
            return self.conv1(self.relu1(self.bn1(x)), adj)
        return self.bn1(self.conv1(x, adj))

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.add_shortcut(self.residual(x, adj), lambda: x, self.relu1 if self.order == "post" else None)


class GraphStem(nn.Module):
    """Node features to the hidden width (a per-node linear map; norm and ReLU in post order)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        post = cfg.order == "post"
        self.conv = nn.Linear(cfg.in_channels, cfg.width, bias=cfg.norm == "none" or not post)
        self.bn = node_norm(cfg.norm, cfg.width) if post else nn.Identity()
        self.relu = nn.ReLU() if post else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class GCNNet(nn.Module):
    """Stem, n GCN blocks, (pre order: final norm-ReLU), a per-node linear head.

    Returns logits as (graphs, classes, nodes): the layout `F.cross_entropy` takes for node targets.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.nodes = cfg.input_size
        self.stem = GraphStem(cfg)
        blocks = OrderedDict((f"block{b}", GCNBlock(cfg)) for b in range(1, cfg.blocks_per_stage + 1))
        self.stage1 = nn.Sequential(blocks)  # a container only: blocks take the adjacency too
        pre = cfg.order == "pre"
        self.final_bn = node_norm(cfg.norm, cfg.width) if pre else nn.Identity()
        self.final_relu = nn.ReLU() if pre else nn.Identity()
        self.head = nn.Linear(cfg.width, cfg.num_classes)

    def split(self, graphs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised adjacency, node features) of an input batch."""
        return normalized_adjacency(graphs[..., : self.nodes]), graphs[..., self.nodes :]

    def forward(self, graphs: torch.Tensor) -> torch.Tensor:
        adj, x = self.split(graphs)
        x = self.stem(x)
        for block in self.stage1:
            x = block(x, adj)
        return self.head(self.final_relu(self.final_bn(x))).transpose(1, 2)


def dirichlet_energy(h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    """Normalised Dirichlet energy per graph: ``tr(Hᵀ Δ H) / tr(Hᵀ H)`` with ``Δ = I - Â`` (Cai & Wang 2020).

    Half the sum over edges of squared differences between degree-scaled neighbour features, relative to
    the features' own size: 0 when every node carries the same (degree-scaled) vector, i.e. fully
    oversmoothed; scale-free, so norms and weight sizes do not move it. `h` (graphs, nodes, d), `adj` Â.
    """
    smooth = h - adj @ h
    return (h * smooth).sum((-2, -1)) / (h * h).sum((-2, -1)).clamp_min(1e-12)


@torch.no_grad()
def smoothing_profile(model: GCNNet, graphs: torch.Tensor) -> list[float]:
    """Mean normalised Dirichlet energy of the node features after the stem and after every block, in eval
    mode: the oversmoothing measure per layer (falls towards 0 in a deep plain GCN, Li et al. 2018)."""
    was_training = model.training
    model.eval()
    graphs = graphs.to(next(model.parameters()).device)
    adj, x = model.split(graphs)
    x = model.stem(x)
    energies = [dirichlet_energy(x, adj).mean()]
    for block in model.stage1:
        x = block(x, adj)
        energies.append(dirichlet_energy(x, adj).mean())
    model.train(was_training)
    return torch.stack(energies).tolist()
