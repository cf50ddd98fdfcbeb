"""Pick models A and B for analysis pages: this session's lab run, the server's default pair, a stored run,
or fresh from the lab setup.

Analysis never touches a model a run is training: a snapshot is loaded into a fresh copy
(`models.load_model`), in eval mode, and cached per (run, model, step) for this session. The
server's default pair is requested from the run service like any run: trained once for the whole
server (every session asking at the same time watches the same training), then replayed from the store,
with the snapshots the store keeps (so the step slider and the training path work for a replay too).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import streamlit as st
from torch import nn

from resnet_viz.data import DataConfig
from resnet_viz.figures.common import model_label
from resnet_viz.lab import LabConfig
from resnet_viz.models import ConfigError, ModelConfig, build_model, finite_weights, load_model
from resnet_viz.runs import WATCHED, Handle, LiveRun, Replay, RunRefused
from resnet_viz.runs.defaults import default_pair
from resnet_viz.store import StoredRun, StoreError
from resnet_viz.training import Snapshot

from .run_panel import drawn_by_page, status_line, view_at_end, view_of
from .session import SessionJobs, session_jobs
from .store import run_name, run_option, run_store
from .text import safe_text
from .widgets import STATE_KEY

LAB_RUN, DEFAULT, STORED, FRESH = (
    "Lab run of this session",
    "The server's default pair",
    "A stored run",
    "Fresh from the lab setup (at initialisation)",
)
CACHE_KEY = "snapshots.models"  # session_state: {(run id, model key, step): nn.Module}
REFRESH_SECONDS = 1.0
MAX_STORED_SNAPSHOTS = 8  # stored runs' models whose snapshots stay loaded (the default pair's: 7 MB each)
_STORED: OrderedDict[tuple[str, float, str], list[Snapshot]] = OrderedDict()  # (run, stored at, model): LRU
_STORED_LOCK = threading.Lock()


@dataclass
class ChosenModel:
    """One model to analyse: a fresh copy in eval mode, never the one being trained."""

    key: str  # "A" or "B"
    label: str  # legend label, as on the lab page ("A · plain 56")
    config: ModelConfig  # its config, input fields set by the data
    model: nn.Module  # the weights at `step`, eval mode
    step: int  # optimizer steps behind these weights (0: initialisation)
    seed: int = 0  # the run's seed: build_model(config, seed) gives its initial weights
    run_key: str | None = None  # store key of the run the weights come from; None for untrained models
    snapshots: list[Snapshot] = field(default_factory=list)  # the run's weight snapshots, by step (may be empty)


def _cached(run: str, key: str, step: int, build: Callable[[], nn.Module]) -> nn.Module:
    cache: dict = st.session_state.setdefault(CACHE_KEY, {})
    if (run, key, step) not in cache:
        if len(cache) > 8:  # a handful of models at most per session
            cache.clear()
        cache[(run, key, step)] = build()
    return cache[(run, key, step)]


def stored_snapshots(stored: StoredRun, key: str) -> list[Snapshot]:
    """Model `key`'s snapshots of a stored run, loaded once for every session (a class opens the same few runs)."""
    name = (stored.key, stored.created, key)  # a run deleted and stored again is another entry
    with _STORED_LOCK:
        hit = _STORED.get(name)
        if hit is not None:
            _STORED.move_to_end(name)
            return hit
    snapshots = stored.snapshots(key)
    with _STORED_LOCK:
        _STORED[name] = snapshots
        while len(_STORED) > MAX_STORED_SNAPSHOTS:
            _STORED.popitem(last=False)
    return snapshots


def refuse_non_finite(chosen: Mapping[str, ChosenModel], consequence: str) -> bool:
    """Say which models have non-finite weights (a diverged run) and what that rules out; True when some do.
    The way out offered depends on the source: an earlier step only where the step slider is drawn."""
    broken = [c.label for c in chosen.values() if not finite_weights(c.model)]
    if not broken:
        return False
    earlier = (
        "an earlier step or another source" if any(len(c.snapshots) > 1 for c in chosen.values()) else "another source"
    )
    st.error(
        f"{', '.join(broken)} has non-finite weights at this step (its training diverged): {consequence}. "
        f"Choose {earlier}."
    )
    return True


def _from_handle(run: Handle, page: str) -> dict[str, ChosenModel]:
    """Models of a run at a chosen step: a live run's snapshots, or a stored run's (its final weights when it
    has none: an imported run, or one stored before snapshots were kept)."""
    models = run.request.models
    seed = run.request.train.seed
    if isinstance(run, Replay):
        stored = run.run
        try:
            snapshots = {key: stored_snapshots(stored, key) for key in stored.configs} if stored.snapshot_steps else {}
        except StoreError as err:  # a damaged snapshot: the run's final weights still serve
            st.warning(f"This run's weight snapshots cannot be read, so only its final weights: {safe_text(err, 300)}")
            snapshots = {}
        if not snapshots:
            return {
                key: ChosenModel(
                    key,
                    model_label(key, cfg, stored.final_skip_scale(key)),
                    cfg,
                    _cached(stored.key, key, -1, lambda key=key: stored.model(key)),
                    stored.states[key].step,
                    seed,
                    stored.key,
                )
                for key, cfg in stored.configs.items()
            }
        configs, saved = stored.configs, stored.key
    else:
        snapshots = {key: list(snaps) for key, snaps in run.trainer.snapshots.items()}
        configs, saved = run.trainer.configs, run.saved_key
    steps = sorted(set.intersection(*({s.step for s in snaps} for snaps in snapshots.values())))
    step = steps[-1]
    if len(steps) > 1:
        step = st.select_slider(
            "Training step (stored snapshots)",
            steps,
            value=steps[-1],
            key=f"{page}.step",
            format_func=lambda s: "init" if s == 0 else str(s),
        )
    chosen = {}
    for key, cfg in configs.items():
        snapshot = next(s for s in snapshots[key] if s.step == step)
        model = _cached(run.id, key, step, lambda key=key, s=snapshot: load_model(configs[key], s.state, s.skip_scale))
        label = model_label(key, models[key], snapshot.skip_scale)  # the α in force at this step
        chosen[key] = ChosenModel(key, label, cfg, model, step, seed, saved, snapshots[key])
    return chosen


