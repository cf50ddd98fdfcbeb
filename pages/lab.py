"""Training lab: configure models A and B, train them in lockstep, watch every chart move."""

from __future__ import annotations

import streamlit as st

from resnet_viz import figures
from resnet_viz.jobs import Job, JobView
from resnet_viz.lab import PRESETS, LabConfig
from resnet_viz.models import ConfigError
from resnet_viz.ui.session import SessionJobs, session_jobs
from resnet_viz.ui.widgets import chart, fmt_seconds, lab_form, model_label, sync_from_url, write_url

REFRESH_SECONDS = 1.0


def start(jobs: SessionJobs, cfg: LabConfig) -> None:
    if jobs.lab is not None:
        jobs.lab.stop()
    try:
        jobs.lab = Job(cfg.models(), cfg.train, cfg.data).start()
        jobs.lab_config = cfg
    except ConfigError as err:
        st.session_state["lab.error"] = str(err)


def reset(jobs: SessionJobs) -> None:
    if jobs.lab is not None:
        jobs.lab.stop()
    jobs.lab, jobs.lab_config = None, None


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
    epoch = view.step / view.steps_per_epoch if view.steps_per_epoch else 0.0
    st.progress(
        min(1.0, fraction),
        text=f"step {view.step}/{view.total_steps} · epoch {epoch:.1f}/{view.total_steps // view.steps_per_epoch} · "
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
        )  # fmt: skip
        if alpha != current:
            job.set_skip_scale(key, alpha)


def charts(view: JobView, labels: dict[str, str], boundary_data: tuple | None) -> None:
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
            "What to look for: validation accuracy (dashed) tracks training accuracy here; the gap between "
            "models is the point, not the gap between curves.",
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
    if view.boundaries and boundary_data is not None:
        points, targets = boundary_data
        chart(
            figures.decision_boundary_figure(view.boundaries, points, targets, labels),
            f"What to look for: the boundary at step {view.boundary_step}. A model that has learned the "
            "task bends its boundary along the arms of the data.",
            "lab.boundary",
        )


def live_panel(jobs: SessionJobs) -> None:
    """Everything that moves while training: redrawn by its fragment timer, the rest of the page stays."""
    job = jobs.lab
    if job is None:
        return
    view = job.view()
    cfg = jobs.lab_config
    labels = {k: model_label(k, c) for k, c in cfg.models().items()}
    status_line(view, labels)
    skip_sliders(job, view, labels)
    boundary_data = None
    if cfg.data.name in ("spirals", "moons", "circles", "xor"):
        ds = job.trainer.dataset
        boundary_data = (ds.x_train.numpy(), ds.y_train.numpy())
    charts(view, labels, boundary_data)
    if job.done and st.session_state.get("lab.watching") == id(job):
        del st.session_state["lab.watching"]
        st.rerun()  # it finished while we watched: one full rerun stops the timer and shows the downloads


def downloads(job: Job) -> None:
    history = job.history()
    left, right, _ = st.columns([1, 1, 3])
    left.download_button("Steps CSV", history.steps_frame().to_csv(index=False), "steps.csv", "text/csv",
                         icon=":material/download:")  # fmt: skip
    right.download_button("Layers CSV", history.layers_frame().to_csv(index=False), "layers.csv", "text/csv",
                          icon=":material/download:")  # fmt: skip


def main() -> None:
    st.title("Training lab")
    jobs = session_jobs()
    cfg, url_errors, preset = sync_from_url()
    if preset:
        st.info(f"**{PRESETS[preset].title}**: {PRESETS[preset].point}")
    for message in url_errors:
        st.warning(f"Ignored a value in the URL: {message}")
    running = jobs.lab is not None and not jobs.lab.done
    with st.expander("Setup: models, data and training", expanded=jobs.lab is None):
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
    if jobs.lab is None:
        st.info("Press **Train** to train model A and model B side by side, on the same batches from the same start.")
        return
    if jobs.lab_config != cfg:
        st.caption("The charts show the last run; the setup above has changed since. Train again to compare.")
    if running:
        st.session_state["lab.watching"] = id(jobs.lab)
    st.fragment(run_every=REFRESH_SECONDS if running else None)(live_panel)(jobs)
    if jobs.lab.done:
        downloads(jobs.lab)


main()
