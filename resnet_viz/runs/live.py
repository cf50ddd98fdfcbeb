"""A run in training: one `Trainer` in a background task, watched by any number of viewers.

The run builds nothing heavy until the scheduler gives it a slot. Then, between every two steps, it
appends the step to its compact history and chart tables (under a lock, so a viewer's `view()` gets
a consistent copy at a fixed cost), updates the family's picture (`pictures`), serves fork requests,
and asks the scheduler how many threads to use. A finished run is saved to the store.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch
from pandas import DataFrame

from .. import pictures
from ..data import DataConfig
from ..models import ModelConfig, block_names, layer_names
from ..store import COMPLETE, RunStore, StoreError, run_key
from ..tasks import Task
from ..training import ModelState, StepRecord, TrainConfig, Trainer, TrainerState
from .budget import Estimate
from .remote import RemoteTrainer
from .scheduler import Scheduler, Ticket
from .tables import ChartTables, CompactHistory


@dataclass(frozen=True)
class RunRequest:
    """What decides a run: its models, recipe (seed included) and data. Its key is the store's key."""

    models: Mapping[str, ModelConfig]  # model key -> config ("A"/"B", "plain"/"residual", ...)
    train: TrainConfig  # recipe and seed
    data: DataConfig  # dataset

    @property
    def key(self) -> str:
        return run_key(self.models, self.train, self.data)


@dataclass
class RunView:
    """A copy of a run for drawing; the same for a live run and a stored one. Its chart rows (`steps`, `layers`)
    are made when first read, and may then be of a newer version than the rest (never an older one)."""

    id: str  # the run's id (live runs) or store key prefix (stored runs)
    status: str  # queued, running, finished, stopped, failed
    message: str  # why it failed or stopped
    step: int  # steps done
    total_steps: int
    steps_per_epoch: int
    steps_per_second: float
    eta_seconds: float
    queue_position: int  # 1-based place in the queue, 0 unless queued
    queue_wait_seconds: float  # estimated wait before it starts (queued runs)
    states: dict[str, ModelState]  # per model: finished / stopped / diverged and why
    skip_events: list[tuple[str, int, float]]  # (model, step, alpha) of live skip changes
    frames: Callable[[], tuple[DataFrame, DataFrame]]  # the chart rows (`steps`, `layers`), made when first read
    viewers: int = 1  # sessions watching it
    fork_step: int = 0  # the step this run was forked from a shared run at (0: not a fork)
    pictures: dict[str, tuple] = field(default_factory=dict)  # model -> its picture (`pictures.picture`)
    picture_step: int = 0  # the step the pictures were taken at
    saved: bool | None = None  # stored when it finished (None while training or when not complete)
    save_error: str = ""  # why a finished run could not be stored
    version: int = 0  # grows with every drawn change: views of one run with equal versions draw the same

    @cached_property
    def _rows(self) -> tuple[DataFrame, DataFrame]:
        return self.frames()

    @property
    def steps(self) -> DataFrame:
        """Chart rows (`ChartTables.steps_frame`): of this view's version or, read later, of a newer one."""
        return self._rows[0]

    @property
    def layers(self) -> DataFrame:
        """Chart rows (`ChartTables.layers_frame`), as `steps`."""
        return self._rows[1]


@dataclass
class ForkSeed:
    """What a fork starts from: the shared run's state between two steps, and its history so far."""

    state: TrainerState | None  # None when the shared run had not started (the fork starts fresh)
    history: CompactHistory | None


