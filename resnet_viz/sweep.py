"""The depth sweep: plain and residual nets at several depths, one fixed budget (He et al. 2015, Fig. 1).

He et al. 2015 found that a deeper plain net ends with a *higher training error* than a shallower
one (the degradation problem, Fig. 1 and Fig. 4 left), while the residual nets of the same depths keep
improving (Fig. 4 right), and that the residual functions respond more weakly than plain layers
(Fig. 7). The sweep reproduces that on a small dataset: each grid point (depth, seed) trains the plain
and the residual net of that depth in lockstep (identical init and batches) as one stored run, so a
rerun, or a class replaying the same sweep, loads finished points from the run store instantly.

Runs are requested one at a time from the run service as background work (a run someone watches
goes first; a point another session is already training is waited for, not trained twice). A sweep
can be stopped between steps (the interrupted run is not stored) and resumed later: the finished
runs come back from the store and are reported as cached.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from .data import DataConfig
from .models import ConfigError, ModelConfig
from .runs import BACKGROUND, LiveRun, RunRequest, RunService
from .store import RunStore, StoredRun, run_key
from .tasks import Task
from .training import StepRecord, TrainConfig

SweepStatus = Literal["queued", "running", "finished", "stopped", "failed"]
BASIC_DEPTHS = (8, 14, 20, 32, 44, 56)  # 6n+2 for n = 1, 2, 3, 5, 7, 9: He et al.'s CIFAR family, shrunk
MAX_SEEDS = 3


@dataclass(frozen=True)
class SweepConfig:
    """A grid of (depth, seed) points; each trains a plain and a residual net in lockstep."""

    depths: tuple[int, ...] = BASIC_DEPTHS  # depths to compare; each must suit the block type (6n+2 for basic)
    seeds: tuple[int, ...] = (0,)  # 1 to 3 training seeds (init and batch order); each replaces train.seed
    model: ModelConfig = ModelConfig()  # the base net: everything but depth and skip, which the grid sets
    train: TrainConfig = TrainConfig()  # the same fixed budget (epochs, lr schedule) for every run
    data: DataConfig = DataConfig()  # the dataset every run trains on

    def validate(self) -> SweepConfig:
        """Raise ConfigError naming the field (depths, seeds, or a model/train/data field); return self."""
        self.data.validate()
        self.train.validate()
        base = self.model.validate()
        if not self.depths or len(set(self.depths)) != len(self.depths):
            raise ConfigError("depths", f"must be one or more different depths; got {list(self.depths)}")
        family = self.data.model_fields()["family"]
        for depth in self.depths:
            try:
                replace(base, family=family, depth=depth).validate()
            except ConfigError as err:
                raise ConfigError("depths" if err.field == "depth" else err.field, err.message) from err
        if not 1 <= len(self.seeds) <= MAX_SEEDS or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"must be 1 to {MAX_SEEDS} different seeds; got {list(self.seeds)}")
        for seed in self.seeds:
            if not isinstance(seed, int) or not 0 <= seed < 2**31:
                raise ConfigError("seeds", f"each seed must be an integer from 0 to 2^31-1; got {seed!r}")
        return self

    def points(self) -> list[tuple[int, int]]:
        """(depth, seed) in run order: every depth of the first seed, shallow to deep, then the next seed."""
        return [(depth, seed) for seed in self.seeds for depth in sorted(self.depths)]

    def models(self, depth: int) -> dict[str, ModelConfig]:
        """The plain/residual pair at `depth`: the same modules, so the same init from one seed."""
        cfg = replace(self.model, depth=depth)
        return {"plain": cfg.with_skip(False), "residual": cfg.with_skip(True)}

    def train_for(self, seed: int) -> TrainConfig:
        return replace(self.train, seed=seed)


def classroom_sweep() -> SweepConfig:
    """Digits at depths 8-56, one seed, 10 epochs: about a minute on 2 idle cores (50 s in the app's worker
    processes, `bench_training --sweep`), replayed from the store in about 0.1 s.

    One seed keeps it to a minute on a server that several students share.

    At depth 56 the plain net ends near loss 2 (chance) while the residual one fits the data
    (loss ~0.003): the degradation problem of He et al. 2015, Fig. 1, in a classroom's minute.
    """
    return SweepConfig(depths=BASIC_DEPTHS, seeds=(0,), train=TrainConfig(epochs=10), data=DataConfig())


@dataclass(frozen=True)
class SweepRun:
    """One finished grid point."""

    depth: int
    seed: int
    run: StoredRun  # the plain/residual pair: configs, history, summaries, weights on demand
    seconds: float  # wall time this sweep spent on it: training, or loading when cached


@dataclass
class SweepView:
    """A consistent copy of a sweep's progress and results, safe to read while the sweep goes on."""

    status: SweepStatus  # queued (waiting for a limiter slot), running, finished, stopped, failed
    message: str  # why it failed or stopped
    runs_done: int  # grid points finished (trained or loaded)
    total_runs: int  # grid points in the sweep
    cached_runs: int  # of runs_done, how many came from the store
    current: tuple[int, int] | None  # (depth, seed) being trained now
    step: int  # steps done in the current run
    total_steps: int  # steps of one run (the same for every run)
    eta_seconds: float  # estimate for the whole sweep from the measured speed; NaN until measured
    queue_position: int  # 1-based place in the limiter queue, 0 unless waiting
    runs: list[SweepRun] = field(default_factory=list)  # finished runs so far, in grid order

    def results_frame(self) -> pd.DataFrame:
        return results_frame(self.runs)

    def curves_frame(self) -> pd.DataFrame:
        return curves_frame(self.runs)

    def responses_frame(self) -> pd.DataFrame:
        return responses_frame(self.runs)


