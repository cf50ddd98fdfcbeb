"""Training lab: configure models A and B, train them in lockstep, watch every chart move."""

from __future__ import annotations

import streamlit as st

from resnet_viz.figures.common import model_label
from resnet_viz.lab import PRESETS, LabConfig
from resnet_viz.models import ConfigError
from resnet_viz.runs import BACKGROUND, LiveRun, Replay, RunRefused, RunRequest
from resnet_viz.store import StoreError
from resnet_viz.ui.data_upload import upload_panel
from resnet_viz.ui.run_code import model_panel, python_panel
from resnet_viz.ui.run_panel import charts, drawn_by_page, skip_sliders, status_line, view_at_end
from resnet_viz.ui.session import SessionJobs, session_jobs
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.store import format_time, run_option, run_store, store_problem
from resnet_viz.ui.text import safe_text
from resnet_viz.ui.widgets import lab_form, sync_from_url, url_issue, write_url

REFRESH_SECONDS = 1.0
FIRST_POINTS_WAIT_SECONDS = 2.0  # Train's click waits this long at most for the run's first two steps
STOP_REFRESH_SECONDS = 3.0  # the Stop button's own refresh (cheap, but thirty tabs run it)
RUN_ID_CHARS = 64  # longest run id a URL may name
TRAIN_KEY = "lab.train"  # the Train button's state: True in the run its click starts


def start(jobs: SessionJobs, cfg: LabConfig) -> None:
    """Ask the server for this run: the one already training for it, the stored one, or a new one."""
    for pair in jobs.pairs.values():  # analysis pages' pairs this tab asked for: no longer what it waits for
        jobs.service.set_priority(pair, jobs.viewer, BACKGROUND)
    try:
        run = jobs.service.request(RunRequest(cfg.models(), cfg.train, cfg.data), jobs.viewer)
    except (ConfigError, RunRefused, StoreError) as err:
        st.session_state["lab.error"] = str(err)
        return
    jobs.watch_lab(run, cfg)


def reattach(jobs: SessionJobs, cfg: LabConfig) -> None:
    """A reloaded tab (or a link with a run id) watches the live run its URL names again."""
    run_id = st.query_params.get("run")
    if jobs.lab is not None or not run_id:
        return
    run = jobs.service.attach(run_id[:RUN_ID_CHARS], jobs.viewer)
    if run is not None:
        jobs.watch_lab(run, cfg)
    else:
        st.info(
            "No run with this link's id is training now: it has finished or stopped, or the link is not whole. "
            "Its setup is loaded: press Train (a finished run "
            "opens from the store at once)."
        )


def labels_of(run: LiveRun | Replay, live: bool = True) -> dict[str, str]:
    """Each model's name on the charts ("A · plain 20"; "A · plain 20 (α=0.5 live)" once its slider moved).

    `live=False`: the name it started with, for its own slider (whose label does not follow its value)."""
    return {k: model_label(k, c, run.skip_scale(k) if live else None) for k, c in run.request.models.items()}


def live_panel(jobs: SessionJobs) -> None:
    """Everything that moves while training: redrawn by its fragment timer, the rest of the page stays."""
    run = jobs.lab
    view = view_at_end(run, REFRESH_SECONDS)  # a run's end shows when it comes, not at the next refresh
    labels = labels_of(run)
    if isinstance(run, Replay):
        stored = run.run
        st.info(
            f"Stored run {stored.key[:10]} from {format_time(stored.created)}: {stored.data.name}, "
            f"{stored.train.epochs} epochs, seed {stored.train.seed}."
        )
    # Status lines come and go (queued, finished...): in their own container, the charts after them keep
    # their place in the page, so their plots are updated, not built again, when the run ends.
    with st.container():
        status_line(view, labels)
    charts(view, labels, run.request.data)
    if run.done and st.session_state.get("lab.watching") == run.id:
        del st.session_state["lab.watching"]
        st.rerun()  # it finished while we watched: one full rerun stops the timer and shows the downloads


def stop_button(run: LiveRun | Replay | None, rerun: bool = False) -> None:
    """Stop this tab's run; disabled while other tabs watch it too (it stops when the last one leaves).

    `rerun`: drawn in a fragment, so a click reruns the whole page (Train and the setup come back)."""
    running = isinstance(run, LiveRun) and not run.done
    shared = running and len(run.viewers) > 1
    if st.button(
        "Stop",
        key="lab.stop",
        icon=":material/stop:",
        disabled=not running or shared,
        help="Others watch this run too: it stops when the last of you leaves (Reset leaves it)." if shared else None,
    ):
        if len(run.viewers) > 1:  # someone joined since the button was drawn
            st.toast("Others watch this run too now: it stops when the last of you leaves (Reset leaves it).")
            return
        run.stop()
        if rerun:
            st.rerun()


