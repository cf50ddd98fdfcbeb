"""Loss landscape: why skip connections make deep nets trainable, in one picture (Li et al. 2018, Fig. 5).

For models A and B (a plain net and its residual twin): the loss on the line from the initial to
the trained weights (Goodfellow et al. 2015), the loss surface around the trained weights along two
filter-normalised random directions as contour and 3-D surface on one colour scale, the extreme
Hessian eigenvalues, and the training path in the plane of its principal directions. The work runs
in the background with progress (`resnet_viz.landscape.LandscapeTask`); landscapes of stored runs
come back from the run store at once.
"""

from __future__ import annotations

import streamlit as st

from resnet_viz.data import DataConfig
from resnet_viz.figures import landscape as figs
from resnet_viz.landscape import LandscapeConfig, LandscapeTask, LandscapeView, Target
from resnet_viz.tasks import ThreadExecutor
from resnet_viz.ui.session import session_jobs
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.snapshots import ChosenModel, choose_models
from resnet_viz.ui.store import run_store
from resnet_viz.ui.widgets import chart, fmt_seconds

JOB_NAME = "landscape"
K = "landscape."  # widget-state prefix
REFRESH_SECONDS = 1.0
GRIDS = [7, 11, 15, 21, 31, 41, 51]
SPANS = [0.25, 0.5, 1.0, 1.5, 2.0]
EXAMPLES = [100, 250, 500, 1000, 2000]
ITERATIONS = [10, 20, 40]
DEFAULTS = LandscapeConfig()


def settings(disabled: bool) -> LandscapeConfig:
    """The landscape settings: grid, span, examples, Lanczos steps, direction seed."""
    cols = st.columns(5)
    grid = cols[0].select_slider(
        "Grid points per axis",
        GRIDS,
        value=DEFAULTS.grid,
        key=K + "grid",
        disabled=disabled,
        help="the surface is grid x grid forward passes per net: time grows with the square",
    )
    span = cols[1].select_slider(
        "Span (± filter-normalised units)",
        SPANS,
        value=DEFAULTS.span,
        key=K + "span",
        disabled=disabled,
        help="1 moves every filter by up to its own norm along each direction (Li et al. use [-1, 1])",
    )
    examples = cols[2].select_slider(
        "Training examples",
        EXAMPLES,
        value=DEFAULTS.examples,
        key=K + "examples",
        disabled=disabled,
        help="the loss is averaged over this many training examples (fewer: faster, noisier)",
    )
    iterations = cols[3].select_slider(
        "Lanczos steps (Hessian)",
        ITERATIONS,
        value=DEFAULTS.hessian_iterations,
        key=K + "iterations",
        disabled=disabled,
        help="one Hessian-vector product each; more steps sharpen the smallest eigenvalue",
    )
    seed = cols[4].number_input("Direction seed", 0, 2**31 - 1, value=DEFAULTS.seed, key=K + "seed", disabled=disabled)
    return LandscapeConfig(grid=grid, span=float(span), examples=examples, hessian_iterations=iterations, seed=seed)


def _request(chosen: dict[str, ChosenModel], config: LandscapeConfig) -> tuple:
    """What a computation is for: the settings and each model's identity (object, step)."""
    return config, tuple((c.key, id(c.model), c.step) for c in chosen.values())


def start(chosen: dict[str, ChosenModel], data: DataConfig, config: LandscapeConfig) -> None:
    jobs = session_jobs()
    old = jobs.others.get(JOB_NAME)
    if old is not None:
        old.stop()
    targets = [Target.of(c) for c in chosen.values()]
    task = LandscapeTask(targets, data, config, store=run_store())
    ThreadExecutor().submit(task)
    jobs.others[JOB_NAME] = task
    st.session_state[K + "request"] = _request(chosen, config)
    if all(t.run_key for t in targets):
        task.join(3.0)  # stored landscapes come back in well under a second: show them on the first draw


def describe(config: LandscapeConfig) -> str:
    return (
        f"{config.grid} x {config.grid} grid over ±{config.span:g} along each direction, {config.examples} training "
        f"examples, {config.hessian_iterations} Lanczos steps, direction seed {config.seed}"
    )


def status_line(view: LandscapeView) -> None:
    if view.status in ("queued", "running"):
        eta = f" · ETA {fmt_seconds(view.eta_seconds)}" if view.fraction > 0 else ""
        st.progress(min(1.0, view.fraction), text=f"{view.phase or 'starting'} · {view.fraction:.0%}{eta}")
    elif view.status == "finished":
        stored = [r.label for k, r in view.results.items() if k in view.cached]
        seconds = sum(r.seconds for k, r in view.results.items() if k not in view.cached)
        note = f" ({', '.join(stored)} from the run store)" if stored else ""
        st.success(f"Done: {len(view.results)} landscapes, computed in {seconds:.1f} s{note}.")
    elif view.status == "stopped":
        st.warning("Stopped: the charts show what was computed; blank grid points were not evaluated.")
    else:
        st.error("The landscape computation failed:")
        st.code(view.message[:2000], language=None)
    if view.store_note:
        st.caption(view.store_note[:500])