class SweepJob(Task):
    """Runs a sweep, in the caller's thread (`run()`) or as a background task; `view()` and `stop()`
    are safe from any thread. `on_progress(view)` is called after every step and every run."""

    name = "sweep"

    def __init__(
        self,
        config: SweepConfig,
        service: RunService,
        on_progress: Callable[[SweepView], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(stop)
        self.config = config.validate()
        self.service = service
        self.on_progress = on_progress
        self.viewer = f"sweep-{secrets.token_hex(4)}"  # how the run service counts this sweep as a viewer
        self._points = config.points()
        self._lock = threading.Lock()
        self._runs: list[SweepRun] = []
        self._current: tuple[int, int] | None = None
        self._live: LiveRun | None = None  # the run being trained or waited for
        self._step, self._total_steps, self._run_seconds = 0, 0, 0.0  # the current run's progress
        self._untrained: list[tuple[int, int]] = []  # points not in the store when the sweep started, not done yet
        self._trained_work, self._trained_seconds = 0, 0.0  # depth x steps and seconds of runs trained here

    def work(self) -> None:
        """Train or load every grid point in order."""
        store = self.service.store
        self._untrained = [p for p in self._points if not store.has(self._request(*p).key)]
        for depth, seed in self._points:
            if self.stop_event.is_set() or not self._run_point(depth, seed):
                break
        if len(self._runs) < len(self._points):
            self.stop_event.set()
            self.message = f"stopped after {len(self._runs)} of {len(self._points)} runs"

    def on_done(self) -> None:
        with self._lock:
            self._current, self._live = None, None  # a stopped or failed run leaves nothing in progress
        self._notify()

    def _request(self, depth: int, seed: int) -> RunRequest:
        return RunRequest(self.config.models(depth), self.config.train_for(seed), self.config.data)

    def _run_point(self, depth: int, seed: int) -> bool:
        with self._lock:
            self._current, self._step = (depth, seed), 0
        started = time.perf_counter()
        run = self.service.fetch(
            self._request(depth, seed),
            self.viewer,
            self.stop_event,
            BACKGROUND,
            on_step=self._on_step,
            on_wait=self._on_wait,
        )
        if run is None:
            return False
        seconds = time.perf_counter() - started
        with self._lock:
            self._runs.append(SweepRun(depth, seed, run, seconds))
            self._current, self._live = None, None
            if not run.cached:
                self._trained_work += depth * self._total_steps
                self._trained_seconds += run.history.records[-1].seconds
            if (depth, seed) in self._untrained:
                self._untrained.remove((depth, seed))
        self._notify()
        return True

    def _on_step(self, live: LiveRun, records: list[StepRecord]) -> None:
        with self._lock:
            self._live = live
            self._step, self._total_steps, self._run_seconds = records[0].step, live.estimate.steps, records[0].seconds
        self._notify()

    def _on_wait(self, live: LiveRun) -> None:
        """Progress of a run another session started (or of ours while it is queued)."""
        trainer = live.trainer
        with self._lock:
            self._live = live
            self._total_steps = live.estimate.steps
            if trainer is not None:
                self._step = trainer.step
        self._notify()

    def _eta(self) -> float:
        """Seconds left: remaining depth x steps of uncached runs over the measured depth x steps per second.

        Cost per step grows about linearly with depth (FLOPs do), so shallow runs predict deep ones.
        """
        if not self._untrained:
            return 0.0
        depth = self._current[0] if self._current and self._step else 0
        work = self._trained_work + depth * self._step
        seconds = self._trained_seconds + (self._run_seconds if depth else 0.0)
        if not work or not seconds:
            return math.nan
        remaining = sum(d for d, _ in self._untrained) * self._total_steps - depth * self._step
        return max(0.0, remaining) * seconds / work

    def view(self) -> SweepView:
        with self._lock:
            live = self._live
            position = self.service.scheduler.position(live.ticket)[0] if live is not None and not live.done else 0
            return SweepView(
                status="queued" if position else self.status,
                message=self.message,
                runs_done=len(self._runs),
                total_runs=len(self._points),
                cached_runs=sum(r.run.cached for r in self._runs),
                current=self._current,
                step=self._step if self._current else 0,
                total_steps=self._total_steps,
                eta_seconds=self._eta() if self.status == "running" else (0.0 if self.done else math.nan),
                queue_position=position,
                runs=list(self._runs),
            )

    def _notify(self) -> SweepView:
        view = self.view()
        if self.on_progress is not None:
            self.on_progress(view)
        return view


def run_sweep(
    config: SweepConfig,
    service: RunService,
    stop: threading.Event | None = None,
    on_progress: Callable[[SweepView], None] | None = None,
) -> SweepView:
    """Run a sweep in this thread (CLI, notebooks, tests); returns the final view."""
    job = SweepJob(config, service, on_progress, stop)
    job.run()
    return job.view()


# --------------------------------------------------------------------------------------------------
# Tidy tables for the page


RESULT_COLUMNS = [
    "depth",
    "seed",
    "model",
    "status",
    "final_train_loss",
    "final_train_error",
    "final_val_loss",
    "final_val_error",
    "params",
    "flops",
    "seconds",
    "cached",
    "key",
]


def results_frame(runs: list[SweepRun]) -> pd.DataFrame:
    """One row per run and model: final losses and errors (1 - accuracy), size, cost, how it was obtained.

    ``seconds`` is the training time of the run (also for cached runs: when it was trained).
    """
    rows = []
    for r in runs:
        for model, s in r.run.summaries.items():
            rows.append(
                {
                    "depth": r.depth,
                    "seed": r.seed,
                    "model": model,
                    "status": s["status"],
                    "final_train_loss": s["final_train_loss"],
                    "final_train_error": 1.0 - s["final_train_acc"],
                    "final_val_loss": s["final_val_loss"],
                    "final_val_error": 1.0 - s["final_val_acc"],
                    "params": s["params"],
                    "flops": s["flops"],
                    "seconds": s["seconds"],
                    "cached": r.run.cached,
                    "key": r.run.key,
                }
            )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def curves_frame(runs: list[SweepRun]) -> pd.DataFrame:
    """Every step of every run: depth, seed and the History.steps_frame() columns (model, step, loss, ...)."""
    frames = [r.run.history.steps_frame().assign(depth=r.depth, seed=r.seed) for r in runs]
    if not frames:
        return pd.DataFrame(columns=["depth", "seed", "model", "step", "epoch", "loss", "acc", "val_loss", "val_acc"])
    frame = pd.concat(frames, ignore_index=True)
    return frame[["depth", "seed"] + [c for c in frame.columns if c not in ("depth", "seed")]]


def responses_frame(runs: list[SweepRun]) -> pd.DataFrame:
    """Std of each block's residual response for the deepest pair (first seed), He et al. 2015, Fig. 7.

    The probe metric ``act_std`` (the block's residual branch after its last BN, before the addition),
    averaged over the probed steps of the last epoch. Columns: depth, seed, model, block, depth_index,
    act_std. Empty when nothing was probed.
    """
    columns = ["depth", "seed", "model", "block", "depth_index", "act_std"]
    if not runs:
        return pd.DataFrame(columns=columns)
    deepest = min(runs, key=lambda r: (-r.depth, r.seed))
    history = deepest.run.history
    rows = []
    for model, names in history.block_names.items():
        recs = [r for r in history.records if r.model == model]
        last_epoch = recs[-1].step - deepest.run.steps_per_epoch if recs else 0
        stds = [r.probes["act_std"] for r in recs if r.step > last_epoch and r.probes and r.probes.get("act_std")]
        if stds:
            mean = np.mean(stds, axis=0)
            rows += [
                [deepest.depth, deepest.seed, model, n, i, float(v)]
                for i, (n, v) in enumerate(zip(names, mean, strict=True))
            ]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------------
# Describing a sweep

# The depths a new grid starts from when its depth rule changes, per rule (options.DEPTH_RULES).
DEFAULT_DEPTHS: dict[str, tuple[int, ...]] = {
    "basic": BASIC_DEPTHS,
    "bottleneck": (11, 20, 29, 38, 47, 56),  # 9n+2 for n = 1, 2, 3, 4, 5, 6
    "mlp": (4, 8, 16, 32),  # 2n+2 for n = 1, 3, 7, 15
}
ORDER_LABELS = {"post": "post-activation", "pre": "pre-activation"}  # block orders in words


def describe(config: SweepConfig) -> str:
    """One line: data, grid, budget, model and optimiser (what a page shows above the sweep's charts)."""
    m, t = config.model, config.train
    seeds = f"{len(config.seeds)} seed{'s' if len(config.seeds) > 1 else ''}"
    family = "MLP" if not config.data.is_image else f"{m.block} blocks"
    details = [ORDER_LABELS.get(m.order, m.order), "BatchNorm" if m.norm == "batch" else "no normalisation"]
    if config.data.is_image:
        details.append(f"{m.shortcut} shortcuts")
    return (
        f"{config.data.name} · depths {', '.join(map(str, sorted(config.depths)))} · {seeds} · "
        f"{t.epochs} epoch{'s' if t.epochs > 1 else ''} · width {m.width} · {family} ({', '.join(details)}) · "
        f"{t.optimizer.upper()} lr {t.lr:g}, batch {t.batch_size}"
    )


def stored_count(store: RunStore, config: SweepConfig) -> int:
    """Grid points of `config` already in `store`: a rerun loads them instead of training."""
    return sum(store.has(run_key(config.models(d), config.train_for(s), config.data)) for d, s in config.points())
