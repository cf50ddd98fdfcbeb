"""Background tasks: one base for every piece of long work (training runs, sweeps, analyses).

A `Task` runs its `work()` in a worker thread that touches no UI. It owns a stop event, a status
(queued, running, finished, stopped, failed) and a failure message, and its subclasses expose
consistent copies of their progress for a UI to draw. Where the thread comes from is an `Executor`:
an in-process thread here (`ThreadExecutor`); a cluster executor can take its place without the
tasks knowing.
"""

from __future__ import annotations

import threading
import traceback
import weakref
from abc import ABC, abstractmethod
from typing import Literal, Protocol

TaskStatus = Literal["queued", "running", "finished", "stopped", "failed"]


class Task(ABC):
    """Long work with a stop event, a status and a failure message; subclasses implement `work()`.

    `work()` returns normally when it is done (status ``finished``, or ``stopped`` if the stop event
    was set), raises to fail (status ``failed`` with the exception as message: a task never takes the
    server down), and checks `stop_event` between units of work.
    """

    name = "task"  # thread name, for debugging

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop_event = stop or threading.Event()
        self.status: TaskStatus = "queued"
        self.message = ""  # why it failed or stopped
        self.error: Exception | None = None  # what it failed with (callers read e.g. StoreError.kind)
        self._done = threading.Event()

    @abstractmethod
    def work(self) -> None:
        """The long work itself, in the worker thread."""

    def run(self) -> None:
        """Run to the end in the calling thread (the executor's worker, or a CLI's main thread)."""
        try:
            if not self.stop_event.is_set():
                self.status = "running"
                self.work()
            self.status = "stopped" if self.stop_event.is_set() and self.status != "finished" else "finished"
            if self.status == "stopped" and not self.message:
                self.message = "stopped"
        except Exception as exc:  # noqa: BLE001 - the UI shows the message; a bug's traceback goes to the log
            self.status, self.message, self.error = "failed", f"{type(exc).__name__}: {exc}", exc
            if not isinstance(exc, ValueError):  # ConfigError, StoreError...: said plainly, not a bug
                traceback.print_exc()
        finally:
            self._done.set()
            self.on_done()

    def on_done(self) -> None:  # noqa: B027 - a hook: most tasks need nothing at the end
        """Called once in the worker after the task ended, whatever the status (override to save results)."""

    def stop(self) -> None:
        """Ask the task to stop at its next check (or not to start)."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the task has ended; True if it has."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Executor(Protocol):
    """Where tasks run. `submit` returns at once; the task reports through its own status."""

    def submit(self, task: Task) -> None: ...


_STARTED: weakref.WeakSet[Task] = weakref.WeakSet()  # tasks this process's executors started


class ThreadExecutor:
    """Each task in its own daemon thread of this process (the embedded default)."""

    def submit(self, task: Task) -> None:
        _STARTED.add(task)
        threading.Thread(target=task.run, name=f"resnet-viz-{task.name}", daemon=True).start()


def stop_all(timeout: float = 60.0) -> bool:
    """Stop every task still running in this process and wait for them (a clean exit: no thread is
    left inside torch when the interpreter shuts down). True if all ended in time."""
    tasks = [t for t in list(_STARTED) if not t.done]
    for task in tasks:
        task.stop()
    return all(task.join(timeout) for task in tasks)


class InlineExecutor:
    """Runs each task to the end inside `submit` (CLI, notebooks, deterministic tests)."""

    def submit(self, task: Task) -> None:
        task.run()
