"""Drawing a run (live or stored): progress and status, live skip sliders, the lab's charts, the sidebar line.

Everything here reads a `RunView`: a copy of fixed size that the run keeps up to date per step, so
a refresh costs the same at step 100 and at step 100,000 (see `resnet_viz.runs.tables`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import plotly.graph_objects as go
import streamlit as st

from resnet_viz import figures, pictures
from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.runs import Handle, LiveRun, Replay, RunView
from resnet_viz.runs.budget import RunRefused

from . import live_chart
from .session import SessionJobs, session_jobs
from .text import safe_text
from .widgets import CHART_CONFIG, fmt_seconds


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
    elif view.status == "running" and not view.step:  # a bare "step 0/100" read as stuck on a fresh server
        st.caption(
            "Starting: the first step comes in a moment (a few seconds when the server has just started and its "
            "training processes are still loading)."
        )
    fraction = view.step / view.total_steps if view.total_steps else 0.0
    epochs = view.total_steps // view.steps_per_epoch if view.steps_per_epoch else 0
    epoch = view.step / view.steps_per_epoch if view.steps_per_epoch else 0.0
    # While it trains or waits: speed, ETA and who watches; once ended, the speed it trained at; a stored run's
    # replay has no speed
    live = view.status in ("queued", "running")
    watchers = f" · {view.viewers} watching" if view.viewers > 1 and live else ""
    eta = f" · ETA {fmt_seconds(view.eta_seconds)}" if live else ""
    pace = f" · {view.steps_per_second:.1f} steps/s{eta}" if view.steps_per_second else ""
    st.progress(
        min(1.0, fraction),
        text=f"step {view.step}/{view.total_steps} · epoch {epoch:.1f}/{epochs}{pace}{watchers}",
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


def skip_sliders(jobs: SessionJobs, run: LiveRun, labels: dict[str, str]) -> None:
    """Live skip scale: applied at the next step and marked on the loss curve. On a run that other tabs
    also watch, moving it forks the run for this tab only: the others keep theirs.

    Drawn with the page, not with each refresh of the charts: nothing on them changes while the run
    trains but by this tab's own hand (a fork, or the run's end, reruns the page), and two sliders and
    their columns were a fifth of a refresh's server CPU in each tab."""
    cols = st.columns(len(labels))
    for col, key in zip(cols, labels, strict=True):
        current = run.skip_scale(key)
        alpha = col.slider(
            f"Live skip scale α of {labels[key]}",
            0.0,
            1.0,
            # The run's value when this tab first draws it, the tab's own after that. Given, not read back
            # from the session state: without it a slider scans every session key on each refresh.
            value=current,
            step=0.05,
            key=f"lab.live.{run.id}.{key}",
            disabled=run.done,
            help="out = F(x) + α·x. Move it while training: the change is marked on the loss curve. On a run "
            "others watch too, moving it gives you your own copy of the run from here.",
        )
        if alpha != current:
            try:
                mine = jobs.service.set_skip_scale(run, jobs.viewer, key, alpha)
            except RunRefused as err:  # a copy of a shared run is a new run: the server's limits hold
                st.warning(f"Your own copy of this run could not start: {safe_text(err)}")
                continue
            if mine is not run:
                jobs.watch_lab(mine, jobs.lab_config)
                st.rerun()  # the copy's sliders start from its skip scales, this move's included


@dataclass
class _Drawn:
    """The lab's figures of one run as last built."""

    version: int  # the run's version they show
    step: int  # the steps done they show
    status: str  # its status then: a change of status (finished, diverged) is always drawn at once
    built: float  # time.perf_counter() when built
    figures: list[Panel]
    picture_step: int = 0  # the step of the pictures the family's picture panel (the last figure) shows


_FIGURES: OrderedDict[tuple, _Drawn] = OrderedDict()  # (run id, labels, data) -> latest figures
_BUILDING: dict[tuple, threading.Event] = {}  # the runs whose figures one tab is building now
_FIGURES_LOCK = threading.Lock()
MAX_CACHED_FIGURES = 32  # runs kept; each entry is one refresh's five to six figures
REBUILD_SECONDS = 0.8  # a run's figures are rebuilt at most this often while it keeps its status
FIRST_POINTS = 2  # until figures show this many steps, each new step is drawn at once (a line needs two points)


