"""Attributions: what models A and B look at in a test image, by seven Captum methods, and whether to trust it.

Models come from this session's lab run (at a chosen snapshot), a stored run, or the server's
default pair (plain vs residual on shapes, where masks allow localisation scores), trained once
for the whole server by the run service. The default view is one image: two maps and Grad-CAM by stage for each model.
The sanity check (Adebayo et al. 2018) and the localisation scores are computed on demand; every heavy
result is cached in the session per (model weights, images, method, targets), so widgets that do not
change them redraw at once.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

from resnet_viz import attribution as attr
from resnet_viz.data import DataConfig, Dataset, load_dataset
from resnet_viz.figures import attribution as figs
from resnet_viz.runs.defaults import SHAPES_PAIR
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.snapshots import DEFAULT, ChosenModel, choose_models
from resnet_viz.ui.widgets import chart

K = "attributions."  # widget and cache prefix in session_state
GALLERY = 16  # test images shown (and scored for localisation)
SANITY_IMAGES = 8
MAX_CACHE = 96  # cached results per session (maps are tiny; sanity and localisation tables small)
FILTERS = {
    "all": "all test images",
    "A+": "correct for A",
    "A-": "wrong for A",
    "B+": "correct for B",
    "B-": "wrong for B",
    "A-B+": "wrong for A, correct for B",
    "A+B-": "correct for A, wrong for B",
}
TARGETS = {"predicted": "Predicted class (each model's own)", "true": "True class"}
LOOK_FOR = {
    "saliency": "bright pixels are where a small change moves the class score most; gradients are noisy and "
    "light up edges.",
    "input_x_gradient": "green pixels raise the class score, purple ones lower it; input × gradient, so dark "
    "(below-mean) pixels flip the gradient's sign.",
    "integrated_gradients": "green raises the class score relative to the mean image, purple lowers it; the map "
    "adds up to that score difference (badge below).",
    "smoothgrad": "the gradient averaged over 50 noisy copies of the image: less speckle than the plain "
    "gradient, the same sign convention (green raises the score).",
    "gradcam": "a coarse blob from the last stage, upsampled: where the class evidence sits, not which pixels.",
    "occlusion": "green where replacing a patch by the mean image lowers the score (the patch was evidence), "
    "purple where it raises it; patches of about a quarter of the image side, so the map is blocky.",
    "deeplift": "like Integrated Gradients (relative to the mean image, sums to the score difference) in one "
    "backward pass.",
}


# --------------------------------------------------------------------------------------------------
# Session cache


def fingerprint(model: nn.Module) -> str:
    """Identity of a model's weights (and skip scales): cache keys survive reruns, never mix two models."""
    prints: weakref.WeakKeyDictionary = st.session_state.setdefault(K + "fingerprints", weakref.WeakKeyDictionary())
    if model not in prints:
        h = hashlib.blake2b(digest_size=16)
        for name, tensor in model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr([float(m.alpha) for m in model.modules() if hasattr(m, "alpha")]).encode())
        h.update(repr(getattr(model, "config", None)).encode())
        prints[model] = h.hexdigest()
    return prints[model]


def cached(key: tuple, compute: Callable[[], Any]) -> Any:
    """`compute()` once per key for this session; a method that cannot run is cached as its MethodUnavailable."""
    cache: dict = st.session_state.setdefault(K + "cache", {})
    if key not in cache:
        while len(cache) >= MAX_CACHE:
            cache.pop(next(iter(cache)))
        try:
            cache[key] = compute()
        except attr.MethodUnavailable as err:
            cache[key] = err
    return cache[key]


def is_cached(key: tuple) -> bool:
    return key in st.session_state.get(K + "cache", {})


def from_cache(key: tuple) -> Any:
    return st.session_state.get(K + "cache", {}).get(key)


def _use_default() -> None:
    st.session_state[K[:-1] + ".source"] = DEFAULT


# --------------------------------------------------------------------------------------------------
# Cached computations


def probabilities(fp: str, model: nn.Module, data: DataConfig, x: torch.Tensor) -> np.ndarray:
    """Softmax over the whole test split, (N, classes); NaN rows where the model's outputs are not finite."""

    def compute() -> np.ndarray:
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])
        return torch.softmax(logits.double(), dim=1).numpy()

    return cached(("probs", fp, data), compute)


def single_map(fp: str, model: nn.Module, ds: Dataset, index: int, method: str, target: int):
    return cached(
        ("map", fp, ds.config, index, method, target),
        lambda: attr.attribute(model, ds.x_test[index : index + 1], target, method),
    )


def availability(fp: str, model: nn.Module, ds: Dataset) -> dict[str, str | None]:
    return cached(("available", fp, ds.config), lambda: attr.available_methods(model, ds.x_test[:1]))


