"""Command line: ``python -m resnet_viz train|compare|sweep ...``.

Every config field has a flag. Invalid input prints one line naming the field and what is allowed,
and exits with status 2; no traceback. ``--store DIR`` (or ``--use-store`` for the default folder)
loads a run trained before with the same configs instead of training it again; ``sweep`` always
uses the store, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, TextIO

from .codegen import run_script
from .data import ALL_DATASETS, FILE_DATASETS, DataConfig
from .datasets import registry
from .limits import cli as limits_cli
from .models import CHOICES, FAMILY_NORMS, ConfigError, ModelConfig
from .runs import LiveRun, RunRefused, RunRequest, RunService
from .runs.defaults import warm_requests
from .runs.warm import WarmProgress, warm
from .store import RunStore, StoreError, export_trained, trained_summaries
from .sweep import BASIC_DEPTHS, SweepConfig, SweepJob, SweepView, classroom_sweep
from .tasks import stop_all
from .training import StepRecord, TrainConfig, Trainer, fit_to_data, train_models


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags for every data, model and training field (defaults from the dataclasses)."""
    m, t, d = ModelConfig(), TrainConfig(), DataConfig()
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=ALL_DATASETS,
        default=d.name,
        help="images: digits, shapes, corners; 2-D: spirals, moons, circles, xor; sequences: sort (Transformers); "
        "graphs: sbm (GCNs); from files: mnist, fashion_mnist, cifar10 (see --data-dir); upload: a stored upload "
        "(see --upload)",
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="folder holding mnist/, fashion_mnist/, cifar10/ (default: $RESNET_VIZ_DATA_DIR/datasets)",
    )
    g.add_argument("--n-samples", type=int, default=d.n_samples, help="generated examples, or drawn from MNIST/CIFAR")
    g.add_argument("--color", choices=("grey", "rgb"), default=d.color, help="channels of MNIST/CIFAR/uploaded images")
    g.add_argument("--upload", default=d.upload, help="content hash of an uploaded data set (--dataset upload)")
    g.add_argument(
        "--input-size", type=int, default=None, help="image side (digits 8, shapes 16), sequence length or graph nodes"
    )
    g.add_argument("--noise", type=float, default=d.noise, help="pixel noise / point jitter / node-feature noise")
    g = p.add_argument_group("model")
    g.add_argument(
        "--depth",
        type=int,
        default=m.depth,
        help="weighted layers: 6n+2 basic, 9n+2 bottleneck, 2n+2 mlp and transformer (n layers), n+2 gcn",
    )
    g.add_argument("--width", type=int, default=m.width, help="channels of the first stage / hidden units / d_model")
    g.add_argument("--block", choices=CHOICES["block"], default=m.block)
    g.add_argument("--heads", type=int, default=m.heads, help="attention heads (transformer; must divide --width)")
    g.add_argument("--skip", action=argparse.BooleanOptionalAction, default=m.skip, help="shortcuts on or off")
    g.add_argument("--skip-scale", type=float, default=m.skip_scale, help="alpha in [0, 1] on every shortcut")
    g.add_argument("--shortcut", choices=CHOICES["shortcut"], default=m.shortcut)
    g.add_argument(
        "--norm", choices=CHOICES["norm"], default=None, help="default: batch (cnn, mlp, gcn), layer (transformer)"
    )
    g.add_argument(
        "--order", choices=CHOICES["order"], default=m.order, help="post (2015) or pre-activation (2016); post/pre-LN"
    )
    g.add_argument("--init", choices=CHOICES["init"], default=m.init)
    g.add_argument("--zero-init-last", action=argparse.BooleanOptionalAction, default=m.zero_init_last)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=t.epochs)
    g.add_argument("--batch-size", type=int, default=t.batch_size)
    g.add_argument("--optimizer", choices=("sgd", "adam"), default=t.optimizer)
    g.add_argument("--lr", type=float, default=t.lr)
    g.add_argument("--momentum", type=float, default=t.momentum)
    g.add_argument("--weight-decay", type=float, default=t.weight_decay)
    g.add_argument("--warmup-steps", type=int, default=t.warmup_steps)
    g.add_argument("--schedule", choices=("constant", "cosine", "step"), default=t.schedule)
    g.add_argument("--seed", type=int, default=t.seed)
    g.add_argument("--val-every", type=int, default=t.val_every, help="steps between validations (0: epoch ends)")
    g.add_argument("--probe-every", type=int, default=t.probe_every, help="probe every k steps (0: off)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=t.device)


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig, DataConfig]:
    """Validated configs from parsed flags; raises ConfigError naming the field."""
    size = args.input_size if args.input_size is not None else (16 if args.dataset == "shapes" else 8)
    data = DataConfig(
        name=args.dataset,
        input_size=size,
        noise=args.noise,
        n_samples=args.n_samples,
        color=args.color,
        upload=args.upload,
    ).validate()
    family = data.model_fields()["family"]
    model = fit_to_data(
        ModelConfig(
            depth=args.depth,
            width=args.width,
            block=args.block,
            heads=args.heads,
            skip=args.skip,
            skip_scale=args.skip_scale,
            shortcut=args.shortcut,
            norm=args.norm or FAMILY_NORMS[str(family)][0],
            order=args.order,
            init=args.init,
            zero_init_last=args.zero_init_last,
        ),
        data,
    )
    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        schedule=args.schedule,
        seed=args.seed,
        val_every=args.val_every,
        probe_every=args.probe_every,
        device=args.device,
    ).validate()
    return model, train, data


