"""The server's run store (one per process) and a clear way forward when its file is damaged."""

from __future__ import annotations

import streamlit as st

from resnet_viz.store import RunStore, StoreError


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    """One store for the whole server; it opens a fresh SQLite connection per operation (thread-safe)."""
    return RunStore()


def store_problem(err: StoreError, key: str) -> None:
    """Explain a store error and offer to move the damaged file aside; nothing computed is lost."""
    st.error(f"The run store cannot be used: {err}")
    if st.button("Move the damaged store aside and start an empty one", key=key):
        moved = run_store().quarantine()
        st.success(
            f"Moved to {moved}. Finished runs will be stored again from now on." if moved else "Nothing to move."
        )
