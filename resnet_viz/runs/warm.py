"""Warm-up: train every run a class will ask for first, before class, into the store.

`python -m resnet_viz warm` goes through `defaults.warm_requests()` (the default pairs of the
analysis pages, the Home presets, the classroom sweep) one at a time through the run service, so
a run already stored is skipped and a stopped warm-up resumes where it was. The ETA is the FLOPs
left (from each run's cost estimate) over the training speed measured so far.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..training import StepRecord
from .budget import estimate
from .live import LiveRun, RunRequest
from .scheduler import BACKGROUND
from .service import RunService


@dataclass
class WarmProgress:
    """Where a warm-up is: runs done (of which already stored), the current run, the estimated time left."""

    total: int  # runs to have in the store
    done: int = 0  # runs in the store now (trained here or found there)
    cached: int = 0  # of `done`, runs that were stored before
    current: str = ""  # what is training now
    step: int = 0  # its steps done
    steps: int = 0  # its steps in all
    eta_seconds: float = float("nan")  # time left for the runs not yet stored
    failed: list[str] = field(default_factory=list)  # runs that did not finish (diverged runs count as finished)


def warm(
    service: RunService,
    requests: list[tuple[str, RunRequest]],
    stop: threading.Event | None = None,
    on_progress: Callable[[WarmProgress], None] | None = None,
) -> WarmProgress:
    """Have every request's run in the store; returns the final progress."""
    stop = stop or threading.Event()
    progress = WarmProgress(total=len(requests))
    pending = [(what, r) for what, r in requests if not service.store.has(r.key)]
    progress.cached = progress.done = len(requests) - len(pending)
    left = {r.key: estimate(r.models, r.train, r.data).train_flops for _, r in pending}
    trained_flops, trained_seconds = 0.0, 0.0

    def report() -> None:
        rate = trained_flops / trained_seconds if trained_seconds > 1 else service.scheduler.flops_per_second
        progress.eta_seconds = sum(left.values()) / rate
        if on_progress is not None:
            on_progress(progress)

    report()
    for what, request in pending:
        if stop.is_set():
            break
        progress.current, progress.step = what, 0
        started = time.perf_counter()

        def on_step(run: LiveRun, records: list[StepRecord], key: str = request.key) -> None:
            progress.step, progress.steps = records[0].step, run.estimate.steps
            left[key] = run.estimate.train_flops * (1 - progress.step / max(1, progress.steps))
            report()

        run = service.fetch(request, "warm", stop, BACKGROUND, on_step=on_step)
        if run is None:
            if stop.is_set():
                break
            progress.failed.append(what)
        else:
            progress.done += 1
        trained_flops += estimate(request.models, request.train, request.data).train_flops
        trained_seconds += time.perf_counter() - started
        left.pop(request.key, None)
        report()
    progress.current = ""
    report()
    return progress
