"""The run store as a table: every stored run, to delete (teacher), export as a zip, or import from one.

Import and export are the store's own (`RunStore.import_zip` validates the whole archive before
anything is stored and never unpickles; `RunStore.export_zip` writes the folder format the CLI
writes); this module only lays them out and says what happened, with file names shown as text.
A store that cannot be read is explained by its kind (`ui.store.store_problem`), never by its text.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from resnet_viz.store import IMPORTED_PREFIX, RunInfo, RunStore, StoreError, short_key

from .roles import confirm_button, is_teacher, teacher_only
from .store import format_time, model_text, run_option, run_store, store_problem
from .text import safe_text

K = "depth."  # the depth study's widget prefix: the table lives on that page


def list_runs(key: str) -> list[RunInfo] | None:
    """Every stored run, newest first; None (and the problem explained, with its fix) when the store fails."""
    try:
        return run_store().list_runs()
    except StoreError as err:
        store_problem(err, key)
        return None


def runs_table(runs: list[RunInfo]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "stored": [format_time(r.created) for r in runs],
            "origin": ["imported" if r.imported else "trained here" for r in runs],
            "dataset": [r.dataset for r in runs],
            "epochs": [r.epochs for r in runs],
            "seed": [r.seed for r in runs],
            "models → final training loss": [model_text(r, r.final_train_loss) for r in runs],
            "status": [", ".join(sorted(set(r.status.values()))) for r in runs],
            "key": [short_key(r.key) for r in runs],
        }
    )


def import_section(store: RunStore) -> None:
    upload = st.file_uploader(
        "Import a run (a zip exported here)",
        type=["zip"],
        key=K + "import",
        help="validated completely before it is stored; nothing is unpickled",
    )
    if upload is None:
        st.session_state.pop(K + "import.result", None)
        return
    result = st.session_state.get(K + "import.result")
    if result is None or result[0] != upload.file_id:
        try:
            key = store.import_zip(upload.getvalue(), upload.name)
            done = (
                f"Imported run {short_key(key)} from {safe_text(upload.name)}."
                if key.startswith(IMPORTED_PREFIX)
                else f"{safe_text(upload.name)} is run {short_key(key)}, trained on this server and already stored: "
                "nothing was added."
            )
            result = (upload.file_id, True, done)
        except StoreError as err:
            result = (upload.file_id, False, f"Cannot import {safe_text(upload.name)}: {safe_text(err)}")
        except Exception as exc:  # noqa: BLE001 - the library should raise StoreError; never show a traceback
            problem = safe_text(f"{type(exc).__name__}: {exc}")
            result = (upload.file_id, False, f"Cannot import {safe_text(upload.name)}: {problem}")
        st.session_state[K + "import.result"] = result
        if result[1]:
            st.rerun()  # list the new run
    (st.success if result[1] else st.error)(result[2])


def stored_runs(runs: list[RunInfo] | None) -> None:
    st.subheader("Stored runs")
    if runs is None:
        st.caption("Unavailable until the run store is usable again (see the message at the top).")
        return
    store = run_store()
    message = st.session_state.pop(K + "stored.message", None)
    if message:
        st.success(message)
    if not runs:
        st.caption("No stored runs yet. Every finished sweep run and every finished lab run is stored here.")
    else:
        st.caption(
            f"{len(runs)} runs, newest first. Depth-study runs hold a plain/residual pair; lab runs models A and B."
        )
        st.dataframe(runs_table(runs), hide_index=True, height=min(400, 38 + 35 * len(runs)))
        by_key = {r.key: r for r in runs}
        pick, delete, export = st.columns([4, 1, 1], vertical_alignment="bottom")
        key = pick.selectbox(
            "Run",
            list(by_key),
            key=K + "stored.pick",
            format_func=lambda k: run_option(by_key[k]),
        )
        question = f"Delete run {short_key(key)} from the store, for everyone on this server? It cannot be undone."
        if is_teacher() and confirm_button("Delete", K + "stored.delete", question, delete, icon=":material/delete:"):
            try:
                removed = store.delete(key)
                done = f"Deleted run {short_key(key)}." if removed else "Already gone."
                st.session_state[K + "stored.message"] = done
            except StoreError as err:
                st.session_state[K + "stored.message"] = f"Could not delete: {safe_text(err)}"
            st.rerun()
        export.download_button(
            "Export",
            data=lambda: store.export_zip(key),
            file_name=f"resnet-viz-run-{short_key(key)}.zip",
            mime="application/zip",
            icon=":material/download:",
            key=K + "stored.export",
            on_click="ignore",
        )
    if is_teacher():
        import_section(store)
    else:
        teacher_only("delete stored runs and import runs")
