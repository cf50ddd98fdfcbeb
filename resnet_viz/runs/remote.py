"""Training in a worker process, so that drawing a run never slows it.

A Streamlit server builds every page and figure in Python threads of one process. A training thread
beside them needs the GIL back after every torch op, and waits for it while a page builds figures:
with one tab open, the app trained at 0.12x its headless speed (0.5x after the cheaper fixes in
`ui/session.py` and `figures/common.py`). `RemoteTrainer` runs the `Trainer` in a worker process
(runs/worker.py) with its own interpreter, and mirrors here what the rest of the app reads from a
trainer (records, step, states, snapshots, skip events, final weights), so `LiveRun`, the analysis
pages and the store use either one the same way.

Workers are kept warm in a `WorkerPool`: starting one imports torch (seconds), so the server starts
one when it starts, and a worker that finished a run trains the next one.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

import torch

from ..data import DataConfig
from ..models import ModelConfig, Net, set_skip_scale
from ..training import (
    Lockstep,
    ModelState,
    StepRecord,
    TrainConfig,
    TrainerState,
    check_skip_change,
)
from .worker import Mirror, get, put


class Worker:
    """One `python -m resnet_viz.runs.worker` process and its pipes."""

    def __init__(self) -> None:
        """Started with the server's own environment, as the headless engine runs: each run sets its thread
        count itself (`worker.train_one`). It once started with OMP_NUM_THREADS=1, and trained the default pair
        at 0.79-0.84 of the headless engine against 0.90-0.98 without it (measured in turn, no Streamlit). The time
        went to OpenMP threads waiting busily on the cores the pair's two model threads step on: beside that
        variable, OMP_WAIT_POLICY=passive or GOMP_SPINCOUNT=0 (no busy wait) gave it back, and
        OMP_WAIT_POLICY=active (busy wait only) made the pair 1.6x slower still."""
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from resnet_viz.runs.worker import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._ready = False  # it has said it is ready (`worker.main`)

    def ready(self) -> bool:
        """Whether it has imported torch and is ready to train; never blocks."""
        if not self._ready and self.alive:
            readable, _, _ = select.select([self.process.stdout], [], [], 0)
            if readable:
                with contextlib.suppress(RuntimeError):  # it ended instead: `alive` says so
                    self._ready = self._read() == ("ready",)
        return self._ready

    def put(self, message: tuple) -> None:
        try:
            put(self.process.stdin, message)
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise self._gone() from None

    def get(self) -> tuple:
        """The next message of a run, past the "ready" when the run came before it."""
        message = self._read()
        while message == ("ready",):
            self._ready = True
            message = self._read()
        return message

    def _read(self) -> tuple:
        try:
            return get(self.process.stdout)
        except (EOFError, ValueError):
            raise self._gone() from None

    def _gone(self) -> RuntimeError:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"the training process ended unexpectedly (exit code {code})")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Close its input (it leaves when it reads the end) and make sure it has gone."""
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):  # a broken pipe on flush: it has gone already
                stream.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WorkerPool:
    """Warm training workers: `take()` one for a run, `give()` it back after; at most `idle` kept waiting.

    A worker is ready once it has imported torch and trained a first tiny net (`worker.warm`): about 3 s after its
    start, more while other work holds the cores. A run takes a ready worker when there is one, else waits for
    the first of the free ones to be ready (the oldest is furthest on: a new one would be later still), or for
    the worker a parking run is handing back (`returning`). Seen on a fresh server: a student's Train beside a
    running sweep took a worker started a moment before and waited 3.4 s for it, while the sweep's warm worker
    came back 0.26 s after the click."""

    LONGEST_WAIT = 30.0  # seconds a run waits for a free worker to be ready before it takes it as it is

    def __init__(self, idle: int = 1, start: Callable[[], Worker] = lambda: Worker()) -> None:
        """`start`: starts a worker (a test's fake)."""
        self.idle = idle
        self._start = start
        self._free: list[Worker] = []  # oldest first
        self._returning = 0  # workers on their way back from parking runs
        self._changed = threading.Condition()

    def take(self, on_start_up: Callable[[], None] | None = None) -> Worker:
        """A worker for a run; `on_start_up` is called once if the run must wait for a worker's start-up (none ready,
        none coming back from a parking run): seconds, not a step."""
        deadline = time.monotonic() + self.LONGEST_WAIT
        told = on_start_up is None
        with self._changed:
            while True:
                for worker in [w for w in self._free if not w.alive]:
                    self._free.remove(worker)
                    worker.close()
                ready = [w for w in self._free if w.ready()]
                if ready:
                    self._free.remove(ready[0])
                    return ready[0]
                if not told and not self._returning:
                    on_start_up()
                    told = True
                left = deadline - time.monotonic()
                if left <= 0 or not (self._free or self._returning):
                    break
                # A give() wakes this at once; a starting worker's "ready" is looked for every 50 ms.
                self._changed.wait(min(left, 0.05))
            if self._free:
                return self._free.pop(0)
        return self._start()

    def give(self, worker: Worker) -> None:
        """Keep `worker` for the next run; past `idle`, one still starting goes first (it is the furthest from
        ready: on a fresh server, a parked sweep's warm worker was closed to keep two that were importing torch)."""
        if not worker.alive:
            worker.close()
            return
        with self._changed:
            self._free.append(worker)
            surplus = []
            while len(self._free) > self.idle:
                starting = [w for w in self._free if not w.ready()]
                surplus.append(starting[-1] if starting else self._free[0])
                self._free.remove(surplus[-1])
            self._changed.notify_all()
        for extra in surplus:
            extra.close()

    @contextlib.contextmanager
    def returning(self) -> Iterator[None]:
        """While a parking run's worker is on its way back: a run that finds no free worker waits for it."""
        with self._changed:
            self._returning += 1
        try:
            yield
        finally:
            with self._changed:
                self._returning -= 1
                self._changed.notify_all()

    def warm(self, up_to: int | None = None) -> None:
        """Start idle workers up to `up_to` (default `idle`) now, so the next runs do not wait for torch to import."""
        with self._changed:
            missing = min(self.idle, self.idle if up_to is None else up_to) - len(self._free)
            self._free.extend(self._start() for _ in range(max(0, missing)))
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            workers, self._free = self._free, []
        for worker in workers:
            worker.close()


