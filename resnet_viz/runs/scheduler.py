"""Who trains now: slots by cores, watched runs first, FIFO within a level, a memory budget, threads per run.

On two cores, two intra-op threads per run while anything else trains is an order of magnitude
slower than one (measured: a depth-8 net 24.9 s with 2 threads against 2.1 s with 1). So a run
holds one core at least, as many runs train at once as there are cores (two single-thread MLP runs
together on 2 cores), and a run's threads are re-planned between its steps: alone, a CNN run uses
every core; beside another run, one each. The threads never add up to more than the cores.

A run someone is watching (priority 0) goes before background work (priority 1: sweeps, warm-up,
pairs nobody watches); a background run yields its slot between two steps when a watched run waits
and no slot is free, or when a watched run beside it would get more threads without it, and goes on
where it stopped when that is over (a run in a worker process gives its worker back meanwhile:
`RemoteTrainer.park`). The estimated memory of the runs training at once stays under the server's budget.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .budget import ASSUMED_FLOPS_PER_CORE, Estimate, Limits

WATCHED, BACKGROUND = 0, 1


def _env_cores() -> int:
    """``RESNET_VIZ_CORES`` if set to a positive integer, else the machine's cores."""
    env = os.environ.get("RESNET_VIZ_CORES", "")
    return int(env) if env.isdigit() and int(env) > 0 else os.cpu_count() or 1


@dataclass(eq=False)
class Ticket:
    """A run's place with the scheduler."""

    estimate: Estimate  # its cost, for the memory budget and the wait estimate
    priority: int = WATCHED  # WATCHED or BACKGROUND; may change while it waits or trains
    seq: int = 0  # arrival order (FIFO within a priority level)
    threads: int = 0  # intra-op threads granted now (0 while not training)
    done_flops: float = 0.0  # training FLOPs done so far (for the wait estimate)
    running: bool = False
    waiting: bool = False


@dataclass
class Scheduler:
    """Thread-safe; one per server. `acquire` blocks a run's worker until its turn."""

    cores: int = field(default_factory=lambda: _env_cores())
    limits: Limits = field(default_factory=Limits.from_env)

    def __post_init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._seq = itertools.count()
        self._running: list[Ticket] = []
        self._waiting: list[Ticket] = []
        self.flops_per_second = ASSUMED_FLOPS_PER_CORE * self.cores  # measured throughput, updated as runs train

    # ---- queue

    def ticket(self, estimate: Estimate, priority: int) -> Ticket:
        return Ticket(estimate, priority, next(self._seq))

    def _order(self) -> list[Ticket]:
        return sorted(self._waiting, key=lambda t: (t.priority, t.seq))

    def _fits(self, t: Ticket) -> bool:
        if len(self._running) >= self.cores:
            return False
        if t.priority == BACKGROUND and self._slows_watched([*self._running, t], self._running):
            return False
        used = sum(r.estimate.peak_mb for r in self._running)
        return not self._running or used + t.estimate.peak_mb <= self.limits.memory_mb

    def _slows_watched(self, with_it: list[Ticket], without: list[Ticket]) -> bool:
        """Whether a watched run in `without` would get fewer threads in `with_it` (background work beside it)."""
        slower, faster = self._shares(with_it), self._shares(without)
        return any(r.priority == WATCHED and slower[r] < faster[r] for r in without)

    def acquire(self, t: Ticket, stop: threading.Event) -> bool:
        """Wait for a slot: first in (priority, arrival) order among the waiting that fit. False if stopped."""
        with self._cond:
            t.waiting = True
            self._waiting.append(t)
            self._cond.notify_all()
            try:
                while not stop.is_set() and not (self._order()[0] is t and self._fits(t)):
                    self._cond.wait(timeout=0.5)
                if stop.is_set():
                    return False
                t.running = True
                self._running.append(t)
                self._replan()
                return True
            finally:
                t.waiting = False
                self._waiting.remove(t)
                self._cond.notify_all()

    def release(self, t: Ticket) -> None:
        with self._cond:
            if t in self._running:
                self._running.remove(t)
            t.running, t.threads = False, 0
            self._replan()
            self._cond.notify_all()

    def must_yield(self, t: Ticket) -> bool:
        """Whether `t` is background work holding a slot that a waiting watched run needs, or cores that a
        watched run training beside it would use (a pair beside a sweep on two cores got one thread, not two)."""
        with self._cond:
            if t.priority != BACKGROUND or not t.running:
                return False
            if len(self._running) >= self.cores and any(w.priority == WATCHED for w in self._waiting):
                return True
            return self._slows_watched(self._running, [r for r in self._running if r is not t])

    def checkpoint(self, t: Ticket, stop: threading.Event, on_yield: Callable[[], None] | None = None) -> int:
        """Between two steps: yield to waiting watched work if background, then the threads to use now.
        `on_yield` runs just before the slot is given up (a run in a worker process parks there)."""
        if self.must_yield(t):
            if on_yield is not None:
                on_yield()
            self.release(t)
            if not self.acquire(t, stop):
                return 0
        with self._cond:
            return t.threads

    def _replan(self) -> None:
        for r, threads in self._shares(self._running).items():
            r.threads = threads

    def _shares(self, runs: list[Ticket]) -> dict[Ticket, int]:
        """Threads per run if `runs` train together: MLPs one; CNNs share what is left, at least one each."""
        cnns = [r for r in runs if r.estimate.family != "mlp"]
        share = max(1, (self.cores - (len(runs) - len(cnns))) // max(1, len(cnns)))
        return {r: share if r.estimate.family != "mlp" else 1 for r in runs}

    def progress(self, t: Ticket, flops: float, seconds: float) -> None:
        """A run reports work done; keeps the measured throughput for wait estimates."""
        with self._cond:
            t.done_flops = flops
            if seconds > 1.0 and flops > 0:
                rate = flops / seconds * max(1, len(self._running))
                self.flops_per_second = 0.8 * self.flops_per_second + 0.2 * rate

    # ---- what a queued run can say

    def position(self, t: Ticket) -> tuple[int, float]:
        """(1-based place in the queue, estimated seconds until it starts); (0, 0) unless waiting."""
        with self._cond:
            if not t.waiting:
                return 0, 0.0
            order = self._order()
            ahead = order[: order.index(t)]
            work = sum(max(0.0, r.estimate.train_flops - r.done_flops) for r in self._running)
            work += sum(w.estimate.train_flops - w.done_flops for w in ahead)
            # the running runs share the cores; a queued run starts when the work ahead of it is done
            wait = work / self.flops_per_second if ahead or not self._fits(t) else 0.0
            return len(ahead) + 1, wait

    def starts_soon(self, t: Ticket) -> bool:
        """Whether `t` trains now or gets a slot within about a step: first in line, and a slot is free or held
        by background work, which yields to it between two steps (`checkpoint`) if it is watched."""
        with self._cond:
            if t.running:
                return True
            ahead = [w for w in self._waiting if w is not t and (w.priority, w.seq) < (t.priority, t.seq)]
            if ahead:
                return False
            return self._fits(t) or (t.priority == WATCHED and any(r.priority == BACKGROUND for r in self._running))

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate()` holds after a queue change (or `timeout`): the server's start-up waits so for
        its first runs to end (`ui.session._preload`); benchmarks and tests for a queue state."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def counts(self) -> tuple[int, int]:
        """(runs training, runs waiting)."""
        with self._cond:
            return len(self._running), len(self._waiting)
