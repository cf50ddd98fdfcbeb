"""Shared fixtures: torch on a fixed thread count, tiny configs, the app server and browser, and for every
test its own run store and AppTest sessions closed after it (tests/harness.py opens them)."""

from collections.abc import Iterator

import pytest
import torch
from browser_utils import close_pages, run_browser, run_server
from harness import close_sessions
from playwright.sync_api import Browser

from resnet_viz.data import DataConfig
from resnet_viz.models import ModelConfig
from resnet_viz.training import TrainConfig

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def two_threads() -> None:
    """Every test starts on two torch threads: an in-process run of an earlier AppTest sets the process's
    count to what the scheduler granted it (often 1), which made later unit tests run up to 1.8x slower."""
    torch.set_num_threads(2)


@pytest.fixture
def tiny_models() -> dict[str, ModelConfig]:
    """A plain and a residual depth-8 CNN: the smallest pair of the CIFAR-style family."""
    return {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}


@pytest.fixture
def tiny_train() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=128, warmup_steps=0)


@pytest.fixture
def digits() -> DataConfig:
    return DataConfig(name="digits")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[str]:
    """One `streamlit run app.py` for every browser test, with its own empty run store.

    Nothing visits it first: a test may open a deep link as the server's very first request, as a
    student with a shared URL would (resnet_viz/ui/shell.py makes that work).
    """
    served = run_server(tmp_path_factory.mktemp("app-data"))
    yield next(served)
    served.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium for every browser test."""
    yield from run_browser()


@pytest.fixture(autouse=True)
def own_store(tmp_path_factory, monkeypatch) -> Iterator[None]:
    """Every test gets an empty run store and a fresh run service: nothing leaks between tests, and no
    test ever touches the user's store."""
    from resnet_viz.ui.session import run_service
    from resnet_viz.ui.store import run_store

    monkeypatch.setenv("RESNET_VIZ_DATA_DIR", str(tmp_path_factory.mktemp("store")))
    monkeypatch.setenv("RESNET_VIZ_PROCESSES", "0")  # AppTests train in threads (the browser tests' server does not)
    run_store.clear()
    run_service.clear()
    yield
    run_store.clear()
    run_service.clear()


@pytest.fixture(autouse=True)
def closed_sessions(own_store) -> Iterator[None]:
    """Every AppTest session a test opened (harness.new_app) leaves its runs and stops its tasks after the
    test, before its run store and service go."""
    yield
    close_sessions()


@pytest.fixture(autouse=True)
def closed_pages() -> Iterator[None]:
    """Every browser tab a test opened (browser_utils.new_page) is closed after it, even when it failed."""
    yield
    close_pages()


@pytest.fixture(scope="session", autouse=True)
def no_task_outlives_the_tests() -> Iterator[None]:
    """Background runs still going when the tests end are stopped and joined: a thread inside torch at
    interpreter exit aborts the process."""
    from resnet_viz.tasks import stop_all

    yield
    assert stop_all(120)
