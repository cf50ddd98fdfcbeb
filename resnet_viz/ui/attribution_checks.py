"""The two checks of the attributions page that run on demand: do the maps depend on the weights, and
do they land on the object?

Both are slow (every method, several images, each layer randomised in turn), so each waits behind a
button until its results are in the page's analysis cache; later reruns draw them at once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

from resnet_viz import attribution as attr
from resnet_viz.data import Dataset
from resnet_viz.figures import attribution as figs

from .analysis_cache import AnalysisCache
from .snapshots import ChosenModel
from .widgets import chart

K = "attributions."  # the page's widget prefix
SANITY_IMAGES = 8  # gallery images the sanity check randomises the model on


class Checked(NamedTuple):
    """What both checks are about: the models, their weights' fingerprints, the gallery and its classes."""

    models: dict[str, ChosenModel]  # by key (A, B)
    fingerprints: dict[str, str]  # analysis_cache.fingerprint of each model
    ds: Dataset  # the test split the gallery shows
    images: np.ndarray  # test indices of the gallery
    targets: dict[str, np.ndarray]  # per model, the class explained for each gallery image


def sanity_section(cache: AnalysisCache, checked: Checked) -> None:
    chosen, fps, ds, images, targets = checked
    st.subheader("Sanity check: do the maps depend on what the model learned?")
    st.markdown(
        "Cascading randomisation (Adebayo et al. 2018, Fig. 2): the model's layers are replaced by random ones, "
        "from the head down to the stem, and each method's map is compared with the trained model's. A method "
        "that explains the model must lose similarity; one that stays similar shows the image, not the model."
    )
    idx = images[:SANITY_IMAGES]
    keys = {
        k: ("sanity", fps[k], ds.config, tuple(idx.tolist()), tuple(targets[k][:SANITY_IMAGES].tolist()))
        for k in chosen
    }
    jobs = {
        keys[k]: lambda cm=cm, k=k: attr.sanity_check(cm.model, ds.x_test[idx], targets[k][:SANITY_IMAGES])
        for k, cm in chosen.items()
    }
    if not cache.on_demand(
        jobs,
        f"Run the sanity check on {len(idx)} images",
        K + "sanity.run",
        ":material/science:",
        "Saliency and Grad-CAM, both models: about a second for small nets, longer for deep ones.",
        "Randomising layers one after the other and recomputing the maps...",
    ):
        return
    frames = {}
    for key, cm in chosen.items():
        result = cache.get(keys[key])
        if isinstance(result, attr.MethodUnavailable):
            st.warning(f"No sanity check for {cm.label}: {result.reason}.")
        else:
            frames[key] = result
    if frames:
        chart(
            figs.sanity_figure(frames, {k: c.label for k, c in chosen.items()}),
            "What to look for: curves that fall towards 0 as more layers are randomised (the map depends on the "
            "weights); a curve that stays near 1 means the method shows edges of the input whatever the model.",
            K + "sanity",
        )


def localisation_section(cache: AnalysisCache, checked: Checked) -> None:
    chosen, fps, ds, images, targets = checked
    st.subheader("Localisation: does the map point at the object?")
    if ds.masks_test is None:
        st.info(
            f"Localisation scores need a ground-truth mask of the object in each image. Only the shapes dataset "
            f"has masks; these models take {ds.config.name} data, so no scores are shown. Pick the server's "
            "default pair (shapes) at the top to see them."
        )
        return
    keys = {k: ("loc", fps[k], ds.config, tuple(images.tolist()), tuple(targets[k].tolist())) for k in chosen}
    masks = ds.masks_test[images].numpy()
    jobs = {
        keys[k]: lambda cm=cm, k=k: attr.localisation(cm.model, ds.x_test[images], masks, targets[k], model_name=k)
        for k, cm in chosen.items()
    }
    if not cache.on_demand(
        jobs,
        f"Compute localisation scores ({len(images)} images, every method)",
        K + "loc.run",
        ":material/my_location:",
        "Share of positive attribution inside the shape's mask vs the mask's area (chance), and the pointing "
        "game (Zhang et al. 2016); a few seconds, Integrated Gradients takes most.",
        "Attributing every method on every gallery image...",
    ):
        return
    summaries, unavailable = [], {}
    for key, cm in chosen.items():
        table = cache.get(keys[key])
        if isinstance(table, attr.MethodUnavailable) or table is None or table.empty:
            reasons = table.attrs.get("unavailable", {}) if isinstance(table, pd.DataFrame) else {}
            st.warning(f"No localisation scores for {cm.label}: {'; '.join(set(reasons.values())) or 'no method ran'}.")
            continue
        unavailable.update({f"{cm.label}: {attr.METHODS[m].label}": r for m, r in table.attrs["unavailable"].items()})
        summaries.append(attr.localisation_summary(table))
    for what, reason in unavailable.items():
        st.caption(f"Left out {what} ({reason}).")
    if not summaries:
        return
    summary = pd.concat(summaries, ignore_index=True)
    labels = {k: c.label for k, c in chosen.items()}
    chart(
        figs.localisation_figure(summary, labels),
        "What to look for: bars well above their chance tick (the mask's share of the image) and pointing near "
        "100 %: the map sits on the shape. Grad-CAM is coarse by design; it loses points on small shapes.",
        K + "loc",
    )
    table = figs.localisation_table(summary, labels)
    numbers = ("mass in mask (%)", "chance (%)", "lift (× chance)", "pointing game (%)")
    st.dataframe(
        table,
        hide_index=True,
        key=K + "loc.table",
        height=35 * (len(table) + 1) + 3,  # every row, no scrolling
        column_config={c: st.column_config.NumberColumn(format="%.1f") for c in numbers},
    )
    st.caption("Mean over the gallery images; lift is mass in mask ÷ chance (1 = no better than a uniform map).")
