"""Loss landscapes as background work: progress for a UI, results cached in the run store.

A landscape of a trained pair takes seconds on a GPU and a minute or more on a laptop CPU, so a
page runs it as a `Task` in a worker thread and redraws from `view()` every second: the charts fill
in as rows of the grid finish. A net that comes from a stored run (it has a run key) is looked up
in the store's analysis cache first (keyed by run key, model, step and settings) and stored there
once complete, so the next request for it is instant. Nets with no run key are computed each time.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import DataConfig
from ..store import RunStore, StoreError
from ..tasks import Task, TaskStatus
from .analysis import LandscapeConfig, NetLandscape, Progress, Target, compute_landscapes

KIND = "landscape"  # the store's analysis kind


def cache_params(config: LandscapeConfig, target: Target) -> dict[str, Any]:
    """What a cached landscape is keyed by besides the run: the model, its step and the settings."""
    return {"model": target.key, "step": target.step, **config.key()}


@dataclass
class LandscapeView:
    """A consistent copy of a landscape task's state for a UI to draw."""

    status: TaskStatus  # queued, running, finished, stopped, failed
    message: str  # why it failed or stopped
    fraction: float  # of the estimated work done, 0 to 1
    eta_seconds: float  # NaN until something is done
    phase: str  # what runs now
    results: dict[str, NetLandscape]  # model key -> landscape so far (NaN where not evaluated yet)
    cached: set[str] = field(default_factory=set)  # model keys that came from the store
    store_note: str = ""  # why the store could not be used (the landscapes are computed anyway)


class LandscapeTask(Task):
    """Landscapes of a few nets (a plain/residual pair) on one dataset, cached in `store` when given."""

    name = "landscape"

    def __init__(
        self,
        targets: list[Target],
        data: DataConfig,
        config: LandscapeConfig,
        store: RunStore | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.targets, self.data, self.config, self.store = targets, data, config.validate(), store
        # Half the cores by default: a training job of the same server keeps the rest.
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        self.progress = Progress()
        self.results: dict[str, NetLandscape] = {}
        self.cached: set[str] = set()
        self.store_note = ""

    def _lookup(self, target: Target) -> NetLandscape | None:
        if self.store is None or target.run_key is None:
            return None
        try:
            found = self.store.get_analysis(target.run_key, KIND, cache_params(self.config, target))
            return NetLandscape.from_dict(found) if found is not None else None
        except StoreError as err:
            self.store_note = f"The stored landscape could not be read ({err}); it is computed again."
        except (KeyError, TypeError, ValueError) as err:
            self.store_note = f"The stored landscape is malformed ({type(err).__name__}: {err}); it is computed again."
        return None

    def _keep(self, target: Target, result: NetLandscape) -> None:
        if self.store is None or target.run_key is None:
            return
        try:
            self.store.put_analysis(target.run_key, KIND, cache_params(self.config, target), result.to_dict())
        except StoreError as err:
            self.store_note = f"The landscape could not be stored ({err}); it is shown but will be computed again."

    def work(self) -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            pending = []
            for target in self.targets:
                hit = self._lookup(target)
                if hit is None:
                    pending.append(target)
                    continue
                with self.progress.lock:
                    self.results[target.key] = hit
                    self.cached.add(target.key)
            compute_landscapes(pending, self.data, self.config, self.progress, self.stop_event, self.results)
            if not self.stop_event.is_set():
                for target in pending:
                    self._keep(target, self.results[target.key])
        finally:
            torch.set_num_threads(previous)

    def view(self) -> LandscapeView:
        with self.progress.lock:
            results = copy.deepcopy(self.results)
            fraction = 1.0 if self.status == "finished" else self.progress.fraction
            phase, eta = self.progress.phase, self.progress.eta_seconds
            cached = set(self.cached)
        return LandscapeView(self.status, self.message, fraction, eta, phase, results, cached, self.store_note)