def downloads(run: LiveRun | Replay) -> None:
    history = run.history()
    if history is None:
        return
    tables = (("Steps CSV", history.steps_frame, "steps.csv"), ("Layers CSV", history.layers_frame, "layers.csv"))
    for column, (label, table, file_name) in zip(st.columns([1, 1, 3]), tables, strict=False):
        column.download_button(  # a callable: the table is built on the click, not on every rerun
            label,
            lambda table=table: table().to_csv(index=False),
            file_name,
            "text/csv",
            icon=":material/download:",
            on_click="ignore",
        )


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
        key = st.selectbox(
            "Run", list(by_key), format_func=lambda k: run_option(by_key[k], losses=True), key="lab.stored"
        )
        if st.button(
            "Open", key="lab.stored.open", disabled=running, help="Stop the current run first" if running else None
        ):
            try:
                stored = run_store().get(key)
            except StoreError as err:
                st.error(safe_text(err))
                return
            if stored is not None:
                jobs.watch_lab(Replay(stored), None)
            st.rerun()


def main() -> None:
    require_shell()  # a deep link on a fresh server: rerun inside app.py's navigation
    st.title("Training lab")
    jobs = session_jobs()
    cfg, url_errors, preset = sync_from_url()
    reattach(jobs, cfg)
    if preset:
        st.info(f"**{PRESETS[preset].title}**: {PRESETS[preset].point}")
    for issue in url_errors:
        url_issue(issue)
    run = jobs.lab
    running = isinstance(run, LiveRun) and not run.done
    # Train's click is read before the setup is drawn, so this run draws the setup locked and the new run:
    # a second run per click doubled the server's work when a class clicked Train at once.
    clicked = bool(st.session_state.get(TRAIN_KEY)) and not running
    with st.expander("Your own data: upload points (CSV) or images (zip)"):
        upload_panel()  # before the setup: a new upload becomes the chosen dataset
    with st.expander("Setup: models, data and training", expanded=run is None and not clicked):
        cfg = lab_form(cfg, disabled=running or clicked)
    if clicked:
        start(jobs, cfg)
        run = jobs.lab
        running = isinstance(run, LiveRun) and not run.done
        if not running:  # refused, or a stored run opened at once: draw the setup unlocked
            st.rerun()
    write_url(cfg, preset, run.id if running else None)
    b1, b2, b3, _ = st.columns([1, 1, 1, 4])
    b1.button("Train", key=TRAIN_KEY, type="primary", icon=":material/play_arrow:", disabled=running)
    with b2:
        if running:  # re-checked while it runs: other tabs may join or leave it, or this tab may fork
            st.fragment(run_every=STOP_REFRESH_SECONDS)(stop_button)(run, rerun=True)
        else:
            stop_button(run)
    if b3.button("Reset", icon=":material/restart_alt:"):
        jobs.leave_lab()
        st.query_params.pop("run", None)  # else the rerun's reattach() takes the run back from the URL
        st.rerun()
    if "lab.error" in st.session_state:
        st.error(safe_text(st.session_state.pop("lab.error"), 600))
    stored_runs(jobs, running)
    with st.expander("Python for this run, and Download model"):
        python_panel(cfg, run)
        model_panel(run)
    if run is None:
        st.info("Press **Train** to train model A and model B side by side, on the same batches from the same start.")
        return
    if jobs.lab_config is not None and jobs.lab_config != cfg:
        st.caption("The charts show the last run; the setup above has changed since. Train again to compare.")
    if running:
        st.session_state["lab.watching"] = run.id
    if isinstance(run, LiveRun):
        skip_sliders(jobs, run, labels_of(run, live=False))
    if clicked:
        # This run draws the first points (two make a line). It waits here, with the rest of the page sent:
        # thirty tabs whose clicks all wake at step 2 then have only the charts left to draw (one GIL).
        run.wait_for_step(2, FIRST_POINTS_WAIT_SECONDS)
    with drawn_by_page():
        st.fragment(run_every=REFRESH_SECONDS if running else None)(live_panel)(jobs)
    if run.done:
        downloads(run)


main()
