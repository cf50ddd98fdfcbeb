"""Background training jobs and the server-wide limit on how many train at once.

A `Job` wraps the training engine in a worker thread. It touches no UI: it owns a lock-protected
history, a stop event and a status, and hands out consistent copies (`view()`) for a UI to draw
from. A `JobLimiter` bounds the jobs training at once across the whole server (several students on
one machine); a job over the limit waits in a queue and says so.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from .data import DataConfig
from .models import ModelConfig
from .probes import decision_grid
from .training import History, ModelState, StepRecord, TrainConfig, Trainer

JobStatus = Literal["queued", "running", "finished", "stopped", "failed"]


def default_max_jobs() -> int:
    """Concurrent jobs: ``RESNET_VIZ_MAX_JOBS`` if set, else one per two cores (at least one)."""
    env = os.environ.get("RESNET_VIZ_MAX_JOBS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 2) // 2)


class JobLimiter:
    """A counting semaphore that also knows how many jobs wait, so a queued job can say where it is."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []

    def acquire(self, owner: object, stop: threading.Event) -> bool:
        """Wait for a free slot (FIFO); False if `stop` was set while waiting."""
        with self._cond:
            self._waiting.append(owner)
            try:
                while not stop.is_set() and (self._running >= self.max_jobs or self._waiting[0] is not owner):
                    self._cond.wait(timeout=0.25)
                if stop.is_set():
                    return False
                self._running += 1
                return True
            finally:
                self._waiting.remove(owner)
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def position(self, owner: object) -> int:
        """1-based place in the queue, 0 if not waiting."""
        with self._cond:
            return self._waiting.index(owner) + 1 if owner in self._waiting else 0

    @property
    def running(self) -> int:
        with self._cond:
            return self._running


LIMITER = JobLimiter(default_max_jobs())


def threads_for(family: str, max_jobs: int) -> int:
    """Intra-op threads for a job's worker thread.

    Each Python thread has its own OpenMP team, sized to every core unless set in that thread. Tiny
    MLP ops lose more to synchronising threads than they gain (measured here: a 32-layer MLP trained
    25x slower in a worker thread with 2 threads than with 1), so MLPs get one; CNNs share the cores
    among the jobs allowed to run at once.
    """
    return 1 if family == "mlp" else max(1, (os.cpu_count() or 1) // max(1, max_jobs))


@dataclass
class JobView:
    """A consistent copy of a job's state for drawing: safe to read while the job trains on."""

    status: JobStatus
    message: str  # failure or queue message
    step: int  # steps done
    total_steps: int
    steps_per_epoch: int
    steps_per_second: float
    eta_seconds: float
    queue_position: int  # 0 unless queued
    states: dict[str, ModelState]  # per model: finished / stopped / diverged and why
    records: list[StepRecord]  # every record so far (a new list; records are not mutated after creation)
    skip_events: list[tuple[str, int, float]]  # (model, step, alpha) for each live skip change
    layer_names: dict[str, list[str]] = field(default_factory=dict)
    block_names: dict[str, list[str]] = field(default_factory=dict)
    boundaries: dict[str, tuple] = field(default_factory=dict)  # 2-D data: model -> (xs, ys, P(class 1))
    boundary_step: int = 0  # step the boundaries were computed at

    def history(self) -> History:
        return History(self.layer_names, self.block_names, list(self.records))


class Job:
    """Trains a `Trainer` in a daemon thread; `view()` and `stop()` are safe from any thread."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        train: TrainConfig,
        data: DataConfig,
        limiter: JobLimiter = LIMITER,
        on_done: Callable[[Job], None] | None = None,
        boundary_every: int = 10,
    ) -> None:
        self.stop_event = threading.Event()
        self.trainer = Trainer(models, train, data, self.stop_event)  # validates: raises ConfigError early
        self.limiter = limiter
        self.on_done = on_done
        self.status: JobStatus = "queued"
        self.message = ""
        self._history = self.trainer.history()
        self._lock = threading.Lock()
        # 2-D data: the decision boundaries are recomputed every `boundary_every` steps, between steps.
        self.boundary_every = boundary_every if self.trainer.dataset.family == "mlp" else 0
        self._boundaries: dict[str, tuple] = {}
        self._boundary_step = 0
        self._started_at = 0.0
        self._thread = threading.Thread(target=self._work, name="resnet-viz-job", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the job to stop between steps (or leave the queue)."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self.status in ("finished", "stopped", "failed")

    def set_skip_scale(self, key: str, alpha: float) -> None:
        self.trainer.set_skip_scale(key, alpha)

    def _work(self) -> None:
        if not self.limiter.acquire(self, self.stop_event):
            self.status = "stopped"
            self.message = "stopped while queued"
            self._finish()
            return
        try:
            torch.set_num_threads(threads_for(self.trainer.dataset.family, self.limiter.max_jobs))
            self.status = "running"
            self._started_at = time.perf_counter()
            for records in self.trainer.run():
                with self._lock:
                    self._history.add(records)
                step = records[0].step
                if self.boundary_every and (step % self.boundary_every == 0 or step == self.trainer.total_steps):
                    self._update_boundaries(step)
            self.status = "stopped" if self.stop_event.is_set() else "finished"
        except Exception as exc:  # a job must never take the server down; the UI shows the message
            self.status = "failed"
            self.message = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            self.limiter.release()
            self._finish()

    def _finish(self) -> None:
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:  # saving a finished run must not turn it into a failed one
                traceback.print_exc()

    def _update_boundaries(self, step: int) -> None:
        points = self.trainer.dataset.x_train
        low = tuple((points.min(0).values - 0.3).tolist())
        high = tuple((points.max(0).values + 0.3).tolist())
        grids = {
            k: decision_grid(m, low, high)
            for k, m in self.trainer.models.items()
            if self.trainer.states[k].status == "running"
        }
        with self._lock:
            self._boundaries.update(grids)
            self._boundary_step = step

    def history(self) -> History:
        """A copy of the history so far."""
        with self._lock:
            return History(self._history.layer_names, self._history.block_names, list(self._history.records))

    def view(self) -> JobView:
        with self._lock:
            records = list(self._history.records)
            boundaries, boundary_step = dict(self._boundaries), self._boundary_step
        step = records[-1].step if records else 0
        elapsed = time.perf_counter() - self._started_at if self._started_at else 0.0
        rate = step / elapsed if elapsed > 0 and step else 0.0
        remaining = self.trainer.total_steps - step
        return JobView(
            status=self.status,
            message=self.message,
            step=step,
            total_steps=self.trainer.total_steps,
            steps_per_epoch=self.trainer.steps_per_epoch,
            steps_per_second=rate,
            eta_seconds=remaining / rate if rate else float("nan"),
            queue_position=self.limiter.position(self),
            states={k: ModelState(s.status, s.step, s.message) for k, s in self.trainer.states.items()},
            records=records,
            skip_events=list(self.trainer.skip_events),
            layer_names=self._history.layer_names,
            block_names=self._history.block_names,
            boundaries=boundaries,
            boundary_step=boundary_step,
        )
