"""Drawing a run (live or stored): progress and status, live skip sliders, the lab's charts, the sidebar line.

Everything here reads a `RunView`: a copy of fixed size that the run keeps up to date per step, so
a refresh costs the same at step 100 and at step 100,000 (see `resnet_viz.runs.tables`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from resnet_viz import figures
from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.probes import decision_grid
from resnet_viz.runs import Handle, LiveRun, Replay, RunView

from .session import SessionJobs, session_jobs
from .text import safe_text
from .widgets import chart, fmt_seconds


def status_line(view: RunView, labels: dict[str, str]) -> None:
    """Queue place and wait, progress, per-model outcome, and whether the finished run was stored."""
    if view.status == "queued":
        wait = f" (about {fmt_seconds(view.queue_wait_seconds)})" if view.queue_wait_seconds else ""
        st.info(
            f"Queued: place {view.queue_position} in the server's queue{wait}. The server trains as many runs "
            "at once as it has cores, runs someone watches first; this one starts by itself."
        )
    elif view.status == "failed":
        st.error(f"The run failed: {safe_text(view.message)}")
    fraction = view.step / view.total_steps if view.total_steps else 0.0
    epochs = view.total_steps // view.steps_per_epoch if view.steps_per_epoch else 0
    epoch = view.step / view.steps_per_epoch if view.steps_per_epoch else 0.0
    watchers = f" · {view.viewers} watching" if view.viewers > 1 else ""
    st.progress(
        min(1.0, fraction),
        text=f"step {view.step}/{view.total_steps} · epoch {epoch:.1f}/{epochs} · "
        f"{view.steps_per_second:.1f} steps/s · ETA {fmt_seconds(view.eta_seconds)}{watchers}",
    )
    diverged = [k for k, s in view.states.items() if s.status == "diverged"]
    for key in diverged:
        st.error(
            f"{labels[key]} diverged: {safe_text(view.states[key].message)}. Its charts stop at the last finite "
            "step. Try a lower learning rate or more warm-up steps."
        )
    if view.status == "finished":
        if diverged:
            st.warning(f"Finished {view.step} steps; {len(diverged)} of {len(view.states)} models diverged.")
        else:
            st.success(f"Finished {view.step} steps.")
    elif view.status == "stopped":
        st.warning(f"Stopped at step {view.step}. Everything up to there is kept.")
    if view.saved is False:
        st.warning(f"This run could not be stored (its charts and downloads stay here): {safe_text(view.save_error)}")


def skip_sliders(jobs: SessionJobs, run: LiveRun, view: RunView, labels: dict[str, str]) -> None:
    """Live skip scale: applied at the next step and marked on the loss curve. On a run that other tabs
    also watch, moving it forks the run for this tab only: the others keep theirs."""
    cols = st.columns(len(labels))
    for col, key in zip(cols, labels, strict=True):
        current = run.skip_scale(key)
        state_key = f"lab.live.{run.id}.{key}"
        if state_key not in st.session_state:
            st.session_state[state_key] = current
        shared = " Others watch this run: moving it gives you your own copy from here." if view.viewers > 1 else ""
        alpha = col.slider(
            f"Live skip scale α of {labels[key]}",
            0.0,
            1.0,
            step=0.05,
            key=state_key,
            disabled=view.status not in ("running", "queued"),
            help="out = F(x) + α·x. Move it while training: the change is marked on the loss curve." + shared,
        )
        if alpha != current:
            mine = jobs.service.set_skip_scale(run, jobs.viewer, key, alpha)
            if mine is not run:
                jobs.watch_lab(mine, jobs.lab_config)
                st.session_state[f"lab.live.{mine.id}.{key}"] = alpha
                st.rerun()


@dataclass
class _Drawn:
    """The lab's figures of one run as last built."""

    version: int  # the run's version they show
    step: int  # the steps done they show
    status: str  # its status then: a change of status (finished, diverged) is always drawn at once
    built: float  # time.perf_counter() when built
    figures: list[go.Figure]


_FIGURES: OrderedDict[tuple, _Drawn] = OrderedDict()  # (run id, labels, data) -> latest figures
_BUILDING: dict[tuple, threading.Event] = {}  # the runs whose figures one tab is building now
_FIGURES_LOCK = threading.Lock()
MAX_CACHED_FIGURES = 32  # runs kept; each entry is one refresh's five to six figures
REBUILD_SECONDS = 0.8  # a run's figures are rebuilt at most this often while it keeps its status
FIRST_POINTS = 2  # until figures show this many steps, each new step is drawn at once (a line needs two points)


