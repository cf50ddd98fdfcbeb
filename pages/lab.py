"""Training lab: configure models A and B, train them in lockstep, watch every chart move."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from resnet_viz import figures
from resnet_viz.data import POINT_DATASETS, DataConfig, load_dataset
from resnet_viz.jobs import Job, JobView
from resnet_viz.lab import PRESETS, LabConfig
from resnet_viz.models import ConfigError
from resnet_viz.probes import decision_grid
from resnet_viz.store import RunInfo, StoredRun, StoreError
from resnet_viz.ui.session import SessionJobs, session_jobs
from resnet_viz.ui.store import run_store, store_problem
from resnet_viz.ui.widgets import chart, fmt_seconds, lab_form, model_label, sync_from_url, write_url

REFRESH_SECONDS = 1.0


def start(jobs: SessionJobs, cfg: LabConfig) -> None:
    """Train A and B in a background job; a run that finishes is saved to the run store."""
    if jobs.lab is not None:
        jobs.lab.stop()
    store = run_store()

    def save(job: Job) -> None:  # runs in the job's thread as it ends; a stopped run is not a result
        if job.status == "finished":
            store.save(job.trainer, job.history())

    try:
        jobs.lab = Job(cfg.models(), cfg.train, cfg.data, on_done=save).start()
        jobs.lab_config, jobs.replay = cfg, None
    except ConfigError as err:
        st.session_state["lab.error"] = str(err)


def reset(jobs: SessionJobs) -> None:
    if jobs.lab is not None:
        jobs.lab.stop()
    jobs.lab, jobs.lab_config, jobs.replay = None, None, None


def status_line(view: JobView, labels: dict[str, str]) -> None:
    """Progress and what happened, per model."""
    if view.status == "queued":
        st.info(
            f"Queued: {view.queue_position} run(s) ahead of this one. The server trains a limited number "
            "of runs at once so every student's run stays fast; it starts by itself."
        )
    elif view.status == "failed":
        st.error(f"The run failed: {view.message}")
    fraction = view.step / view.total_steps if view.total_steps else 0.0
    epochs = view.total_steps // view.steps_per_epoch if view.steps_per_epoch else 0
    epoch = view.step / view.steps_per_epoch if view.steps_per_epoch else 0.0
    st.progress(
        min(1.0, fraction),
        text=f"step {view.step}/{view.total_steps} · epoch {epoch:.1f}/{epochs} · "
        f"{view.steps_per_second:.1f} steps/s · ETA {fmt_seconds(view.eta_seconds)}",
    )
    for key, state in view.states.items():
        if state.status == "diverged":
            st.error(
                f"{labels[key]} diverged: {state.message}. Its charts stop at the last finite step. "
                "Try a lower learning rate or more warm-up steps."
            )
    if view.status == "finished":
        st.success(f"Finished {view.step} steps.")
    elif view.status == "stopped":
        st.warning(f"Stopped at step {view.step}. Everything up to there is kept.")


def skip_sliders(job: Job, view: JobView, labels: dict[str, str]) -> None:
    """Live skip scale: a change takes effect at the next step and is marked on the loss curve."""
    cols = st.columns(len(labels))
    for col, key in zip(cols, labels, strict=True):
        current = job.trainer.skip_scale(key)
        state_key = f"lab.live.{key}"
        if state_key not in st.session_state:
            st.session_state[state_key] = current
        alpha = col.slider(
            f"Live skip scale α of {labels[key]}", 0.0, 1.0, step=0.05, key=state_key,
            disabled=view.status not in ("running", "queued"),
            help="out = F(x) + α·x. Move it while training: the change is marked on the loss curve.",
        )  # fmt: skip
        if alpha != current:
            job.set_skip_scale(key, alpha)


def charts(view: JobView, labels: dict[str, str], data: DataConfig) -> None:
    history = view.history()
    steps = history.steps_frame()
    layers = history.layers_frame()
    diverged = {k: s.step for k, s in view.states.items() if s.status == "diverged"}
    left, right = st.columns(2)
    with left:
        chart(
            figures.loss_figure(steps, labels, view.skip_events, diverged),
            "What to look for: with the same start and the same batches, the net whose loss stays high "
            "is failing to optimise, not overfitting (He et al. 2015, Fig. 1). Dotted lines mark skip changes.",
            "lab.loss",
        )
    with right:
        chart(
            figures.accuracy_figure(steps, labels),
            "What to look for: the gap between the two models; validation (dashed) follows training on "
            "this data, so a model stuck low is failing to learn, not overfitting.",
            "lab.acc",
        )
    left, right = st.columns(2)
    with left:
        chart(
            figures.grad_profile_figure(layers, labels),
            "What to look for: a flat profile means every layer learns. A plain net without normalisation "
            "falls off towards the input (vanishing); with BatchNorm it rises towards the input (exploding).",
            "lab.gradprofile",
        )
    with right:
        chart(
            figures.block_figure(layers, labels),
            "What to look for: the gradient reaching early blocks through the residual stream, and "
            "how large each block's own contribution F(x) is (He et al. 2015, Fig. 7: smaller in ResNets).",
            "lab.blocks",
        )
    chart(
        figures.heatmap_figure(layers, labels),
        "What to look for: bright bands at the top (input side) are exploding gradients, dark ones "
        "vanishing; both models share one colour scale, so brightness compares across them.",
        "lab.heatmap",
    )
    if view.boundaries and data.name in POINT_DATASETS:
        ds = load_dataset(data)
        chart(
            figures.decision_boundary_figure(view.boundaries, ds.x_train.numpy(), ds.y_train.numpy(), labels),
            f"What to look for: the boundary at step {view.boundary_step}. A model that has learned the "
            "task bends its boundary along the arms of the data.",
            "lab.boundary",
        )


def live_panel(jobs: SessionJobs) -> None:
    """Everything that moves while training: redrawn by its fragment timer, the rest of the page stays."""
    job, cfg = jobs.lab, jobs.lab_config
    view = job.view()
    labels = {k: model_label(k, c) for k, c in cfg.models().items()}
    status_line(view, labels)
    skip_sliders(job, view, labels)
    charts(view, labels, cfg.data)
    if job.done and st.session_state.get("lab.watching") == id(job):
        del st.session_state["lab.watching"]
        st.rerun()  # it finished while we watched: one full rerun stops the timer and shows the downloads


def replay_panel(run: StoredRun) -> None:
    """A stored run, drawn like a finished live one (boundaries from its final weights)."""
    view = run.view()
    labels = {k: model_label(k, c) for k, c in run.configs.items()}
    if run.data.name in POINT_DATASETS:
        ds = load_dataset(run.data)
        low = tuple((ds.x_train.min(0).values - 0.3).tolist())
        high = tuple((ds.x_train.max(0).values + 0.3).tolist())
        view.boundaries = {k: decision_grid(run.model(k), low, high) for k in run.configs}
        view.boundary_step = view.step
    created = dt.datetime.fromtimestamp(run.created).strftime("%Y-%m-%d %H:%M")
    st.info(
        f"Stored run {run.key[:10]} from {created}: {run.data.name}, {run.train.epochs} epochs, seed {run.train.seed}."
    )
    status_line(view, labels)
    charts(view, labels, run.data)


def downloads(history) -> None:
    left, right, _ = st.columns([1, 1, 3])
    left.download_button("Steps CSV", history.steps_frame().to_csv(index=False), "steps.csv", "text/csv",
                         icon=":material/download:")  # fmt: skip
    right.download_button("Layers CSV", history.layers_frame().to_csv(index=False), "layers.csv", "text/csv",
                          icon=":material/download:")  # fmt: skip


def _describe(info: RunInfo) -> str:
    when = dt.datetime.fromtimestamp(info.created).strftime("%m-%d %H:%M")
    models = ", ".join(
        f"{k}: {'residual' if info.skips[k] else 'plain'} {info.depths[k]} → {info.final_train_loss[k]:.3g}"
        for k in info.depths
    )
    return f"{when} · {info.dataset} · {info.epochs} ep · seed {info.seed} · {models}"


def stored_runs(jobs: SessionJobs, running: bool) -> None:
    """Reopen any stored run (lab runs are saved when they finish; depth-study runs too)."""
    with st.expander("Stored runs: reopen a finished run"):
        try:
            runs = run_store().list_runs()
        except StoreError as err:
            store_problem(err, "lab.store.reset")
            return
        if not runs:
            st.caption("No stored runs yet. Every lab run that finishes is stored here.")
            return
        by_key = {r.key: r for r in runs}
        key = st.selectbox("Run", list(by_key), format_func=lambda k: _describe(by_key[k]), key="lab.stored")
        if st.button("Open", key="lab.stored.open", disabled=running,
                     help="Stop the current run first" if running else None):  # fmt: skip
            try:
                jobs.replay = run_store().get(key)
            except StoreError as err:
                st.error(str(err))
                return
            if jobs.lab is not None:
                jobs.lab.stop()
            jobs.lab, jobs.lab_config = None, None
            st.rerun()


def main() -> None:
    st.title("Training lab")
    jobs = session_jobs()
    cfg, url_errors, preset = sync_from_url()
    if preset:
        st.info(f"**{PRESETS[preset].title}**: {PRESETS[preset].point}")
    for message in url_errors:
        st.warning(f"Ignored a value in the URL: {message}")
    running = jobs.lab is not None and not jobs.lab.done
    with st.expander("Setup: models, data and training", expanded=jobs.lab is None and jobs.replay is None):
        cfg = lab_form(cfg, disabled=running)
    write_url(cfg, preset)
    b1, b2, b3, _ = st.columns([1, 1, 1, 4])
    if b1.button("Train", type="primary", icon=":material/play_arrow:", disabled=running):
        start(jobs, cfg)
        st.rerun()
    if b2.button("Stop", icon=":material/stop:", disabled=not running):
        jobs.lab.stop()
    if b3.button("Reset", icon=":material/restart_alt:"):
        reset(jobs)
        st.rerun()
    if "lab.error" in st.session_state:
        st.error(st.session_state.pop("lab.error"))
    stored_runs(jobs, running)
    if jobs.lab is None and jobs.replay is not None:
        replay_panel(jobs.replay)
        downloads(jobs.replay.history)
        return
    if jobs.lab is None:
        st.info("Press **Train** to train model A and model B side by side, on the same batches from the same start.")
        return
    if jobs.lab_config != cfg:
        st.caption("The charts show the last run; the setup above has changed since. Train again to compare.")
    if running:
        st.session_state["lab.watching"] = id(jobs.lab)
    st.fragment(run_every=REFRESH_SECONDS if running else None)(live_panel)(jobs)
    if jobs.lab.done:
        downloads(jobs.lab.history())


main()
