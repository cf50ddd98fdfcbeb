"""Who may do what on a shared classroom server: teacher actions behind a passphrase, confirmed.

A server for a whole class must not let one student delete everyone's runs, plant imported ones or
move the run store aside. The server owner sets a teacher passphrase, in the environment
(`RESNET_VIZ_TEACHER_PASSPHRASE`, which wins) or as the Streamlit secret `teacher_passphrase`.
With none set the app is in single-user mode, as on a laptop: everything is allowed. With one set,
deleting and importing runs, moving a store aside and warm-up are teacher actions; a tab unlocks
them for itself in the sidebar. A secrets file that exists but cannot be read keeps teacher actions
locked rather than falling back to single-user mode.

Failed attempts are limited per tab (`MAX_FAILURES` per `WINDOW_SECONDS`), and the passphrase is
compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit import config

ENV_VAR = "RESNET_VIZ_TEACHER_PASSPHRASE"
SECRET_NAME = "teacher_passphrase"
MAX_FAILURES = 5  # failed unlock attempts per tab within WINDOW_SECONDS
WINDOW_SECONDS = 300.0
UNLOCKED_KEY = "roles.unlocked"  # digest of the passphrase this tab unlocked with
FAILURES_KEY = "roles.failures"  # monotonic times of this tab's failed attempts
INPUT_KEY = "roles.passphrase"
MESSAGE_KEY = "roles.message"


class Misconfigured(Exception):
    """The secrets file exists but holds no usable passphrase: teacher actions stay locked."""


def configured_passphrase() -> str | None:
    """The teacher passphrase, or None in single-user mode. Raises Misconfigured on a broken secret."""
    value = os.environ.get(ENV_VAR)
    if value:
        return value
    try:
        value = st.secrets.get(SECRET_NAME)
    except FileNotFoundError as err:  # Streamlit's error for no secrets file, and for one it cannot parse
        if any(Path(p).is_file() for p in config.get_option("secrets.files")):
            raise Misconfigured("the secrets file cannot be read") from err
        return None
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Misconfigured(f"{SECRET_NAME} must be a non-empty string")
    return value


def _digest(passphrase: str) -> str:
    return hashlib.sha256(passphrase.encode()).hexdigest()


def single_user() -> bool:
    """No passphrase is configured: a laptop, where every action is allowed."""
    try:
        return configured_passphrase() is None
    except Misconfigured:
        return False


def is_teacher() -> bool:
    """May this tab delete, import, move the store aside or warm up? Always in single-user mode."""
    try:
        passphrase = configured_passphrase()
    except Misconfigured:
        return False
    if passphrase is None:
        return True
    unlocked = st.session_state.get(UNLOCKED_KEY)
    return isinstance(unlocked, str) and hmac.compare_digest(unlocked, _digest(passphrase))


def _recent_failures(now: float) -> list[float]:
    failures = [t for t in st.session_state.get(FAILURES_KEY, []) if now - t < WINDOW_SECONDS]
    st.session_state[FAILURES_KEY] = failures
    return failures


def _unlock() -> None:
    """Button callback: check the typed passphrase, clear the field, remember the outcome."""
    typed = str(st.session_state.get(INPUT_KEY) or "")
    st.session_state[INPUT_KEY] = ""
    now = time.monotonic()
    failures = _recent_failures(now)
    if len(failures) >= MAX_FAILURES:
        wait = WINDOW_SECONDS - (now - failures[0])
        st.session_state[MESSAGE_KEY] = f"Too many attempts from this tab: try again in {wait:.0f} s."
        return
    try:
        passphrase = configured_passphrase()
    except Misconfigured:
        passphrase = None
    if passphrase is not None and hmac.compare_digest(typed.encode(), passphrase.encode()):
        st.session_state[UNLOCKED_KEY] = _digest(passphrase)
        st.session_state.pop(FAILURES_KEY, None)
        st.session_state.pop(MESSAGE_KEY, None)
        return
    failures.append(now)
    left = MAX_FAILURES - len(failures)
    st.session_state[MESSAGE_KEY] = f"Wrong passphrase ({left} attempts left in {WINDOW_SECONDS / 60:.0f} min)."


def _lock() -> None:
    st.session_state.pop(UNLOCKED_KEY, None)


def teacher_login() -> None:
    """Sidebar widget: unlock (or lock again) teacher actions for this tab. Nothing in single-user mode."""
    try:
        passphrase = configured_passphrase()
    except Misconfigured as err:
        st.caption(f"Teacher actions are locked: {err}.")
        return
    if passphrase is None:
        return
    if is_teacher():
        st.caption("Teacher mode is on in this tab.")
        st.button("Lock teacher mode", key="roles.lock", on_click=_lock, icon=":material/lock:")
        return
    with st.expander("Teacher mode", icon=":material/key:"):
        st.text_input("Teacher passphrase", type="password", key=INPUT_KEY, max_chars=200)
        st.button("Unlock", key="roles.unlock", on_click=_unlock)
        message = st.session_state.get(MESSAGE_KEY)
        if message:
            st.error(message)


def teacher_only(action: str) -> None:
    """The caption shown instead of a teacher action's button, e.g. teacher_only("delete stored runs")."""
    st.caption(f"A teacher can {action} here (teacher mode in the sidebar).")


def confirm_button(
    label: str, key: str, question: str | Callable[[], str], container: Any = None, **button_args: Any
) -> bool:
    """A button for a destructive action: True only after a second, explicit "Yes" click.

    The first click (on the button, drawn in `container` if given) shows `question` at full width,
    our own wording (escape anything user-supplied in it), with "Yes, <label>" and "Cancel". A
    callable question is built only then (e.g. one that counts what would go with it).
    """
    pending = key + ".pending"
    if not st.session_state.get(pending):
        if (container or st).button(label, key=key, **button_args):
            st.session_state[pending] = True
            st.rerun()
        return False
    st.warning(question() if callable(question) else question)
    yes, no, _ = st.columns([1, 1, 3])
    if yes.button(f"Yes, {label.lower()}", key=key + ".yes", type="primary"):
        del st.session_state[pending]
        return True
    if no.button("Cancel", key=key + ".cancel"):
        del st.session_state[pending]
        st.rerun()
    return False
