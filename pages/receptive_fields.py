"""Receptive fields: how much of the image each layer can see, and how much it actually uses.

The theoretical field (Araujo et al. 2019) comes from the module graph and is identical with and
without skips; the effective field (Luo et al. 2016) is the gradient of a layer's centre unit with
respect to the input, averaged over noise or real test images. Models A and B come from this
session (lab run at a stored step, or fresh from the lab setup) or from a quick CNN pair built here.
ERFs are computed once per (model, step, inputs) and kept in the session.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import streamlit as st
import torch

from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.figures import receptive_field as figs
from resnet_viz.receptive_field import ERFResult, RFInfo, erf_all_layers, growth_rows, theoretical_rf
from resnet_viz.ui.analysis_cache import AnalysisCache, fingerprint
from resnet_viz.ui.quick_pair import Pair, quick_pair
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.snapshots import ChosenModel, choose_models, refuse_non_finite
from resnet_viz.ui.widgets import chart, relabelled_key

K = "rf."  # widget-state prefix
SESSION, QUICK = "Trained models (lab run, stored run, server default)", "A CNN pair built here"
NOISE, IMAGES = "Noise N(0, 1) (Luo et al.)", "Test images of the dataset"
N_IMAGES = 4  # real images averaged per ERF (noise uses the library's default of 2)
cache = AnalysisCache(K, 8)  # ERF maps of a depth-56 pair take ~10 MB per model: a few entries per session


# --------------------------------------------------------------------------------------------------
# Choosing the models


def choose_pair() -> Pair | None:
    """The session's models (as every analysis page offers them) or a quick pair; MLPs get a CNN pair.
    None while the chosen pair is still training (its progress is shown)."""
    source = st.radio("Source", [SESSION, QUICK], key=K + "origin", horizontal=True)
    if source == QUICK:
        return quick_pair(K)
    picked = choose_models("rf")
    if picked is None:
        return None
    chosen, data, description = picked
    if data.is_image and all(c.config.family == "cnn" for c in chosen.values()):
        return Pair(chosen, data, description)
    return quick_pair(
        K,
        f"Receptive fields are about images: they say which input pixels a unit of a convolutional net "
        f"depends on. This session's models are MLPs on 2-D points ({data.name}), which have no pixels, "
        "so this page shows a plain and a residual CNN built here instead (choose their depth below).",
    )


# --------------------------------------------------------------------------------------------------
# Cached computations


def _cached(kind: str, chosen: ChosenModel, extra: Any, compute: Callable[[], Any]) -> Any:
    return cache((kind, fingerprint(chosen.model), chosen.step, extra), compute)


def _real_inputs(data: DataConfig) -> torch.Tensor:
    return load_dataset(data).x_test[:N_IMAGES]


def effective_fields(chosen: ChosenModel, inputs: str, data: DataConfig) -> dict[str, ERFResult]:
    if inputs == IMAGES:
        return _cached("erf", chosen, ("images", data), lambda: erf_all_layers(chosen.model, inputs=_real_inputs(data)))
    return _cached("erf", chosen, ("noise",), lambda: erf_all_layers(chosen.model))


def theoretical_fields(chosen: ChosenModel, input_size: int) -> list[RFInfo]:
    return _cached("rf", chosen, input_size, lambda: theoretical_rf(chosen.model, input_size))


# --------------------------------------------------------------------------------------------------
# Sections


def explanation(layer: str, results: dict[str, dict[str, ERFResult]], labels: dict[str, str], step: int) -> None:
    """The result in words, with this page's numbers for the chosen layer."""
    sizes = {r[layer].theoretical.size for r in results.values()}
    lines = [
        f"**Theoretical field at {layer}: {' / '.join(map(str, sorted(sizes)))} px**"
        + (" for both models." if len(sizes) == 1 else " (the models differ in depth).")
        + " Skips never enlarge it: where paths merge, a unit sees the largest field over its paths "
        "(Araujo et al. 2019), and the skip path is the shorter one.",
        "",
    ]
    for key, per_layer in results.items():
        r = per_layer[layer]
        if not math.isfinite(r.radius90):
            lines.append(f"- {labels[key]}: no gradient reaches the input from this layer (it vanished).")
            continue
        lines.append(
            f"- {labels[key]}: 50% of the gradient within radius {r.radius50:.0f} px, 90% within "
            f"{r.radius90:.0f} px; the 90% square covers {r.area_fraction90:.0%} of the theoretical field."
        )
    lines += [
        "",
        "The effective field is a Gaussian-like blob much smaller than the theoretical one (Luo et al. 2016). "
        "Residual nets tend to have the smaller one at initialisation: they behave like an ensemble of "
        "mostly shallow paths (Veit et al. 2016). Training grows it (Luo et al. 2016, Fig. 4)"
        + (": compare with step 0 on the step slider." if step > 0 else ": train in the lab, then compare steps."),
    ]
    with st.container(border=True):
        st.markdown("\n".join(lines))


def growth_section(results: dict[str, dict[str, ERFResult]], labels: dict[str, str]) -> None:
    log_y = st.toggle("Log y axis", key=K + "log_y", help="spreads the small radii of the first layers")
    rows = {key: growth_rows(per_layer) for key, per_layer in results.items()}
    chart(
        figs.growth_figure(rows, labels, log_y=log_y),
        "What to look for: the dashed theoretical lines of A and B coincide and grow linearly with depth, twice "
        "as fast after each downsampling, "
        "while the effective radii grow far slower (about as √depth, Luo et al. 2016).",
        K + "growth",
    )


