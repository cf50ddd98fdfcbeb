"""Depth study: plain and residual nets at several depths under one budget (He et al. 2015, Fig. 1, 6, 7).

A one-click classroom sweep or a custom grid (ui/sweep_form.py) runs in the background, one run at a
time through the server's run service, shared with the training lab; finished grid points come from
the run store, so a replay is instant and a stopped sweep resumes where it stopped. Below: the stored
runs, to delete, export as a zip or import from one (ui/stored_runs.py).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from resnet_viz.figures import depth as figs
from resnet_viz.models import ConfigError
from resnet_viz.store import StoreError
from resnet_viz.sweep import SweepConfig, SweepJob, SweepView, classroom_sweep, describe, stored_count
from resnet_viz.tasks import ThreadExecutor
from resnet_viz.ui.session import session_jobs
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.store import run_store, store_problem
from resnet_viz.ui.stored_runs import list_runs, stored_runs
from resnet_viz.ui.sweep_form import sweep_form, validate
from resnet_viz.ui.text import safe_text
from resnet_viz.ui.widgets import chart, fmt_seconds

JOB_NAME = "depth_sweep"
REFRESH_SECONDS = 1.0
K = "depth."  # widget-state prefix


# --------------------------------------------------------------------------------------------------
# Starting sweeps


def start(config: SweepConfig) -> None:
    """Run `config` in the background as this session's sweep; replays of stored sweeps finish at once."""
    jobs = session_jobs()
    old = jobs.others.get(JOB_NAME)
    if old is not None:
        old.stop()
    store = run_store()
    try:
        job = SweepJob(config, jobs.service)
        stored = stored_count(store, config)
    except ConfigError as err:
        st.session_state[K + "error"] = str(err)
        return
    except StoreError as err:
        st.session_state[K + "store_error"] = err
        return
    jobs.others[JOB_NAME] = job
    ThreadExecutor().submit(job)
    if stored == len(config.points()):
        job.join(10.0)  # a pure replay takes well under a second: show it finished on the first draw


def run_controls(running: bool) -> None:
    """The classroom preset and the custom form, side by side, each with its own Run button."""
    store = run_store()
    preset, custom = st.columns([1.3, 3], gap="large")
    with preset, st.container(border=True):
        st.markdown("**Classroom sweep**")
        st.caption(
            "Digits at depths 8 to 56, one seed, 10 epochs: about a minute on an idle 2-core server, and under "
            "a second once it has run (every grid point comes back from the run store)."
        )
        try:
            if running:  # a count drawn with the page would stand still while the sweep stores its runs
                st.caption("A sweep is running: its progress is below.")
            else:
                stored = stored_count(store, classroom_sweep())
                st.caption(f"{stored} of {len(classroom_sweep().points())} runs already stored.")
        except StoreError:
            pass  # explained at the top of the page
        if st.button(
            "Run the classroom sweep", type="primary", icon=":material/school:", disabled=running, key=K + "classroom"
        ):
            start(classroom_sweep())
            st.rerun()
    with custom, st.container(border=True):
        st.markdown("**Custom sweep**")
        config, slots = sweep_form(disabled=running)
        problem = validate(config, slots)
        b1, b2, info = st.columns([1, 1, 4], vertical_alignment="center")
        if problem is None and not running:
            try:
                stored = stored_count(store, config)
                total = len(config.points())
                info.caption(
                    f"{total} runs (a plain/residual pair each): {stored} already stored, {total - stored} to train."
                )
            except StoreError:
                pass
        elif problem is not None and problem.field not in slots:  # no control to show it next to
            info.error(str(problem))
        if b1.button(
            "Run", type="primary", icon=":material/play_arrow:", disabled=running or problem is not None, key=K + "run"
        ):
            start(config)
            st.rerun()
        if b2.button("Stop", icon=":material/stop:", disabled=not running, key=K + "stop"):
            job = session_jobs().others.get(JOB_NAME)
            if job is not None:
                job.stop()
                job.join(5.0)  # it stops between steps: usually at once
            st.rerun()


# --------------------------------------------------------------------------------------------------
# Progress and charts


def status_line(view: SweepView) -> None:
    done = f"{view.runs_done} of {view.total_runs} runs ({view.cached_runs} from the store)"
    if view.status == "queued":
        st.info(
            f"Queued: place {view.queue_position} in the server's training queue, which this sweep shares with "
            f"the training lab, where runs that someone watches go first (the server trains a limited number of "
            f"runs at once). It goes on by itself. {done}."
        )
    elif view.status == "running":
        fraction = view.runs_done / view.total_runs if view.total_runs else 0.0
        text = done
        if view.current is not None:
            depth, seed = view.current
            step = f"step {view.step}/{view.total_steps}" if view.total_steps else "starting"
            text += f" · training depth {depth}, seed {seed}: {step}"
            if view.total_steps:
                fraction += view.step / view.total_steps / view.total_runs
        text += f" · ETA {fmt_seconds(view.eta_seconds)}"
        st.progress(min(1.0, fraction), text=text)
    elif view.status == "finished":
        trained = view.runs_done - view.cached_runs
        diverged = [
            f"{m} {r.depth}"
            for r in view.runs
            for m, summary in r.run.summaries.items()
            if summary["status"] == "diverged"
        ]
        text = f"Finished: {view.total_runs} runs, {view.cached_runs} from the store, {trained} trained now."
        if diverged:  # a result, not a failure: a blown-up deep net is part of what the sweep shows
            st.warning(f"{text} Diverged (loss NaN, inf or huge): {', '.join(diverged)}.")
        else:
            st.success(text)
    elif view.status == "stopped":
        st.warning(
            f"Stopped: {done} finished. Run the same sweep again to resume: the {view.runs_done} finished "
            "runs come back from the store."
        )
    elif (problem := run_store().check()) is not None:  # the sweep failed because the store did
        store_problem(problem, K + "sweep.store")
    else:
        st.error(f"The sweep failed: {safe_text(view.message)}")