def _figures(view: RunView, labels: dict[str, str], data: DataConfig) -> list[Panel]:
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
        figs = _build(view, labels, data, drawn)
        with _FIGURES_LOCK:
            _FIGURES[key] = _Drawn(view.version, view.step, view.status, time.perf_counter(), figs, view.picture_step)
            _FIGURES.move_to_end(key)
            while len(_FIGURES) > MAX_CACHED_FIGURES:
                _FIGURES.popitem(last=False)
    finally:
        with _FIGURES_LOCK:
            _BUILDING.pop(key).set()
    return figs


@dataclass(frozen=True)
class Panel:
    """One lab chart: its figure, its 'what to look for' caption, its key, and whether it spans the page."""

    key: str
    figure: go.Figure
    caption: str
    wide: bool = False  # across the page (the heatmap, the family's picture); else half of a row
    # What the page gets, made once: thirty tabs watching one run share these figures, and
    # serialising one (arrays base64-encoded) per tab was about 40% of the server's CPU at N = 30.
    live: live_chart.Chart = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "live", live_chart.chart(self.key, self.figure, self.caption, self.wide))


LOSS_CAPTION = (
    "What to look for: with the same start and the same batches, the net whose loss stays high is failing to "
    "optimise, not overfitting (He et al. 2015, Fig. 1). Dotted lines mark skip changes."
)
ACC_CAPTION = (
    "What to look for: the gap between the two models; validation (dashed) follows training on this data, so a "
    "model stuck low is failing to learn, not overfitting."
)
PROFILE_CAPTION = (
    "What to look for: a flat profile means every layer learns. At initialisation a plain net without "
    "normalisation falls off towards the input (vanishing); with BatchNorm it rises towards the input "
    "(exploding). The heatmap's first columns show the start."
)
SUBLAYER_CAPTION = (
    "What to look for: at the start, post-LN gradients grow towards the output while pre-LN ones stay level "
    "(Xiong et al. 2020, Fig. 3): the last post-LN layers take the largest steps, which is why post-LN needs "
    "learning-rate warm-up. Solid: attention; dashed: MLP."
)
BLOCKS_CAPTION = (
    "What to look for: the gradient reaching early blocks through the residual stream, and how large each "
    "block's own contribution F(x) is (He et al. 2015, Fig. 7: smaller in ResNets)."
)
HEATMAP_CAPTION = (
    "What to look for: bright bands at the top (input side) are exploding gradients, dark ones vanishing; both "
    "models share one colour scale, so brightness compares across them. Long runs are binned: each column is "
    "the mean of the steps it covers."
)


def _picture_panel(view: RunView, labels: dict[str, str], data: DataConfig) -> Panel | None:
    what, step = pictures.kind(data), view.picture_step
    if not view.pictures or what is None:
        return None
    if what == "attention":
        return Panel(
            "lab.attention",
            figures.families.attention_figure(view.pictures, labels, step),
            f"What to look for: the attention of one test sequence at step {step}. To sort, each position must "
            "find the digit of its rank: trained heads look at a few positions (dark cells); a net that fails "
            "to train spreads its attention evenly (pale, uniform rows).",
            wide=True,
        )
    if what == "smoothing":
        return Panel(
            "lab.smoothing",
            figures.families.smoothing_figure(view.pictures, labels, step),
            "What to look for: near 0, every node of a graph carries the same features and no later layer can "
            "tell the communities apart (oversmoothing, Li et al. 2018). At initialisation both nets smooth "
            "with depth; trained, the residual net keeps its energy up through every layer (Li et al. 2019), "
            "the plain one cannot.",
            wide=True,
        )
    ds = load_dataset(data)
    return Panel(
        "lab.boundary",
        figures.decision_boundary_figure(view.pictures, ds.x_train.numpy(), ds.y_train.numpy(), labels),
        f"What to look for: the boundary at step {step}. A model that has learned the task bends its boundary "
        "along the arms of the data.",
        wide=True,
    )