# --------------------------------------------------------------------------------------------------
# Sections


def gallery_mask(mode: str, correct: dict[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(correct.values())))
    if mode == "all":
        return np.ones(n, dtype=bool)
    mask = np.ones(n, dtype=bool)
    for part in (mode[i : i + 2] for i in range(0, len(mode), 2)):
        key, want = part[0], part[1] == "+"
        if key not in correct:
            return np.zeros(n, dtype=bool)
        mask &= correct[key] == want
    return mask


def filters(chosen: dict[str, ChosenModel], ds: Dataset) -> tuple[str, int]:
    left, right = st.columns(2)
    labels = {k: c.label for k, c in chosen.items()}

    def describe(mode: str) -> str:
        text = FILTERS[mode]
        for key, label in labels.items():
            text = text.replace(f"for {key}", f"for {label}")
        return text

    mode = left.selectbox("Show", list(FILTERS), format_func=describe, key=K + "filter")
    cls = right.selectbox(
        "Class", [-1, *range(len(ds.classes))], key=K + "class",
        format_func=lambda c: "all classes" if c < 0 else f"{c}: {ds.classes[c]}",
    )  # fmt: skip
    return mode, cls


def method_and_target(available: dict[str, dict[str, str | None]]) -> tuple[str, str]:
    left, right = st.columns([3, 2])

    def describe(method: str) -> str:
        info = attr.METHODS[method]
        missing = [k for k, a in available.items() if a.get(method)]
        tail = f" · unavailable for {' and '.join(missing)}" if missing else ""
        return f"{info.label} ({info.reference}){tail}"

    method = left.selectbox("Method", list(attr.METHODS), format_func=describe, key=K + "method")
    target = right.radio("Explain the score of", list(TARGETS), format_func=TARGETS.get, key=K + "target",
                         horizontal=True)  # fmt: skip
    return method, target


def completeness_badge(result: attr.AttributionResult) -> None:
    """Relative completeness error of IG (and DeepLift) with the gap it is relative to."""
    if result.completeness is None or result.gap is None:
        return
    error, gap = float(result.completeness[0]), float(result.gap[0])
    good = error <= attr.IG_TOLERANCE
    st.badge(
        f"completeness error {error:.1%} of F(x) − F(baseline) = {gap:+.2f} logits",
        icon=":material/check_circle:" if good else ":material/warning:",
        color="green" if good else "orange",
        help="Sundararajan et al. 2017, Prop. 1: the map must add up to the change in the class score from the "
        "baseline (the mean image) to the image. Integrated Gradients doubles its steps until the error is under "
        "5 % (at most 256 steps).",
    )
    steps = result.options.get("n_steps")
    steps_text = f" ({int(np.asarray(steps).reshape(-1)[0])} integration steps)" if steps is not None else ""
    if not good and abs(gap) < 1.0:
        st.caption(
            f"The baseline already scores this class almost as high as the image (gap {gap:+.2f} logits): "
            f"relative to so small a gap the error is ill-conditioned, not a sign of a broken map{steps_text}."
        )
    elif not good:
        st.caption(f"Above the 5 % target even after refining{steps_text}: read this map with care.")
    else:
        st.caption(f"Adds up within 5 %{steps_text}.")


def model_column(
    cm: ChosenModel, fp: str, ds: Dataset, index: int, probs: np.ndarray, method: str, target: int, reason: str | None
) -> None:
    truth = int(ds.y_test[index])
    row = probs[index]
    if np.isfinite(row).all():
        pred = int(row.argmax())
        verdict = "right" if pred == truth else f"wrong: it is a {ds.classes[truth]}"
        explained = (
            "the map explains this prediction"
            if target == pred
            else f"the map explains **{ds.classes[target]}** ({row[target]:.1%})"
        )
        st.markdown(f"**{cm.label}** predicts **{ds.classes[pred]}** with {row[pred]:.1%} ({verdict}); {explained}.")
    else:
        st.markdown(f"**{cm.label}**: no prediction, its outputs are not finite.")
    info = attr.METHODS[method]
    result = attr.MethodUnavailable(method, reason) if reason else single_map(fp, cm.model, ds, index, method, target)
    if isinstance(result, attr.MethodUnavailable):
        st.warning(f"{info.label} cannot explain {cm.label}: {result.reason}.")
        return
    fig = figs.map_figure(
        ds.x_test[index, 0].numpy(),
        result.maps[0],
        method=method,
        label=cm.label,
        key=cm.key,
        class_name=ds.classes[target],
    )
    chart(fig, f"What to look for: {LOOK_FOR[method]}", K + f"map.{cm.key}")
    completeness_badge(result)