def _figures(job: SweepJob, view: SweepView) -> dict[str, Any]:
    """Figures and tables of the finished runs, rebuilt only when another run has finished."""
    cached = st.session_state.get(K + "figures")
    if cached is not None and cached[0] is job and cached[1] == view.runs_done:
        return cached[2]
    results = view.results_frame()
    built = {
        "results": results,
        "error": figs.error_vs_depth_figure(results),
        "loss": figs.loss_vs_depth_figure(results),
        "curves": figs.curves_figure(view.curves_frame()),
        "responses": figs.responses_figure(view.responses_frame()),
        "cost": figs.cost_figure(results),
    }
    st.session_state[K + "figures"] = (job, view.runs_done, built)
    return built


def charts(job: SweepJob, view: SweepView) -> None:
    if not view.runs:
        st.caption("The charts appear as soon as the first run has finished.")
        return
    built = _figures(job, view)
    results: pd.DataFrame = built["results"]
    for row in results[results.status != "finished"].itertuples():
        st.warning(
            f"The {row.model} net of depth {row.depth} (seed {row.seed}) diverged; its points are left out. "
            "Try a lower learning rate or more warm-up steps."
        )
    left, right = st.columns(2)
    with left:
        chart(
            built["error"],
            "What to look for: plain nets get worse with depth, residual nets do not. Training error rises "
            "too, so the degradation is an optimisation failure, not overfitting (He et al. 2015, Fig. 1 and 6). "
            + figs.degradation_verdict(results),
            K + "chart.error",
        )
    with right:
        chart(
            built["loss"],
            "What to look for: the deep plain nets' loss stays orders of magnitude above the residual nets' "
            "under the same budget; error bars span the seeds (min to max).",
            K + "chart.loss",
        )
    chart(
        built["curves"],
        "What to look for: at small depth both curves fall together; as depth grows the plain net's curve "
        "flattens high up while the residual net's still drops (He et al. 2015, Fig. 4).",
        K + "chart.curves",
    )
    left, right = st.columns(2)
    with left:
        chart(
            built["responses"],
            "What to look for: the residual net's blocks respond with a smaller, more even std than the plain "
            "net's layers: each residual block only adds a small correction F(x) (He et al. 2015, Fig. 7).",
            K + "chart.responses",
        )
    with right:
        chart(
            built["cost"],
            "What to look for: parameters and FLOPs grow about linearly with depth, and identity shortcuts "
            "add nothing: the residual net's gain is free (projection shortcuts add a little).",
            K + "chart.cost",
        )
    with st.expander("Numbers: final loss and error of every run"):
        table = results.drop(columns=["key"])
        st.dataframe(table, hide_index=True)
        st.download_button(
            "Results CSV",
            table.to_csv(index=False),
            "depth_study.csv",
            "text/csv",
            icon=":material/download:",
            key=K + "results.csv",
        )


def live_panel(job: SweepJob) -> None:
    """Progress and charts; redrawn every second by the fragment timer while the sweep runs."""
    view = job.view()
    st.caption(f"Sweep: {describe(job.config)}")
    status_line(view)
    charts(job, view)
    if job.done and st.session_state.get(K + "watching") == id(job):
        del st.session_state[K + "watching"]
        st.rerun()  # it ended while we watched: one full rerun stops the timer and enables the buttons


# --------------------------------------------------------------------------------------------------


def main() -> None:
    require_shell()  # a deep link on a fresh server: rerun inside app.py's navigation
    st.title("Depth study")
    st.markdown(
        "Does a deeper net train better? He et al. (2015) found that **plain** nets get *worse* with depth, on "
        "the training data too, while **residual** nets of the same depth keep improving. Each depth below "
        "trains a plain and a residual net in lockstep (same init, same batches, same budget)."
    )
    jobs = session_jobs()
    job: SweepJob | None = jobs.others.get(JOB_NAME)
    running = job is not None and not job.done
    runs = list_runs(K + "store.reset")
    if K + "store_error" in st.session_state:
        store_problem(st.session_state.pop(K + "store_error"), K + "store.start")
    if K + "error" in st.session_state:
        st.error(safe_text(st.session_state.pop(K + "error")))
    run_controls(running)
    st.subheader("Results")
    if job is None:
        st.info(
            "Press **Run the classroom sweep** (or set up a custom sweep and press **Run**). Finished runs "
            "are stored, so a sweep that has run before replays at once."
        )
    else:
        if running:
            st.session_state[K + "watching"] = id(job)
        st.fragment(run_every=REFRESH_SECONDS if running else None)(live_panel)(job)
    if job is not None and job.done and runs:
        pick_sweep_run(job, runs)
    stored_runs(runs)


def pick_sweep_run(job: SweepJob, runs: list) -> None:
    """Once per finished sweep, the stored-runs box shows its deepest run (what a class looks at next),
    even when other tabs stored runs since."""
    if st.session_state.get(K + "picked") == id(job):
        return
    st.session_state[K + "picked"] = id(job)
    done = job.view().runs
    listed = {r.key for r in runs}
    if done and (deepest := max(done, key=lambda r: (r.depth, -r.seed))).run.key in listed:
        st.session_state[K + "stored.pick"] = deepest.run.key


main()