def _notes(view: LandscapeView, part: str) -> None:
    for r in view.results.values():
        if part in r.notes:
            st.caption(f"{r.label}: {r.notes[part]}")


def charts(view: LandscapeView) -> None:
    results = view.results
    if not results:
        return
    st.subheader("1-D: from the initial to the trained weights")
    if any(r.interpolation is not None for r in results.values()):
        chart(
            figs.interpolation_figure(results),
            "What to look for: whether the loss falls smoothly along the straight line (Goodfellow et al. 2015 found "
            "it does for most nets, so what makes training hard lies off this line). Solid: training subset; "
            "dashed: validation split; BatchNorm statistics move with the weights.",
            K + "interpolation",
        )
    _notes(view, "interpolation")
    st.subheader(f"2-D: around {figs.weights_name(results)}")
    scale = figs.loss_scale([r.surface for r in results.values()])
    chart(
        figs.contour_figure(results, scale),
        "What to look for: in Li et al. 2018 (Fig. 5, 56 and 110 layers on CIFAR-10) the residual net's contours "
        "form one smooth basin around its weights (x) and the plain net's are chaotic, with many local minima. "
        "Same colour scale for both; BatchNorm in eval mode with the running statistics of these weights. "
        + figs.surface_verdict(results),
        K + "contour",
    )
    chart(
        figs.surface_figure(results, scale),
        "What to look for: a single wide valley against a rugged, steeper surface; drag to rotate. The z axis "
        "and colours are shared, so heights compare directly.",
        K + "surface",
    )
    if any(r.curvature is not None for r in results.values()):
        chart(
            figs.curvature_figure(results),
            f"What to look for: |λ_min / λ_max| near 0 means the point is locally convex; a larger ratio means "
            f"more negative curvature around it, and a larger λ_max a sharper minimum (Li et al. 2018, Sec. 6, "
            f"Fig. 7, where the plain net's ratio was the larger). {figs.curvature_verdict(results)}",
            K + "curvature",
        )
    st.subheader("The training path")
    if any(r.trajectory is not None for r in results.values()):
        chart(
            figs.trajectory_figure(results),
            "What to look for: the path from the initial weights (open circle) to the trained ones (x) lies almost "
            "in a plane: the first two principal directions explain most of its variance (Li et al. 2018, Sec. 7).",
            K + "trajectory",
        )
    _notes(view, "trajectory")
    st.dataframe(figs.summary_table(results, view.cached), hide_index=True)


def panel(task: LandscapeTask) -> None:
    """Progress and charts; redrawn every second by the fragment timer while the task runs."""
    view = task.view()
    st.caption(f"Computed with: {describe(task.config)}.")
    status_line(view)
    charts(view)
    if task.done and st.session_state.get(K + "watching") == id(task):
        del st.session_state[K + "watching"]
        st.rerun()  # it ended while we watched: one full rerun stops the timer and enables the buttons


def main() -> None:
    require_shell()  # a deep link on a fresh server: rerun inside app.py's navigation
    st.title("Loss landscape")
    st.markdown(
        "Li et al. (2018) drew the loss around a trained net along two random directions: without shortcuts a "
        "deep net's landscape is chaotic, with them it is smooth and nearly convex. Below, for models A and B, "
        "with the directions *filter-normalised* (each filter of a direction as long as the same filter of the "
        "weights) so that the two nets' pictures compare."
    )
    picked = choose_models("landscape", every_family=True)  # a loss is a loss: Transformers and GCNs too
    if picked is None:  # the chosen pair is still training: its progress is drawn instead
        return
    chosen, data, description = picked
    st.caption(description)
    jobs = session_jobs()
    task: LandscapeTask | None = jobs.others.get(JOB_NAME)
    running = task is not None and not task.done
    config = settings(disabled=running)
    compute, stop, info = st.columns([2, 1, 4], vertical_alignment="center")
    if compute.button(
        "Compute landscapes", type="primary", icon=":material/landscape:", disabled=running, key=K + "compute"
    ):
        start(chosen, data, config)
        st.rerun()
    if stop.button("Stop", icon=":material/stop:", disabled=not running, key=K + "stop") and task is not None:
        task.stop()
        task.join(5.0)
        st.rerun()
    if task is None:
        info.caption("Press Compute: a 21 x 21 grid takes a few seconds on a GPU, a minute or two on a laptop CPU.")
        return
    if st.session_state.get(K + "request") != _request(chosen, config):
        info.caption("The models or settings changed since this was computed: press Compute to update.")
    if running:
        st.session_state[K + "watching"] = id(task)
    st.fragment(run_every=REFRESH_SECONDS if running else None)(panel)(task)


main()