class LiveRun(Task):
    """One training run; `view()`, `set_skip_scale()`, `capture()` and `stop()` are safe from any thread."""

    name = "run"

    def __init__(
        self,
        request: RunRequest,
        estimate: Estimate,
        scheduler: Scheduler,
        ticket: Ticket,
        store: RunStore | None = None,
        seed: ForkSeed | None = None,
        alphas: Mapping[str, float] | None = None,
        on_step: Callable[[LiveRun, list[StepRecord]], None] | None = None,
        picture_every: int = 10,
        in_worker: bool = False,
    ) -> None:
        """`in_worker`: train in a worker process (`remote.RemoteTrainer`), not in this run's thread."""
        super().__init__()
        self.id = secrets.token_urlsafe(9)  # unguessable: a URL that names it re-attaches (reload)
        self.request = request
        self.key: str | None = None if (seed and seed.state) or alphas else request.key  # None once changed live
        self.estimate, self.scheduler, self.ticket, self.store = estimate, scheduler, ticket, store
        self.on_step = on_step
        self.picture_every = picture_every if pictures.kind(request.data) else 0
        self.viewers: dict[str, int] = {}  # viewer -> priority it asked with
        self.forks: dict[str, LiveRun] = {}  # viewer -> the copy it forked off this run (while it has not come back)
        self.fork_gates: dict[str, threading.Lock] = {}  # viewer -> held while it forks this run (see the service)
        self.fork_step = seed.state.step if seed and seed.state else 0
        self.saved: bool | None = None
        self.save_error = ""
        self.saved_key: str | None = None  # the store key it was saved under
        self.trainer: Trainer | RemoteTrainer | None = None
        self.in_worker = in_worker
        self._seed = seed
        self._alphas = dict(alphas or {})
        self._lock = threading.Lock()
        self._stepped = threading.Condition(self._lock)  # notified at every step drawn (`wait_for_step`)
        self._start_up = False  # its worker is starting up: the first step is seconds away (`wait_for_step`)
        self._history: CompactHistory | None = seed.history if seed else None
        self._tables = ChartTables.of(seed.history.history()) if seed and seed.history else None
        self._pictures: dict[str, tuple] = {}
        self._picture_step = 0
        self._version = 0  # drawn changes so far (RunView.version)
        self._frames: tuple[int, DataFrame | None, DataFrame | None] = (-1, None, None)  # version, chart frames
        self._forks: list[tuple[threading.Event, list[ForkSeed]]] = []
        self._started = 0.0  # perf_counter() when its trainer started
        self._ended = 0.0  # ... when its training ended (0 while it trains): its speed stops there
        self._start_step = self.fork_step

    # ---- viewers (the service holds the lock that orders these)

    def attach(self, viewer: str, priority: int) -> None:
        self.viewers[viewer] = min(priority, self.viewers.get(viewer, priority))
        self.forks.pop(viewer, None)  # back on this run: moving its slider forks it anew
        self.ticket.priority = min(self.viewers.values())

    def detach(self, viewer: str) -> None:
        self.viewers.pop(viewer, None)
        if self.viewers:
            self.ticket.priority = min(self.viewers.values())

    # ---- the work

    def work(self) -> None:
        if not self.scheduler.acquire(self.ticket, self.stop_event):
            return
        try:
            self._train()
        finally:
            if self._started and not self._ended:  # failed: its speed stops where it did
                self._ended = time.perf_counter()
            self.scheduler.release(self.ticket)
            self._serve_forks()  # a fork asked for as it ended starts from where it got to

    def _train(self) -> None:
        threads = self.ticket.threads
        req = self.request
        state = self._seed.state if self._seed else None
        if self.in_worker:
            every = self.picture_every
            trainer = RemoteTrainer(
                req.models,
                req.train,
                req.data,
                self.stop_event,
                state,
                self._cap(threads),
                every,
                run_ahead=self._may_run_ahead,
                on_start_up=self._starting_up,
            )
        else:
            torch.set_num_threads(threads)
            trainer = Trainer(req.models, req.train, req.data, self.stop_event, start=state)
        self.trainer = trainer
        self._seed = None  # the trainer holds the state now
        for key, alpha in self._alphas.items():
            trainer.set_skip_scale(key, alpha)
        layers = {k: layer_names(m) for k, m in trainer.models.items()}
        blocks = {k: block_names(m) for k, m in trainer.models.items()}
        with self._lock:
            if self._history is None:
                self._history = CompactHistory(layers, blocks)
                self._tables = ChartTables(layers, blocks)
        self._started = time.perf_counter()
        flops_per_step = self.estimate.train_flops / max(1, self.estimate.steps)
        for records in trainer.run():
            with self._lock:
                self._history.add(records)
                self._tables.add(records)
                self._version += 1
                self._stepped.notify_all()
            step = records[0].step
            if pictures.due(step, trainer.total_steps, self.picture_every):
                self._update_pictures(step)
            if self.on_step is not None:
                self.on_step(self, records)
            if trainer.waiting:  # else at the next step: a worker running ahead waits after it
                self._serve_forks()
            self.scheduler.progress(self.ticket, flops_per_step * step, time.perf_counter() - self._started)
            # Yielding its slot, a run in a worker gives the worker back for the run that takes the slot. A worker
            # that already took the next step yields after it: it then waits (`_may_run_ahead`), and parks.
            remote = isinstance(trainer, RemoteTrainer)
            if remote and not trainer.waiting and self.scheduler.must_yield(self.ticket):
                continue
            park = trainer.park if remote and trainer.waiting else None
            granted = self.scheduler.checkpoint(self.ticket, self.stop_event, park)
            if granted and granted != threads:
                threads = granted
                trainer.set_threads(self._cap(threads) if self.in_worker else threads)
        self._ended = time.perf_counter()
        if not self.stop_event.is_set():
            self._save()

    def _cap(self, threads: int) -> int:
        """A training process runs no model on more intra-op threads than leave one core to the server, which
        draws for every tab: with both cores granted to one model's ops, the default pair took 98 s in the
        app against 34 s with one (two OpenMP threads on about one free core wait for each other at every
        op). Models side by side on one thread each (`Trainer._map`) wait for each other once a step, not
        once an op, so a run may have a thread per model."""
        return max(1, min(threads, max(self.scheduler.cores - 1, len(self.request.models))))

    def _save(self) -> None:
        trainer = self.trainer
        if self.store is None or any(s.status not in COMPLETE for s in trainer.states.values()):
            return
        try:
            self.saved_key = self.store.save(trainer, self.history())
            self.saved = True
        except StoreError as err:  # the run is kept in memory; the page says it was not stored
            self.saved, self.save_error = False, str(err)

    def _update_pictures(self, step: int) -> None:
        trainer = self.trainer
        if isinstance(trainer, RemoteTrainer):  # drawn by the worker from its weights at this step
            taken = dict(trainer.pictures)
        else:
            running = [k for k in trainer.models if trainer.states[k].status == "running"]
            taken = {k: pictures.picture(trainer.models[k], trainer.dataset) for k in running}
        with self._lock:
            self._pictures.update(taken)
            self._picture_step = step
            self._version += 1

    # ---- live changes and forks

    def set_skip_scale(self, model: str, alpha: float) -> None:
        """Change a model's skip scale from the next step on (this run's own viewers only: see the service)."""
        self.key = None
        if self.trainer is not None:
            self.trainer.set_skip_scale(model, alpha)
        self._alphas[model] = alpha

    def skip_scale(self, model: str) -> float:
        """The skip scale last asked for (in force from the next step on), else the one in force: a slider
        that showed the trainer's value until the next step jumped back for a moment after each move."""
        if model in self._alphas:
            return self._alphas[model]
        if self.trainer is not None:
            return self.trainer.skip_scale(model)
        return self.request.models[model].alpha

    def skip_events(self) -> list[tuple[str, int, float]]:
        """(model, step, alpha) of the live skip changes so far, without copying the chart tables as `view` does."""
        trainer = self.trainer
        return list(trainer.skip_events) if trainer else []

    def fork_seed(self, timeout: float = 30.0) -> ForkSeed:
        """The state a fork starts from, taken between two steps by the training thread."""
        if self.trainer is None and not self.done:
            return ForkSeed(None, None)  # not started yet: the fork is a fresh run of the same request
        ready, box = threading.Event(), []
        with self._lock:
            self._forks.append((ready, box))
        if self.done:
            self._serve_forks()
        ready.wait(timeout)
        return box[0] if box else ForkSeed(None, None)

    def _may_run_ahead(self) -> bool:
        """Whether its worker may run a step ahead (`RemoteTrainer`): not while a fork waits for this run's state,
        nor while it must yield its slot (it parks after a step the worker waits after)."""
        return not self._forks and not self.scheduler.must_yield(self.ticket)

    def _serve_forks(self) -> None:
        with self._lock:
            waiting, self._forks = self._forks, []
        if not waiting:
            return
        trainer = self.trainer
        seed = ForkSeed(trainer.capture(), self._history.up_to(trainer.step)) if trainer else ForkSeed(None, None)
        for ready, box in waiting:
            box.append(seed)
            ready.set()

    # ---- what viewers read

    def history(self):
        """The full history so far (exact records), for the store and downloads."""
        with self._lock:
            compact = self._history
        return compact.history() if compact is not None else None

    def _starting_up(self) -> None:
        with self._stepped:
            self._start_up = True
            self._stepped.notify_all()

    def on_done(self) -> None:
        with self._stepped:  # wakes a click waiting for the first steps of a run that ended without them
            self._stepped.notify_all()

    def wait_for_step(self, step: int, timeout: float) -> bool:
        """Block until the run has reached `step` (or `timeout` passed, or the run ended): the click that starts a
        run then draws its first points itself instead of leaving them to the next refresh, up to a second
        later. True if the step is reached. A queued run returns at once (its first step may be minutes away),
        unless the slot it waits for is held by background work, which gives it up at its next step; so does a
        run waiting for a worker process to start up (on a fresh server: the page then says it is starting)."""

        def reached() -> bool:
            return self._history is not None and self._history.last_step() >= step

        if not self.scheduler.starts_soon(self.ticket):
            timeout = 0.0
        with self._stepped:
            self._stepped.wait_for(lambda: reached() or self.done or self._start_up, timeout)
            return reached()

    def _chart_frames(self) -> tuple[DataFrame, DataFrame]:
        """The chart tables as frames, made once per version for every tab. Made when a view's rows are first
        read, not with the view: thirty tabs each see a new version at their refresh (the run steps several
        times a second), but the lab redraws a run's charts at most every 0.8 s, and 15-25 ms of frames per
        version, under the lock the training thread needs after every step, mostly went undrawn."""
        with self._lock:
            if self._frames[0] != self._version:
                tables = self._tables or ChartTables({}, {})  # nothing drawn yet: empty tables with their columns
                self._frames = (self._version, tables.steps_frame(), tables.layers_frame())
            return self._frames[1], self._frames[2]

    def view(self) -> RunView:
        with self._lock:
            version = self._version
            taken, picture_step = dict(self._pictures), self._picture_step
        trainer = self.trainer
        step = trainer.step if trainer else self.fork_step
        elapsed = (self._ended or time.perf_counter()) - self._started if self._started else 0.0
        rate = (step - self._start_step) / elapsed if elapsed > 0 and step > self._start_step else 0.0
        total = self.estimate.steps
        position, wait = self.scheduler.position(self.ticket)
        states = (
            {k: ModelState(s.status, s.step, s.message) for k, s in trainer.states.items()}
            if trainer
            else {k: ModelState() for k in self.request.models}
        )
        status = "queued" if position else self.status  # a run building its models holds its slot: running
        return RunView(
            id=self.id,
            status=status,
            message=self.message,
            step=step,
            total_steps=total,
            steps_per_epoch=self.estimate.steps_per_epoch,
            steps_per_second=rate,
            eta_seconds=(total - step) / rate if rate else float("nan"),
            queue_position=position,
            queue_wait_seconds=wait,
            states=states,
            skip_events=self.skip_events(),
            frames=self._chart_frames,
            viewers=len(self.viewers),
            fork_step=self.fork_step,
            pictures=taken,
            picture_step=picture_step,
            saved=self.saved,
            save_error=self.save_error,
            version=version,
        )
