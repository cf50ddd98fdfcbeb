"""Per-browser-session references to runs, and the server's one run service.

A session does not own training: it holds handles that the server-wide `RunService` gave it (a
live run it watches, shared with every session that asked for the same run, or a stored run). Each
session is one viewer with an id. When the session is released (tab closed), `on_release` leaves
every run it watched (a run stops when its last viewer has gone, after a grace period that lets a
reloaded tab re-attach) and stops its own background tasks (sweeps, analyses).
"""

from __future__ import annotations

import gc
import importlib
import os
import secrets
import sys
import threading
from dataclasses import dataclass, field
from typing import Protocol

import streamlit as st

from resnet_viz.lab import LabConfig
from resnet_viz.runs import Handle, RunService, Scheduler
from resnet_viz.runs.budget import estimate
from resnet_viz.runs.defaults import SERVER_PAIR, SHAPES_PAIR
from resnet_viz.runs.remote import POOL

from .store import run_store

SESSION_KEY = "resnet_viz.jobs"


class Stoppable(Protocol):
    def stop(self) -> None: ...


@st.cache_resource(show_spinner=False)
def run_service() -> RunService:
    """The server's run service: one per process, on the server's run store. ``RESNET_VIZ_GRACE_SECONDS``
    (default 20) is how long a run nobody watches any more waits for a reloaded tab to come back."""
    try:
        grace = float(os.environ.get("RESNET_VIZ_GRACE_SECONDS", "20"))
    except ValueError:
        grace = 20.0
    # Runs train in child processes (runs/remote.py): a training thread in this process waits for the
    # GIL while pages build figures. RESNET_VIZ_PROCESSES=0 trains in threads instead (the AppTests do).
    processes = os.environ.get("RESNET_VIZ_PROCESSES", "1") != "0"
    # Threads still train here with processes off, and analyses run beside pages: they release the GIL
    # in every torch op and need it back right after, and the default 5 ms switch interval made each op
    # wait its turn (in-thread training at 0.41x the headless speed with 5 ms, 0.54x with 0.5 ms).
    sys.setswitchinterval(0.0005)
    service = RunService(run_store(), grace_seconds=grace if grace >= 0 else 20.0, processes=processes)
    # As many warm workers as runs train at once (two on two cores; at most two: each holds ~420 MB):
    # a student opening Attributions, then Receptive fields, starts two default pairs a second apart,
    # and the second waited ~4 s for a cold worker to import torch.
    POOL.idle = max(1, min(2, service.scheduler.cores))
    threading.Thread(
        target=_preload, args=(processes, service.scheduler), name="resnet-viz-preload", daemon=True
    ).start()
    return service


PRELOAD_WAIT_SECONDS = 120.0  # the rest of the start-up waits at most this long for the first runs to end


def _preload(processes: bool, scheduler: Scheduler) -> None:
    """What the first Train click would otherwise wait for, done when the server starts: a training
    worker process (it imports torch and builds a first net), the default pairs' data sets and their cost
    estimates (the first meta-device pass takes 1.7 s); then the analysis pages' libraries and a second worker.

    Those last wait while a run trains: on a cold server whose first request was a shared link, a student's
    first run trained beside a second worker importing torch and Captum and SciPy importing under the
    server's GIL, at half the engine's speed."""
    if processes:
        POOL.warm(up_to=1)  # the first run's worker first: each start-up takes a core for ~3 s
    for pair in (SERVER_PAIR, SHAPES_PAIR):  # a first Train click waits for its config's estimate
        req = pair.request
        estimate(req.models, req.train, req.data)
    scheduler.wait_until(lambda: scheduler.counts() == (0, 0), PRELOAD_WAIT_SECONDS)
    # The analysis pages' libraries: importing Captum and SciPy holds the GIL for about 2 s, which
    # froze every tab (and a class's first Train clicks) when the first student opened Attributions.
    importlib.import_module("resnet_viz.attribution")
    importlib.import_module("resnet_viz.limits")
    importlib.import_module("resnet_viz.landscape")
    # Everything loaded so far (Streamlit, torch, Plotly, pandas, Captum, SciPy: about 400,000 objects) lives as
    # long as the server: out of the collector's sight, a full collection no longer walks it. One took 200-320
    # ms, on whichever thread set it off; at a run's end that was the thread reading the run's last message.
    gc.collect()
    gc.freeze()
    if processes:
        POOL.warm()


@dataclass
class SessionJobs:
    """What one browser session watches and runs."""

    service: RunService  # the server's run service
    viewer: str = field(default_factory=lambda: f"tab-{secrets.token_hex(6)}")  # this session as a viewer
    lab: Handle | None = None  # the training lab's run (A and B in lockstep): live or stored
    lab_config: LabConfig | None = None  # the config of that run
    pairs: dict[str, Handle] = field(default_factory=dict)  # analysis pages' default pairs, by page
    others: dict[str, Stoppable] = field(default_factory=dict)  # background tasks of this session, by name

    def watch_lab(self, handle: Handle, config: LabConfig) -> None:
        """Make `handle` this session's lab run; the previous one is left (one live lab run per session)."""
        if self.lab is not None and self.lab is not handle:
            self.service.release(self.lab, self.viewer)
        self.lab, self.lab_config = handle, config

    def leave_lab(self) -> None:
        if self.lab is not None:
            self.service.release(self.lab, self.viewer)
        self.lab, self.lab_config = None, None

    def close(self) -> None:
        self.service.release_viewer(self.viewer)
        for task in self.others.values():
            task.stop()


def _release(opened: list[SessionJobs]) -> None:
    for jobs in opened:
        jobs.close()


@st.cache_resource(scope="session", on_release=_release, show_spinner=False)
def _session_registry() -> list[SessionJobs]:
    """What this session opened, released with it (a list: a test harness may open several per session id)."""
    return []


def session_jobs() -> SessionJobs:
    """This browser session's runs: kept in its session state, closed when the session is released."""
    jobs = st.session_state.get(SESSION_KEY)
    if jobs is None:
        jobs = SessionJobs(run_service())
        _session_registry().append(jobs)
        st.session_state[SESSION_KEY] = jobs
    return jobs
