"""Per-browser-session job registry.

Each browser session (tab) gets its own `SessionJobs` from a session-scoped resource cache, so two
tabs never see each other's runs, every page of one session sees the same jobs, and training goes on
while the user switches pages. When the session is released (tab closed), `on_release` stops its jobs
so no thread outlives its user for long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import streamlit as st

from resnet_viz.jobs import Job
from resnet_viz.lab import LabConfig
from resnet_viz.store import StoredRun

SESSION_KEY = "resnet_viz.jobs"


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class SessionJobs:
    """The jobs of one browser session."""

    lab: Job | None = None  # the training lab's current run (A and B in lockstep)
    lab_config: LabConfig | None = None  # the config that run was started with
    replay: StoredRun | None = None  # a stored run reopened in the lab (shown when no run is live)
    others: dict[str, Stoppable] = field(default_factory=dict)  # other pages' background work, by name

    def stop_all(self) -> None:
        for job in [self.lab, *self.others.values()]:
            if job is not None:
                job.stop()


def _release(jobs: SessionJobs) -> None:
    jobs.stop_all()


@st.cache_resource(scope="session", on_release=_release, show_spinner=False)
def _session_registry() -> SessionJobs:
    return SessionJobs()


def session_jobs() -> SessionJobs:
    """This browser session's jobs (created on first use; also in session_state for tests)."""
    jobs = _session_registry()
    st.session_state[SESSION_KEY] = jobs
    return jobs
