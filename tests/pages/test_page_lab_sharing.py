"""AppTest: sessions asking for the same run share one training; moving α on a shared run forks it."""

import threading

from harness import open_page, texts
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
        assert any("is training now" in i.value for i in gone.info)
    finally:
        for ticket in held:
            service.scheduler.release(ticket)
    assert run.join(120) and run.status == "finished"


def test_a_run_that_ends_before_the_next_refresh_is_drawn_ended(monkeypatch):
    """The lab redraws on a 1 s timer, so a run's end showed up to a second after it came. A tab whose run's
    ETA falls before its next refresh now waits for the end (the ETA and a margin, no longer) and draws it."""
    from dataclasses import replace

    from resnet_viz.runs import RunRequest
    from resnet_viz.ui import run_panel

    service = run_service()
    models, train, data = {"A": ModelConfig(depth=8, width=8)}, TrainConfig(epochs=1), DataConfig()
    held = [service.scheduler.ticket(estimate(models, train, data), WATCHED) for _ in range(service.scheduler.cores)]
    for ticket in held:  # the run never trains: its view and its end are the test's
        assert service.scheduler.acquire(ticket, threading.Event())
    try:
        run = service.request(RunRequest(models, train, data), "a tab")
        base, eta, waited, ended = run.view(), [0.4], [], threading.Event()
        monkeypatch.setattr(
            run, "view", lambda: replace(base, status="finished" if ended.is_set() else "running", eta_seconds=eta[0])
        )
        monkeypatch.setattr(run, "join", lambda timeout: waited.append(timeout) or ended.set() or True)
        assert run_panel.view_at_end(run, 1.0).status == "finished"
        assert waited == [0.4 + run_panel.END_WAIT_MARGIN_SECONDS]
        ended.clear()
        for eta[0] in (1.5, float("nan")):  # ends after the next refresh, or no speed measured yet: no wait
            assert run_panel.view_at_end(run, 1.0).status == "running"
        eta[0] = 0.4
        with run_panel.drawn_by_page():  # the page's own run (its layout drawn for a running run) does not wait
            assert run_panel.view_at_end(run, 1.0).status == "running"
        assert len(waited) == 1
        assert run_panel.view_at_end(run, 1.0).status == "finished" and len(waited) == 2  # its refresh does
        monkeypatch.undo()
    finally:
        service.release(run, "a tab", grace=False)
        for ticket in held:
            service.scheduler.release(ticket)
    assert run.join(60) and run.status == "stopped"


def test_tabs_watching_one_run_build_its_figures_once_per_rebuild_interval(monkeypatch):
    """A class redraws one run every second, each tab at its own moment and version: one tab builds."""
    from types import SimpleNamespace

    from resnet_viz.ui import run_panel

    builds: list[int] = []
    started, release = threading.Event(), threading.Event()

    def build(view, labels, data, drawn):
        builds.append(view.version)
        started.set()
        release.wait(10)
        return [f"figures of version {view.version}"]

    monkeypatch.setattr(run_panel, "_build", build)
    labels, data = {"A": "A · plain 8"}, DataConfig()

    def view(version: int, status: str = "running", step: int = 5) -> SimpleNamespace:
        return SimpleNamespace(id="run-1", version=version, status=status, step=step, picture_step=0)

    got: list[list[str]] = []
    first = threading.Thread(target=lambda: got.append(run_panel._figures(view(1), labels, data)))
    first.start()
    assert started.wait(10)  # tab 1 builds version 1; seven more tabs with newer versions arrive meanwhile
    waiting = [
        threading.Thread(target=lambda v=v: got.append(run_panel._figures(view(v), labels, data))) for v in range(2, 9)
    ]
    for t in waiting:
        t.start()
    release.set()
    for t in (first, *waiting):
        t.join(10)
    assert builds == [1] and got == [["figures of version 1"]] * 8  # they waited for tab 1's figures
    assert run_panel._figures(view(9), labels, data) == ["figures of version 1"]  # under REBUILD_SECONDS old
    assert run_panel._figures(view(9, "finished"), labels, data) == ["figures of version 9"]  # a new status at once
    monkeypatch.setattr(run_panel, "REBUILD_SECONDS", 0.0)
    assert run_panel._figures(view(9, "finished"), labels, data) == ["figures of version 9"]  # nothing newer
    assert run_panel._figures(view(10, "finished"), labels, data) == ["figures of version 10"]
    assert builds == [1, 9, 10]
    monkeypatch.setattr(run_panel, "REBUILD_SECONDS", 60.0)
    labels = {"A": "A · plain 14"}  # another run: its first points are drawn as soon as they exist
    assert run_panel._figures(view(1, step=0), labels, data) == ["figures of version 1"]
    assert run_panel._figures(view(2, step=1), labels, data) == ["figures of version 2"]
    assert run_panel._figures(view(3, step=2), labels, data) == ["figures of version 3"]
    assert run_panel._figures(view(4, step=3), labels, data) == ["figures of version 3"]


