"""Depth study: plain and residual nets at several depths under one budget (He et al. 2015, Fig. 1, 6, 7).

A one-click classroom sweep or a custom grid runs in the background (one run at a time through the
server's job limiter, shared with the training lab); finished grid points come from the run store, so
a replay is instant and a stopped sweep resumes where it stopped. Below: the stored runs, to delete,
export as a zip or import from one.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from resnet_viz.data import DATASETS, DataConfig
from resnet_viz.figures import depth as figs
from resnet_viz.models import ConfigError, ModelConfig
from resnet_viz.store import RunInfo, RunStore, StoreError, short_key
from resnet_viz.sweep import MAX_SEEDS, SweepConfig, SweepJob, SweepView, classroom_sweep
from resnet_viz.tasks import ThreadExecutor
from resnet_viz.training import TrainConfig
from resnet_viz.ui.roles import confirm_button, is_teacher, teacher_only
from resnet_viz.ui.session import session_jobs
from resnet_viz.ui.shell import require_shell
from resnet_viz.ui.store import format_time, run_store, store_problem
from resnet_viz.ui.text import safe_text
from resnet_viz.ui.widgets import DATASET_HELP, WIDTHS, chart, fmt_seconds

JOB_NAME = "depth_sweep"
REFRESH_SECONDS = 1.0
BATCH_SIZES = [32, 64, 128, 256]
DEFAULT_DEPTHS = {"basic": [8, 14, 20, 32, 44, 56], "bottleneck": [11, 20, 29, 38, 47, 56], "mlp": [4, 8, 16, 32]}
K = "depth."  # widget-state prefix


# --------------------------------------------------------------------------------------------------
# Starting and describing sweeps


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


def describe(config: SweepConfig) -> str:
    m, t = config.model, config.train
    seeds = f"{len(config.seeds)} seed{'s' if len(config.seeds) > 1 else ''}"
    family = "MLP" if not config.data.is_image else f"{m.block} blocks"
    details = [f"{order_label(m.order)}", "BatchNorm" if m.norm == "batch" else "no normalisation"]
    if config.data.is_image:
        details.append(f"{m.shortcut} shortcuts")
    return (
        f"{config.data.name} · depths {', '.join(map(str, sorted(config.depths)))} · {seeds} · "
        f"{t.epochs} epoch{'s' if t.epochs > 1 else ''} · width {m.width} · {family} ({', '.join(details)}) · "
        f"{t.optimizer.upper()} lr {t.lr:g}, batch {t.batch_size}"
    )


def order_label(order: str) -> str:
    return {"post": "post-activation", "pre": "pre-activation"}.get(order, order)


def stored_count(store: RunStore, config: SweepConfig) -> int:
    return sum(store.has(store.key_for(config.models(d), config.train_for(s), config.data)) for d, s in config.points())


# --------------------------------------------------------------------------------------------------
# The custom sweep form


def _default(key: str, value: Any) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def _choice(key: str, options: list[Any]) -> None:
    """Keep a choice widget's state one of its options."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]


def _seed_defaults() -> list[str]:
    """Put the last values (or the classroom sweep's) into the form's widget state; returns the field names."""
    preset = classroom_sweep()
    values = {
        "depths": list(preset.depths),
        "seeds": len(preset.seeds),
        "block": preset.model.block,
        "width": preset.model.width,
        "norm": preset.model.norm,
        "order": preset.model.order,
        "shortcut": preset.model.shortcut,
        "dataset": preset.data.name,
        "epochs": preset.train.epochs,
        "lr": preset.train.lr,
        "batch_size": preset.train.batch_size,
        "warmup_steps": preset.train.warmup_steps,
    }
    saved = st.session_state.get(K + "form", {})  # widget state is dropped on other pages; this copy is not
    for name, value in values.items():
        _default(K + name, saved.get(name, value))
    return list(values)


def _depth_options(family: str, block: str) -> tuple[str, list[int]]:
    kind = "mlp" if family == "mlp" else block
    probe = ModelConfig(family=family, block=block if family == "cnn" else "basic")
    return kind, probe.allowed_depths()


def _sync_depths(kind: str, options: list[int]) -> None:
    """Keep the chosen depths valid when the block or data family changes (their depth rules differ)."""
    key = K + "depths"
    chosen = [d for d in st.session_state.get(key, []) if d in options]
    if st.session_state.get(K + "depth_kind", kind) != kind and not chosen:
        chosen = DEFAULT_DEPTHS[kind]
    st.session_state[key] = chosen
    st.session_state[K + "depth_kind"] = kind


