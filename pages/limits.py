"""Limits & pitfalls: what skip connections do not fix, measured on the pair chosen above.

Lesions (Veit et al. 2016), calibration (Guo et al. 2017), robustness to corruptions, inference cost
against depth, sensitivity to the initialisation, and a task that needs a global view. One analysis is
shown at a time (each is a library call, cached per model and step); the two that need their own
training grids run them in the background through the server's run service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import streamlit as st

from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.figures import limits as figs
from resnet_viz.limits import calibration, cost, global_reasoning, init_sensitivity, lesions, robustness
from resnet_viz.limits.runs import GridPoint, GridTask
from resnet_viz.tasks import ThreadExecutor
from resnet_viz.ui.session import session_jobs
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.snapshots import ChosenModel, choose_models, refuse_non_finite
from resnet_viz.ui.store import run_store
from resnet_viz.ui.widgets import chart

K = "limits."  # widget-state prefix
ANALYSES = ("Lesions", "Calibration", "Robustness", "Cost", "Initialisation", "Global reasoning")
MAX_CACHED = 12


def cached(kind: str, ident: tuple, compute: Callable[[], Any], keep: object = None) -> Any:
    """Per session, keyed by what it is computed from; `keep` (the models) stays alive with the value, so the
    ids in `ident` are never reused while cached."""
    cache: dict = st.session_state.setdefault(K + "cache", {})
    if (kind, ident) not in cache:
        if len(cache) >= MAX_CACHED:
            cache.clear()
        with st.spinner(f"Computing {kind}…"):
            cache[(kind, ident)] = (compute(), keep)
    return cache[(kind, ident)][0]


def _ident(chosen: dict[str, ChosenModel]) -> tuple:
    return tuple((c.key, id(c.model), c.step) for c in chosen.values())


def lesions_section(chosen: dict[str, ChosenModel], data: DataConfig, labels: dict[str, str]) -> None:
    models, ds = {k: c.model for k, c in chosen.items()}, load_dataset(data)
    result = cached("lesions", _ident(chosen), lambda: lesions.lesion_study(models, ds), models)
    paths = cached("paths", _ident(chosen), lambda: lesions.path_gradients(models, ds), models)
    chart(
        figs.lesion_single_figure(result.single, result.base_error, labels),
        "What to look for: in Veit et al.'s 110-layer ResNet (2016, Fig. 3), deleting one block barely moved the "
        "error, except at the downsampling blocks (x); a plain net, whose deleted block is replaced by a shortcut "
        "it never had, falls towards chance. A shallower net has fewer paths around each block, so one block "
        "can matter more. " + lesions.verdict(result, labels),
        K + "single",
    )
    chart(
        figs.lesion_k_figure(result.k_random, labels),
        "What to look for: the residual net's error grows smoothly with the number of deleted blocks "
        f"({'downsampling blocks included' if result.include_downsampling else 'downsampling blocks spared'}; "
        "Veit et al. Fig. 5): many paths share the work. " + lesions.sampling_note(result),
        K + "k",
    )
    if paths.empty:
        st.info("Neither model has shortcuts: a plain net has one path, so there is no path-length distribution.")
        return
    chart(
        figs.paths_figure(paths, labels),
        "What to look for: most paths have middle lengths (binomial), but the gradient falls steeply with length, "
        "so short paths carry most of it (Veit et al. Fig. 6). Not an ensemble: the paths share weights, train "
        "jointly, and a downsampling lesion breaks them all.",
        K + "paths",
    )


CALIBRATION_HEADERS = {
    "model": "Model",
    "accuracy": "Accuracy",
    "ece": "ECE",
    "nll": "NLL",
    "temperature": "Temperature T",
    "ece_scaled": "ECE after T",
    "nll_scaled": "NLL after T",
    "val_nll": "Validation NLL",
    "val_nll_scaled": "Validation NLL after T",
}


def calibration_section(chosen: dict[str, ChosenModel], data: DataConfig, labels: dict[str, str]) -> None:
    models, ds = {k: c.model for k, c in chosen.items()}, load_dataset(data)
    result = cached("calibration", _ident(chosen), lambda: calibration.calibration_study(models, ds), models)
    table = result.summary.assign(model=[labels[k] for k in result.summary.model])
    st.dataframe(table.round(4), hide_index=True, column_config=CALIBRATION_HEADERS)
    st.caption(
        "ECE (15 equal-width bins) and NLL on the test split, before and after dividing the logits by the "
        "temperature T fitted on the validation split; accuracy does not change with T."
    )
    chart(
        figs.reliability_figure(result.reliability, labels),
        "What to look for: bars under the diagonal are overconfidence (Guo et al. 2017, Fig. 1); skips do not "
        "remove it, one temperature mostly does. The 'Overconfident ResNet' preset trains long enough to show it. "
        + calibration.verdict(result.summary, labels),
        K + "reliability",
    )


def robustness_section(chosen: dict[str, ChosenModel], data: DataConfig, labels: dict[str, str]) -> None:
    models, ds = {k: c.model for k, c in chosen.items()}, load_dataset(data)
    frame = cached("robustness", _ident(chosen), lambda: robustness.robustness_study(models, ds), models)
    chart(
        figs.robustness_figure(frame, labels),
        "What to look for: both nets lose accuracy as severity grows; shortcuts make depth trainable, not inputs "
        "safer, so expect the residual net to lose about as much as the plain one. Severity 0 is the clean test "
        "set. " + robustness.verdict(frame, labels),
        K + "robustness",
    )


def cost_section(chosen: dict[str, ChosenModel]) -> None:
    base = next(iter(chosen.values())).config
    table = cached("cost", (base,), lambda: cost.cost_table(base))
    chart(
        figs.cost_figure(table),
        "What to look for: parameters, FLOPs, latency and training memory grow with depth, residual or not "
        "(identity shortcuts are free, so the plain lines lie under the residual ones in parameters and FLOPs); "
        "inference memory stays flat. Latency is measured on this server's CPU.",
        K + "cost",
    )
    store = run_store()
    infos = [i for i in store.list_runs() if set(i.depths) == {"plain", "residual"}]
    runs = cost.depth_study_runs(r for r in (store.get(i.key) for i in infos) if r is not None)
    if len({r.configs["residual"].depth for r in runs}) < 2:
        st.info("Run the depth study's classroom sweep to see accuracy against latency here.")
        return
    frame = cached("accuracy-latency", tuple(r.key for r in runs), lambda: cost.accuracy_vs_latency(runs))
    st.caption(cost.describe_sweep(runs))
    chart(
        figs.accuracy_latency_figure(frame),
        "What to look for: past the ringed depth the residual net is no more accurate (within 1 point) but every "
        "block still costs latency: depth that does not pay.",
        K + "acc_latency",
    )


def grid_section(name: str, points: list[GridPoint], draw: Callable[[list], None], note: str) -> None:
    """A Start/Stop pair for a training grid and its progress; `draw(runs)` once it has finished."""
    jobs = session_jobs()
    task: GridTask | None = jobs.others.get(name)
    if task is not None and [p.request.key for p in task.points] != [p.request.key for p in points]:
        task = None  # the settings changed: a new grid
    running = task is not None and not task.done
    start, stop, info = st.columns([1, 1, 4], vertical_alignment="center")
    if start.button("Run grid", type="primary", disabled=running, key=K + name + ".start"):
        old = jobs.others.get(name)
        if old is not None:
            old.stop()
        task = GridTask(points, jobs.service, jobs.viewer)
        jobs.others[name] = task
        ThreadExecutor().submit(task)
        task.join(3.0)  # a grid that is all in the store replays in well under a second
        st.rerun()
    if stop.button("Stop", disabled=not running, key=K + name + ".stop") and task is not None:
        task.stop()
    info.caption(note)
    if task is not None:
        st.fragment(run_every=1.0 if running else None)(_grid_panel)(task, draw, name)


def _grid_panel(task: GridTask, draw: Callable[[list], None], name: str) -> None:
    view = task.view()
    if view.status == "failed":
        st.error(f"The grid failed: {view.message[:300]}")
    if not task.done:
        st.progress(view.done / view.total, f"run {view.done + 1} of {view.total}, step {view.step}/{view.total_steps}")
        st.session_state[K + name + ".watching"] = True
    elif st.session_state.pop(K + name + ".watching", False):
        st.rerun()
    elif view.done == view.total:
        draw(view.runs)


def init_section() -> None:
    cols = st.columns(4)
    depth = cols[0].select_slider("Depth", [8, 14, 20, 32], value=20, key=K + "init.depth")
    norm = cols[1].radio(
        "Normalisation",
        ["none", "batch"],
        key=K + "init.norm",
        horizontal=True,
        help="BatchNorm rescales every layer, which hides most of the init's effect",
    )
    epochs = cols[2].number_input("Epochs", 1, 20, value=5, key=K + "init.epochs")
    seeds = cols[3].number_input("Seeds", 1, 3, value=2, key=K + "init.seeds")
    points = init_sensitivity.page_grid(depth, norm, int(epochs), int(seeds))

    def draw(runs: list) -> None:
        table = init_sensitivity.init_table(runs)
        chart(
            figs.init_figure(table),
            "What to look for: how far each scheme's losses spread, and which runs fail (x: diverged or stuck "
            "near chance); compare the gains and Xavier, plain against residual. "
            + init_sensitivity.init_verdict(table),
            K + "init",
        )
        st.dataframe(init_sensitivity.init_summary(table).round(4), hide_index=True)

    grid_section("limits_init", points, draw, f"{len(points)} plain/residual runs on digits, stored once trained.")


def global_section() -> None:
    def draw(runs: list) -> None:
        table = cached("global", tuple(r.key for _, r in runs), lambda: global_reasoning.global_reasoning_table(runs))
        chart(
            figs.global_reasoning_figure(table),
            "What to look for: nets whose last block's field cannot hold both corners stay at chance, skips or "
            "not; accuracy comes with the field. The effective field (where 90% of the input gradient lands) is "
            "smaller than the theoretical one (table: erf_side against rf_side).",
            K + "global",
        )
        st.dataframe(table.round(3), hide_index=True)

    ds = load_dataset(global_reasoning.DATA)
    st.image(
        [img for img in ds.x_test[:6, 0].clamp(-1, 3).add(1).div(4).numpy()],
        caption=[ds.classes[int(y)] for y in ds.y_test[:6]],
        width=80,
    )
    cols = st.columns(2)
    depths = cols[0].multiselect(
        "Depths",
        global_reasoning.DEPTHS,
        default=global_reasoning.DEPTHS,
        key=K + "global.depths",
        help="Depth 8's last block sees 25 of the 32 px (one corner at most); depth 14 and 20 see the whole image",
    )
    epochs = cols[1].number_input(
        "Epochs",
        1,
        10,
        value=global_reasoning.TRAIN.epochs,
        key=K + "global.epochs",
        help="The nets that can see both corners jump from chance to ~100% in epoch 2-4 (Adam)",
    )
    if not depths:
        st.info("Pick at least one depth (8, 14 or 20) to train.")
        return
    depths = sorted(depths)
    grid_section(
        "limits_global",
        global_reasoning.corners_grid(depths, train=replace(global_reasoning.TRAIN, epochs=int(epochs))),
        draw,
        f"Plain/residual pairs at depths {', '.join(map(str, depths))} on 32 px images, {int(epochs)} "
        f"epoch{'s' if epochs > 1 else ''} with Adam; stored once trained.",
    )


def main() -> None:
    require_shell()  # a deep link on a fresh server: rerun inside app.py's navigation
    st.title("Limits & pitfalls")
    st.markdown(
        "Skip connections make deep nets trainable. They do not make them calibrated, robust, cheap, "
        "insensitive to every init, or able to relate distant pixels, and a ResNet is not an ensemble. "
        "Each analysis below measures one of these."
    )
    analysis = st.radio("Analysis", ANALYSES, key=K + "analysis", horizontal=True)
    if analysis == "Initialisation":
        return init_section()
    if analysis == "Global reasoning":
        return global_section()
    picked = choose_models("limits")
    if picked is None:  # the chosen pair is still training: its progress is drawn instead
        return None
    chosen, data, description = picked
    st.caption(description)
    labels = {k: c.label for k, c in chosen.items()}
    if analysis == "Cost":
        return cost_section(chosen)
    # a diverged net's error, ECE or robustness would be numbers about nothing
    if refuse_non_finite(chosen, "it has no errors, calibration or robustness to measure"):
        return None
    {"Lesions": lesions_section, "Calibration": calibration_section, "Robustness": robustness_section}[analysis](
        chosen, data, labels
    )
    return None


main()
