"""The training engine: one or several models trained in lockstep, as an iterator of step records.

`Trainer.run()` yields, for every optimizer step, one `StepRecord` per model. Several models see the
identical batch sequence and, where their parameters match, start from identical weights (one seed
builds them all): the plain/residual comparison is then controlled, as in He et al. 2015, Fig. 1.

The engine knows nothing about a UI. It stops between steps when its stop event is set, stops a
model whose loss turns NaN, inf or huge (status ``diverged``, its records kept), applies skip-scale changes
between steps, and keeps a bounded number of weight snapshots for later pages. It touches no global
RNG: batch order comes from its own `torch.Generator`.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DataConfig, Dataset, load_dataset
from .models import (
    ConfigError,
    ModelConfig,
    Net,
    block_names,
    build_model,
    conv_layer_names,
    count_params,
    layer_names,
    load_model,
    set_skip_scale,
)
from .options import OPTIONS, OptionError
from .probes import LAYER_METRICS, METRICS, Probe

if TYPE_CHECKING:  # imported where a frame is made: a training worker process never makes one (0.3 s of its start)
    import pandas as pd

# A cross-entropy this large means logits a million apart: the run has blown up. BatchNorm nets can
# keep such a loss finite (BN rescales the exploded weights) for many steps, but they do not recover.
DIVERGED_LOSS = 1e6

Status = Literal["queued", "running", "finished", "stopped", "diverged", "failed"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Validated by `validate()`."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # examples per step
    optimizer: Literal["sgd", "adam"] = "sgd"  # SGD with momentum (He et al.) or Adam
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    weight_decay: float = 1e-4  # L2 penalty, as in He et al. 2015
    warmup_steps: int = 20  # linear warm-up from ~0 to lr; deep nets need it (He et al. 2015, ResNet-110)
    schedule: Literal["constant", "cosine", "step"] = "cosine"  # after warm-up; step: x0.1 at 50% and 75%
    seed: int = 0  # initial weights and batch order
    val_every: int = 0  # steps between validation passes; 0 validates at epoch ends only
    probe_every: int = 1  # measure gradients/responses every k steps; 0 switches probes off
    max_snapshots: int = 12  # weight snapshots kept per model (init and final included)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present

    def validate(self) -> TrainConfig:
        """Every field against its entry in the one options table (resnet_viz/options.py)."""
        for name in (f.name for f in fields(self)):
            try:
                OPTIONS[name].check(getattr(self, name))
            except OptionError as err:
                raise ConfigError(name, f"{err.problem}; got {getattr(self, name)!r}") from None
        return self

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def fit_model(cfg: ModelConfig, data: DataConfig | Dataset) -> ModelConfig:
    """The model config with the fields the data decides (family, channels, size, classes) set from it.
    Not validated: a form may still show an invalid depth."""
    return replace(cfg, **data.model_fields())


def fit_to_data(cfg: ModelConfig, data: DataConfig | Dataset) -> ModelConfig:
    """`fit_model`, validated: what a Trainer builds."""
    return fit_model(cfg, data).validate()


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per pass over `n` examples; a last batch of one example is dropped (BatchNorm needs 2)."""
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is present; use auto or cpu")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else name.replace("auto", "cpu"))


def lr_at(train: TrainConfig, step: int, total: int) -> float:
    """Learning rate for 0-based `step`: linear warm-up, then the schedule over the remaining steps."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    t = (step - train.warmup_steps) / max(1, total - train.warmup_steps)
    if train.schedule == "cosine":
        return train.lr * 0.5 * (1 + math.cos(math.pi * t))
    if train.schedule == "step":  # He et al. 2015, Sec. 4.2: divide by 10 at 32k and 48k of 64k iterations
        return train.lr * (0.1 if t >= 0.5 else 1.0) * (0.1 if t >= 0.75 else 1.0)
    return train.lr


@dataclass
class StepRecord:
    """What one model did in one optimizer step. Probe lists follow the run's layer/block names."""

    model: str  # the model's key in the run ("A", "plain", ...)
    step: int  # optimizer steps done, from 1
    epoch: float  # fractional epochs done
    lr: float  # learning rate used for this step
    loss: float  # training loss of this batch
    acc: float  # training accuracy of this batch
    skip_scale: float  # alpha in force during this step
    seconds: float  # wall time since the run started
    val_loss: float | None = None  # set on validation steps
    val_acc: float | None = None  # set on validation steps
    probes: dict[str, list[float]] | None = None  # METRICS -> values; None on unprobed steps