def sweep_form(disabled: bool) -> tuple[SweepConfig, dict[str, Any]]:
    """Widgets for a custom sweep; returns the config and an empty slot per validated field for its message."""
    names = _seed_defaults()
    slots: dict[str, Any] = {}
    grid, model_col, train_col = st.columns(3, gap="medium")
    with train_col:
        st.markdown("**Data and training**")
        _choice(K + "dataset", list(DATASETS))
        name = st.selectbox(
            "Dataset", DATASETS, key=K + "dataset", disabled=disabled, format_func=lambda d: f"{d}: {DATASET_HELP[d]}"
        )
        slots["dataset"] = st.empty()
        epochs = st.number_input(
            "Epochs",
            1,
            200,
            step=1,
            key=K + "epochs",
            disabled=disabled,
            help="the same budget for every run; time grows with it",
        )
        slots["epochs"] = st.empty()
        lr = st.number_input(
            "Learning rate",
            min_value=1e-4,
            max_value=10.0,
            format="%.4g",
            key=K + "lr",
            disabled=disabled,
            help="peak learning rate of SGD with momentum 0.9 (cosine schedule)",
        )
        slots["lr"] = st.empty()
        _choice(K + "batch_size", BATCH_SIZES)
        batch = st.select_slider("Batch size", BATCH_SIZES, key=K + "batch_size", disabled=disabled)
        slots["batch_size"] = st.empty()
        warmup = st.number_input(
            "Warm-up steps",
            0,
            10_000,
            key=K + "warmup_steps",
            disabled=disabled,
            help="linear warm-up of the learning rate; deep nets need a little",
        )
        slots["warmup_steps"] = st.empty()
    data = DataConfig(name=name)
    family = "cnn" if data.is_image else "mlp"
    with model_col:
        st.markdown("**Model** (both nets)")
        _choice(K + "width", WIDTHS)
        width = st.select_slider(
            "Width",
            WIDTHS,
            key=K + "width",
            disabled=disabled,
            help="channels of the first stage (doubling per stage) or hidden units",
        )
        slots["width"] = st.empty()
        norm = st.radio("Normalisation", ["batch", "none"], key=K + "norm", horizontal=True, disabled=disabled)
        slots["norm"] = st.empty()
        order = st.radio(
            "Block order",
            ["post", "pre"],
            key=K + "order",
            horizontal=True,
            disabled=disabled,
            format_func=order_label,
            help="post: conv-BN-ReLU, add, ReLU (He et al. 2015); pre: BN-ReLU-conv, add",
        )
        slots["order"] = st.empty()
        shortcut = st.radio(
            "Shortcut",
            ["identity", "projection"],
            key=K + "shortcut",
            horizontal=True,
            disabled=disabled or family == "mlp",
            help="identity: zero-padded, no parameters (option A); projection: 1x1 conv where the "
            "shape changes (option B)",
        )
        slots["shortcut"] = st.empty()
    with grid:
        st.markdown("**Grid**")
        block = st.radio(
            "Block",
            ["basic", "bottleneck"],
            key=K + "block",
            horizontal=True,
            disabled=disabled or family == "mlp",
            help="basic: 3x3-3x3 (depth 6n+2); bottleneck: 1x1-3x3-1x1 (depth 9n+2)",
        )
        if family == "mlp":
            st.caption("2-D point data trains MLPs: basic blocks, depth 2n+2.")
            block = "basic"
        slots["block"] = st.empty()
        kind, options = _depth_options(family, block)
        _sync_depths(kind, options)
        depths = st.multiselect(
            "Depths (weighted layers)",
            options,
            key=K + "depths",
            disabled=disabled,
            help=f"each depth trains a plain and a residual net; allowed: {options[0]}, "
            f"{options[1]}, ... up to {options[-1]}",
        )
        slots["depths"] = st.empty()
        seeds = st.slider(
            "Seeds per depth",
            1,
            MAX_SEEDS,
            key=K + "seeds",
            disabled=disabled,
            help="seeds 0, 1, 2: different init and batch order; charts show the spread",
        )
        slots["seeds"] = st.empty()
    st.session_state[K + "form"] = {name: st.session_state[K + name] for name in names}
    config = SweepConfig(
        depths=tuple(sorted(depths)),
        seeds=tuple(range(int(seeds))),
        model=ModelConfig(
            family=family,
            block=block,
            width=width,
            norm=norm,
            order=order,
            shortcut=shortcut if family == "cnn" else "identity",
        ),
        train=TrainConfig(epochs=int(epochs), lr=float(lr), batch_size=batch, warmup_steps=int(warmup)),
        data=data,
    )
    return config, slots


def validate(config: SweepConfig, slots: dict[str, Any]) -> str | None:
    """The config's first problem, shown next to its control (or returned when no control has it)."""
    try:
        config.validate()
    except ConfigError as err:
        field = err.field if err.field in slots else None
        if field is None:
            return str(err)
        slots[field].error(f"**{field}**: {err.message}")
        return str(err)
    return None