def test_a_runs_picture_is_built_once_per_set_of_pictures(monkeypatch):
    """The family's picture (an attention grid takes longer than the other charts) waits for new pictures."""
    from types import SimpleNamespace

    from resnet_viz.runs.tables import ChartTables
    from resnet_viz.ui import run_panel

    built: list[int] = []

    def picture(view, labels, data):
        built.append(view.picture_step)
        return f"picture of step {view.picture_step}"

    monkeypatch.setattr(run_panel, "_picture_panel", picture)
    tables, labels, data = ChartTables({}, {}), {"A": "A · plain 8"}, DataConfig()
    view = SimpleNamespace(
        steps=tables.steps_frame(), layers=tables.layers_frame(), states={}, skip_events=[], fork_step=0, picture_step=3
    )
    first = run_panel._build(view, labels, data, None)
    drawn = run_panel._Drawn(1, 5, "running", 0.0, first, picture_step=3)
    again = run_panel._build(view, labels, data, drawn)
    assert again[-1] == "picture of step 3" and len(again) == 6 and built == [3]
    assert again[0] is not first[0]  # the other charts are built anew
    view.picture_step = 6
    assert run_panel._build(view, labels, data, drawn)[-1] == "picture of step 6" and built == [3, 6]


def test_a_panel_serialises_its_figure_once_for_every_tab():
    import json

    import numpy as np
    import plotly.graph_objects as go
    import plotly.io as pio

    from resnet_viz.ui import live_chart
    from resnet_viz.ui.run_panel import Panel

    def loss() -> go.Figure:
        return go.Figure(go.Scatter(x=np.arange(50.0), y=np.arange(50.0) ** 2, name="A: train"), {"title": "Loss"})

    fig = loss()
    calls = []
    real = fig.to_json
    fig.to_json = lambda **kw: calls.append(kw) or real(**kw)
    panel = Panel("lab.loss", fig, "caption")
    assert panel.live is panel.live and len(calls) == 1  # made once, read by every tab
    sent = json.loads(panel.live.json)
    decoded = go.Figure(sent["figure"])
    assert decoded.layout.title.text == "Loss" and decoded.data[0].name == "A: train"
    assert decoded.to_json() == pio.from_json(real(validate=False)).to_json()  # the figure, as st.plotly_chart sent it
    assert (sent["key"], sent["caption"], sent["wide"]) == ("lab.loss", "caption", False)

    def digest(p: Panel) -> str:
        return json.loads(p.live.json)["digest"]

    assert digest(Panel("lab.loss", loss(), "caption")) == sent["digest"]  # same chart, same digest: drawn once
    assert digest(Panel("lab.acc", go.Figure(), "caption")) != sent["digest"]
    assert digest(Panel("lab.loss", loss(), "another caption")) != sent["digest"]
    board = live_chart._payload((panel.live,), "{}")
    assert live_chart._payload((panel.live,), "{}") is board  # one board's bytes for every tab
    assert live_chart.charts_of(board) == [sent]


def _status(status: str, step: int = 80) -> AppTest:
    """`status_line` of a run of `status` at `step` that three tabs watch at 12.5 steps/s."""

    def script(status: str, step: int) -> None:
        from resnet_viz.runs.live import RunView
        from resnet_viz.ui.run_panel import status_line

        speed = 12.5 if step else 0.0
        view = RunView("r", status, "", step, 100, 10, speed, 1.6, 0, 0.0, {}, [], lambda: (None, None), viewers=3)
        status_line(view, {})

    return AppTest.from_function(script, args=(status, step)).run()


def _progress_line(status: str) -> str:
    """The progress text `status_line` draws for a run of `status` that three tabs watch at 12.5 steps/s."""
    return _status(status).get("progress")[0].proto.text


def test_a_run_before_its_first_step_says_it_is_starting():
    """On a fresh server the first step waits seconds for a training process to load: a bare "step 0/100" read
    as stuck."""
    at = _status("running", step=0)
    assert "Starting: the first step comes in a moment" in texts(at.caption)
    assert at.get("progress")[0].proto.text == "step 0/100 · epoch 0.0/10 · 3 watching"
    assert "Starting" not in texts(_status("running").caption)  # from the first step on
    assert "Starting" not in texts(_status("queued", step=0).caption)  # a queued run says its place instead


def test_an_ended_run_shows_its_speed_but_no_eta_or_watchers():
    """After "Finished" the line still read "ETA 0 s · 2 watching"; after Stop, an ETA for steps never to come."""
    assert _progress_line("running") == "step 80/100 · epoch 8.0/10 · 12.5 steps/s · ETA 2 s · 3 watching"
    for status in ("finished", "stopped"):
        assert _progress_line(status) == "step 80/100 · epoch 8.0/10 · 12.5 steps/s"
