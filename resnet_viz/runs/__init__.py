"""Runs for a whole server: requests answered from the store, from a live run, or by a new one.

- `service`: the run service (request -> stored | attach | new; viewers; forks; fetch for batch work)
- `live`: a run in training, its view for drawing, fork seeds
- `scheduler`: slots by cores, watched before background, FIFO, memory budget, threads per run
- `budget`: a run's cost from shapes alone, and the server owner's limits
- `tables`: compact history and fixed-size chart tables
- `defaults`: the runs a server trains once for everyone (presets, analysis pairs, classroom sweep)
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names for type checkers and editors; at run time `__getattr__` loads them
    from .budget import Estimate as Estimate
    from .budget import Limits as Limits
    from .budget import RunRefused as RunRefused
    from .live import LiveRun as LiveRun
    from .live import RunRequest as RunRequest
    from .live import RunView as RunView
    from .scheduler import BACKGROUND as BACKGROUND
    from .scheduler import WATCHED as WATCHED
    from .scheduler import Scheduler as Scheduler
    from .service import Handle as Handle
    from .service import Replay as Replay
    from .service import RunService as RunService

_HOMES = {  # each exported name -> the module it lives in
    "BACKGROUND": "scheduler",
    "WATCHED": "scheduler",
    "Estimate": "budget",
    "Handle": "service",
    "Limits": "budget",
    "LiveRun": "live",
    "Replay": "service",
    "RunRefused": "budget",
    "RunRequest": "live",
    "RunService": "service",
    "RunView": "live",
    "Scheduler": "scheduler",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> object:
    """Each name loads its module when first used (PEP 562): a training worker process imports `runs.worker`
    without the service, the chart tables and the plotting library behind them, which took a quarter of a
    second of its start-up, and a first click on a fresh server waits for that start-up."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
