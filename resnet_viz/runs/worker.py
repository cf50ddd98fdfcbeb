"""A training worker: a process that trains one run at a time for the server (see runs/remote.py).

    python -c "from resnet_viz.runs.worker import main; main()"   # what the server's WorkerPool starts

It reads messages on stdin and writes them on stdout, each the message's structure as JSON and its
tensors as safetensors (nothing is unpickled; a message may hold only the library's own config,
record and state dataclasses). It is a plain subprocess and not `multiprocessing`: under Streamlit,
`__main__` is the app script, and multiprocessing's child start-up would run the whole app again.

For each run: the setup (configs, recipe, the loaded data set, a state to resume from, skip scales,
threads); then, lock-step, one message each way per step:
- worker -> server: ("ready",) once, when it has started up (before any run); ("step", records, Mirror) after
  each step (with the family's pictures, `pictures`, every few steps: computed here, where the weights are);
  ("captured", TrainerState) when asked; ("done", Mirror, TrainerState) at the end; ("failed", message) if
  training raised. A TrainerState goes without its snapshots: the server has them from the mirrors;
- server -> worker: ("capture",) for a fork; ("go", threads, alphas, stop) to take the next step;
  ("park",) when a background run gives its slot to a watched one: the worker answers ("parked", TrainerState)
  and leaves the run for the next setup, which may be the same run resumed from that state.
The worker reads a "go" (or a "park") after each step. In lockstep the server sends it after handling the step, so
captures and skip changes land between the same two steps as with an in-process `Trainer`, and a fork
stays bit-identical; a server that lets it run ahead sends it a step early (`RemoteTrainer`'s
`run_ahead`), and one still unread when the run ends is dropped. Then it waits for the next run.
"""

from __future__ import annotations

import gc
import json
import math
import struct
import sys
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import load, save

from .. import pictures
from ..data import DataConfig, Dataset
from ..models import ModelConfig, build_model
from ..training import ModelState, Snapshot, StepRecord, TrainConfig, Trainer, TrainerState

HEADER = struct.Struct("<QQ")  # byte lengths of the JSON part and of the safetensors part that follow


def put(stream: BinaryIO, message: tuple) -> None:
    """Write one message: its structure as JSON, its tensors as safetensors (nothing is pickled).

    The tensors go as one flat tensor per dtype, each message tensor a slice of it (`_Parts`): safetensors spends
    about 0.1 ms of Python per tensor, and a snapshot of the default pair is 232 tensors (a run's last
    message, with its state, was over 3,000: 0.6 s in the worker and 0.4 s under the server's GIL)."""
    parts = _Parts()
    text = json.dumps(_pack(message, parts)).encode()
    blob = save({dtype: torch.cat(group) for dtype, group in parts.groups.items()}) if parts.groups else b""
    stream.write(HEADER.pack(len(text), len(blob)) + text + blob)
    stream.flush()


def get(stream: BinaryIO) -> tuple:
    """The next message; EOFError when the other end has closed the pipe."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError
    sizes = HEADER.unpack(header)
    text, blob = (stream.read(n) for n in sizes)
    if len(text) < sizes[0] or len(blob) < sizes[1]:
        raise EOFError
    tensors = load(blob) if blob else {}
    return _unpack(json.loads(text), tensors)


class _Parts:
    """A message's tensors, flattened and grouped by dtype: each group becomes one safetensors tensor."""

    def __init__(self) -> None:
        self.groups: dict[str, list[torch.Tensor]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, tensor: torch.Tensor) -> list:
        """Where `tensor` will lie in its group's flat tensor: [dtype, offset, shape]."""
        dtype = str(tensor.dtype)
        offset = self.sizes.get(dtype, 0)
        self.groups.setdefault(dtype, []).append(tensor.detach().cpu().reshape(-1))
        self.sizes[dtype] = offset + tensor.numel()
        return [dtype, offset, list(tensor.shape)]


SCALARS = frozenset({type(None), bool, int, float, str})  # sent as they are (checked by exact type: the bulk)