class ProgressLine:
    """One progress line on stderr, redrawn in place: a bar for `fraction` done, then `text`, then the ETA.

    Every long command draws with it: training steps, a sweep's runs, a warm-up's runs.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def draw(self, fraction: float, text: str, eta_seconds: float) -> None:
        filled = int(30 * min(max(fraction, 0.0), 1.0))
        eta = "?" if not math.isfinite(eta_seconds) else f"{eta_seconds:.0f}s"
        self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text} ETA {eta}".ljust(100)[:160])
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


class Progress(ProgressLine):
    """Training steps: step, epoch, loss per model, steps/s."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.total, self.t0 = total, time.perf_counter()

    def update(self, step: int, epoch: float, losses: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = step / elapsed if elapsed > 0 else 0.0
        loss = " ".join(f"{k}={v:.4f}" for k, v in losses.items())
        eta = (self.total - step) / rate if rate else math.inf
        self.draw(step / self.total, f"{step}/{self.total} ep {epoch:.1f} {loss} {rate:.1f} it/s", eta)


def run_training(models: dict[str, ModelConfig], train: TrainConfig, data: DataConfig, quiet: bool = False):
    """Train with a progress bar; returns the trainer and its history."""
    bars: list[Progress] = []

    def on_step(trainer: Trainer, records: list[StepRecord]) -> None:
        if not bars:
            bars.append(Progress(trainer.total_steps))
        _show_step(bars[0], records)

    trainer, history = train_models(models, train, data, on_step=None if quiet else on_step)
    if bars:
        bars[0].close()
    return trainer, history


def _show_step(bar: Progress, records: list[StepRecord]) -> None:
    if records[0].step % 5 == 0 or records[0].step == bar.total:
        bar.update(records[0].step, records[0].epoch, {r.model: r.loss for r in records})


def run_stored(store: RunStore, models: dict[str, ModelConfig], train: TrainConfig, data: DataConfig, quiet: bool):
    """Load the run from the store, or train it with a progress bar and store it; returns the StoredRun."""
    bars: list[Progress] = []

    def on_step(live: LiveRun, records: list[StepRecord]) -> None:
        if not bars:
            bars.append(Progress(live.estimate.steps))
        _show_step(bars[0], records)

    service = RunService(store)
    run = service.fetch(RunRequest(models, train, data), "cli", on_step=None if quiet else on_step)
    if bars:
        bars[0].close()
    if run is not None and run.cached and not quiet:
        print(f"loaded from the run store {store.path} (key {run.key[:12]})", file=sys.stderr)
    return run


def finite(obj: object) -> object:
    """`obj` with every non-finite float as None: strict JSON (NaN is not JSON; a diverged run has NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def json_line(payload: object) -> str:
    """One line of strict JSON (non-finite numbers as null)."""
    return json.dumps(finite(payload), allow_nan=False)


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(summaries: dict[str, dict]) -> None:
    keys = [
        "status",
        "steps",
        "params",
        "final_train_loss",
        "final_val_loss",
        "final_val_acc",
        "first_layer_grad_norm",
        "last_layer_grad_norm",
        "seconds",
    ]
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{m:>14}" for m in summaries))
    for k in keys:
        print(f"{k:{width}}  " + "  ".join(f"{_fmt(s[k]):>14}" for s in summaries.values()))


def _train(args: argparse.Namespace, models: Callable[[ModelConfig], dict[str, ModelConfig]]) -> int:
    model, train, data = configs_from_args(args)
    if args.print_code:  # the script that trains this run with the library, instead of training it here
        folder = registry.folder() if data.name in FILE_DATASETS else None
        print(run_script(models(model), train, data, data_dir=folder), end="")
        return 0
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after training
    if args.store or args.use_store:
        store = RunStore(args.store)
        run = run_stored(store, models(model), train, data, quiet=args.json)
        summaries = run.summaries  # nothing sets a stop event here, so the run is never None
        if args.out:
            store.export(run.key, Path(args.out))
    else:
        trainer, history = run_training(models(model), train, data, quiet=args.json)
        summaries = trained_summaries(trainer, history)
        if args.out:
            export_trained(trainer, history, Path(args.out))
    if args.json:  # one summary for train; for compare one per model and the run's status
        status = "finished" if all(s["status"] == "finished" for s in summaries.values()) else "diverged"
        print(json_line(next(iter(summaries.values())) if len(summaries) == 1 else {"status": status, **summaries}))
    else:
        print_table(summaries)
        for s in summaries.values():
            if s["status"] != "finished":
                print(f"warning: {s['model']} {s['status']}: {s['message']}", file=sys.stderr)
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    """``8,14,20`` -> (8, 14, 20); argparse turns the ValueError into a one-line error."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, e.g. 8,14,20; got {text!r}") from None


