"""The runs a server trains once for everybody: analysis pages' default pairs, Home presets, the classroom sweep.

An analysis page with no lab run of its own shows a default pair. Trained per session, thirty
students opening Attributions meant thirty identical trainings queued one behind another; requested
from the run service, the first request trains it, the others watch the same run, and later ones
replay it from the store. `warm_requests()` lists everything a class will ask for, so a teacher can
train it before class (`python -m resnet_viz warm`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import DataConfig
from ..lab import PRESETS, LabConfig
from ..models import ModelConfig
from ..sweep import classroom_sweep
from ..training import TrainConfig
from .live import RunRequest


@dataclass(frozen=True)
class DefaultPair:
    """A plain/residual pair an analysis page offers when the session has trained nothing."""

    title: str  # what it is, in a few words (shown on the page)
    request: RunRequest  # the run: models A and B, recipe, data


def _lab_pair(cfg: LabConfig) -> RunRequest:
    cfg = cfg.normalized()
    return RunRequest(cfg.models(), cfg.train, cfg.data)


# The lab's default setup: digits, depth 20, plain vs residual, 10 epochs (a few seconds here).
SERVER_PAIR = DefaultPair("plain vs residual, depth 20, on digits for 10 epochs", _lab_pair(LabConfig()))
# Shapes come with ground-truth masks, which attribution localisation scores need.
SHAPES_PAIR = DefaultPair(
    "plain vs residual, depth 14, width 16, on shapes 16×16 for 3 epochs",
    RunRequest(
        {"A": ModelConfig(depth=14, width=16, skip=False), "B": ModelConfig(depth=14, width=16, skip=True)},
        TrainConfig(epochs=3, batch_size=64, warmup_steps=10),
        DataConfig(name="shapes", input_size=16),
    ),
)
PAGE_PAIRS = {"attributions": SHAPES_PAIR}  # pages whose analysis needs another pair than SERVER_PAIR


def default_pair(page: str) -> DefaultPair:
    """The default pair of an analysis page."""
    return PAGE_PAIRS.get(page, SERVER_PAIR)


def warm_requests() -> list[tuple[str, RunRequest]]:
    """(what, request) for every run a class will ask for first: default pairs, Home presets, classroom sweep,
    and the Limits page's two grids at their default settings (global reasoning's takes minutes)."""
    from ..limits import global_reasoning, init_sensitivity  # they build on this package's RunRequest

    out = [("default pair: " + SERVER_PAIR.title, SERVER_PAIR.request)]
    out += [(f"default pair ({page}): {pair.title}", pair.request) for page, pair in PAGE_PAIRS.items()]
    out += [(f"preset: {p.title}", _lab_pair(p.config)) for p in PRESETS.values()]
    sweep = classroom_sweep()
    out += [
        (f"classroom sweep: depth {depth}", RunRequest(sweep.models(depth), sweep.train_for(seed), sweep.data))
        for depth, seed in sweep.points()
    ]
    for name, points in (
        ("initialisation", init_sensitivity.page_grid()),
        ("global reasoning", global_reasoning.corners_grid()),
    ):
        out += [
            (
                f"limits grid ({name}): " + ", ".join(f"{k} {v}" for k, v in p.label if k not in ("init", "gain")),
                p.request,
            )
            for p in points
        ]
    unique: dict[str, tuple[str, RunRequest]] = {}
    for what, request in out:
        unique.setdefault(request.key, (what, request))
    return list(unique.values())