@dataclass
class Snapshot:
    """A model's weights (and BN statistics) after `step` optimizer steps; step 0 is the init."""

    step: int
    state: dict[str, torch.Tensor]
    skip_scale: float  # alpha in force when it was taken


@dataclass
class ModelState:
    """Status of one model in a run."""

    status: Status = "queued"
    step: int = 0  # last completed step
    message: str = ""  # why it stopped (divergence step, error)


@dataclass
class TrainerState:
    """Everything a run needs to go on exactly where it is, captured between two steps.

    A fork of a shared run starts from this: the same weights, BN statistics, optimizer moments,
    batch order and schedule position, so its next step is bit-identical to the original's when
    nothing was changed (on the same device and thread count).
    """

    step: int  # optimizer steps done
    elapsed: float  # seconds of training behind it (record.seconds go on from here)
    models: dict[str, dict[str, torch.Tensor]]  # model -> state_dict copy
    optimizers: dict[str, dict]  # model -> optimizer state_dict (deep copy)
    alphas: dict[str, float]  # model -> skip scale in force
    generator: torch.Tensor  # batch-order RNG state after drawing the current epoch's permutation
    perm: torch.Tensor | None  # the current epoch's permutation (None before the first step)
    states: dict[str, ModelState]  # model -> status so far
    snapshots: dict[str, list[Snapshot]]  # model -> snapshots so far (tensors shared: never mutated)
    skip_events: list[tuple[str, int, float]]  # live skip changes so far


class Lockstep:
    """What a trainer and its mirror in the server (`runs.remote.RemoteTrainer`) share: the validated recipe,
    the data, the configs fitted to it, the models built from the recipe's seed (so both sides start from the
    same weights), and per model its status, snapshots and skip-scale changes."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        train: TrainConfig,
        data: DataConfig,
        stop: threading.Event | None,
        dataset: Dataset | None,
        device: torch.device,
    ) -> None:
        if not models:
            raise ConfigError("models", "needs at least one model")
        self.train = train.validate()
        self.dataset = dataset if dataset is not None else load_dataset(data.validate())
        self.device = device
        self.configs = {key: fit_to_data(cfg, self.dataset) for key, cfg in models.items()}
        self.models: dict[str, Net] = {
            key: build_model(cfg, seed=train.seed, device=device) for key, cfg in self.configs.items()
        }
        self.stop = stop or threading.Event()
        self.states = {key: ModelState() for key in models}
        self.snapshots: dict[str, list[Snapshot]] = {key: [] for key in models}
        self.skip_events: list[tuple[str, int, float]] = []  # (model, step it took effect, alpha)
        self._lock = threading.Lock()
        self.steps_per_epoch = steps_per_epoch(len(self.dataset.y_train), train.batch_size)
        self.total_steps = self.steps_per_epoch * train.epochs
        self.step = 0  # optimizer steps done
        # between two yielded steps, training waits for the caller (so `capture()` and skip changes land there);
        # an in-process trainer always does, a worker told to run ahead does not (`runs.remote.RemoteTrainer`)
        self.waiting = True

    def _snapshot(self, key: str, step: int) -> Snapshot:
        """Model `key`'s weights now, at the skip scale in force (each subclass's `skip_scale`)."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.models[key].state_dict().items()}
        return Snapshot(step, state, self.skip_scale(key))

    def _finish(self) -> None:
        """At the end of a run: each model still running finishes (or stops), with a snapshot of where it got to."""
        for key, state in self.states.items():
            if state.status == "running":
                state.status = "stopped" if self.stop.is_set() else "finished"
                snaps = self.snapshots[key]
                if snaps[-1].step != state.step:  # stopped early: keep where it got to
                    snaps.append(self._snapshot(key, state.step))
                    if len(snaps) > self.train.max_snapshots:
                        del snaps[-2]


