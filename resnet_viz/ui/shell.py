"""Pages always run inside app.py's navigation, also when a deep link is a fresh server's first request.

Streamlit treats a `pages/` folder next to the entry point as a legacy multipage app (MPA v1) until
`st.navigation` has run once in the server process (`PagesManager.uses_pages_directory`). Until then
a shared link such as `/lab?preset=depth` runs `pages/lab.py` bare: no app sidebar, no page config,
and Streamlit's list of the folder's files instead of the app's navigation. Opening the home page
first hides this, which is why only a student with a shared link meets it.

app.py runs every page inside `shell()`. `require_shell()`, called first by each page, notices a
bare run, switches the legacy mode off for the process (what `st.navigation` itself does) and
reruns once: the rerun goes through app.py, whose pages use the file names as URL paths, so the
same page (and the same query parameters) comes back under the app's own navigation.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

_IN_SHELL: contextvars.ContextVar[bool] = contextvars.ContextVar("resnet_viz_in_shell", default=False)
REROUTED_KEY = "shell.rerouted"  # this session has rerun a bare page through app.py once


@contextlib.contextmanager
def shell() -> Iterator[None]:
    """Mark the page run app.py's navigation makes (`with shell(): page.run()`)."""
    token = _IN_SHELL.set(True)
    try:
        yield
    finally:
        _IN_SHELL.reset(token)


def require_shell() -> None:
    """First call of every page: a page run bare by Streamlit's legacy mode reruns through app.py.

    The legacy flag is per process; a session reroutes at most once, so nothing can loop and no
    later click is lost to a rerun (a page run as the main script, e.g. by `streamlit run
    pages/lab.py`, renders after one rerun).
    """
    if _IN_SHELL.get():
        return
    PagesManager.uses_pages_directory = False
    if not st.session_state.get(REROUTED_KEY):  # once per session: a rerun drops a click it was carrying
        st.session_state[REROUTED_KEY] = True
        st.rerun()
