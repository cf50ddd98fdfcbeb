"""The server's run store (one per process), what each store problem means, and safe timestamps.

A store error is explained by its kind (`StoreError.kind`), never by matching its text. Only a file
SQLite calls damaged or not a database may be moved aside, only by the teacher, after a confirmation,
and `RunStore.quarantine` checks the file again before it moves anything: a busy, full or read-only
store, or one another server has already replaced, is never taken away from the class.
"""

from __future__ import annotations

import datetime as dt
import math

import streamlit as st

from resnet_viz.store import IMPORTED_PREFIX, RunInfo, RunStore, StoreError, short_key
from resnet_viz.ui.roles import confirm_button, is_teacher, teacher_only
from resnet_viz.ui.text import safe_text

HEADLINES = {
    "corrupt": "The run store file is damaged",
    "foreign": "The run store folder holds another database",
    "busy": "The run store is busy",
    "readonly": "The run store is read-only",
    "full": "The disk of the run store is full",
    "io": "The run store had a disk error",
    "missing": "The run store cannot be opened",
    "damaged_run": "A stored run is damaged",
    "invalid_import": "The file was not imported",
    "refused": "The run store refused this",
}
_EARLIEST, _LATEST = dt.datetime(1970, 1, 2).timestamp(), dt.datetime(9999, 1, 1).timestamp()


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    """One store for the whole server; it opens a fresh SQLite connection per operation (thread-safe)."""
    return RunStore()


def format_time(seconds: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored Unix time as local time, or "unknown time" for one no calendar holds (NaN, inf, 1e308)."""
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or not _EARLIEST <= seconds <= _LATEST:
        return "unknown time"
    try:
        return dt.datetime.fromtimestamp(seconds).strftime(fmt)
    except (OverflowError, OSError, ValueError):  # platform limits of localtime()
        return "unknown time"


def store_problem(err: StoreError, key: str) -> None:
    """Explain a store error by its kind; offer the teacher to move the file aside only when it is damaged."""
    st.error(f"{HEADLINES.get(err.kind, 'The run store cannot be used')}: {safe_text(err, 600)}")
    if not err.can_move_aside:
        return
    if not is_teacher():
        teacher_only("move the damaged store aside")
        return
    question = (
        "Move the damaged store aside and start an empty one? Every session on this server then sees an empty "
        "store; the old file is kept beside it as runs.sqlite3.corrupt-<time>."
    )
    if confirm_button("Move the damaged store aside", key, question, icon=":material/drive_file_move:"):
        try:
            moved = run_store().quarantine()
        except StoreError as again:
            st.warning(f"Nothing was moved. {HEADLINES.get(again.kind, '')}: {safe_text(again, 600)}")
            return
        st.success(
            f"Moved to {safe_text(moved)}. Finished runs will be stored again from now on."
            if moved
            else "Nothing to move: the file is gone already."
        )


def model_text(info: RunInfo, values: dict[str, float] | None = None) -> str:
    """A stored run's models: "plain 14 · residual 14" for a pair named so, "A: plain 20 · B: residual 20" for
    lab runs, each with its value from `values` when given (e.g. the final training loss)."""
    parts = []
    for key, depth in info.depths.items():
        kind = "residual" if info.skips.get(key) else "plain"
        name = kind if key in ("plain", "residual") else f"{key}: {kind}"
        parts.append(f"{name} {depth}" + (f" → {values[key]:.3g}" if values and key in values else ""))
    return " · ".join(parts)


def run_name(key: str, imported: bool) -> str:
    """A stored run's key as every page shows it: 12 hex digits, "(imported)" after an imported run's."""
    return f"{key.removeprefix(IMPORTED_PREFIX)[:12]} (imported)" if imported else short_key(key)


def run_option(info: RunInfo, losses: bool = False) -> str:
    """One stored run in a picker, the same on every page: when, its key (runs of one config differ in nothing
    else), whether imported, data, epochs, seed, live α changes and the models (with final training losses)."""
    key = run_name(info.key, info.imported)
    changed = f" · α moved live {info.skip_changes}×" if info.skip_changes else ""  # not what its config alone gives
    return (
        f"{format_time(info.created, '%m-%d %H:%M')} · {key} · {info.dataset} · "
        f"{info.epochs} ep · seed {info.seed}{changed} · {model_text(info, info.final_train_loss if losses else None)}"
    )