def depth_section(chosen: dict[str, ChosenModel], fps: dict[str, str], ds: Dataset, index: int,
                  targets: dict[str, int]) -> None:  # fmt: skip
    st.subheader("Grad-CAM across depth")
    maps, problems = {}, []
    for key, cm in chosen.items():
        result = cached(
            ("depth", fps[key], ds.config, index, targets[key]),
            lambda cm=cm, key=key: attr.gradcam_across_depth(cm.model, ds.x_test[index : index + 1], targets[key]),
        )
        if isinstance(result, attr.MethodUnavailable):
            problems.append(f"{cm.label}: {result.reason}")
        else:
            maps[key] = {stage: m[0] for stage, m in result.items()}
    for problem in problems:
        st.warning(f"No Grad-CAM for {problem}.")
    if not maps:
        return
    labels = {k: chosen[k].label for k in maps}
    classes = {k: ds.classes[targets[k]] for k in maps}
    chart(
        figs.depth_figure(ds.x_test[index, 0].numpy(), maps, labels, classes),
        "What to look for: early stages respond to local edges all over the shape, the last stage to the region that "
        "decides the class; a plain net whose early maps are empty or noisy is not using its early layers.",
        K + "depth",
    )


def on_demand(label: str, key: str, icon: str, note: str) -> bool:
    """A button for a slow computation, with a note; it disappears as soon as it is pressed."""
    slot = st.empty()
    with slot.container():
        pressed = st.button(label, key=key, icon=icon)
        if not pressed:
            st.caption(note)
    if pressed:
        slot.empty()
    return pressed


def sanity_section(chosen: dict[str, ChosenModel], fps: dict[str, str], ds: Dataset, images: np.ndarray,
                   targets: dict[str, np.ndarray]) -> None:  # fmt: skip
    st.subheader("Sanity check: do the maps depend on what the model learned?")
    st.markdown(
        "Cascading randomisation (Adebayo et al. 2018, Fig. 2): the model's layers are replaced by random ones, "
        "from the head down to the stem, and each method's map is compared with the trained model's. A method "
        "that explains the model must lose similarity; one that stays similar shows the image, not the model."
    )
    idx = images[:SANITY_IMAGES]
    keys = {k: ("sanity", fps[k], ds.config, tuple(idx.tolist()), tuple(targets[k][:SANITY_IMAGES].tolist()))
            for k in chosen}  # fmt: skip
    if not all(is_cached(key) for key in keys.values()):
        if not on_demand(
            f"Run the sanity check on {len(idx)} images", K + "sanity.run", ":material/science:",
            "Saliency and Grad-CAM, both models: about a second for small nets, longer for deep ones.",
        ):  # fmt: skip
            return
        with st.spinner("Randomising layers one after the other and recomputing the maps..."):
            for key, cm in chosen.items():
                cached(keys[key], lambda cm=cm, key=key: attr.sanity_check(cm.model, ds.x_test[idx],
                                                                            targets[key][:SANITY_IMAGES]))  # fmt: skip
    frames = {}
    for key, cm in chosen.items():
        result = from_cache(keys[key])
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


def localisation_section(chosen: dict[str, ChosenModel], fps: dict[str, str], ds: Dataset, images: np.ndarray,
                         targets: dict[str, np.ndarray]) -> None:  # fmt: skip
    st.subheader("Localisation: does the map point at the object?")
    if ds.masks_test is None:
        st.info(
            f"Localisation scores need a ground-truth mask of the object in each image. Only the shapes dataset "
            f"has masks; these models were trained on {ds.config.name}, so no scores are shown. Pick the server's "
            "default pair (shapes) at the top to see them."
        )
        return
    keys = {k: ("loc", fps[k], ds.config, tuple(images.tolist()), tuple(targets[k].tolist())) for k in chosen}
    if not all(is_cached(key) for key in keys.values()):
        if not on_demand(
            f"Compute localisation scores ({len(images)} images, every method)", K + "loc.run",
            ":material/my_location:",
            "Share of positive attribution inside the shape's mask vs the mask's area (chance), and the pointing "
            "game (Zhang et al. 2016); a few seconds, Integrated Gradients takes most.",
        ):  # fmt: skip
            return
        masks = ds.masks_test[images].numpy()
        with st.spinner("Attributing every method on every gallery image..."):
            for key, cm in chosen.items():
                cached(keys[key], lambda cm=cm, key=key: attr.localisation(
                    cm.model, ds.x_test[images], masks, targets[key], model_name=key))  # fmt: skip
    summaries, unavailable = [], {}
    for key, cm in chosen.items():
        table = from_cache(keys[key])
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
    st.dataframe(
        table, hide_index=True, key=K + "loc.table", height=35 * (len(table) + 1) + 3,  # every row, no scrolling
        column_config={c: st.column_config.NumberColumn(format="%.1f")
                       for c in ("mass in mask (%)", "chance (%)", "lift (× chance)", "pointing game (%)")},
    )  # fmt: skip
    st.caption("Mean over the gallery images; lift is mass in mask ÷ chance (1 = no better than a uniform map).")