def _pack(obj: Any, parts: _Parts) -> Any:
    """JSON-able form of a message: tensors as [dtype, offset, shape] in their group's flat tensor, dataclasses by
    (allowed) type name, tuples and dicts with non-string keys tagged so they come back as they were. A step's
    message is mostly lists of floats (the probes): those go through without a call per value."""
    kind = type(obj)
    if kind in SCALARS:
        return obj
    if isinstance(obj, list):
        return [v if type(v) in SCALARS else _pack(v, parts) for v in obj]
    if isinstance(obj, torch.Tensor):
        return {"$t": parts.add(obj)}
    if isinstance(obj, np.ndarray):  # a picture's arrays: sent as tensors, read back as arrays
        return {"$n": parts.add(torch.from_numpy(np.ascontiguousarray(obj)))}
    if is_dataclass(obj):
        return {"$d": kind.__name__, "f": {f.name: _pack(getattr(obj, f.name), parts) for f in fields(obj)}}
    if isinstance(obj, tuple):
        return {"$u": [_pack(v, parts) for v in obj]}
    if isinstance(obj, dict):
        return {"$m": [[_pack(k, parts), _pack(v, parts)] for k, v in obj.items()]}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str | int | float):
        return obj
    raise TypeError(f"cannot send a {type(obj).__name__} to or from a training worker")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [v if type(v) in SCALARS else _unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "$t" in obj:
        return _slice(tensors, *obj["$t"])
    if "$n" in obj:
        return _slice(tensors, *obj["$n"]).numpy()
    if "$u" in obj:
        return tuple(_unpack(v, tensors) for v in obj["$u"])
    if "$m" in obj:
        return {_unpack(k, tensors): _unpack(v, tensors) for k, v in obj["$m"]}
    return _types()[obj["$d"]](**{k: _unpack(v, tensors) for k, v in obj["f"].items()})


# the dtypes NumPy has, in which `_slice` copies a message's tensors
NUMPY_DTYPES = frozenset(
    {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool}
)


def _slice(tensors: dict[str, torch.Tensor], dtype: str, offset: int, shape: list[int]) -> torch.Tensor:
    """A message tensor: its own copy (not a view that would keep the whole flat tensor alive).

    NumPy makes the copy where it has the dtype: torch's `clone` splits a copy over the process's OpenMP threads,
    and in the server, beside a worker that keeps the cores busy, their spinning took 0.40 s of CPU for the
    default pair's messages, against 0.02 s on one thread."""
    size = math.prod(shape)
    flat = tensors[dtype]
    if not 0 <= offset <= offset + size <= flat.numel():
        raise ValueError(f"a tensor of {size} values at {offset} lies outside the message's {flat.numel()}")
    part = flat[offset : offset + size].view(shape)
    if part.dtype in NUMPY_DTYPES:
        return torch.from_numpy(part.numpy().copy())
    return part.clone()


def _types() -> dict[str, type]:
    """The only types a message may hold besides plain values and tensors."""
    kinds = (Mirror, StepRecord, ModelState, Snapshot, TrainerState, ModelConfig, TrainConfig, DataConfig, Dataset)
    return {kind.__name__: kind for kind in kinds}


@dataclass
class Mirror:
    """What the server keeps of the worker's trainer, sent after every step."""

    step: int  # optimizer steps done
    states: dict[str, ModelState]  # per model status
    snapshots: dict[str, list[Snapshot]]  # snapshots taken since the last message
    skip_events: list[tuple[str, int, float]]  # all live skip changes so far
    alphas: dict[str, float]  # skip scale in force per model
    pictures: dict[str, tuple] | None = None  # running model -> its picture now, every few steps when asked


def _mirror(trainer: Trainer, sent: dict[str, int], with_pictures: bool = False) -> Mirror:
    snaps = {k: v[sent[k] :] for k, v in trainer.snapshots.items()}
    for k, v in trainer.snapshots.items():
        sent[k] = len(v)
    return Mirror(
        step=trainer.step,
        states={k: ModelState(s.status, s.step, s.message) for k, s in trainer.states.items()},
        snapshots=snaps,
        skip_events=list(trainer.skip_events),
        alphas={k: trainer.skip_scale(k) for k in trainer.models},
        pictures=_pictures(trainer) if with_pictures else None,
    )


def _state(trainer: Trainer) -> TrainerState:
    """The trainer's state without its snapshots: the server has them already, from the mirrors (a depth-20
    pair's twelve snapshots each are about 30 MB)."""
    return replace(trainer.capture(), snapshots={})


def _pictures(trainer: Trainer) -> dict[str, tuple]:
    """The family's picture of each model still training, from the weights it has now."""
    running = [k for k in trainer.models if trainer.states[k].status == "running"]
    return {k: pictures.picture(trainer.models[k], trainer.dataset) for k in running}


def train_one(inp: BinaryIO, out: BinaryIO, setup: tuple) -> None:
    """One run: train, report each step, wait for the server's word, report the end."""
    models, train, dataset, start, alphas, threads, picture_every = setup
    torch.set_num_threads(threads)
    try:
        trainer = Trainer(models, train, dataset.config, start=start, dataset=dataset)
        for key, alpha in alphas.items():
            trainer.set_skip_scale(key, alpha)
        sent = {k: len(trainer.snapshots[k]) for k in trainer.models}  # a fork's inherited ones: the server has them
        run = trainer.run()
        for records in run:
            picture = pictures.due(trainer.step, trainer.total_steps, picture_every)
            put(out, ("step", records, _mirror(trainer, sent, picture)))
            while True:  # between two steps: serve captures until told to go on (or to park)
                message = get(inp)
                if message[0] == "capture":
                    put(out, ("captured", _state(trainer)))
                    continue
                if message[0] == "park":
                    run.close()
                    put(out, ("parked", _state(trainer)))
                    return
                _, threads_now, alphas, stop = message
                if threads_now != threads:
                    threads = threads_now
                    trainer.set_threads(threads)
                for key, alpha in alphas.items():
                    trainer.set_skip_scale(key, alpha)
                if stop:
                    trainer.stop.set()
                break
        put(out, ("done", _mirror(trainer, sent), _state(trainer)))
    except EOFError:
        raise
    except Exception as err:  # noqa: BLE001 - reported to the server, which fails the run with it
        put(out, ("failed", f"{type(err).__name__}: {err}"))


def warm() -> None:
    """Pay the first-use costs while idle, not after a student's click: the first optimizer imports torch's
    compiler machinery (`torch._dynamo`, 1.4 s: `Optimizer.__init__` is wrapped to disable it), and the
    first net, forward and backward pass set up the rest."""
    torch.set_num_threads(1)
    net = build_model(ModelConfig(depth=8, width=4))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.zeros(2, 1, 8, 8)).sum().backward()
    optimizer.step()


def main() -> None:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the message stream
    warm()
    # torch and the library stay loaded for the worker's life: out of the collector's sight, a full collection
    # (189 ms here, pausing the training it fell into) no longer walks them
    gc.collect()
    gc.freeze()
    try:
        put(out, ("ready",))  # the pool gives a run a ready worker first (`WorkerPool.take`)
        while True:
            setup = get(inp)
            while setup[0] == "go":  # sent ahead for a step the last run did not take (it ended or stopped first)
                setup = get(inp)
            train_one(inp, out, setup)
    except (EOFError, BrokenPipeError):  # the server closed the pipe or went away: nothing left to do
        return
