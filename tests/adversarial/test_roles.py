"""Roles on a shared server (issue 10, item 1): with a teacher passphrase set, a student tab cannot
delete or import runs; a teacher tab unlocks with the passphrase (wrong attempts are counted and
limited); deleting asks for confirmation. Without a passphrase everything is allowed (a laptop)."""

from __future__ import annotations

import pytest
from harness import open_page
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest, app_test

from resnet_viz.data import DataConfig
from resnet_viz.models import ModelConfig
from resnet_viz.store import RunStore
from resnet_viz.training import TrainConfig, train_models
from resnet_viz.ui import roles
from resnet_viz.ui.store import run_store

PAGE = "pages/depth_study.py"
PASSPHRASE = "correct horse battery staple"
STUDENT_CAPTION = "A teacher can delete stored runs and import runs here"


@pytest.fixture(scope="module")
def tiny_run():
    """One tiny finished run (depth 8, width 8, one epoch), trained once for the module."""
    return train_models(
        {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)},
        TrainConfig(epochs=1, batch_size=128, warmup_steps=0),
        DataConfig(name="digits"),
    )


@pytest.fixture
def store(tiny_run, tmp_path, monkeypatch) -> RunStore:
    """The app's store folder, holding the tiny run."""
    monkeypatch.setenv("RESNET_VIZ_DATA_DIR", str(tmp_path))
    run_store.clear()
    store = RunStore(tmp_path)
    store.save(*tiny_run)
    return store


@pytest.fixture(autouse=True)
def warm_server(monkeypatch):
    """Run pages as a server does after its first request: through app.py's navigation.

    AppTest forgets Streamlit's legacy pages/ flag before every run, so each run would start in that
    mode (resnet_viz/ui/shell.py reroutes it, but not a widget's rerun); the browser test
    test_browser_deeplinks.py covers the first request itself.
    """
    monkeypatch.setattr(PagesManager, "uses_pages_directory", False)
    monkeypatch.setattr(app_test, "PagesManager", type("AppTestPages", (PagesManager,), {}))


def _open(secrets: dict[str, str] | None = None) -> AppTest:
    return open_page(PAGE, secrets=secrets)


def _labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def _unlock(at: AppTest, typed: str) -> None:
    at.text_input(key=roles.INPUT_KEY).input(typed)
    next(b for b in at.button if b.label == "Unlock").click().run()


def test_single_user_mode_allows_everything(store, monkeypatch):
    monkeypatch.delenv(roles.ENV_VAR, raising=False)
    at = _open()
    assert "Delete" in _labels(at) and len(at.get("file_uploader")) == 1
    assert not any(STUDENT_CAPTION in c.value for c in at.caption)
    assert not any(t.key == roles.INPUT_KEY for t in at.text_input)  # no teacher widget on a laptop


def test_a_student_cannot_delete_or_import(store, monkeypatch):
    monkeypatch.setenv(roles.ENV_VAR, PASSPHRASE)
    at = _open()
    assert "Delete" not in _labels(at) and len(at.get("file_uploader")) == 0
    assert any(STUDENT_CAPTION in c.value for c in at.caption)
    assert len(store.list_runs()) == 1


def test_the_passphrase_unlocks_a_tab_and_deleting_asks_first(store, monkeypatch):
    monkeypatch.setenv(roles.ENV_VAR, PASSPHRASE)
    at = _open()
    _unlock(at, "wrong")
    assert any("Wrong passphrase" in e.value for e in at.sidebar.error)
    assert "Delete" not in _labels(at)
    _unlock(at, PASSPHRASE)
    assert any("Teacher mode is on" in c.value for c in at.sidebar.caption)
    assert "Delete" in _labels(at) and len(at.get("file_uploader")) == 1
    assert roles.UNLOCKED_KEY in at.session_state and PASSPHRASE not in str(at.session_state[roles.UNLOCKED_KEY])
    next(b for b in at.button if b.label == "Delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert len(store.list_runs()) == 1  # nothing happens without the explicit yes
    next(b for b in at.button if b.label == "Delete").click().run()
    next(b for b in at.button if b.label == "Yes, delete").click().run()
    assert store.list_runs() == []
    next(b for b in at.button if b.label == "Lock teacher mode").click().run()
    assert "Delete" not in _labels(at) and len(at.get("file_uploader")) == 0


def test_failed_attempts_are_limited_per_tab(store, monkeypatch):
    monkeypatch.setenv(roles.ENV_VAR, PASSPHRASE)
    at = _open()
    for _ in range(roles.MAX_FAILURES):
        _unlock(at, "guess")
    _unlock(at, PASSPHRASE)  # even the right one waits once the limit is reached
    assert any("Too many attempts" in e.value for e in at.sidebar.error)
    assert "Delete" not in _labels(at)


def test_the_passphrase_can_come_from_streamlit_secrets(store, monkeypatch):
    monkeypatch.delenv(roles.ENV_VAR, raising=False)
    at = _open({roles.SECRET_NAME: PASSPHRASE})
    assert "Delete" not in _labels(at)
    _unlock(at, PASSPHRASE)
    assert "Delete" in _labels(at)


def test_an_unreadable_secrets_file_keeps_teacher_actions_locked(store, monkeypatch, tmp_path):
    monkeypatch.delenv(roles.ENV_VAR, raising=False)
    broken = tmp_path / "secrets.toml"
    broken.write_text('teacher_passphrase = "unterminated\n')
    from streamlit import config

    monkeypatch.setattr(
        config,
        "get_option",
        lambda name, _get=config.get_option: [str(broken)] if name == "secrets.files" else _get(name),
    )

    def unreadable(*_):
        raise FileNotFoundError("Error parsing secrets file")

    monkeypatch.setattr(roles.st.secrets.__class__, "get", unreadable)
    with pytest.raises(roles.Misconfigured):
        roles.configured_passphrase()
