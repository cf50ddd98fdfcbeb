"""The run service: one training per distinct run, viewers, forks, scheduling, budgets, bounded history."""

import threading
import time
import tracemalloc

import numpy as np
import pytest

from resnet_viz.data import DataConfig
from resnet_viz.models import ModelConfig
from resnet_viz.runs import (
    BACKGROUND,
    WATCHED,
    Limits,
    LiveRun,
    Replay,
    RunRefused,
    RunRequest,
    RunService,
    Scheduler,
    live,
)
from resnet_viz.runs.budget import estimate
from resnet_viz.runs.tables import ChartTables, CompactHistory
from resnet_viz.store import RunStore
from resnet_viz.training import StepRecord, TrainConfig

PAIR = {"A": ModelConfig(depth=8, width=8, skip=False), "B": ModelConfig(depth=8, width=8)}
REQUEST = RunRequest(PAIR, TrainConfig(epochs=2, warmup_steps=0), DataConfig())
WAIT = 120.0  # seconds a test waits for a condition before it fails


@pytest.fixture
def service(tmp_path) -> RunService:
    """One core (runs queue one behind another, one thread each) and no grace period."""
    return RunService(RunStore(tmp_path), Scheduler(cores=1), grace_seconds=0)


def _hold_slot(service: RunService) -> tuple:
    """Take the only slot, so requests stay queued until `release`."""
    ticket = service.scheduler.ticket(estimate(PAIR, REQUEST.train, REQUEST.data), WATCHED)
    assert service.scheduler.acquire(ticket, threading.Event())
    return ticket


def _losses(run, model: str) -> list[float]:
    return [r.loss for r in run.history().records if r.model == model]


def test_same_request_same_run_and_viewers_counted(service):
    held = _hold_slot(service)
    first = service.request(REQUEST, "tab-1")
    second = service.request(REQUEST, "tab-2")
    assert first is second and service.trainings == 1 and set(first.viewers) == {"tab-1", "tab-2"}
    # a queued run holds no model or optimizer, says where it is and how long it may wait
    view = first.view()
    assert first.trainer is None and view.status == "queued" and view.queue_position == 1
    service.release(first, "tab-1")
    assert not first.stop_event.is_set()  # the other viewer still watches
    service.release(first, "tab-2")
    assert first.stop_event.is_set() and first.join(WAIT) and first.status == "stopped"
    service.scheduler.release(held)
    assert service.live_runs() == []


def test_a_stored_run_trains_nothing(service):
    stored = service.fetch(REQUEST, "cli")
    assert stored is not None and not stored.cached and service.trainings == 1
    again = service.request(REQUEST, "tab-1")
    assert isinstance(again, Replay) and service.trainings == 1
    assert again.view().step == 20 and again.view().saved


