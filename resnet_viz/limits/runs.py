"""Training grids for the analyses that need trained runs (init sensitivity, global reasoning).

Every grid point is a plain/residual run requested from the server's run service: a stored run
replays at once, a run another session is training is waited for, and only a new one trains (once,
for everyone, then stored). `GridTask` walks the points in a worker thread with a progress view.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..runs import BACKGROUND, LiveRun, RunRequest, RunService
from ..store import StoredRun
from ..tasks import Task
from ..training import StepRecord


@dataclass(frozen=True)
class GridPoint:
    """One run of a grid and what it stands for."""

    label: tuple[tuple[str, object], ...]  # e.g. (("init", "kaiming"), ("gain", 0.5), ("seed", 0)): table columns
    request: RunRequest  # the models, recipe and data of the run


@dataclass
class GridView:
    """A consistent copy of a grid's progress, safe to read while it goes on."""

    status: str  # queued, running, finished, stopped, failed
    message: str  # why it failed or stopped
    done: int  # points finished (trained or loaded)
    total: int  # points in the grid
    step: int  # steps done in the current run
    total_steps: int  # steps of the current run
    runs: list[tuple[GridPoint, StoredRun]] = field(default_factory=list)  # finished points, in order


class GridTask(Task):
    """Fetch every point of a grid through the run service, in order; `view()` from any thread."""

    name = "limits-grid"

    def __init__(
        self, points: list[GridPoint], service: RunService, viewer: str, stop: threading.Event | None = None
    ) -> None:
        super().__init__(stop)
        self.points, self.service, self.viewer = points, service, viewer
        self._lock = threading.Lock()
        self._runs: list[tuple[GridPoint, StoredRun]] = []
        self._step = self._total_steps = 0

    def work(self) -> None:
        for point in self.points:
            run = self.service.fetch(point.request, self.viewer, self.stop_event, BACKGROUND, on_step=self._on_step)
            if run is None:
                if not self.stop_event.is_set():
                    raise RuntimeError(f"the run for {dict(point.label)} did not finish")
                return
            with self._lock:
                self._runs.append((point, run))
                self._step = 0

    def _on_step(self, live: LiveRun, records: list[StepRecord]) -> None:
        with self._lock:
            self._step, self._total_steps = records[0].step, live.estimate.steps

    def view(self) -> GridView:
        with self._lock:
            return GridView(
                self.status,
                self.message,
                len(self._runs),
                len(self.points),
                self._step,
                self._total_steps,
                list(self._runs),
            )