def _build(view: RunView, labels: dict[str, str], data: DataConfig, drawn: _Drawn | None) -> list[Panel]:
    """The panels of one redraw; the family's picture is kept from the last redraw until new pictures come
    (an attention grid of every head takes longer to build than the other five charts). Built `bare` (no
    Plotly checks, the template sent once by the board): a rebuild every 0.8 s is the server's largest cost
    while one tab watches a run."""
    with figures.common.bare():
        return _panels(view, labels, data, drawn)


def _panels(view: RunView, labels: dict[str, str], data: DataConfig, drawn: _Drawn | None) -> list[Panel]:
    steps, layers = view.steps, view.layers
    diverged = {k: s.step for k, s in view.states.items() if s.status == "diverged"}
    transformer = data.model_fields()["family"] == "transformer"
    panels = [
        Panel("lab.loss", figures.loss_figure(steps, labels, view.skip_events, diverged, view.fork_step), LOSS_CAPTION),
        Panel("lab.acc", figures.accuracy_figure(steps, labels), ACC_CAPTION),
        Panel("lab.sublayers", figures.families.sublayer_grad_figure(layers, labels), SUBLAYER_CAPTION)
        if transformer
        else Panel(
            "lab.gradprofile",
            figures.grad_profile_figure(layers, labels),
            f"{PROFILE_CAPTION} {figures.profile_verdict(layers, labels)}".strip(),
        ),
        Panel("lab.blocks", figures.block_figure(layers, labels), BLOCKS_CAPTION),
        Panel("lab.heatmap", figures.heatmap_figure(layers, labels), HEATMAP_CAPTION, wide=True),
    ]
    if drawn is not None and len(drawn.figures) > len(panels) and drawn.picture_step == view.picture_step:
        return panels + drawn.figures[len(panels) :]
    picture = _picture_panel(view, labels, data)
    return panels + ([picture] if picture is not None else [])


def charts(view: RunView, labels: dict[str, str], data: DataConfig) -> None:
    """The lab's charts with their captions: the first four two to a row, then the heatmap and the family's
    picture across the page, all in one live board (see `live_chart`)."""
    live_chart.live_board("lab.charts", [panel.live for panel in _figures(view, labels, data)], CHART_CONFIG)


def replay_view(replay: Replay) -> RunView:
    """A stored run's view, with its family's picture from its final weights (computed once)."""
    view = replay.view()
    run = replay.run
    if pictures.kind(run.data) and not view.pictures:
        ds = load_dataset(run.data)
        view.pictures = {k: pictures.picture(run.model(k), ds) for k in run.configs}
        view.picture_step = view.step
    return view


def view_of(handle: Handle) -> RunView:
    return replay_view(handle) if isinstance(handle, Replay) else handle.view()


END_WAIT_MARGIN_SECONDS = 0.5  # waited beyond a run's ETA for its end: its last message and its save
_PAGE_DRAWS = "run_panel.page_draws"  # session flag: the page's own run is drawing its live fragment


@contextmanager
def drawn_by_page() -> Iterator[None]:
    """Around a live fragment's call in its page's own run (its first draw), where `view_at_end` does not wait.

    That run has laid the page out for a running run (Train locked, no downloads), so an end found inside
    the fragment would rerun the whole page from within it; AppTest then leaves the sidebar's elements out
    of every later run of the session (Chromium does not). The fragment's refreshes wait, and its next one
    after an end reruns the page as it always has."""
    st.session_state[_PAGE_DRAWS] = True
    try:
        yield
    finally:
        st.session_state.pop(_PAGE_DRAWS, None)


def view_at_end(handle: Handle, refresh: float) -> RunView:
    """The run's view; for a run that ends before the next refresh, its view once it has ended.

    Why: a tab redraws on its timer, so a run's end showed up to `refresh` seconds after it came (the click
    to "Finished", less the run's training, was 0.28-1.11 s for the default pair; 0.22-0.33 s with this).
    Waiting costs the server no CPU: the tab's script thread waits on the run's end, for at most the ETA
    and a margin."""
    view = view_of(handle)
    ending = isinstance(handle, LiveRun) and view.status == "running" and view.eta_seconds < refresh
    ending = ending and not st.session_state.get(_PAGE_DRAWS)
    if ending and handle.join(view.eta_seconds + END_WAIT_MARGIN_SECONDS):
        view = handle.view()
    return view


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