def maps_section(layer: str, results: dict[str, dict[str, ERFResult]], labels: dict[str, str]) -> None:
    chart(
        figs.erf_maps_figure({key: per_layer[layer] for key, per_layer in results.items()}, labels),
        "What to look for: a bright blob far inside the dashed theoretical field; the solid and dotted "
        "squares hold 50% and 90% of the gradient. Colours are relative to each map's peak.",
        K + "maps",
    )


def overlay_section(
    layer: str, index: int, results: dict[str, dict[str, ERFResult]], infos: dict[str, dict[str, RFInfo]], pair: Pair
) -> None:
    ds = load_dataset(pair.data)
    image = ds.x_test[index, 0].numpy()
    labels = {key: c.label for key, c in pair.models.items()}
    erfs = {key: per_layer[layer] for key, per_layer in results.items()}
    fields = {key: infos[key][layer] for key in results}
    info = next(iter(fields.values()))
    outside = ", ".join(
        f"{labels[key].split(' ')[0]} {figs.mass_outside_image(erfs[key], fields[key]):.0%}" for key in erfs
    )
    where = (
        "the whole image (a global layer)"
        if info.is_global
        else f"the centre unit {info.unit} of the {info.output_shape[0]}×{info.output_shape[1]} output, "
        f"whose field is centred on image pixel {info.centre}"
    )
    chart(
        figs.overlay_figure(image, erfs, fields, labels),
        f"What to look for: how far both fields reach past the image (test image {index}: "
        f"{ds.classes[int(ds.y_test[index])]}) into padding. Drawn for {where}; ERF mass beyond the edge: "
        f"{outside}.",
        K + "overlay",
    )


def table_section(
    infos: dict[str, dict[str, RFInfo]], results: dict[str, dict[str, ERFResult]], labels: dict[str, str]
) -> None:
    st.subheader("Every layer")
    every = st.toggle("Every convolution too (theoretical field only)", key=K + "table.all")
    shown = infos if every else {k: {n: i for n, i in v.items() if n in results[k]} for k, v in infos.items()}
    frame = figs.rf_table({k: list(v.values()) for k, v in shown.items()}, results, labels)
    columns = {c: st.column_config.NumberColumn(c, format="percent") for c in frame.columns if c.endswith("area")}
    columns["layer"] = st.column_config.TextColumn("layer", width="medium")  # "stage1.block1.conv2" in full
    st.dataframe(frame, hide_index=True, key=K + "table", column_config=columns)
    st.caption(
        "Theoretical size, jump (input pixels between neighbouring units) and the region seen by each layer's "
        "centre unit, in image pixels (negative or beyond the image: padding); ERF radii hold 50% / 90% of the "
        "gradient mass. " + "; ".join(labels.values()) + "."
    )


def main() -> None:
    require_shell()  # a deep link on a fresh server: rerun inside app.py's navigation
    st.title("Receptive fields")
    st.markdown(
        "How many input pixels can a unit see (its **theoretical** receptive field), and how many does it "
        "actually use (its **effective** field: the gradient of the unit with respect to every pixel)?"
    )
    top, right = st.columns([3, 1], gap="large")
    with top:
        pair = choose_pair()
    if pair is None:
        return
    with right:
        inputs = st.radio(
            "ERF inputs",
            [NOISE, IMAGES],
            key=K + "inputs",
            help=f"the gradient map is averaged over 2 noise images, or over {N_IMAGES} test images of "
            f"{pair.data.name} tiled to fill the canvas",
        )
    st.caption(pair.description)
    labels = {key: c.label for key, c in pair.models.items()}
    if refuse_non_finite(pair.models, "its gradients are undefined"):
        return
    with st.spinner("Computing receptive fields…"):
        results = {key: effective_fields(c, inputs, pair.data) for key, c in pair.models.items()}
        infos = {
            key: {i.name: i for i in theoretical_fields(c, pair.data.input_size)} for key, c in pair.models.items()
        }
    growth_section(results, labels)
    # the first model's layers that every model has (a sweep's runs name their models plain and residual)
    options = [name for name in next(iter(results.values())) if all(name in r for r in results.values())]
    state = st.session_state
    if state.get(K + "layer") not in options or state.get(K + "layer") == state.get(K + "layer.default"):
        state[K + "layer"] = options[-1]  # a late block (the deepest both have), unless the user picked another
    state[K + "layer.default"] = options[-1]
    count = len(load_dataset(pair.data).x_test)
    if not 0 <= st.session_state.get(K + "image", 0) < count:
        st.session_state[K + "image"] = 0
    pick, number = st.columns([3, 1])
    sizes = {n: next(iter(results.values()))[n].theoretical.size for n in options}
    layer = pick.selectbox(
        "Layer",
        options,
        key=relabelled_key(K + "layer", options, sizes),  # the sizes differ between depths
        format_func=lambda n: f"{n} (theoretical field {sizes[n]} px)",
    )
    state[K + "layer"] = layer
    index = number.number_input(
        f"Test image (0 to {count - 1})",
        0,
        count - 1,
        step=1,
        key=K + "image",
        help="the test image of the dataset the fields are drawn over, at its true pixel scale",
    )
    explanation(layer, results, labels, max(c.step for c in pair.models.values()))
    maps_section(layer, results, labels)
    overlay_section(layer, int(index), results, infos, pair)
    table_section(infos, results, labels)


main()