def _default_pair(jobs: SessionJobs, page: str) -> Handle | None:
    pair = default_pair(page)
    run = jobs.pairs.get(page)
    if run is None or run.status in ("stopped", "failed"):
        try:
            run = jobs.service.request(pair.request, jobs.viewer, WATCHED)
        except (ConfigError, RunRefused, StoreError) as err:
            st.error(f"The server's default pair cannot be had now: {safe_text(err, 400)}")
            return None
        jobs.pairs[page] = run
    return run


def _progress(run: LiveRun, page: str) -> None:
    """The default pair while it trains (one training for the whole server); a rerun when it ends."""
    view = view_at_end(run, REFRESH_SECONDS)
    labels = {k: model_label(k, c) for k, c in run.request.models.items()}
    status_line(view, labels)
    if run.done and st.session_state.get(f"{page}.watching") == run.id:
        del st.session_state[f"{page}.watching"]
        st.rerun()


def _stored(page: str) -> Replay | None:
    try:
        runs = run_store().list_runs()
    except StoreError as err:
        st.error(f"The run store cannot be read: {safe_text(err, 400)}")
        return None
    if not runs:
        st.info("No stored runs yet: every lab run that finishes is stored.")
        return None
    by_key = {r.key: r for r in runs}

    key = st.selectbox("Stored run", list(by_key), format_func=lambda k: run_option(by_key[k]), key=f"{page}.stored")
    try:
        stored = run_store().get(key)
    except StoreError as err:
        st.error(safe_text(err, 400))
        return None
    return Replay(stored) if stored is not None else None


def _analysable(data: DataConfig, every_family: bool) -> bool:
    """Most analysis pages study CNNs (and MLPs); a Transformer or GCN run is drawn in the lab instead. Says so."""
    family = data.model_fields()["family"]
    if every_family or family in ("cnn", "mlp"):
        return True
    shown = {"transformer": "attention maps and gradients per sub-layer", "gcn": "oversmoothing per layer"}[family]
    st.info(
        f"These models are a {family} ({data.name} data): this page analyses CNNs and MLPs. The training lab "
        f"draws what matters for a {family} ({shown}); here, pick the server's default pair or another run."
    )
    return False


def choose_models(page: str, every_family: bool = False) -> tuple[dict[str, ChosenModel], DataConfig, str] | None:
    """Widgets to pick the models; returns them, their dataset and a sentence saying what they are, or None
    while the chosen pair is still training (its progress is drawn instead) or is not a CNN or MLP (unless the
    page works for `every_family`: the loss landscape)."""
    jobs = session_jobs()
    pair = default_pair(page)
    sources = ([LAB_RUN] if jobs.lab is not None else []) + [DEFAULT, STORED, FRESH]
    source = st.radio(
        "Models",
        sources,
        key=f"{page}.source",
        horizontal=True,
        help=f"The server's default pair is {pair.title}: trained once for everybody, then kept.",
    )
    if source == FRESH:
        setup: LabConfig = st.session_state.get(STATE_KEY) or LabConfig().normalized()
        if not _analysable(setup.data, every_family):
            return None
        seed = setup.train.seed
        chosen = {
            key: ChosenModel(
                key,
                model_label(key, c),
                c,
                _cached("fresh", f"{key}:{hash(c)}:{seed}", 0, lambda c=c: build_model(c, seed).eval()),
                0,
                seed,
            )
            for key, c in setup.models().items()
        }
        return chosen, setup.data, "Freshly built from the lab's setup, at initialisation (no training)."
    if source == STORED:
        replay = _stored(page)
        if replay is None:
            return None
        if not _analysable(replay.run.data, every_family):
            return None
        chosen = _from_handle(replay, page)
        step = max(c.step for c in chosen.values())
        when = "final weights" if step == max(s.step for s in replay.run.states.values()) else f"at step {step}"
        return chosen, replay.run.data, f"The stored run {run_name(replay.run.key, replay.run.imported)}, {when}."
    run = jobs.lab if source == LAB_RUN else _default_pair(jobs, page)
    if run is None:
        return None
    started = isinstance(run, Replay) or (run.trainer is not None and all(run.trainer.snapshots.values()))
    if not started or (source == DEFAULT and not run.done):  # the default pair is analysed once trained
        st.session_state[f"{page}.watching"] = run.id
        with drawn_by_page():
            st.fragment(run_every=REFRESH_SECONDS)(_progress)(run, page)
        return None
    if not _analysable(run.request.data, every_family):
        return None
    chosen = _from_handle(run, page)
    what = "the lab run of this session" if source == LAB_RUN else f"the server's default pair ({pair.title})"
    status = "stored" if isinstance(run, Replay) else ("still training" if not run.done else view_of(run).status)
    step = max(c.step for c in chosen.values())
    return chosen, run.request.data, f"Models of {what} ({status}), at step {step}."
