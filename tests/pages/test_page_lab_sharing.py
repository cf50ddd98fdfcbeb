"""AppTest: sessions asking for the same run share one training; moving α on a shared run forks it."""

import threading

from harness import open_page
from streamlit.testing.v1 import AppTest

from resnet_viz.data import DataConfig
from resnet_viz.lab import PRESETS, encode
from resnet_viz.models import ModelConfig
from resnet_viz.runs import WATCHED, LiveRun
from resnet_viz.runs.budget import estimate
from resnet_viz.training import TrainConfig
from resnet_viz.ui.session import SESSION_KEY, run_service


def _session(params: dict[str, str]) -> AppTest:
    return open_page("pages/lab.py", params)


def _train(at: AppTest) -> LiveRun:
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at.session_state[SESSION_KEY].lab


def test_a_class_on_one_preset_trains_once_and_a_fork_changes_only_its_mover():
    preset = PRESETS["depth"]
    params = {**encode(preset.config.normalized()), "preset": preset.key}
    service = run_service()
    # Hold every core, so the shared run stays queued: what is asserted here needs no training.
    cfg = preset.config.normalized()
    held = [
        service.scheduler.ticket(estimate(cfg.models(), cfg.train, cfg.data), WATCHED)
        for _ in range(service.scheduler.cores)
    ]
    for ticket in held:
        assert service.scheduler.acquire(ticket, threading.Event())
    sessions = [_session(params) for _ in range(3)]
    try:
        runs = [_train(at) for at in sessions]
        assert runs[0] is runs[1] is runs[2] and service.trainings == 1 and len(runs[0].viewers) == 3
        assert runs[0].trainer is None  # queued: no model built yet
        first, _, mover = sessions
        mover.run()
        mover.slider(key=f"lab.live.{runs[0].id}.B").set_value(0.5).run()
        assert not mover.exception, [e.value for e in mover.exception]
        forked = mover.session_state[SESSION_KEY].lab
        assert forked is not runs[0] and service.trainings == 2
        assert set(forked.viewers) == {mover.session_state[SESSION_KEY].viewer}
        assert forked.skip_scale("B") == 0.5 and runs[0].skip_scale("B") == 1.0
        assert len(runs[0].viewers) == 2 and first.session_state[SESSION_KEY].lab is runs[0]
        first.run()
        assert first.slider(key=f"lab.live.{runs[0].id}.B").value == 1.0  # the others keep their run
        assert mover.query_params["run"] == forked.id  # a reload of the mover's tab re-attaches to its fork
    finally:
        for at in sessions:
            at.session_state[SESSION_KEY].close()
        for ticket in held:
            service.scheduler.release(ticket)
    assert runs[0].join(60) and forked.join(60)  # nobody watches them any more: they stopped
    assert runs[0].status == forked.status == "stopped"


def test_a_reloaded_tab_reattaches_to_its_run():
    params = {"a.depth": "8", "a.width": "8", "epochs": "1"}
    service = run_service()
    cost = estimate({"A": ModelConfig(depth=8, width=8)}, TrainConfig(epochs=1), DataConfig())
    held = [service.scheduler.ticket(cost, WATCHED) for _ in range(service.scheduler.cores)]
    for ticket in held:  # the run stays queued until the test lets it go
        assert service.scheduler.acquire(ticket, threading.Event())
    try:
        first = _session(params)
        run = _train(first)
        assert first.query_params["run"] == run.id
        reloaded = _session({**params, "run": run.id})  # a new session opening the same URL
        assert reloaded.session_state[SESSION_KEY].lab is run and len(run.viewers) == 2
        gone = _session({**params, "run": "not-a-run"})
        assert gone.session_state[SESSION_KEY].lab is None
        assert any("no longer training" in i.value for i in gone.info)
    finally:
        for ticket in held:
            service.scheduler.release(ticket)
    assert run.join(120) and run.status == "finished"