def run_controls(running: bool) -> None:
    """The classroom preset and the custom form, side by side, each with its own Run button."""
    store = run_store()
    preset, custom = st.columns([1.3, 3], gap="large")
    with preset, st.container(border=True):
        st.markdown("**Classroom sweep**")
        st.caption(
            "Digits at depths 8 to 56, one seed, 10 epochs: about 30 s on an idle 2-core server, and under "
            "a second once it has run (every grid point comes back from the run store)."
        )
        try:
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
        elif problem is not None and not any(problem.startswith(f"{f}:") for f in slots):
            info.error(problem)
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
            f"the training lab (the server trains a limited number of runs at once). It starts by itself. {done}."
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
            f"{m} {r.depth}" for r in view.runs for m, summary in r.run.summaries.items()
            if summary["status"] == "diverged"
        ]  # fmt: skip
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
            "too, so the degradation is an optimisation failure, not overfitting (He et al. 2015, Fig. 1 and 6).",
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
# Stored runs


def _model_text(info: RunInfo, values: dict[str, float] | None = None) -> str:
    parts = []
    for key, depth in info.depths.items():
        kind = "residual" if info.skips.get(key) else "plain"
        name = kind if key in ("plain", "residual") else f"{key}: {kind}"
        parts.append(f"{name} {depth}" + (f" → {values[key]:.3g}" if values and key in values else ""))
    return " · ".join(parts)


def runs_table(runs: list[RunInfo]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "stored": [format_time(r.created) for r in runs],
            "origin": ["imported" if r.imported else "trained here" for r in runs],
            "dataset": [r.dataset for r in runs],
            "epochs": [r.epochs for r in runs],
            "seed": [r.seed for r in runs],
            "models → final training loss": [_model_text(r, r.final_train_loss) for r in runs],
            "status": [", ".join(sorted(set(r.status.values()))) for r in runs],
            "key": [short_key(r.key) for r in runs],
        }
    )


def import_section(store: RunStore) -> None:
    upload = st.file_uploader(
        "Import a run (a zip exported here)",
        type=["zip"],
        key=K + "import",
        help="validated completely before it is stored; nothing is unpickled",
    )
    if upload is None:
        st.session_state.pop(K + "import.result", None)
        return
    result = st.session_state.get(K + "import.result")
    if result is None or result[0] != upload.file_id:
        try:
            key = store.import_zip(upload.getvalue(), upload.name)
            result = (upload.file_id, True, f"Imported run {short_key(key)} from {safe_text(upload.name)}.")
        except StoreError as err:
            result = (upload.file_id, False, f"Cannot import {safe_text(upload.name)}: {safe_text(err)}")
        except Exception as exc:  # noqa: BLE001 - the library should raise StoreError; never show a traceback
            problem = safe_text(f"{type(exc).__name__}: {exc}")
            result = (upload.file_id, False, f"Cannot import {safe_text(upload.name)}: {problem}")
        st.session_state[K + "import.result"] = result
        if result[1]:
            st.rerun()  # list the new run
    (st.success if result[1] else st.error)(result[2])


def stored_runs(runs: list[RunInfo] | None) -> None:
    st.subheader("Stored runs")
    if runs is None:
        st.caption("Unavailable until the run store is usable again (see the message at the top).")
        return
    store = run_store()
    message = st.session_state.pop(K + "stored.message", None)
    if message:
        st.success(message)
    if not runs:
        st.caption("No stored runs yet. Every finished sweep run and every finished lab run is stored here.")
    else:
        st.caption(
            f"{len(runs)} runs, newest first. Depth-study runs hold a plain/residual pair; lab runs models A and B."
        )
        st.dataframe(runs_table(runs), hide_index=True, height=min(400, 38 + 35 * len(runs)))
        by_key = {r.key: r for r in runs}
        pick, delete, export = st.columns([4, 1, 1], vertical_alignment="bottom")
        key = pick.selectbox(
            "Run",
            list(by_key),
            key=K + "stored.pick",
            format_func=lambda k: (
                f"{short_key(k)}{' (imported)' if by_key[k].imported else ''} · {by_key[k].dataset} · "
                f"{by_key[k].epochs} ep · seed {by_key[k].seed} "
                f"· {_model_text(by_key[k])}"
            ),
        )
        question = f"Delete run {short_key(key)} from the store, for everyone on this server? It cannot be undone."
        if is_teacher() and confirm_button("Delete", K + "stored.delete", question, delete, icon=":material/delete:"):
            try:
                removed = store.delete(key)
                done = f"Deleted run {short_key(key)}." if removed else "Already gone."
                st.session_state[K + "stored.message"] = done
            except StoreError as err:
                st.session_state[K + "stored.message"] = f"Could not delete: {safe_text(err)}"
            st.rerun()
        export.download_button(
            "Export",
            data=lambda: store.export_zip(key),
            file_name=f"resnet-viz-run-{short_key(key)}.zip",
            mime="application/zip",
            icon=":material/download:",
            key=K + "stored.export",
            on_click="ignore",
        )
    if is_teacher():
        import_section(store)
    else:
        teacher_only("delete stored runs and import runs")


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
    try:
        runs: list[RunInfo] | None = run_store().list_runs()
    except StoreError as err:
        store_problem(err, K + "store.reset")
        runs = None
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
    stored_runs(runs)


main()
