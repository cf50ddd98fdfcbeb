"""A training worker: a process that trains one run at a time for the server (see runs/remote.py).

    python -c "from resnet_viz.runs.worker import main; main()"   # what the server's WorkerPool starts

It reads messages on stdin and writes them on stdout, each a length-prefixed pickle. Both ends are
this program: the server writes what the worker reads, and nothing from outside ever reaches the
pipe. (It is a plain subprocess and not `multiprocessing`: under Streamlit, `__main__` is the app
script, and multiprocessing's child start-up would run the whole app again.)

For each run: the setup (configs, recipe, the loaded data set, a state to resume from, skip scales,
threads); then, lock-step, one message each way per step:
- worker -> server: ("step", records, Mirror) after each step; ("captured", TrainerState) when asked;
  ("done", Mirror, TrainerState) at the end; ("failed", message) if training raised;
- server -> worker: ("capture",) for a fork; ("go", threads, alphas, stop) to take the next step.
The worker waits for "go" after each step, so captures and skip changes land between the same two
steps as with an in-process `Trainer`, and a fork stays bit-identical. Then it waits for the next run.
"""

from __future__ import annotations

import pickle
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO

import torch

from ..training import ModelState, Snapshot, Trainer

HEADER = struct.Struct("<Q")  # byte length of the pickle that follows


def put(stream: BinaryIO, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def get(stream: BinaryIO) -> tuple:
    """The next message; EOFError when the other end has closed the pipe."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError
    size = HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - only ever written by the other end of our own pipe


@dataclass
class Mirror:
    """What the server keeps of the worker's trainer, sent after every step."""

    step: int  # optimizer steps done
    states: dict[str, ModelState]  # per model status
    snapshots: dict[str, list[Snapshot]]  # snapshots taken since the last message
    skip_events: list[tuple[str, int, float]]  # all live skip changes so far
    alphas: dict[str, float]  # skip scale in force per model
    weights: dict[str, dict[str, torch.Tensor]] | None  # current weights, when asked for (2-D data boundaries)


def _mirror(trainer: Trainer, sent: dict[str, int], with_weights: bool) -> Mirror:
    snaps = {k: v[sent[k] :] for k, v in trainer.snapshots.items()}
    for k, v in trainer.snapshots.items():
        sent[k] = len(v)
    weights = {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in trainer.models.items()}
    return Mirror(
        step=trainer.step,
        states={k: ModelState(s.status, s.step, s.message) for k, s in trainer.states.items()},
        snapshots=snaps,
        skip_events=list(trainer.skip_events),
        alphas={k: trainer.skip_scale(k) for k in trainer.models},
        weights=weights if with_weights else None,
    )


def train_one(inp: BinaryIO, out: BinaryIO, setup: tuple) -> None:
    """One run: train, report each step, wait for the server's word, report the end."""
    models, train, dataset, start, alphas, threads, weights_every = setup
    torch.set_num_threads(threads)
    try:
        trainer = Trainer(models, train, dataset.config, start=start, dataset=dataset)
        for key, alpha in alphas.items():
            trainer.set_skip_scale(key, alpha)
        sent = {k: 0 for k in trainer.models}
        for records in trainer.run():
            weights = bool(weights_every) and trainer.step % weights_every == 0
            put(out, ("step", records, _mirror(trainer, sent, weights)))
            while True:  # between two steps: serve captures until told to go on
                message = get(inp)
                if message[0] == "capture":
                    put(out, ("captured", trainer.capture()))
                    continue
                _, threads_now, alphas, stop = message
                if threads_now != threads:
                    threads = threads_now
                    torch.set_num_threads(threads)
                for key, alpha in alphas.items():
                    trainer.set_skip_scale(key, alpha)
                if stop:
                    trainer.stop.set()
                break
        put(out, ("done", _mirror(trainer, sent, True), trainer.capture()))
    except EOFError:
        raise
    except Exception as err:  # noqa: BLE001 - reported to the server, which fails the run with it
        put(out, ("failed", f"{type(err).__name__}: {err}"))


def main() -> None:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the message stream
    try:
        while True:
            train_one(inp, out, get(inp))
    except (EOFError, BrokenPipeError):  # the server closed the pipe or went away: nothing left to do
        return