class Trainer(Lockstep):
    """Trains one or more models in lockstep on identical batches."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        train: TrainConfig,
        data: DataConfig,
        stop: threading.Event | None = None,
        start: TrainerState | None = None,
        dataset: Dataset | None = None,
    ) -> None:
        """`dataset`: the loaded `data`, when the caller has it (a training process gets it from its parent)."""
        super().__init__(models, train, data, stop, dataset, resolve_device(train.device))
        self._pending_alpha: dict[str, float] = {}
        self.snapshot_steps = set(
            np.linspace(0, self.total_steps, min(train.max_snapshots, self.total_steps + 1)).round().astype(int)
        )
        self.optimizers = {key: self._optimizer(model) for key, model in self.models.items()}
        self._elapsed = 0.0  # seconds of training before this trainer's run() (a fork's parent's time)
        self._t0: float | None = None  # when run() started
        self._alpha: dict[str, float] = {}  # model -> skip scale in force (filled on first use)
        self._generator = torch.Generator().manual_seed(train.seed)
        self._perm: torch.Tensor | None = None
        self._threads = torch.get_num_threads()  # CPU threads this run may use (see `set_threads`)
        self._pool: ThreadPoolExecutor | None = None  # threads that step models side by side (see `_map`)
        self._pool_size = 0
        if start is not None:
            self._resume(start)

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        train = self.train
        if train.optimizer == "sgd":
            return torch.optim.SGD(
                model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
            )
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)

    def capture(self) -> TrainerState:
        """A copy of the whole training state; call between steps (e.g. from the loop over `run()`)."""
        return TrainerState(
            step=self.step,
            elapsed=self._elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0),
            models={k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in self.models.items()},
            optimizers={k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers.items()},
            alphas={k: self.skip_scale(k) for k in self.models},
            generator=self._generator.get_state(),
            perm=None if self._perm is None else self._perm.clone(),
            states={k: replace(s) for k, s in self.states.items()},
            snapshots={k: list(v) for k, v in self.snapshots.items()},
            skip_events=list(self.skip_events),
        )

    def _resume(self, state: TrainerState) -> None:
        for key, model in self.models.items():
            set_skip_scale(model, state.alphas[key])
            self._alpha[key] = state.alphas[key]
            model.load_state_dict(state.models[key])
            self.optimizers[key].load_state_dict(copy.deepcopy(state.optimizers[key]))
        self.step, self._elapsed = state.step, state.elapsed
        self._generator.set_state(state.generator)
        self._perm = None if state.perm is None else state.perm.clone()
        self.states = {k: replace(s) for k, s in state.states.items()}
        self.snapshots = {k: list(v) for k, v in state.snapshots.items()}
        self.skip_events = list(state.skip_events)

    def history(self) -> History:
        """An empty history whose probe lists follow this run's layer and block names."""
        return History(
            {k: layer_names(m) for k, m in self.models.items()},
            {k: block_names(m) for k, m in self.models.items()},
        )

    def set_skip_scale(self, key: str, alpha: float) -> None:
        """Change a model's skip scale; thread-safe, applied before the next step."""
        check_skip_change(self.models, key, alpha)
        with self._lock:
            self._pending_alpha[key] = float(alpha)

    def set_threads(self, threads: int) -> None:
        """CPU threads from the next step on; call from the thread that runs `run()`."""
        self._threads = threads
        torch.set_num_threads(threads)

    def _map(self, step_one: Callable[[str], StepRecord | None], keys: list[str]) -> list[StepRecord | None]:
        """`step_one` of each model: side by side on up to one thread per model, when the run has the threads.

        Why: the lab's nets are small (a depth-20 step on 8x8 digits is about 70 ms), and two intra-op
        threads per convolution speed one up by far less than 2x: the default pair took 12.6 s stepping
        its models one after the other on two threads, 9.8 s stepping them at once on one thread each
        (this machine's two cores, load about 2). The models share nothing but the batch, which they
        only read, so each model's numbers are those of a run with the same intra-op threads.
        """
        workers = min(len(keys), self._threads)
        if workers < 2 or self.device.type != "cpu":
            return [step_one(key) for key in keys]
        if self._pool is None or self._pool_size != workers:
            self._close_pool()
            self._pool, self._pool_size = ThreadPoolExecutor(workers, thread_name_prefix="model-step"), workers
        torch.set_num_threads(self._threads // workers)  # the intra-op pool is process-wide: each gets its share
        try:
            return list(self._pool.map(step_one, keys))
        finally:
            torch.set_num_threads(self._threads)

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def skip_scale(self, key: str) -> float:
        """The skip scale in force for model `key` (kept here: looking it up in the modules costs ~3 ms a step)."""
        if key not in self._alpha:
            blocks = [m for m in self.models[key].modules() if hasattr(m, "alpha")]
            self._alpha[key] = float(blocks[0].alpha) if blocks else 0.0
        return self._alpha[key]

    def _apply_skip_changes(self, step: int) -> None:
        with self._lock:
            pending, self._pending_alpha = self._pending_alpha, {}
        for key, alpha in pending.items():
            if alpha != self.skip_scale(key):
                set_skip_scale(self.models[key], alpha)
                self._alpha[key] = alpha
                self.skip_events.append((key, step, alpha))

    def _snapshot_running(self, step: int) -> None:
        for key in self.models:
            if self.states[key].status == "running":
                self.snapshots[key].append(self._snapshot(key, step))

    @torch.no_grad()
    def evaluate(self, key: str, split: str = "val") -> tuple[float, float]:
        """Loss and accuracy of one model on a split, in eval mode (BN running statistics)."""
        model = self.models[key]
        x, y = getattr(self.dataset, f"x_{split}"), getattr(self.dataset, f"y_{split}")
        was_training = model.training
        model.eval()
        total_loss, correct = 0.0, 0
        for i in range(0, len(y), 1024):
            xb, yb = x[i : i + 1024].to(self.device), y[i : i + 1024].to(self.device)
            logits = model(xb)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
        model.train(was_training)
        return total_loss / y.numel(), correct / y.numel()  # per token or node where each example has several

    def _batch(self, index: int) -> torch.Tensor:
        """Example indices of 0-based step `index`: a fresh permutation at each epoch start."""
        i = index % self.steps_per_epoch
        if i == 0 or self._perm is None:
            self._perm = torch.randperm(len(self.dataset.y_train), generator=self._generator)
        return self._perm[i * self.train.batch_size : (i + 1) * self.train.batch_size]

    def run(self) -> Iterator[list[StepRecord]]:
        """Train to the end (or stop/divergence), yielding one record per running model per step.

        Between two yields the trainer is between steps: `capture()` and `set_skip_scale()` are safe there.
        """
        self._t0 = time.perf_counter()
        train = self.train
        probes = {key: Probe(m, self.optimizers[key]) for key, m in self.models.items()} if train.probe_every else {}
        for key, model in self.models.items():
            model.train()
            if self.states[key].status == "queued":
                self.states[key].status = "running"
        x_all, y_all = self.dataset.x_train.to(self.device), self.dataset.y_train.to(self.device)
        if self.step == 0:
            self._snapshot_running(0)
        try:
            while self.step < self.total_steps and not self.stop.is_set():
                index = self.step
                step = index + 1
                self._apply_skip_changes(step)
                lr = lr_at(train, index, self.total_steps)
                idx = self._batch(index).to(self.device)
                xb, yb = x_all[idx], y_all[idx]
                armed = bool(train.probe_every) and index % train.probe_every == 0
                epoch_end = step % self.steps_per_epoch == 0
                validate = epoch_end or (train.val_every and step % train.val_every == 0)
                step_one = partial(self._step_validated, probes, armed, xb, yb, lr, step, validate)
                running = [key for key in self.models if self.states[key].status == "running"]
                records = []
                for key, record in zip(running, self._map(step_one, running), strict=True):
                    if record is None:
                        continue
                    record.seconds = self._elapsed + time.perf_counter() - self._t0
                    self.states[key].step = step
                    records.append(record)
                self.step = step
                if step in self.snapshot_steps:
                    self._snapshot_running(step)
                if not records:
                    break
                yield records
        finally:
            for probe in probes.values():
                probe.close()
            self._close_pool()
        self._finish()

    def _step_validated(
        self,
        probes: Mapping[str, Probe],
        armed: bool,
        xb: torch.Tensor,
        yb: torch.Tensor,
        lr: float,
        step: int,
        validate: bool,
        key: str,
    ) -> StepRecord | None:
        """One model's step, and its validation when this step has one."""
        model = self.models[key]
        record = self._step(key, model, self.optimizers[key], probes.get(key), armed, xb, yb, lr, step)
        if record is not None and validate:
            record.val_loss, record.val_acc = self.evaluate(key)
        return record

    def _step(
        self,
        key: str,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        probe: Probe | None,
        armed: bool,
        xb: torch.Tensor,
        yb: torch.Tensor,
        lr: float,
        step: int,
    ) -> StepRecord | None:
        for group in opt.param_groups:
            group["lr"] = lr
        if probe is not None and armed:
            probe.arm()
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss_value = loss.item()
        if not math.isfinite(loss_value) or loss_value > DIVERGED_LOSS:
            state = self.states[key]
            state.status = "diverged"
            state.message = f"loss became {loss_value:.4g} at step {step}; training of {key} stopped"
            if probe is not None:
                probe.armed = False
            return None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if probe is None:
            opt.step()
        else:
            probe.before_step()
            probe.step(opt)
        acc = (logits.detach().argmax(1) == yb).float().mean().item()
        return StepRecord(
            model=key,
            step=step,
            epoch=step / self.steps_per_epoch,
            lr=lr,
            loss=loss_value,
            acc=acc,
            skip_scale=self.skip_scale(key),
            seconds=0.0,
            probes=probe.read() if probe is not None else None,
        )


@dataclass
class History:
    """All records of a run, with the names their probe lists follow; converts to tidy DataFrames."""

    layer_names: dict[str, list[str]]  # model -> weighted layers in network order
    block_names: dict[str, list[str]]  # model -> blocks in network order
    records: list[StepRecord] = field(default_factory=list)

    def add(self, records: list[StepRecord]) -> None:
        self.records.extend(records)

    def steps_frame(self) -> pd.DataFrame:
        """One row per model and step: model, step, epoch, lr, loss, acc, skip_scale, seconds, val_*."""
        import pandas as pd

        cols = ["model", "step", "epoch", "lr", "loss", "acc", "skip_scale", "seconds", "val_loss", "val_acc"]
        rows = [[getattr(r, c) for c in cols] for r in self.records]
        frame = pd.DataFrame(rows, columns=cols)
        return frame.astype({"val_loss": float, "val_acc": float})

    def layers_frame(self) -> pd.DataFrame:
        """Long table: model, step, layer, metric, value, depth_index (position in network order)."""
        import pandas as pd

        model, step, layer, metric, value, index = [], [], [], [], [], []
        for r in self.records:
            if not r.probes:
                continue
            for name in METRICS:
                values = r.probes.get(name) or []
                names = (self.layer_names if name in LAYER_METRICS else self.block_names)[r.model]
                model += [r.model] * len(values)
                step += [r.step] * len(values)
                layer += names[: len(values)]
                metric += [name] * len(values)
                value += values
                index += list(range(len(values)))
        return pd.DataFrame(
            {"model": model, "step": step, "layer": layer, "metric": metric, "value": value, "depth_index": index}
        )


def check_skip_change(models: Mapping[str, nn.Module], key: str, alpha: float) -> None:
    """A live skip-scale change names one of the run's models and an alpha in [0, 1]."""
    if key not in models:
        raise ConfigError("model", f"must be one of {', '.join(models)}; got {key!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError("skip_scale", f"must be in [0, 1]; got {alpha}")


def summarize(trainer: Trainer, history: History, key: str) -> dict[str, object]:
    """Summary of one model of a trainer: `records_summary` of its records, with the trainer's status."""
    state = trainer.states[key]
    records = [r for r in history.records if r.model == key]
    net, names = trainer.models[key], history.layer_names[key]
    return records_summary(key, net, records, trainer.steps_per_epoch, names, state.status, state.message)


def records_summary(
    key: str,
    net: nn.Module,
    records: Sequence[StepRecord],
    per_epoch: int,
    layer_names: Sequence[str],
    status: str,
    message: str,
) -> dict[str, object]:
    """Summary of one model from its records: final losses, status, size and the gradient ratio at the start.

    ``final_train_loss`` is the mean training loss over the last epoch's steps (less noisy than one
    batch). ``first/last_layer_grad_norm`` are the weight-gradient norms of the first and last 3x3
    conv (hidden linear layer for MLPs), averaged over the first 10 steps. `net` gives the layer
    roles and the size only (a meta-device net will do).
    """
    steps = records[-1].step if records else 0
    last_epoch = [r.loss for r in records if r.step > steps - per_epoch]
    vals = [r for r in records if r.val_loss is not None]
    convs = conv_layer_names(net)
    first, last = list(layer_names).index(convs[0]), list(layer_names).index(convs[-1])
    early = [r.probes["grad_norm"] for r in records[:10] if r.probes]
    return {
        "model": key,
        "status": status,
        "message": message,
        "steps": steps,
        "params": count_params(net),
        "final_train_loss": float(np.mean(last_epoch)) if last_epoch else float("nan"),
        "final_train_acc": float(np.mean([r.acc for r in records[-len(last_epoch) :]])) if last_epoch else float("nan"),
        "final_val_loss": vals[-1].val_loss if vals else float("nan"),
        "final_val_acc": vals[-1].val_acc if vals else float("nan"),
        "first_layer_grad_norm": float(np.mean([g[first] for g in early])) if early else float("nan"),
        "last_layer_grad_norm": float(np.mean([g[last] for g in early])) if early else float("nan"),
        "seconds": records[-1].seconds if records else 0.0,
    }


def train_models(
    models: Mapping[str, ModelConfig],
    train: TrainConfig,
    data: DataConfig,
    stop: threading.Event | None = None,
    on_step: Callable[[Trainer, list[StepRecord]], None] | None = None,
) -> tuple[Trainer, History]:
    """Run to the end without a UI (the loop every headless caller uses); returns the trainer (models,
    states, snapshots) and its history. `on_step(trainer, records)` follows each step (a progress bar)."""
    trainer = Trainer(models, train, data, stop)
    history = trainer.history()
    for records in trainer.run():
        history.add(records)
        if on_step is not None:
            on_step(trainer, records)
    return trainer, history


def model_at(trainer: Trainer, key: str, snapshot: Snapshot) -> Net:
    """A fresh copy of model `key` with the weights of `snapshot` (never the live training model)."""
    return load_model(trainer.configs[key], snapshot.state, snapshot.skip_scale)