# --------------------------------------------------------------------------------------------------


def main() -> None:
    require_shell()  # a deep link on a fresh server: rerun inside app.py's navigation
    st.title("Attributions")
    st.caption(
        "What each model looks at in a test image, by seven Captum methods, and two checks of the maps "
        "themselves: do they depend on the weights (sanity check), and do they land on the object (localisation)."
    )
    picked = choose_models("attributions")
    if picked is None:
        return
    chosen, data, description = picked
    st.info(description)
    if not data.is_image:
        st.info(
            f"These models were trained on {data.name}, 2-D points: their input is two coordinates, not an image, "
            "so there is nothing to draw a map over (the Training lab's decision boundary shows what they learned). "
            f"The server's default pair ({SHAPES_PAIR.title}) can be explained instead."
        )
        st.button("Explain the server's default pair", on_click=_use_default, key=K + "use_default", type="primary")
        return
    ds = load_dataset(data)
    fps = {k: fingerprint(c.model) for k, c in chosen.items()}
    probs = {k: probabilities(fps[k], c.model, data, ds.x_test) for k, c in chosen.items()}
    y = ds.y_test.numpy()
    finite = {k: np.isfinite(p).all(axis=1) for k, p in probs.items()}
    preds = {k: np.where(finite[k], np.nan_to_num(p).argmax(axis=1), -1) for k, p in probs.items()}
    correct = {k: preds[k] == y for k in chosen}
    for key, cm in chosen.items():
        if not finite[key].all():
            st.warning(
                f"{cm.label} gives non-finite outputs at step {cm.step} (did its training diverge?): it has no "
                "predictions and no method can explain it."
            )
    accuracy = " · ".join(f"{c.label}: {correct[k].mean():.1%} test accuracy" for k, c in chosen.items())
    st.caption(f"{ds.config.name} test split, {len(y)} images · {accuracy}")

    mode, cls = filters(chosen, ds)
    mask = gallery_mask(mode, correct) & ((y == cls) if cls >= 0 else True)
    matches = np.flatnonzero(mask)
    if not len(matches):
        st.warning("No test image matches this filter (Show and Class above); choose another.")
        return
    images = matches[:GALLERY]
    index_key = K + "image"
    if st.session_state.get(index_key) not in images.tolist():
        st.session_state[index_key] = int(images[0])

    def describe(i: int) -> str:
        parts = []
        for key in chosen:
            p = probs[key][i]
            parts.append(f"{key}: {ds.classes[preds[key][i]]} {p.max():.0%}" if finite[key][i] else f"{key}: –")
        return f"#{i} · true {ds.classes[y[i]]} · " + " · ".join(parts)

    index = st.session_state[index_key]
    chart(
        figs.gallery_figure(
            ds.x_test[images, 0].numpy(), images.tolist(), [ds.classes[c] for c in y[images]],
            {k: correct[k][images] for k in chosen}, selected=index,
        ),
        f"What to look for: pick an image below; {len(images)} of {len(matches)} matching test images are shown "
        f"({FILTERS[mode]}{'' if cls < 0 else ', class ' + ds.classes[cls]}).",
        K + "gallery",
    )  # fmt: skip
    index = st.selectbox("Image (test index)", images.tolist(), format_func=describe, key=index_key)

    available = {k: availability(fps[k], c.model, ds) for k, c in chosen.items()}
    method, target_mode = method_and_target(available)
    targets_all = {k: (preds[k] if target_mode == "predicted" else y) for k in chosen}
    targets_all = {k: np.where(t < 0, y, t) for k, t in targets_all.items()}  # no prediction: explain the truth
    info = attr.METHODS[method]
    sign = "signed: green raises the score, purple lowers it" if info.signed else "unsigned"
    st.caption(
        f"{info.label} ({info.reference}), {sign}; "
        "every map is scaled by its own 99th percentile of |attribution| (values beyond it are clipped)."
    )
    columns = st.columns(len(chosen), gap="medium")
    for col, (key, cm) in zip(columns, chosen.items(), strict=True):
        with col:
            model_column(cm, fps[key], ds, index, probs[key], method, int(targets_all[key][index]),
                         available[key].get(method))  # fmt: skip

    depth_section(chosen, fps, ds, index, {k: int(t[index]) for k, t in targets_all.items()})
    sanity_section(chosen, fps, ds, images, {k: t[images] for k, t in targets_all.items()})
    localisation_section(chosen, fps, ds, images, {k: t[images] for k, t in targets_all.items()})


main()