POOL = WorkerPool()  # the process's workers (a server warms it when it starts: `POOL.warm()`)


class RemoteTrainer(Lockstep):
    """A `Trainer` in a child process, with the same interface for what a `LiveRun` and its readers use.

    `models` are CPU copies with the worker's weights at the end of the run; `pictures` holds the family's
    pictures the worker drew from its own weights, every `picture_every` steps when asked (`pictures`).
    """

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        train: TrainConfig,
        data: DataConfig,
        stop: threading.Event | None = None,
        start: TrainerState | None = None,
        threads: int = 1,
        picture_every: int = 0,
        run_ahead: Callable[[], bool] | None = None,
        on_start_up: Callable[[], None] | None = None,
    ) -> None:
        """`on_start_up`: called if the run waits for a worker to start up (`WorkerPool.take`).

        `run_ahead`: asked at each step; while it says yes, the worker holds the word to go on for one step
        more than it is taking, so it never waits for this side (a `LiveRun`: unless a fork waits for the run's
        state). Skip changes, thread counts and stops asked for meanwhile then land up to two steps later
        (`skip_events` says where), and `capture()` needs a step after which the worker waits (`waiting`).
        Without it, lockstep: the worker waits after every step until this side has handled it."""
        # the mirror models live on the CPU (the worker may train on CUDA)
        super().__init__(models, train, data, stop, None, torch.device("cpu"))
        self.threads = threads  # intra-op threads of the worker from its next step on
        self._alpha = {k: _alpha_of(m) for k, m in self.models.items()}  # skip scale in force per model
        self._pending: dict[str, float] = {}
        self._final: TrainerState | None = None
        if start is not None:
            self.step = start.step
            self.states = {k: ModelState(s.status, s.step, s.message) for k, s in start.states.items()}
            self.snapshots = {k: list(v) for k, v in start.snapshots.items()}
            self.skip_events = list(start.skip_events)
            self._alpha = dict(start.alphas)
        self._start, self._picture_every = start, picture_every
        self.pictures: dict[str, tuple] = {}  # model -> its latest picture from the worker
        self._worker: Worker | None = None
        self._run_ahead = run_ahead
        self._on_start_up = on_start_up
        self._gone_on = 0  # "go"s sent this run; the n-th lets the worker take its next step after step message n
        self._parked: TrainerState | None = None  # the state it goes on from, while parked without a worker (`park`)

    # ---- the loop (run by the LiveRun's thread)

    def run(self) -> Iterator[list[StepRecord]]:
        """The worker's records, step by step; in lockstep the worker waits between two yields (like `Trainer.run`)."""
        self._worker = worker = POOL.take(self._on_start_up)
        ended = False  # the worker finished this run (done or failed) and can train the next one
        try:
            self._setup(worker, self._start)
            self._start = None  # the worker has it
            received = 0  # step messages
            while True:
                message = worker.get()
                if message[0] == "failed":
                    ended = True
                    raise RuntimeError(message[1])
                if message[0] == "done":
                    ended = True
                    _, mirror, final = message
                    self._update(mirror)
                    self._final = self._with_snapshots(final)
                    self._load(final)
                    return
                _, records, mirror = message
                received += 1
                self._update(mirror)
                if self._run_ahead is not None and self._run_ahead():
                    self._go(worker, received + 1)  # for this step and the next: it goes on without waiting
                self.waiting = self._gone_on < received
                yield records
                if self._parked is None:
                    self._go(worker, received)
                elif self.stop.is_set():  # stopped while parked: it ends where it got to, with no worker
                    self._end_parked()
                    return
                else:  # its slot is back: a worker goes on from the parked state
                    start, self._parked = self._parked, None
                    worker = self._worker = POOL.take()
                    self._gone_on, self.waiting = received, False  # the setup is its word for the next step
                    self._setup(worker, start)
        finally:
            if ended:
                POOL.give(worker)
            elif self._parked is None:  # left mid-run (an error here, or the loop was abandoned): the worker goes too
                worker.close()

    def _setup(self, worker: Worker, start: TrainerState | None) -> None:
        """Start the run in `worker`, from `start` if given, with the skip changes asked for so far."""
        with self._lock:
            alphas, self._pending = self._pending, {}  # asked for before the start: from the first step on
        worker.put((self.configs, self.train, self.dataset, start, alphas, self.threads, self._picture_every))

    def park(self) -> None:
        """Between two steps the worker waits after: take the run's state from the worker and give the worker
        back to the pool, so that a watched run that takes this run's slot does not wait seconds for a new
        process to import torch. The run goes on from that state, in whichever worker is free, at its next step.
        Bit-identical to a run never parked: state, batches and random numbers all travel (`TrainerState`)."""
        if not self.waiting or self._worker is None or self._parked is not None:
            raise RuntimeError("park() needs a worker waiting between two steps")
        with POOL.returning():
            self._worker.put(("park",))
            message = self._worker.get()
            if message[0] != "parked":
                raise RuntimeError(f"the worker answered {message[0]!r} to park")
            self._parked = self._with_snapshots(message[1])
            POOL.give(self._worker)
        self._worker = None

    def _end_parked(self) -> None:
        """A run stopped while parked ends as the worker would have: from the parked state, each model still
        running stopped, with a snapshot of where it got to."""
        state, self._parked = self._parked, None
        self._load(state)
        self._finish()
        self._final = replace(self._with_snapshots(state), states={k: replace(s) for k, s in self.states.items()})

    def _load(self, state: TrainerState) -> None:
        """The mirror models take the worker's weights and skip scales (at the run's end)."""
        for key, weights in state.models.items():
            set_skip_scale(self.models[key], state.alphas[key])
            self.models[key].load_state_dict(weights)

    def _go(self, worker: Worker, upto: int) -> None:
        """Send "go"s up to the `upto`-th, the first with the skip changes, threads and stop asked for so far."""
        while self._gone_on < upto:
            with self._lock:
                alphas, self._pending = self._pending, {}
            worker.put(("go", self.threads, alphas, self.stop.is_set()))
            self._gone_on += 1

    def _update(self, mirror: Mirror) -> None:
        self.step, self.states = mirror.step, mirror.states
        for key, snaps in mirror.snapshots.items():
            self.snapshots[key].extend(snaps)
        self.skip_events = mirror.skip_events
        self._alpha.update(mirror.alphas)
        self.pictures.update(mirror.pictures or {})

    def _with_snapshots(self, state: TrainerState) -> TrainerState:
        """A worker's state (sent without snapshots) with the snapshots mirrored here up to the same step."""
        return replace(state, snapshots={k: list(v) for k, v in self.snapshots.items()})

    # ---- what a LiveRun asks between two steps

    def capture(self) -> TrainerState:
        """The worker's whole training state between the same two steps (after the end: its final state)."""
        if self._final is not None:
            return self._final
        if self._parked is not None:
            return self._parked
        if self._worker is None:
            raise RuntimeError("capture() before run(): nothing trained yet")
        if not self.waiting:
            raise RuntimeError("capture() while the worker runs ahead: wait for a step it waits after")
        self._worker.put(("capture",))
        return self._with_snapshots(self._worker.get()[1])

    def set_skip_scale(self, key: str, alpha: float) -> None:
        """Change a model's skip scale from the worker's next step on (thread-safe, checked like Trainer's)."""
        check_skip_change(self.models, key, alpha)
        with self._lock:
            self._pending[key] = float(alpha)

    def skip_scale(self, key: str) -> float:
        """The skip scale asked for last (in force from the next step)."""
        with self._lock:
            return self._pending.get(key, self._alpha[key])

    def set_threads(self, threads: int) -> None:
        self.threads = threads


def _alpha_of(model: Net) -> float:
    blocks = [m for m in model.modules() if hasattr(m, "alpha")]
    return float(blocks[0].alpha) if blocks else 0.0