def _figures(view: RunView, labels: dict[str, str], data: DataConfig) -> list[go.Figure]:
    """The lab's figures of one run, built by one tab at a time and at most every REBUILD_SECONDS.

    Thirty tabs watching one run redraw every second, each at its own moment, and the run's version
    changes with every step: keyed by version, each tab built its own figures (Plotly takes about
    0.25 s for the five), more than half the server's CPU in the classroom benchmark at N = 10. So
    a tab reuses figures that are at most REBUILD_SECONDS old (or shows the last ones while another
    tab builds newer); a change of status, and the first points of a curve, are drawn at once.
    """
    key = (view.id, tuple(labels.items()), data)
    while True:
        with _FIGURES_LOCK:
            drawn = _FIGURES.get(key)
            # Reusable: same status, and past the first points (or showing as many steps as the view).
            same = (
                drawn is not None
                and drawn.status == view.status
                and (drawn.step >= FIRST_POINTS or drawn.step >= view.step)
            )
            if same and (drawn.version >= view.version or time.perf_counter() - drawn.built < REBUILD_SECONDS):
                _FIGURES.move_to_end(key)
                return drawn.figures
            building = _BUILDING.get(key)
            if building is None:
                _BUILDING[key] = threading.Event()
                break
            if same:
                return drawn.figures  # another tab is building newer ones: these are under a second old
        building.wait()  # nothing of this status drawn yet: wait for that tab's figures
    try:
        figs = _build(view, labels, data)
        with _FIGURES_LOCK:
            _FIGURES[key] = _Drawn(view.version, view.step, view.status, time.perf_counter(), figs)
            _FIGURES.move_to_end(key)
            while len(_FIGURES) > MAX_CACHED_FIGURES:
                _FIGURES.popitem(last=False)
    finally:
        with _FIGURES_LOCK:
            _BUILDING.pop(key).set()
    return figs


def _frozen(fig: go.Figure) -> go.Figure:
    """`fig` with its plain dict made once. `st.plotly_chart` asks each call for `to_dict()`, a deep copy
    with every array base64-encoded (about 40% of the server's CPU with thirty tabs on one run); a
    cached figure is finished and only drawn, so one dict serves every tab (Plotly only reads it)."""
    plain = fig.to_dict()
    fig.to_dict = lambda: plain
    return fig


def _build(view: RunView, labels: dict[str, str], data: DataConfig) -> list[go.Figure]:
    steps, layers = view.steps, view.layers
    diverged = {k: s.step for k, s in view.states.items() if s.status == "diverged"}
    figs = [
        figures.loss_figure(steps, labels, view.skip_events, diverged, fork_step=view.fork_step),
        figures.accuracy_figure(steps, labels),
        figures.grad_profile_figure(layers, labels),
        figures.block_figure(layers, labels),
        figures.heatmap_figure(layers, labels),
    ]
    if view.boundaries and _two_class_points(data):
        ds = load_dataset(data)
        figs.append(figures.decision_boundary_figure(view.boundaries, ds.x_train.numpy(), ds.y_train.numpy(), labels))
    return [_frozen(f) for f in figs]


def charts(view: RunView, labels: dict[str, str], data: DataConfig) -> None:
    figs = _figures(view, labels, data)
    left, right = st.columns(2)
    with left:
        chart(
            figs[0],
            "What to look for: with the same start and the same batches, the net whose loss stays high "
            "is failing to optimise, not overfitting (He et al. 2015, Fig. 1). Dotted lines mark skip changes.",
            "lab.loss",
        )
    with right:
        chart(
            figs[1],
            "What to look for: the gap between the two models; validation (dashed) follows training on "
            "this data, so a model stuck low is failing to learn, not overfitting.",
            "lab.acc",
        )
    left, right = st.columns(2)
    with left:
        chart(
            figs[2],
            "What to look for: a flat profile means every layer learns. A plain net without normalisation "
            "falls off towards the input (vanishing); with BatchNorm it rises towards the input (exploding).",
            "lab.gradprofile",
        )
    with right:
        chart(
            figs[3],
            "What to look for: the gradient reaching early blocks through the residual stream, and "
            "how large each block's own contribution F(x) is (He et al. 2015, Fig. 7: smaller in ResNets).",
            "lab.blocks",
        )
    chart(
        figs[4],
        "What to look for: bright bands at the top (input side) are exploding gradients, dark ones "
        "vanishing; both models share one colour scale, so brightness compares across them. Long runs are "
        "binned: each column is the mean of the steps it covers.",
        "lab.heatmap",
    )
    if len(figs) > 5:
        chart(
            figs[5],
            f"What to look for: the boundary at step {view.boundary_step}. A model that has learned the "
            "task bends its boundary along the arms of the data.",
            "lab.boundary",
        )


def _two_class_points(data: DataConfig) -> bool:
    """2-D data with two classes (built-in point sets, or uploaded points): the boundary map shows P(class 1)."""
    return not data.is_image and data.model_fields()["num_classes"] == 2


def replay_view(replay: Replay) -> RunView:
    """A stored run's view, with decision boundaries from its final weights for 2-D data (computed once)."""
    view = replay.view()
    run = replay.run
    if _two_class_points(run.data) and not view.boundaries:
        ds = load_dataset(run.data)
        low = tuple((ds.x_train.min(0).values - 0.3).tolist())
        high = tuple((ds.x_train.max(0).values + 0.3).tolist())
        view.boundaries = {k: decision_grid(run.model(k), low, high) for k in run.configs}
        view.boundary_step = view.step
    return view


def view_of(handle: Handle) -> RunView:
    return replay_view(handle) if isinstance(handle, Replay) else handle.view()


def _status_text() -> None:
    run = session_jobs().lab
    if run is None:
        st.caption("No training run in this session yet.")
        return
    view = view_of(run)
    if view.status == "queued":
        st.info(f"Lab run queued: place {view.queue_position}")
    elif view.status == "running":
        st.info(f"Lab run training: step {view.step}/{view.total_steps}")
    else:
        st.caption(f"Lab run {view.status} at step {view.step}/{view.total_steps}.")


def sidebar_status() -> None:
    """The session's lab run in one line, on every page; call inside `with st.sidebar`."""
    run = session_jobs().lab
    running = run is not None and not run.done
    st.fragment(run_every=2.0 if running else None)(_status_text)()
