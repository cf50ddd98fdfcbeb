"""Runs for a whole server: requests answered from the store, from a live run, or by a new one.

- `service`: the run service (request -> stored | attach | new; viewers; forks; fetch for batch work)
- `live`: a run in training, its view for drawing, fork seeds
- `scheduler`: slots by cores, watched before background, FIFO, memory budget, threads per run
- `budget`: a run's cost from shapes alone, and the server owner's limits
- `tables`: compact history and fixed-size chart tables
- `defaults`: the runs a server trains once for everyone (presets, analysis pairs, classroom sweep)
"""

from .budget import Estimate, Limits, RunRefused
from .live import LiveRun, RunRequest, RunView
from .scheduler import BACKGROUND, WATCHED, Scheduler
from .service import Handle, Replay, RunService

__all__ = [
    "BACKGROUND",
    "WATCHED",
    "Estimate",
    "Handle",
    "Limits",
    "LiveRun",
    "Replay",
    "RunRefused",
    "RunRequest",
    "RunService",
    "RunView",
    "Scheduler",
]
