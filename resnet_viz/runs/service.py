"""The run service: one server, many viewers, each distinct run trained once.

A request for a run (models, recipe with seed, data) is answered, by the store's run key, with

1. the run already training or queued for that key in any session (attach: every viewer draws the
   same live charts), else
2. the stored run, replayed at once, else
3. a new run, costed first (refused over the server's limits), queued with the scheduler, and
   trained by the executor.

Viewers are counted: a shared run stops only when its last viewer has left, after a grace period
so that a reloaded tab can re-attach (by the run's id). Changing the skip scale of a run that others
also watch forks it: the mover gets a new run that goes on from the shared run's weights and
optimizer state at that step, with its history; the others keep theirs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

from ..store import RunStore, StoredRun
from ..tasks import Executor, ThreadExecutor
from ..training import History, StepRecord
from .budget import Estimate, RunRefused, check, estimate
from .live import ForkSeed, LiveRun, RunRequest, RunView
from .scheduler import BACKGROUND, WATCHED, Scheduler
from .tables import ChartTables


@dataclass
class Replay:
    """A stored run, drawn like a finished live one (`view()` is built once)."""

    run: StoredRun
    done: bool = True
    status: str = "finished"
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.run.key

    @property
    def request(self) -> RunRequest:
        return RunRequest(self.run.configs, self.run.train, self.run.data)

    def history(self) -> History:
        return self.run.history

    def skip_scale(self, model: str) -> float:
        return self.run.final_skip_scale(model)

    def skip_events(self) -> list[tuple[str, int, float]]:
        return list(self.run.skip_events)

    @cached_property
    def _view(self) -> RunView:
        run = self.run
        tables = ChartTables.of(run.history)
        states = run.states
        step = max((s.step for s in states.values()), default=0)
        per_epoch = run.steps_per_epoch
        return RunView(
            id=run.key,
            status="finished",
            message="",
            step=step,
            total_steps=per_epoch * run.train.epochs,
            steps_per_epoch=per_epoch,
            steps_per_second=0.0,
            eta_seconds=0.0,
            queue_position=0,
            queue_wait_seconds=0.0,
            states=states,
            skip_events=self.skip_events(),
            frames=lambda: (tables.steps_frame(), tables.layers_frame()),
            viewers=0,
            saved=True,
        )

    def view(self) -> RunView:
        return self._view


Handle = LiveRun | Replay


class RunService:
    """Thread-safe; one per server (the app keeps one in a resource cache, the CLI makes its own)."""

    def __init__(
        self,
        store: RunStore | None,
        scheduler: Scheduler | None = None,
        executor: Executor | None = None,
        grace_seconds: float = 20.0,
        processes: bool = False,
    ) -> None:
        """`processes`: train every run in a child process (the app does: see runs/remote.py)."""
        self.store = store
        self.processes = processes
        self.scheduler = scheduler or Scheduler()
        self.executor = executor or ThreadExecutor()
        self.grace_seconds = grace_seconds  # how long a run with no viewer waits for one to come back
        self.trainings = 0  # runs started by this service (a stored or attached request adds none)
        self._lock = threading.RLock()
        self._by_key: dict[str, LiveRun] = {}
        self._by_id: dict[str, LiveRun] = {}

    # ---- requests

    def request(
        self,
        request: RunRequest,
        viewer: str,
        priority: int = WATCHED,
        on_step: Callable[[LiveRun, list[StepRecord]], None] | None = None,
    ) -> Handle:
        """The live run for this request (attached), else the stored run, else a new run.

        Raises ConfigError for an invalid config, RunRefused over the server's limits, StoreError when
        the store cannot be read.
        """
        key = request.key  # validates the configs
        with self._lock:
            live = self._live(key)
            if live is not None:
                live.attach(viewer, priority)
                return live
        stored = self.store.get(key) if self.store is not None else None
        if stored is not None:
            return Replay(stored)
        cost = estimate(request.models, request.train, request.data)
        check(cost, self.scheduler.limits)
        with self._lock:
            live = self._live(key)
            if live is not None:
                live.attach(viewer, priority)
                return live
            run = self._new(request, cost, viewer, priority, on_step=on_step)
        self.executor.submit(run)
        return run

    def _live(self, key: str) -> LiveRun | None:
        """The run answering for `key`: queued, training, or finished and still held by viewers."""
        run = self._by_key.get(key)
        if run is None or run.key != key or run.status in ("stopped", "failed"):
            return None
        return run

    def _new(
        self,
        request: RunRequest,
        cost: Estimate,
        viewer: str,
        priority: int,
        seed: ForkSeed | None = None,
        alphas: dict[str, float] | None = None,
        on_step: Callable[[LiveRun, list[StepRecord]], None] | None = None,
    ) -> LiveRun:
        limits = self.scheduler.limits
        pending = [r for r in self._by_id.values() if not r.done]
        if len(pending) >= limits.max_queue:
            raise RunRefused(
                f"The server has {len(pending)} runs queued or training (its limit, RESNET_VIZ_MAX_QUEUE). "
                "Watch a stored run or one that is training, or try again when some have finished."
            )
        mine = [r for r in pending if viewer in r.viewers and r.viewers[viewer] == priority]
        if len(mine) >= limits.max_per_viewer:
            raise RunRefused(
                f"This tab already has {len(mine)} runs queued or training (the limit per tab is "
                f"{limits.max_per_viewer}). Stop one, or wait for one to finish."
            )
        ticket = self.scheduler.ticket(cost, priority)
        run = LiveRun(
            request,
            cost,
            self.scheduler,
            ticket,
            self.store,
            seed=seed,
            alphas=alphas,
            on_step=on_step,
            in_worker=self.processes,
        )
        run.attach(viewer, priority)
        if run.key is not None:
            self._by_key[run.key] = run
        self._by_id[run.id] = run
        self.trainings += 1
        return run

    def attach(self, run_id: str, viewer: str) -> LiveRun | None:
        """Re-attach to a live run by its id (a reloaded tab whose URL names it); None if it is gone."""
        with self._lock:
            run = self._by_id.get(run_id)
            if run is not None:
                run.attach(viewer, WATCHED)
            return run

    def set_priority(self, run: Handle, viewer: str, priority: int) -> None:
        """How much `viewer` waits for `run` now: an analysis page's pair is watched while its page is
        open, and background work once the tab trains something else."""
        if isinstance(run, LiveRun):
            with self._lock:
                if viewer in run.viewers:
                    run.viewers[viewer] = priority
                    run.ticket.priority = min(run.viewers.values())

    # ---- leaving

    def release(self, run: Handle, viewer: str, grace: bool = True) -> None:
        """`viewer` stops watching `run`; the run stops when nobody watches it (after the grace period,
        which lets a reloaded tab re-attach, unless `grace` is False)."""
        if not isinstance(run, LiveRun):
            return
        with self._lock:
            run.detach(viewer)
            if run.viewers:
                return
        if not grace or self.grace_seconds <= 0:
            self._drop_if_unwatched(run)
        else:
            timer = threading.Timer(self.grace_seconds, self._drop_if_unwatched, (run,))
            timer.daemon = True
            timer.start()

    def release_viewer(self, viewer: str) -> None:
        """A tab closed: it leaves every run it watched."""
        with self._lock:
            runs = [r for r in self._by_id.values() if viewer in r.viewers]
        for run in runs:
            self.release(run, viewer)

    def _drop_if_unwatched(self, run: LiveRun) -> None:
        with self._lock:
            if run.viewers:
                return
            self._by_id.pop(run.id, None)
            if run.key is not None and self._by_key.get(run.key) is run:
                del self._by_key[run.key]
        run.stop()

    # ---- live changes

    def set_skip_scale(self, run: LiveRun, viewer: str, model: str, alpha: float) -> LiveRun:
        """Change a model's skip scale for `viewer`: in place if nobody else watches, else in a fork.

        Returns the run `viewer` watches from now on. A viewer forks a run once: a change it asks of a run
        it has already forked goes to its copy. A tab's page can run twice at once (Streamlit starts a
        rerun while the last one still waits here for the fork's step), and each moved slider forked
        the shared run again, until the tab's run limit refused it with a traceback.
        """
        with self._lock:
            gate = run.fork_gates.setdefault(viewer, threading.Lock())
        with gate:
            with self._lock:
                copy = run.forks.get(viewer)
                if copy is None and not any(v != viewer for v in run.viewers):
                    if run.key is not None and self._by_key.get(run.key) is run:
                        del self._by_key[run.key]  # no longer what a plain request for its config trains
                    run.set_skip_scale(model, alpha)
                    return run
            if copy is not None:
                return self.set_skip_scale(copy, viewer, model, alpha)
            seed = run.fork_seed()  # waits for the training thread to reach the end of its step
            alphas = {} if seed.state is not None else {k: run.skip_scale(k) for k in run.request.models}
            with self._lock:
                fork = self._new(run.request, run.estimate, viewer, WATCHED, seed=seed, alphas=alphas or None)
                fork.set_skip_scale(model, alpha)
                run.forks[viewer] = fork
            self.release(run, viewer)
            self.executor.submit(fork)
            return fork

    # ---- waiting for a run (sweeps, warm-up, CLI)

    def fetch(
        self,
        request: RunRequest,
        viewer: str,
        stop: threading.Event | None = None,
        priority: int = BACKGROUND,
        on_step: Callable[[LiveRun, list[StepRecord]], None] | None = None,
        on_wait: Callable[[LiveRun], None] | None = None,
    ) -> StoredRun | None:
        """The stored run for `request`, training it (or waiting for the run training it) first.

        Returns None when `stop` was set first or the run did not finish complete (stopped, failed).
        `on_wait(run)` is called once the run is known, then about every half second while waiting for a
        run another viewer started.
        """
        stop = stop or threading.Event()

        def step(run: LiveRun, records: list[StepRecord]) -> None:  # in the run's thread: stop at the next step
            if on_step is not None:
                on_step(run, records)
            if stop.is_set():
                self.release(run, viewer, grace=False)

        handle = self.request(request, viewer, priority, on_step=step)
        if isinstance(handle, Replay):
            return handle.run
        if on_wait is not None:
            on_wait(handle)  # the caller learns which run it waits for (its queue place, its progress)
        try:
            while not handle.join(0.5):
                if stop.is_set():
                    return None
                if on_wait is not None and handle.on_step is not step:  # our own run reports through on_step
                    on_wait(handle)
        finally:
            self.release(handle, viewer, grace=False)
        if handle.saved_key is None or self.store is None:
            return None
        stored = self.store.get(handle.saved_key)
        return replace(stored, cached=False) if stored is not None else None

    # ---- for tests, benchmarks and the sidebar

    def live_runs(self) -> list[LiveRun]:
        with self._lock:
            return list(self._by_id.values())
