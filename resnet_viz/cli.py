"""Command line: ``python -m resnet_viz train|compare ...``.

Every config field has a flag. Invalid input prints one line naming the field and what is allowed,
and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from safetensors.torch import save_file

from .data import DATASETS, DataConfig
from .models import CHOICES, ConfigError, ModelConfig
from .training import History, TrainConfig, Trainer, summarize


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags for every data, model and training field (defaults from the dataclasses)."""
    m, t, d = ModelConfig(), TrainConfig(), DataConfig()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=d.name, help="images: digits, shapes; 2-D: the rest")
    g.add_argument("--input-size", type=int, default=None, help="image side in pixels (digits 8, shapes 16)")
    g.add_argument("--noise", type=float, default=d.noise, help="pixel noise / point jitter of generated data")
    g = p.add_argument_group("model")
    g.add_argument("--depth", type=int, default=m.depth, help="weighted layers: 6n+2 basic, 9n+2 bottleneck, 2n+2 mlp")
    g.add_argument("--width", type=int, default=m.width, help="channels of the first stage / hidden units")
    g.add_argument("--block", choices=CHOICES["block"], default=m.block)
    g.add_argument("--skip", action=argparse.BooleanOptionalAction, default=m.skip, help="shortcuts on or off")
    g.add_argument("--skip-scale", type=float, default=m.skip_scale, help="alpha in [0, 1] on every shortcut")
    g.add_argument("--shortcut", choices=CHOICES["shortcut"], default=m.shortcut)
    g.add_argument("--norm", choices=CHOICES["norm"], default=m.norm)
    g.add_argument("--order", choices=CHOICES["order"], default=m.order, help="post (2015) or pre-activation (2016)")
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
    data = DataConfig(name=args.dataset, input_size=size, noise=args.noise).validate()
    model = ModelConfig(
        family="cnn" if data.is_image else "mlp",
        depth=args.depth,
        width=args.width,
        block=args.block,
        skip=args.skip,
        skip_scale=args.skip_scale,
        shortcut=args.shortcut,
        norm=args.norm,
        order=args.order,
        init=args.init,
        zero_init_last=args.zero_init_last,
        in_channels=1 if data.is_image else 2,
        input_size=size,
    ).validate()
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


class Progress:
    """A one-line progress bar on stderr: steps, epoch, loss, steps/s, ETA."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.stream, self.t0 = total, stream or sys.stderr, time.perf_counter()

    def update(self, step: int, epoch: float, losses: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = step / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate else math.inf
        filled = int(30 * step / self.total)
        loss = " ".join(f"{k}={v:.4f}" for k, v in losses.items())
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {step}/{self.total} ep {epoch:.1f} {loss} "
            f"{rate:.1f} it/s ETA {eta:.0f}s"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


def run_training(models: dict[str, ModelConfig], train: TrainConfig, data: DataConfig, quiet: bool = False):
    """Train with a progress bar; returns the trainer and its history."""
    trainer = Trainer(models, train, data)
    history = trainer.history()
    bar = None if quiet else Progress(trainer.total_steps)
    for records in trainer.run():
        history.add(records)
        if bar and (records[0].step % 5 == 0 or records[0].step == trainer.total_steps):
            bar.update(records[0].step, records[0].epoch, {r.model: r.loss for r in records})
    if bar:
        bar.close()
    return trainer, history


def write_outputs(out: Path, trainer: Trainer, history: History, summaries: dict[str, dict]) -> None:
    """config.json, summary.json, steps.csv, layers.csv and <model>.safetensors in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "data": trainer.dataset.config.to_dict(),
        "train": trainer.train.to_dict(),
        "models": {k: c.to_dict() for k, c in trainer.configs.items()},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    history.steps_frame().to_csv(out / "steps.csv", index=False)
    history.layers_frame().to_csv(out / "layers.csv", index=False)
    for key, model in trainer.models.items():
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / f"{key}.safetensors"))


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(summaries: dict[str, dict]) -> None:
    keys = ["status", "steps", "params", "final_train_loss", "final_val_loss", "final_val_acc",
            "first_layer_grad_norm", "last_layer_grad_norm", "seconds"]  # fmt: skip
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{m:>14}" for m in summaries))
    for k in keys:
        print(f"{k:{width}}  " + "  ".join(f"{_fmt(s[k]):>14}" for s in summaries.values()))


def _train(args: argparse.Namespace, models: Callable[[ModelConfig], dict[str, ModelConfig]]) -> int:
    model, train, data = configs_from_args(args)
    trainer, history = run_training(models(model), train, data, quiet=args.json)
    summaries = {k: summarize(trainer, history, k) for k in trainer.models}
    if args.out:
        write_outputs(Path(args.out), trainer, history, summaries)
    if args.json:
        payload = next(iter(summaries.values())) if len(summaries) == 1 else summaries
        print(json.dumps(payload))
    else:
        print_table(summaries)
        for s in summaries.values():
            if s["message"]:
                print(f"{s['model']}: {s['message']}")
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args, lambda m: {"model": m})
        return _train(args, lambda m: {"plain": m.with_skip(False), "residual": m.with_skip(True)})
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
