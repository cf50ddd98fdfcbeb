"""Attributions: what models A and B look at in a test image, by seven Captum methods, and whether to trust it.

Models come from this session's lab run (at a chosen snapshot), a stored run, or the server's
default pair (plain vs residual on shapes, where masks allow localisation scores), trained once
for the whole server by the run service. The default view is one image: two maps and Grad-CAM by stage for each model.
The sanity check (Adebayo et al. 2018) and the localisation scores are computed on demand; every heavy
result is cached in the session per (model weights, images, method, targets), so widgets that do not
change them redraw at once.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from resnet_viz import attribution as attr
from resnet_viz.data import Dataset, load_dataset
from resnet_viz.figures import attribution as figs
from resnet_viz.predictions import FILTERS, TARGETS, Predictions, describe_filter, describe_image, filter_mask
from resnet_viz.predictions import probabilities as predict
from resnet_viz.runs.defaults import SHAPES_PAIR
from resnet_viz.ui.analysis_cache import AnalysisCache, fingerprint
from resnet_viz.ui.attribution_checks import Checked, localisation_section, sanity_section
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.snapshots import DEFAULT, ChosenModel, choose_models
from resnet_viz.ui.widgets import chart, relabelled_key

K = "attributions."  # widget and cache prefix in session_state
GALLERY = 16  # test images shown (and scored for localisation)
MAX_CACHE = 96  # cached results per session (maps are tiny; sanity and localisation tables small)
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
cache = AnalysisCache(K, MAX_CACHE, keep=(attr.MethodUnavailable,))


def _use_default() -> None:
    st.session_state[K[:-1] + ".source"] = DEFAULT


def filters(chosen: dict[str, ChosenModel], ds: Dataset) -> tuple[str, int]:
    left, right = st.columns(2)
    labels = {k: c.label for k, c in chosen.items()}
    key = relabelled_key(K + "filter", list(FILTERS), labels)
    mode = left.selectbox("Show", list(FILTERS), format_func=lambda m: describe_filter(m, labels), key=key)
    st.session_state[K + "filter"] = mode
    cls = right.selectbox(
        "Class",
        [-1, *range(len(ds.classes))],
        key=K + "class",
        format_func=lambda c: "all classes" if c < 0 else f"{c}: {ds.classes[c]}",
    )
    return mode, cls


def method_and_target(available: dict[str, dict[str, str | None]]) -> tuple[str, str]:
    left, right = st.columns([3, 2])

    def describe(method: str) -> str:
        info = attr.METHODS[method]
        missing = [k for k, a in available.items() if a.get(method)]
        tail = f" · unavailable for {' and '.join(missing)}" if missing else ""
        return f"{info.label} ({info.reference}){tail}"

    method = left.selectbox("Method", list(attr.METHODS), format_func=describe, key=K + "method")
    target = right.radio(
        "Explain the score of", list(TARGETS), format_func=TARGETS.get, key=K + "target", horizontal=True
    )
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
    cm: ChosenModel, fp: str, ds: Dataset, index: int, pred: Predictions, method: str, target: int, reason: str | None
) -> None:
    truth, row = int(ds.y_test[index]), pred.probs[index]
    if pred.finite[index]:
        guess = int(pred.predicted[index])
        verdict = "right" if guess == truth else f"wrong: it is a {ds.classes[truth]}"
        explained = (
            "the map explains this prediction"
            if target == guess
            else f"the map explains **{ds.classes[target]}** ({row[target]:.1%})"
        )
        st.markdown(f"**{cm.label}** predicts **{ds.classes[guess]}** with {row[guess]:.1%} ({verdict}); {explained}.")
    else:
        st.markdown(f"**{cm.label}**: no prediction, its outputs are not finite.")
    info = attr.METHODS[method]
    result = (
        attr.MethodUnavailable(method, reason)
        if reason
        else cache(
            ("map", fp, ds.config, index, method, target),
            lambda: attr.attribute(cm.model, ds.x_test[index : index + 1], target, method),
        )
    )
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


def depth_section(
    chosen: dict[str, ChosenModel], fps: dict[str, str], ds: Dataset, index: int, targets: dict[str, int]
) -> None:
    st.subheader("Grad-CAM across depth")
    maps = {}
    for key, cm in chosen.items():
        result = cache(
            ("depth", fps[key], ds.config, index, targets[key]),
            lambda cm=cm, key=key: attr.gradcam_across_depth(cm.model, ds.x_test[index : index + 1], targets[key]),
        )
        if isinstance(result, attr.MethodUnavailable):
            st.warning(f"No Grad-CAM for {cm.label}: {result.reason}.")
        else:
            maps[key] = {stage: m[0] for stage, m in result.items()}
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
            f"These models take {data.name} data, 2-D points: their input is two coordinates, not an image, "
            "so there is nothing to draw a map over (the Training lab's decision boundary shows what they learned). "
            f"The server's default pair ({SHAPES_PAIR.title}) can be explained instead."
        )
        st.button("Explain the server's default pair", on_click=_use_default, key=K + "use_default", type="primary")
        return
    ds = load_dataset(data)
    y = ds.y_test.numpy()
    fps = {k: fingerprint(c.model) for k, c in chosen.items()}
    preds = {
        k: Predictions(cache(("probs", fps[k], data), lambda c=c: predict(c.model, ds.x_test)), y)
        for k, c in chosen.items()
    }
    for key, cm in chosen.items():
        if not preds[key].finite.all():
            st.warning(
                f"{cm.label} gives non-finite outputs at step {cm.step} (did its training diverge?): it has no "
                "predictions and no method can explain it."
            )
    accuracy = " · ".join(f"{c.label}: {preds[k].correct.mean():.1%} test accuracy" for k, c in chosen.items())
    st.caption(f"{ds.config.name} test split, {len(y)} images · {accuracy}")

    mode, cls = filters(chosen, ds)
    correct = {k: p.correct for k, p in preds.items()}
    matches = np.flatnonzero(filter_mask(mode, correct, y, cls))
    if not len(matches):
        st.warning("No test image matches this filter (Show and Class above); choose another.")
        return
    images = matches[:GALLERY]
    index_key = relabelled_key(K + "image", images.tolist(), sorted(fps.items()), data)
    if index_key not in st.session_state:
        st.session_state[index_key] = int(images[0])
    gallery = figs.gallery_figure(
        ds.x_test[images, 0].numpy(),
        images.tolist(),
        [ds.classes[c] for c in y[images]],
        {k: correct[k][images] for k in chosen},
        selected=st.session_state[index_key],
    )
    chart(
        gallery,
        f"What to look for: pick an image below; {len(images)} of {len(matches)} matching test images are shown "
        f"({FILTERS[mode]}{'' if cls < 0 else ', class ' + ds.classes[cls]}).",
        K + "gallery",
    )
    index = st.selectbox(
        "Image (test index)", images.tolist(), format_func=lambda i: describe_image(i, ds.classes, preds), key=index_key
    )
    st.session_state[K + "image"] = index

    available = {
        k: cache(("available", fps[k], ds.config), lambda c=c: attr.available_methods(c.model, ds.x_test[:1]))
        for k, c in chosen.items()
    }
    method, target_mode = method_and_target(available)
    targets = {k: p.targets(target_mode) for k, p in preds.items()}
    info = attr.METHODS[method]
    sign = "signed: green raises the score, purple lowers it" if info.signed else "unsigned"
    st.caption(
        f"{info.label} ({info.reference}), {sign}; "
        "every map is scaled by its own 99th percentile of |attribution| (values beyond it are clipped)."
    )
    columns = st.columns(len(chosen), gap="medium")
    for col, (key, cm) in zip(columns, chosen.items(), strict=True):
        with col:
            reason = available[key].get(method)
            model_column(cm, fps[key], ds, index, preds[key], method, int(targets[key][index]), reason)

    depth_section(chosen, fps, ds, index, {k: int(t[index]) for k, t in targets.items()})
    checked = Checked(chosen, fps, ds, images, {k: t[images] for k, t in targets.items()})
    sanity_section(cache, checked)
    localisation_section(cache, checked)


main()