def test_a_tab_forks_a_shared_run_once_though_its_page_runs_twice_at_once(service):
    """Streamlit can start a tab's next page run while the last one still waits for a fork's step: each of
    them moved the slider of the shared run and forked it, until the tab's run limit raised (a traceback)."""
    reached = threading.Event()
    shared = service.request(REQUEST, "tab-1", on_step=lambda run, records: reached.set())
    assert service.request(REQUEST, "tab-2") is shared and reached.wait(WAIT)
    results, go = [], threading.Barrier(3)

    def move(alpha: float) -> None:
        go.wait()
        results.append(service.set_skip_scale(shared, "tab-2", "B", alpha))

    threads = [threading.Thread(target=move, args=(a,)) for a in (0.5, 0.25, 0.75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    fork = results[0]
    assert fork is not shared and all(r is fork for r in results) and service.trainings == 2
    assert fork.skip_scale("B") in (0.5, 0.25, 0.75) and set(shared.viewers) == {"tab-1"}
    # a change the tab still asks of the shared run goes to its copy, at once (the value it will train with)
    assert service.set_skip_scale(shared, "tab-2", "B", 0.1) is fork and fork.skip_scale("B") == 0.1
    assert shared.skip_scale("B") == 1.0
    # back on the shared run (its link opened again), a move forks it anew
    assert service.attach(shared.id, "tab-2") is shared
    again = service.set_skip_scale(shared, "tab-2", "B", 0.3)
    assert again is not fork and service.trainings == 3
    for run in (shared, fork, again):
        run.stop()
        assert run.join(WAIT)


def test_a_finished_runs_speed_is_that_of_its_training(service, monkeypatch):
    """The progress line's steps/s divided by the time since the run started, also after it ended: read a
    second after the end of a 100-step run, it said 10% less than the run trained at (and so did the
    classroom benchmark, which reads it)."""
    run = service.request(REQUEST, "tab")
    assert run.join(WAIT) and run.status == "finished"
    rate = run.view().steps_per_second
    assert rate > 0
    later = time.perf_counter() + 100.0
    monkeypatch.setattr(live.time, "perf_counter", lambda: later)
    assert run.view().steps_per_second == rate


def test_fork_keeps_history_and_state(service):
    reached = threading.Event()

    def on_step(run: LiveRun, records: list[StepRecord]) -> None:
        if records[0].step >= 3:
            reached.set()

    shared = service.request(REQUEST, "tab-1", on_step=on_step)
    assert service.request(REQUEST, "tab-2") is shared
    assert reached.wait(WAIT)
    same = service.set_skip_scale(shared, "tab-2", "B", 1.0)  # alpha unchanged: the fork is a bit-exact copy
    assert same is not shared and same.fork_step >= 3 and set(shared.viewers) == {"tab-1"}
    service.request(REQUEST, "tab-3")  # attaches to the original, not to a fork
    assert service.trainings == 2
    changed = service.set_skip_scale(shared, "tab-3", "B", 0.25)
    for run in (shared, same, changed):
        assert run.join(WAIT) and run.status == "finished"
    k = changed.fork_step
    # the fork's history up to the fork step is the shared run's; unchanged models go on identically
    assert _losses(changed, "B")[:k] == _losses(shared, "B")[:k]
    assert _losses(changed, "A") == _losses(shared, "A")
    assert _losses(same, "B") == _losses(shared, "B") and _losses(same, "A") == _losses(shared, "A")
    # the changed model differs from the step after the fork on, and the change is recorded
    assert _losses(changed, "B")[k] != _losses(shared, "B")[k]
    assert changed.view().skip_events == [("B", k + 1, 0.25)] and changed.view().fork_step == k
    assert shared.view().skip_events == []
    # a fork of a run only one viewer watches is that run itself
    solo = service.request(RunRequest(PAIR, TrainConfig(epochs=1, warmup_steps=0, seed=5), DataConfig()), "tab-9")
    assert service.set_skip_scale(solo, "tab-9", "B", 0.5) is solo
    solo.join(WAIT)


def test_watched_runs_go_first_fifo_within_a_level():
    scheduler = Scheduler(cores=1, limits=Limits.from_env())
    cost = estimate(PAIR, REQUEST.train, REQUEST.data)
    holder = scheduler.ticket(cost, WATCHED)
    assert scheduler.acquire(holder, threading.Event())
    order: list[str] = []
    tickets = {"bg1": BACKGROUND, "w1": WATCHED, "bg2": BACKGROUND, "w2": WATCHED}
    threads = []
    for name, priority in tickets.items():
        ticket = scheduler.ticket(cost, priority)

        def work(ticket=ticket, name=name) -> None:
            scheduler.acquire(ticket, threading.Event())
            order.append(name)
            scheduler.release(ticket)

        threads.append(threading.Thread(target=work))
        threads[-1].start()
        waiting = len(threads)
        assert scheduler.wait_until(lambda n=waiting: scheduler.counts()[1] == n, WAIT)
    scheduler.release(holder)
    for t in threads:
        t.join(WAIT)
    assert order == ["w1", "w2", "bg1", "bg2"]


def test_background_work_yields_to_a_watched_run():
    scheduler = Scheduler(cores=1)
    cost = estimate(PAIR, REQUEST.train, REQUEST.data)
    background, watched = scheduler.ticket(cost, BACKGROUND), scheduler.ticket(cost, WATCHED)
    stop = threading.Event()
    assert scheduler.acquire(background, stop)
    order: list[str] = []

    def watch() -> None:
        scheduler.acquire(watched, stop)
        order.append("watched")
        scheduler.release(watched)

    thread = threading.Thread(target=watch)
    thread.start()
    assert scheduler.wait_until(lambda: scheduler.counts()[1] == 1, WAIT)
    assert scheduler.checkpoint(background, stop) == 1  # yields, waits for the watched run, goes on
    order.append("background")
    thread.join(WAIT)
    assert order == ["watched", "background"]


def test_background_work_gives_its_cores_to_a_watched_run_beside_it():
    """Two cores, a background run training (a sweep): a watched CNN run takes the free slot, the background run
    must yield at its next step (it held a core the watched run's second thread needs: measured, a default pair
    beside the classroom sweep finished in 13.9 s against 5.5 s alone) and may not start again while the watched
    run trains; beside a watched single-thread MLP run, which it slows not at all, it trains."""
    scheduler = Scheduler(cores=2)
    cnn = estimate(PAIR, REQUEST.train, REQUEST.data)
    mlp = estimate({"A": ModelConfig(family="mlp", depth=4)}, TrainConfig(), DataConfig(name="spirals"))
    stop = threading.Event()
    background, watched = scheduler.ticket(cnn, BACKGROUND), scheduler.ticket(cnn, WATCHED)
    assert scheduler.acquire(background, stop) and background.threads == 2 and not scheduler.must_yield(background)
    assert scheduler.acquire(watched, stop) and watched.threads == 1
    assert scheduler.must_yield(background) and scheduler.position(background) == (0, 0.0)
    resumed = threading.Thread(target=scheduler.checkpoint, args=(background, stop))
    resumed.start()
    assert scheduler.wait_until(lambda: watched.threads == 2 and background.waiting, WAIT)
    assert scheduler.position(background)[0] == 1 and scheduler.position(background)[1] > 0
    assert not scheduler.starts_soon(background)
    scheduler.release(watched)  # the watched run ended: the background run goes on with every core
    resumed.join(WAIT)
    assert background.running and background.threads == 2
    small = scheduler.ticket(mlp, WATCHED)
    assert scheduler.acquire(small, stop) and (small.threads, background.threads) == (1, 1)
    assert not scheduler.must_yield(background)  # without it, the MLP run would still have one thread
    scheduler.release(small)
    scheduler.release(background)


def test_a_watched_run_starts_soon_where_background_work_holds_the_slot():
    """Train's click waits for the first points (`LiveRun.wait_for_step`) when the run starts within a step: a slot
    is free, or background work holds it and yields to a watched run; not behind other runs or watched work."""
    scheduler = Scheduler(cores=1)
    cost = estimate(PAIR, REQUEST.train, REQUEST.data)
    first, held = scheduler.ticket(cost, WATCHED), scheduler.ticket(cost, BACKGROUND)
    assert scheduler.starts_soon(first)  # nothing trains: it will get the free slot as soon as it asks
    assert scheduler.acquire(held, threading.Event()) and scheduler.starts_soon(held)
    stop = threading.Event()
    watched, behind, background = (scheduler.ticket(cost, p) for p in (WATCHED, WATCHED, BACKGROUND))
    threads = [threading.Thread(target=scheduler.acquire, args=(t, stop)) for t in (watched, behind, background)]
    for thread in threads:
        thread.start()
    assert scheduler.wait_until(lambda: scheduler.counts()[1] == 3, WAIT)
    assert scheduler.starts_soon(watched)  # the background run gives it the slot at its next step
    assert not scheduler.starts_soon(behind) and not scheduler.starts_soon(background)
    held.priority = WATCHED  # someone watches the run that trains: nothing yields
    assert not scheduler.starts_soon(watched)
    stop.set()
    for thread in threads:
        thread.join(WAIT)
    scheduler.release(held)


def test_threads_never_oversubscribe_the_cores():
    scheduler = Scheduler(cores=2)
    cnn = estimate(PAIR, REQUEST.train, REQUEST.data)
    mlp = estimate({"A": ModelConfig(family="mlp", depth=4)}, TrainConfig(), DataConfig(name="spirals"))
    a, b = scheduler.ticket(cnn, WATCHED), scheduler.ticket(cnn, WATCHED)
    stop = threading.Event()
    assert scheduler.acquire(a, stop) and a.threads == 2  # alone: every core
    assert scheduler.acquire(b, stop) and (a.threads, b.threads) == (1, 1)
    scheduler.release(a)
    scheduler.release(b)
    m1, m2 = scheduler.ticket(mlp, WATCHED), scheduler.ticket(mlp, WATCHED)
    assert scheduler.acquire(m1, stop) and scheduler.acquire(m2, stop)  # two single-thread MLP runs at once
    assert (m1.threads, m2.threads) == (1, 1)


def test_cost_memory_and_queue_limits_refuse_with_a_message(tmp_path):
    tight = Limits(max_run_tflop=0.01, max_run_mb=4096, memory_mb=4096, max_queue=8, max_per_viewer=1)
    service = RunService(RunStore(tmp_path), Scheduler(cores=1, limits=tight), grace_seconds=0)
    with pytest.raises(RunRefused, match="TFLOP.*Lower the epochs"):
        service.request(RunRequest(PAIR, TrainConfig(epochs=100), DataConfig()), "tab")
    small = Limits(max_run_tflop=100, max_run_mb=1, memory_mb=4096, max_queue=8, max_per_viewer=1)
    service.scheduler.limits = small
    with pytest.raises(RunRefused, match="MB of memory.*Lower the batch size"):
        service.request(REQUEST, "tab")
    service.scheduler.limits = Limits(max_run_tflop=100, max_run_mb=4096, memory_mb=4096, max_queue=8, max_per_viewer=1)
    held = _hold_slot(service)
    first = service.request(REQUEST, "tab")
    with pytest.raises(RunRefused, match="limit per tab is 1"):
        service.request(RunRequest(PAIR, TrainConfig(epochs=1, seed=3), DataConfig()), "tab")
    service.release(first, "tab")
    service.scheduler.release(held)


def test_the_largest_widget_config_is_refused_by_default():
    """Depth 110, width 64, 32 px, batch 16, 1000 epochs would hold the server for about two weeks."""
    huge = {"A": ModelConfig(depth=110, width=64, skip=False), "B": ModelConfig(depth=110, width=64)}
    service = RunService(None, Scheduler(cores=2, limits=Limits.from_env()))
    with pytest.raises(RunRefused):
        service.request(RunRequest(huge, TrainConfig(epochs=1000, batch_size=16), DataConfig(input_size=32)), "tab")
    assert service.trainings == 0


def _record(model: str, step: int, layers: int, blocks: int) -> StepRecord:
    rng = np.random.default_rng(step)
    probes = {
        "grad_norm": rng.random(layers, dtype=np.float32).tolist(),
        "update_ratio": rng.random(layers, dtype=np.float32).tolist(),
        "block_grad_norm": rng.random(blocks, dtype=np.float32).tolist(),
        "act_std": rng.random(blocks, dtype=np.float32).tolist(),
    }
    val = 0.5 if step % 100 == 0 else None
    return StepRecord(
        model, step, step / 100, 0.1, float(np.float32(1 / step)), 0.5, 1.0, 0.01 * step, val, val, probes
    )


def test_history_memory_per_step_is_bounded_and_exact():
    layers, blocks = [f"l{i}" for i in range(57)], [f"b{i}" for i in range(27)]  # depth 56
    names = {"A": layers, "B": layers}, {"A": blocks, "B": blocks}
    compact, tables = CompactHistory(*names), ChartTables(*names)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for step in range(1, 10_001):
        records = [_record(k, step, len(layers), len(blocks)) for k in ("A", "B")]
        compact.add(records)
        tables.add(records)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_step = grown / 10_000
    # about 1.5 KB per step for the pair (float32 probes); Python lists of floats would take about 16 KB
    assert per_step < 4_000, per_step
    # the chart tables stay the same size at step 10,000 as at step 600
    steps = tables.steps_frame()
    assert (steps[steps.loss.notna()].groupby("model").size() <= 600).all()
    heat = tables.layers_frame()
    assert heat[heat.metric == "grad_norm_binned"].step.nunique() <= 240
    # and the compact history gives back exactly what it was given
    again = compact.history()
    assert len(again.records) == 20_000
    assert again.records[-1] == _record("B", 10_000, len(layers), len(blocks))


def test_binned_curve_means_are_exact():
    tables = ChartTables({"A": ["l"]}, {"A": ["b"]})
    tables.add([StepRecord("A", s, s, 0.1, float(s), 0.0, 1.0, 0.0) for s in range(1, 1201)])
    rows = tables.steps_frame()
    rows = rows[rows.loss.notna()]
    assert len(rows) == 600 and rows.step.tolist()[:2] == [2, 4]
    assert rows.loss.tolist()[:2] == [1.5, 3.5]  # each point is the mean of the two steps it covers


def test_fetch_trains_once_then_loads(service):
    steps = []
    first = service.fetch(REQUEST, "cli", on_step=lambda run, records: steps.append(records[0].step))
    assert not first.cached and service.trainings == 1 and steps == list(range(1, 21))
    second = service.fetch(REQUEST, "cli")
    assert second.cached and service.trainings == 1  # loaded from the store, no second training
    assert second.key == first.key and second.history.records == first.history.records


def test_fetch_stopped_stores_nothing(service):
    stop = threading.Event()

    def stop_after_three(run: LiveRun, records: list[StepRecord]) -> None:
        if records[0].step == 3:
            stop.set()

    assert service.fetch(REQUEST, "cli", stop=stop, on_step=stop_after_three) is None
    assert service.store.list_runs() == []


def test_warm_trains_what_is_missing_and_resumes(service, tmp_path, monkeypatch, capsys):
    import json

    from resnet_viz import cli
    from resnet_viz.runs.warm import warm

    other = RunRequest(PAIR, TrainConfig(epochs=1, warmup_steps=0, seed=4), DataConfig())
    requests = [("pair", REQUEST), ("other seed", other)]
    seen = []
    progress = warm(service, requests, on_progress=lambda p: seen.append((p.done, p.current, p.step)))
    assert progress.done == 2 and progress.cached == 0 and service.trainings == 2 and not progress.failed
    assert seen[1][:2] == (0, "pair") and seen[-1][:2] == (2, "")
    again = warm(service, requests)
    assert again.done == again.cached == 2 and service.trainings == 2  # resumed: nothing trained twice
    monkeypatch.setattr(cli, "warm_requests", lambda: requests)
    assert cli.main(["warm", "--store", str(service.store.directory), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "status": "finished",
        "total": 2,
        "stored": 2,
        "stored_before": 2,
        "trained": 0,
        "failed": [],
        "store": str(service.store.path),
    }


def test_warm_list_covers_presets_default_pairs_and_the_classroom_sweep():
    from resnet_viz.lab import PRESETS
    from resnet_viz.runs.defaults import warm_requests
    from resnet_viz.sweep import classroom_sweep

    names = [what for what, _ in warm_requests()]
    assert sum(n.startswith("preset:") for n in names) == len(PRESETS)
    assert sum(n.startswith("classroom sweep") for n in names) == len(classroom_sweep().points())
    assert any(n.startswith("default pair (attributions)") for n in names)
    assert sum(n.startswith("limits grid (initialisation)") for n in names) == 10  # 5 schemes x 2 seeds
    assert [n for n in names if n.startswith("limits grid (global")] == [
        f"limits grid (global reasoning): depth {d}" for d in (8, 14, 20)
    ]
    assert len({r.key for _, r in warm_requests()}) == len(names)


def test_a_pair_the_tab_stopped_watching_becomes_background_work(service):
    held = _hold_slot(service)
    pair = service.request(REQUEST, "tab-1")
    other = service.request(RunRequest(PAIR, TrainConfig(epochs=1, seed=8), DataConfig()), "tab-1")
    assert pair.ticket.priority == WATCHED and pair.view().queue_position == 1
    service.set_priority(pair, "tab-1", BACKGROUND)  # the tab went on to train something else
    assert pair.ticket.priority == BACKGROUND and pair.view().queue_position == 2 and other.view().queue_position == 1
    service.request(REQUEST, "tab-2")  # another tab watching it makes it watched again
    assert pair.ticket.priority == WATCHED
    for run, tabs in ((pair, ("tab-1", "tab-2")), (other, ("tab-1",))):
        for tab in tabs:
            service.release(run, tab)
    service.scheduler.release(held)


def test_wait_for_step_returns_once_the_steps_are_drawn_and_not_for_a_queued_run(service):
    """Train's click waits on the run for its first two steps (no polling): True as soon as they are in the
    history; a queued run's wait ends at its timeout with False; a run that ended early does not block it."""
    held = _hold_slot(service)
    queued = service.request(REQUEST, "tab-1")
    assert not queued.wait_for_step(2, 0.05) and queued.view().queue_position == 1
    service.scheduler.release(held)
    assert queued.wait_for_step(2, WAIT)
    assert queued.view().steps.step.max() >= 2
    queued.stop()
    assert queued.join(WAIT)
    assert not queued.wait_for_step(10**9, WAIT)  # ended: returns at once, not after WAIT
    service.release(queued, "tab-1")


def test_views_of_one_version_share_their_chart_tables_made_when_read(service, monkeypatch):
    """Thirty tabs watching one run copy its chart tables once per drawn change, not once per tab, and only when
    one of them reads the rows (the lab redraws at most every 0.8 s; a tab sees a new version at each refresh)."""
    run = service.request(RunRequest(PAIR, TrainConfig(epochs=1, warmup_steps=0, seed=7), DataConfig()), "tab-1")
    assert run.join(WAIT) and run.status == "finished"
    made = []
    frame = ChartTables.layers_frame
    monkeypatch.setattr(ChartTables, "layers_frame", lambda self: made.append(1) or frame(self))
    views = [run.view() for _ in range(30)]
    assert made == []  # thirty views, no rows read: no frames made
    first, second = views[0], views[-1]
    assert first.version == second.version and first.steps is second.steps and first.layers is second.layers
    assert all(v.layers is first.layers for v in views) and made == [1]
    assert len(first.steps) > 0 and set(first.steps.model) == {"A", "B"}


def test_a_class_clicking_at_once_measures_a_config_once():
    """Thirty Train clicks in one second cost one meta-device measurement of the config, not thirty."""
    from resnet_viz.runs import budget

    models = {"A": ModelConfig(depth=14, width=12)}  # a config no other test measures
    before = budget._measure.cache_info().misses
    estimates = []
    threads = [
        threading.Thread(target=lambda: estimates.append(estimate(models, REQUEST.train, REQUEST.data)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert budget._measure.cache_info().misses == before + 1 and len(set(estimates)) == 1


@pytest.mark.parametrize(
    ("cores", "granted", "models", "threads"), [(2, 2, 1, 1), (2, 2, 2, 2), (2, 1, 2, 1), (2, 2, 4, 2), (4, 4, 1, 3)]
)
def test_a_training_process_leaves_a_core_to_the_server_except_for_models_side_by_side(cores, granted, models, threads):
    """One model never gets every core's intra-op threads in a worker (its OpenMP threads would wait for each
    other at every op while the server draws); models stepping side by side, one thread each, may."""
    from types import SimpleNamespace

    run = SimpleNamespace(
        scheduler=SimpleNamespace(cores=cores), request=SimpleNamespace(models=dict.fromkeys("ABCD"[:models]))
    )
    assert LiveRun._cap(run, granted) == threads