def _seeds(text: str) -> int | tuple[int, ...]:
    """``3`` -> a count (3 seeds from --seed); ``0,7`` or ``5,`` -> those seeds."""
    seeds = _int_list(text)
    if "," in text:
        return seeds
    if len(seeds) != 1:
        raise argparse.ArgumentTypeError(f"must be a count or comma-separated seeds, e.g. 2 or 0,7; got {text!r}")
    return seeds[0]


class SweepProgress(ProgressLine):
    """A sweep: runs done (and cached), the current run's steps."""

    _runs_done = -1

    def update(self, view: SweepView) -> None:
        changed = view.runs_done != self._runs_done
        if not changed and view.step % 5 and view.step != view.total_steps:
            return
        self._runs_done = view.runs_done
        part = view.step / view.total_steps if view.current and view.total_steps else 0.0
        depth, seed = view.current or (0, 0)
        where = f" depth {depth} seed {seed} step {view.step}/{view.total_steps}" if view.current else ""
        text = f"run {view.runs_done}/{view.total_runs} ({view.cached_runs} cached){where}"
        self.draw((view.runs_done + part) / view.total_runs, text, view.eta_seconds)


def sweep_config_from_args(args: argparse.Namespace) -> SweepConfig:
    """A validated SweepConfig from the sweep flags; raises ConfigError naming the field.

    ``--depth`` and ``--skip`` are refused (the grid sets them); ``--classroom`` takes the preset and
    refuses every other config flag, so nobody believes a flag changed the preset when it did not.
    """
    if args.classroom:
        defaults = vars(build_parser().parse_args(["sweep"]))
        changed = [k for k, v in vars(args).items() if k not in ("classroom", "store", "json") and v != defaults[k]]
        if changed:
            flag = "--" + changed[0].replace("_", "-")
            raise ConfigError("classroom", f"the preset fixes the configuration; leave out {flag}")
        return classroom_sweep()
    if args.depth is not None:
        raise ConfigError("depth", "a sweep trains every depth of --depths; leave out --depth")
    if args.skip is not None:
        raise ConfigError("skip", "a sweep trains both the plain and the residual net; leave out --skip/--no-skip")
    family = DataConfig(name=args.dataset).model_fields()["family"]
    first = ModelConfig(family=family, block=args.block).allowed_depths()[0]  # --depths is checked below
    model, train, data = configs_from_args(argparse.Namespace(**(vars(args) | {"depth": first, "skip": True})))
    seeds = args.seeds if isinstance(args.seeds, tuple) else tuple(range(train.seed, train.seed + args.seeds))
    return SweepConfig(depths=args.depths, seeds=seeds, model=model, train=train, data=data).validate()


