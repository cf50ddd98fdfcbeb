"""One session cache for analysis results (attribution maps, receptive fields, landscapes, ...).

Analysis pages recompute nothing a rerun did not change: each result is kept in the session under a
key that names the model by a fingerprint of its weights (and skip scales), never by `id()`, so two
models never share an entry and the same weights found again (a snapshot reloaded) hit the cache.
Entries leave oldest first once a page's budget is full; results of deep nets are large, so each
page sets its own budget.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import streamlit as st
from torch import nn

FINGERPRINTS_KEY = "analysis.fingerprints"  # session_state: {model: hex digest}, weakly keyed


def fingerprint(model: nn.Module) -> str:
    """Identity of a model's weights, skip scales and config; computed once per model object and session."""
    prints: weakref.WeakKeyDictionary = st.session_state.setdefault(FINGERPRINTS_KEY, weakref.WeakKeyDictionary())
    if model not in prints:
        h = hashlib.blake2b(digest_size=16)
        for name, tensor in model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr([float(m.alpha) for m in model.modules() if hasattr(m, "alpha")]).encode())
        h.update(repr(getattr(model, "config", None)).encode())
        prints[model] = h.hexdigest()
    return prints[model]


class AnalysisCache:
    """A page's results in `session_state[prefix + "cache"]`, at most `size` of them (oldest evicted first).

    `keep` lists exception types that are results too (a method that cannot explain a model): they
    are cached and returned instead of raised, so a rerun does not try again.
    """

    def __init__(self, prefix: str, size: int, keep: tuple[type[Exception], ...] = ()) -> None:
        self.key = prefix + "cache"
        self.size = size
        self.keep = keep

    def _entries(self) -> dict[Hashable, Any]:
        return st.session_state.setdefault(self.key, {})

    def __contains__(self, key: Hashable) -> bool:
        return key in st.session_state.get(self.key, {})

    def get(self, key: Hashable) -> Any:
        return st.session_state.get(self.key, {}).get(key)

    def __call__(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """`compute()` once per key for this session."""
        entries = self._entries()
        if key not in entries:
            while entries and len(entries) >= self.size:
                entries.pop(next(iter(entries)))
            try:
                entries[key] = compute()
            except self.keep as err:
                entries[key] = err
        return entries[key]

    def on_demand(
        self, jobs: dict[Hashable, Callable[[], Any]], label: str, key: str, icon: str, note: str, spinner: str
    ) -> bool:
        """Results of a slow computation only when asked: a button with a note until every key is cached.

        Returns True once every key of `jobs` is cached (computed now, under `spinner`, if the button
        was just pressed); the button disappears as soon as it is pressed.
        """
        if all(k in self for k in jobs):
            return True
        slot = st.empty()
        with slot.container():
            pressed = st.button(label, key=key, icon=icon)
            if not pressed:
                st.caption(note)
        if not pressed:
            return False
        slot.empty()
        with st.spinner(spinner):
            for k, compute in jobs.items():
                self(k, compute)
        return True
