"""A plain and a residual CNN of one config, at initialisation, picked by a small form.

Analyses that need a convolutional pair (receptive fields, for a session whose models are MLPs)
offer one built from the lab setup's seed: the same modules with and without shortcuts, so the same
initial weights (He et al. 2015, option A shortcuts add no parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from resnet_viz.data import IMAGE_DATASETS, DataConfig
from resnet_viz.figures.common import model_label
from resnet_viz.lab import LabConfig
from resnet_viz.models import FAMILY_NORMS, ModelConfig, build_model
from resnet_viz.options import OPTIONS, allowed_depths

from .analysis_cache import AnalysisCache
from .snapshots import ChosenModel
from .widgets import DATASET_HELP, STATE_KEY

DEPTHS = allowed_depths("cnn", "basic", limit=56)  # 8 ... 56: quick to build and to analyse
WIDTHS = [w for w in OPTIONS["width"].ticks if w <= 32]
SIZES = list(OPTIONS["input_size"].ticks)
MODELS_KEPT = 6  # built models per session (a pair per config visited)


@dataclass
class Pair:
    """The two models a page analyses, the images they are about, and where they come from."""

    models: dict[str, ChosenModel]
    data: DataConfig
    description: str


def _default(key: str, value: Any) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def _lab_setup() -> LabConfig:
    return st.session_state.get(STATE_KEY) or LabConfig().normalized()


def quick_pair(prefix: str, note: str | None = None) -> Pair:
    """A plain (A) and a residual (B) CNN of one config, at initialisation: depth, width, norm, images.

    The widgets' keys start with `prefix + "quick."`; they start from the lab setup where it fits.
    """
    k = prefix + "quick."
    built = AnalysisCache(k, MODELS_KEPT)
    setup = _lab_setup()
    data = setup.data if setup.data.is_image else DataConfig()
    _default(k + "depth", setup.a.depth if setup.a.family == "cnn" and setup.a.depth in DEPTHS else 20)
    _default(k + "width", setup.a.width if setup.a.width in WIDTHS else 16)
    # a CNN's norms only: a Transformer setup's LayerNorm made the page raise (CNNs take BatchNorm or none)
    _default(k + "norm", setup.a.norm if setup.a.norm in FAMILY_NORMS["cnn"] else "batch")
    _default(k + "dataset", data.name)
    _default(k + "size", data.input_size if data.input_size in SIZES else 8)
    if note:
        st.info(note)
    cols = st.columns(5)
    depth = cols[0].select_slider("Depth (6n+2 layers)", DEPTHS, key=k + "depth")
    width = cols[1].select_slider("Width (first stage)", WIDTHS, key=k + "width")
    norm = cols[2].radio("Normalisation", list(FAMILY_NORMS["cnn"]), key=k + "norm", horizontal=True)
    name = cols[3].selectbox(  # the name only: a fifth of the page cut "digits: scikit-learn's ..." short
        "Images",
        IMAGE_DATASETS,
        key=k + "dataset",
        help="; ".join(f"{d}: {DATASET_HELP[d]}" for d in IMAGE_DATASETS),
    )
    size = cols[4].select_slider("Image size (px)", SIZES, key=k + "size")
    data = DataConfig(name=name, input_size=size, noise=data.noise)
    base = ModelConfig(depth=depth, width=width, norm=norm, **data.model_fields())
    seed = setup.train.seed
    models = {}
    for key, skip in (("A", False), ("B", True)):
        cfg = base.with_skip(skip)
        model = built((cfg, seed), lambda cfg=cfg: build_model(cfg, seed).eval())
        models[key] = ChosenModel(key, model_label(key, cfg), cfg, model, 0)
    return Pair(models, data, f"A plain and a residual CNN built here from seed {seed}, at initialisation.")