@contextmanager
def _ctrl_c_stops(stop_work: Callable[[], None]) -> Iterator[None]:
    """The first Ctrl-C calls `stop_work` (work stops between steps; finished runs are stored already); a
    second one interrupts as usual. A signal handler, not KeyboardInterrupt, so training is never cut mid-step."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return

    def stop(signum: int, frame: object) -> None:
        stop_work()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _sweep(args: argparse.Namespace) -> int:
    config = sweep_config_from_args(args)
    store = RunStore(args.store)
    problem = store.check()
    if problem is not None:  # before any work: a store error is one line and exit status 2
        raise problem
    bar = None if args.json else SweepProgress()
    job = SweepJob(config, RunService(store), on_progress=bar.update if bar else None)
    with _ctrl_c_stops(job.stop):
        job.run()
    view = job.view()
    if bar:
        bar.close()
    frame = view.results_frame()
    if args.json:
        results = json.loads(frame.to_json(orient="records"))  # NaN -> null: strict JSON
        print(json_line({"status": view.status, "message": view.message, "results": results}))
    elif len(frame):
        cols = [
            "depth",
            "seed",
            "model",
            "final_train_loss",
            "final_train_error",
            "final_val_error",
            "params",
            "seconds",
            "cached",
        ]
        print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if view.status == "failed":
        problem = store.check()
        if problem is not None:  # the store failed mid-sweep (disk full, file removed, ...)
            raise problem
        print(f"error: {view.message}", file=sys.stderr)
        return 1
    if view.status == "stopped":
        print(f"{view.message}; finished runs are stored: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _landscape(args: argparse.Namespace) -> int:
    """Train (or load from --store) a plain/residual pair, then compute both loss landscapes (Li et al. 2018)."""
    import torch

    from .landscape import LandscapeConfig, LandscapeTask, Target  # here: other commands start without torch.func
    from .models import build_model
    from .tasks import ThreadExecutor
    from .training import model_at

    model, train, data = configs_from_args(args)
    config = LandscapeConfig(
        grid=args.grid,
        span=args.span,
        examples=args.examples,
        trajectory_grid=args.trajectory_grid,
        hessian_iterations=args.hessian_iterations,
        seed=args.direction_seed,
        device=args.device,
    ).validate()
    models = {"plain": model.with_skip(False), "residual": model.with_skip(True)}
    store = RunStore(args.store) if args.store or args.use_store else None
    targets = []
    if store is not None:  # the training path from the snapshots the store keeps
        run = run_stored(store, models, train, data, quiet=args.json)
        for k, c in run.configs.items():
            init, snaps = build_model(c, train.seed), run.snapshots(k)
            targets.append(Target(k, f"{k} {c.depth}", run.model(k), run.states[k].step, init, snaps, run.key))
    else:
        trainer, _ = run_training(models, train, data, quiet=args.json)
        for k, c in trainer.configs.items():
            snaps, init = list(trainer.snapshots[k]), build_model(c, train.seed)
            targets.append(Target(k, f"{k} {c.depth}", model_at(trainer, k, snaps[-1]), snaps[-1].step, init, snaps))
    task = LandscapeTask(targets, data, config, store, threads=torch.get_num_threads())
    ThreadExecutor().submit(task)
    while not task.join(0.5):
        if not args.json:
            view = task.view()
            sys.stderr.write(f"\r[{'#' * int(30 * view.fraction):.<30}] {view.fraction:4.0%} {view.phase[:70]:<70}")
    view = task.view()
    if not args.json:
        sys.stderr.write("\n")
    if args.out:
        Path(args.out).write_text(json_line({k: r.to_dict() for k, r in view.results.items()}))
    summaries = {k: r.summary() | {"cached": k in view.cached} for k, r in view.results.items()}
    if args.json:
        print(json_line({"status": view.status, "message": view.message, "config": config.key(), "models": summaries}))
    else:
        for key, s in summaries.items():
            explained = _fmt(sum(s["trajectory_explained"])) if s["trajectory_explained"] else "-"
            print(
                f"{key}: loss {_fmt(s['trained_loss'])}, lambda_max {_fmt(s['lambda_max'])}, lambda_min "
                f"{_fmt(s['lambda_min'])}, |min/max| {_fmt(s['ratio'])}, local minima {s['local_minima']}, "
                f"not quadratic {_fmt(s['non_quadratic'])}, path variance in 2 PCs {explained}"
            )
    if view.status == "failed":
        print(f"error: {_one_line(view.message)}", file=sys.stderr)
        return 1
    return 0


def _warm(args: argparse.Namespace) -> int:
    store = RunStore(args.store)
    problem = store.check()
    if problem is not None:  # before any work: a store error is one line and exit status 2
        raise problem
    line = ProgressLine()

    def show(p: WarmProgress) -> None:
        where = f" {p.current} step {p.step}/{p.steps}" if p.current else ""
        line.draw(p.done / max(1, p.total), f"{p.done}/{p.total} ({p.cached} stored before){where}", p.eta_seconds)

    stop = threading.Event()
    with _ctrl_c_stops(stop.set):
        progress = warm(RunService(store), warm_requests(), stop, None if args.json else show)
    if not args.json:
        line.close()
    status = "stopped" if stop.is_set() else ("failed" if progress.failed else "finished")
    trained = progress.done - progress.cached
    summary = {
        "status": status,
        "total": progress.total,
        "stored": progress.done,
        "stored_before": progress.cached,
        "trained": trained,
        "failed": progress.failed,
        "store": str(store.path),
    }
    if args.json:
        print(json_line(summary))
    else:
        print(f"{progress.done} of {progress.total} runs in {store.path} ({trained} trained now)")
    if status == "stopped":
        print("stopped; the runs finished so far are stored: run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if progress.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m resnet_viz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in [
        ("train", "train one model"),
        ("compare", "train the plain and the residual version in lockstep, same batches and init"),
    ]:
        p = sub.add_parser(name, help=help_text)
        add_config_flags(p)
        p.add_argument("--out", default=None, help="folder for config, tables (CSV) and weights (safetensors)")
        p.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
        p.add_argument("--store", metavar="DIR", default=None, help="run store folder: load the run if stored")
        p.add_argument("--use-store", action="store_true", help="use the default run store folder")
        p.add_argument("--print-code", action="store_true", help="print a Python script that trains this run, and exit")
    p = sub.add_parser("sweep", help="plain and residual pairs at several depths, one budget (He et al. 2015)")
    add_config_flags(p)
    p.set_defaults(depth=None, skip=None)  # the grid sets both: giving either is an error
    p.add_argument("--depths", type=_int_list, default=BASIC_DEPTHS, help="comma list (default 8,14,20,32,44,56)")
    p.add_argument("--seeds", type=_seeds, default=1, help="N: N seeds from --seed; or a comma list (at most 3)")
    p.add_argument("--classroom", action="store_true", help="the classroom preset (digits, depths 8-56, 10 epochs)")
    p.add_argument(
        "--store",
        metavar="DIR",
        default=None,
        help="run store folder (default: $RESNET_VIZ_DATA_DIR "
        "or ~/.local/share/resnet-viz); finished runs load from it, so a rerun resumes",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line with the results table at the end")
    p = sub.add_parser("landscape", help="loss landscapes of a plain/residual pair after training (Li et al. 2018)")
    add_config_flags(p)
    g = p.add_argument_group("landscape")
    g.add_argument("--grid", type=int, default=21, help="points per axis of the 2-D surface (odd, 5 to 101)")
    g.add_argument("--span", type=float, default=1.0, help="the surface covers [-span, span] per direction")
    g.add_argument("--examples", type=int, default=1000, help="training examples the loss is averaged over")
    g.add_argument("--trajectory-grid", type=int, default=15, help="points per axis under the training path (odd)")
    g.add_argument("--hessian-iterations", type=int, default=20, help="Lanczos steps (Hessian-vector products)")
    g.add_argument("--direction-seed", type=int, default=0, help="seed of the random directions")
    g.add_argument("--store", metavar="DIR", default=None, help="run store folder: load the run and its landscapes")
    g.add_argument("--use-store", action="store_true", help="use the default run store folder")
    g.add_argument("--out", default=None, help="file for every computed array (JSON)")
    g.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    limits_cli.add_parser(sub, add_config_flags)
    p = sub.add_parser("warm", help="train every default pair, Home preset and the classroom sweep into the store")
    p.add_argument("--store", metavar="DIR", default=None, help="run store folder (default: the app's)")
    p.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "data_dir", None):
            registry.set_folder(args.data_dir)
        if getattr(args, "store", None):  # uploads used by --dataset upload are looked up there too
            registry.use_store(RunStore(args.store))
        if args.command == "train":
            return _train(args, lambda m: {"model": m})
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "warm":
            return _warm(args)
        if args.command == "landscape":
            return _landscape(args)
        if args.command == "limits":
            return limits_cli.run(args, configs_from_args)
        return _train(args, lambda m: {"plain": m.with_skip(False), "residual": m.with_skip(True)})
    except (ConfigError, StoreError, RunRefused) as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # --out in a place that cannot be written
        where = err.filename or getattr(args, "out", None)
        print(f"error: {_one_line(f'{where}: {err.strerror or err}')}", file=sys.stderr)
        return 2
    finally:
        stop_all()  # no training thread may still be inside torch when the interpreter exits (it would abort)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:2000]
