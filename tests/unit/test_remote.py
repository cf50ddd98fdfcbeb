"""Training in a child process (runs/remote.py): the same run as in-process, forks, stops and failures."""

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_viz import pictures
from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.models import ModelConfig
from resnet_viz.runs import BACKGROUND, LiveRun, RunRequest, RunService, Scheduler, worker
from resnet_viz.runs.remote import POOL, RemoteTrainer, Worker, WorkerPool
from resnet_viz.store import RunStore
from resnet_viz.training import StepRecord, TrainConfig, Trainer

PAIR = {"A": ModelConfig(depth=8, width=8, skip=False), "B": ModelConfig(depth=8, width=8)}
TRAIN = TrainConfig(epochs=2, warmup_steps=0)
WAIT = 120.0


@pytest.fixture
def service(tmp_path) -> RunService:
    return RunService(RunStore(tmp_path), Scheduler(cores=1), grace_seconds=0, processes=True)


def _losses(records: list[StepRecord], model: str) -> list[float]:
    return [r.loss for r in records if r.model == model]


def test_a_run_in_a_child_process_is_the_same_run_as_in_process():
    here = Trainer(PAIR, TRAIN, DataConfig())
    here.set_threads(1)
    local = [r for records in here.run() for r in records]
    there = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1)
    remote = [r for records in there.run() for r in records]
    assert there.step == here.step == here.total_steps
    for key in PAIR:
        assert _losses(remote, key) == _losses(local, key)  # same seed, batches and thread count: bit-identical
        assert [(r.probes, r.val_loss) for r in remote if r.model == key] == [
            (r.probes, r.val_loss) for r in local if r.model == key
        ]
        assert [s.step for s in there.snapshots[key]] == [s.step for s in here.snapshots[key]]
        # the mirror models hold the child's final weights
        mirror, trained = there.models[key].state_dict(), here.models[key].state_dict()
        assert all(mirror[n].equal(trained[n]) for n in trained)
    assert there.states == here.states
    # the worker went back to the pool and trains the next run (no new process, no torch import)
    again = RemoteTrainer(PAIR, replace(TRAIN, epochs=1), DataConfig(), threads=1)
    assert len(list(again.run())) == here.steps_per_epoch
    assert again._worker is there._worker and again._worker.alive


def test_skip_changes_and_captures_land_between_the_same_two_steps():
    here = Trainer(PAIR, TRAIN, DataConfig())
    here.set_threads(1)
    there = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1)
    states = {}
    for trainer in (here, there):
        for records in trainer.run():
            if records[0].step == 3:
                trainer.set_skip_scale("B", 0.5)
                assert trainer.skip_scale("B") in (0.5, 1.0)
            if records[0].step == 5:
                states[trainer] = trainer.capture()
    assert there.skip_events == here.skip_events == [("B", 4, 0.5)]
    assert states[there].step == states[here].step == 5
    for key in PAIR:
        a, b = states[there].models[key], states[here].models[key]
        assert all(a[n].equal(b[n]) for n in b)
        # the worker sends a state without its snapshots; the server's mirror puts back the same ones
        assert [s.step for s in states[there].snapshots[key]] == [s.step for s in states[here].snapshots[key]]
        assert len(states[here].snapshots[key]) >= 2
    final = there.capture()
    assert final.step == here.step  # after the end: the final state, with every snapshot
    assert [s.step for s in final.snapshots["A"]] == [s.step for s in here.snapshots["A"]]
    last = final.snapshots["B"][-1].state
    assert all(last[n].equal(t) for n, t in here.snapshots["B"][-1].state.items())


def test_a_worker_told_to_run_ahead_trains_the_same_run_and_says_where_changes_landed():
    """With `run_ahead`, the worker holds the word for one step more than it takes, so it never waits for this
    side: the same run (bit for bit); a skip change asked for in step 3's loop body lands at step 6 (the worker
    had the word for steps 4 and 5) and the skip events say so; no capture while it runs ahead, and one once
    it waits again. A stop leaves a word unread, which the worker drops before its next run."""
    lockstep = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1)
    plain = [r for records in lockstep.run() for r in records]
    ahead = {"yes": True}
    there = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1, run_ahead=lambda: ahead["yes"])
    seen = []
    for records in there.run():
        seen += records
        step = records[0].step
        if step == 3:
            assert not there.waiting
            with pytest.raises(RuntimeError, match="runs ahead"):
                there.capture()
            there.set_skip_scale("B", 0.5)
        if step == 7:
            ahead["yes"] = False  # e.g. a fork waits: the worker uses the word it holds, then waits
        if step == 8:
            assert not there.waiting
        if step == 9:
            assert there.waiting and there.capture().step == 9
    assert _losses(seen, "A") == _losses(plain, "A")
    assert _losses(seen, "B")[:5] == _losses(plain, "B")[:5] and _losses(seen, "B")[5] != _losses(plain, "B")[5]
    assert there.skip_events == [("B", 6, 0.5)]
    assert [r.skip_scale for r in seen if r.model == "B"][4:6] == [1.0, 0.5]

    stopped = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1, run_ahead=lambda: True)
    for records in stopped.run():
        if records[0].step == 2:
            stopped.stop.set()
    assert stopped.step == 4 and stopped.states["A"].status == "stopped"
    again = RemoteTrainer(PAIR, replace(TRAIN, epochs=1), DataConfig(), threads=1)
    assert len(list(again.run())) == again.steps_per_epoch
    assert again._worker is stopped._worker and again._worker.alive


def test_a_parked_run_gives_its_worker_back_and_goes_on_bit_identical():
    """Parked between two steps (a background run giving its slot to a watched one), the run holds no worker: the
    worker waits in the pool for the next run. When the run goes on, it is the run never parked, bit for bit,
    though another run trained in that worker meanwhile; a skip change asked for while parked lands at the
    next step, as it would have."""
    plain = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1)
    unparked = [r for records in plain.run() for r in records]
    there = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1)
    seen = []
    for records in there.run():
        seen += records
        if records[0].step in (3, 7):
            worker = there._worker
            there.park()
            assert there._worker is None and worker in POOL._free and worker.alive
            assert there.capture().step == records[0].step  # the parked state, with the mirrored snapshots
            other = RemoteTrainer(PAIR, replace(TRAIN, epochs=1, seed=5), DataConfig(), threads=1)
            assert len(list(other.run())) == other.steps_per_epoch and other._worker is worker  # trained meanwhile
    assert there.step == plain.step == plain.total_steps and there.states == plain.states
    for key in PAIR:
        assert _losses(seen, key) == _losses(unparked, key)
        assert [r.probes for r in seen if r.model == key] == [r.probes for r in unparked if r.model == key]
        assert [s.step for s in there.snapshots[key]] == [s.step for s in plain.snapshots[key]]
        final, expected = there.models[key].state_dict(), plain.models[key].state_dict()
        assert all(final[n].equal(expected[n]) for n in expected)

    runs = {}
    for parks in (False, True):
        changed, runs[parks] = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1), []
        for records in changed.run():
            runs[parks] += records
            if records[0].step == 3:
                if parks:
                    changed.park()
                changed.set_skip_scale("B", 0.5)
        assert changed.skip_events == [("B", 4, 0.5)]
    assert _losses(runs[True], "B") == _losses(runs[False], "B") != _losses(unparked, "B")


def test_a_run_stopped_while_parked_ends_where_it_got_to_without_a_worker():
    there = RemoteTrainer(PAIR, TRAIN, DataConfig(), threads=1)
    for records in there.run():
        if records[0].step == 3:
            there.park()
            parked = there.capture()
            there.stop.set()
            free = list(POOL._free)
    assert POOL._free == free and there._worker is None  # ended without taking a worker
    assert there.step == 3 and {s.status for s in there.states.values()} == {"stopped"}
    final = there.capture()
    assert final.step == 3 and final.states == there.states
    for key in PAIR:
        assert there.snapshots[key][-1].step == 3 and final.snapshots[key][-1].step == 3
        weights = there.models[key].state_dict()
        assert all(weights[n].equal(t) for n, t in parked.models[key].items())
        assert all(t.equal(parked.models[key][n]) for n, t in there.snapshots[key][-1].state.items())


def test_a_message_carries_its_tensors_as_one_flat_tensor_per_dtype():
    """A snapshot of a pair is hundreds of tensors; safetensors' cost is per tensor, so a message has one per
    dtype. What comes back is equal, of the same dtype and shape, and owns its memory (no view that would keep
    a whole message alive)."""
    sent = {
        "w": torch.randn(3, 4).t(),  # not contiguous
        "n": torch.tensor(7),  # 0-d int64 (BatchNorm's num_batches_tracked)
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 5),
        "b": torch.arange(6, dtype=torch.float32),
        "half": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),  # a dtype NumPy has not: copied by torch
        "picture": np.linspace(0, 1, 12).reshape(3, 4),  # a picture's array: back as an array
    }
    stream = io.BytesIO()
    worker.put(stream, ("step", [sent], (1, None)))
    blob = stream.getvalue()
    text_size, _ = worker.HEADER.unpack(blob[: worker.HEADER.size])
    tensors = blob[worker.HEADER.size + text_size :]
    # the safetensors header (its length, then JSON naming each tensor), read as bytes: nothing is loaded
    (header_size,) = struct.unpack("<Q", tensors[:8])
    header = json.loads(tensors[8 : 8 + header_size])
    header.pop("__metadata__", None)
    assert {name: entry["shape"] for name, entry in header.items()} == {
        "torch.float32": [12 + 0 + 6],  # w, empty, b: one flat tensor
        "torch.int64": [1],
        "torch.bool": [2],
        "torch.float64": [12],
        "torch.bfloat16": [2],
    }
    stream.seek(0)
    kind, [got], rest = worker.get(stream)
    assert (kind, rest) == ("step", (1, None))
    assert isinstance(got["picture"], np.ndarray) and np.array_equal(got["picture"], sent["picture"])
    for name in ("w", "n", "mask", "empty", "b", "half"):
        t = got[name]
        assert t.dtype == sent[name].dtype and t.shape == sent[name].shape and t.equal(sent[name])
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


@pytest.mark.parametrize(
    ("data", "model"),
    [
        (DataConfig(name="sort", n_samples=200), ModelConfig(family="transformer", depth=4, width=16, norm="layer")),
        (DataConfig(name="sbm", input_size=8, n_samples=200), ModelConfig(family="gcn", depth=5, width=8)),
        (DataConfig(name="moons", n_samples=200), ModelConfig(family="mlp", depth=4, width=8)),
    ],
)
def test_the_worker_draws_the_pictures_from_its_own_weights(data, model):
    """Attention maps, oversmoothing profiles and boundaries come from the worker, at the steps asked and at the
    last one, equal to what the same run draws in-process (the run is bit-identical on one thread)."""
    train = TrainConfig(epochs=1, batch_size=32)
    here = Trainer({"A": model}, train, data)
    here.set_threads(1)
    drawn = {r[0].step: pictures.picture(here.models["A"], here.dataset) for r in here.run()}
    there = RemoteTrainer({"A": model}, train, data, threads=1, picture_every=2)
    sent = {}
    for records in there.run():
        sent[records[0].step] = there.pictures.get("A")
        there.pictures.clear()
    steps = [s for s, p in sent.items() if p is not None]
    assert steps == sorted({*range(2, there.total_steps + 1, 2), there.total_steps})
    for step in steps:
        for got, expected in zip(sent[step], drawn[step], strict=True):
            if isinstance(expected, np.ndarray):
                np.testing.assert_allclose(got, expected, atol=1e-6)
            else:
                assert list(got) == list(expected)


def test_forks_of_a_shared_run_in_child_processes(service):
    reached = threading.Event()

    def on_step(run: LiveRun, records: list[StepRecord]) -> None:
        if records[0].step >= 3:
            reached.set()

    request = RunRequest(PAIR, TRAIN, DataConfig())
    shared = service.request(request, "tab-1", on_step=on_step)
    assert service.request(request, "tab-2") is shared
    assert reached.wait(WAIT)
    changed = service.set_skip_scale(shared, "tab-2", "B", 0.25)
    for run in (shared, changed):
        assert run.join(WAIT) and run.status == "finished", run.message
    k = changed.fork_step
    mine = [r for r in changed.history().records]
    theirs = [r for r in shared.history().records]
    assert _losses(mine, "B")[:k] == _losses(theirs, "B")[:k] and _losses(mine, "A") == _losses(theirs, "A")
    assert _losses(mine, "B")[k] != _losses(theirs, "B")[k]
    assert changed.view().skip_events == [("B", k + 1, 0.25)]
    assert shared.saved and service.store.get(request.key) is not None  # stored from the mirrored weights
    # The fork's mirror got each snapshot once: the worker sent the ones it inherited again, and the store,
    # which keeps snapshots by step, refused to save the fork.
    for run in (shared, changed):
        steps = [s.step for s in run.trainer.snapshots["B"]]
        assert steps == sorted(set(steps)) and steps[-1] == run.trainer.total_steps
    assert changed.saved, changed.save_error
    assert service.store.get(changed.saved_key).snapshot_steps


def test_stop_ends_the_child_between_two_steps(service):
    started = threading.Event()
    run = service.request(
        RunRequest(PAIR, replace(TRAIN, epochs=50), DataConfig()), "tab-1", on_step=lambda *_: started.set()
    )
    assert started.wait(WAIT)
    run.stop()
    assert run.join(WAIT) and run.status == "stopped"
    assert 0 < run.view().step < run.view().total_steps
    assert run.trainer._worker.alive and run.trainer._worker in POOL._free  # kept for the next run


def test_background_work_parks_and_the_watched_run_trains_in_its_worker(service):
    """One core, a background run training (e.g. an analysis page's pair nobody watches any more): a watched run
    asked for then takes its slot and its worker (measured before: 4-7 s for a new process to import torch),
    and the background run goes on afterwards from where it parked, the same run bit for bit, and is stored."""
    POOL.close()  # no idle worker: the watched run could only get one from the background run, or a new one
    started = threading.Event()
    train = replace(TRAIN, epochs=10)  # 120 steps: still training when the watched run comes and goes
    background = service.request(
        RunRequest(PAIR, train, DataConfig()), "tab-1", BACKGROUND, on_step=lambda *_: started.set()
    )
    assert started.wait(WAIT)
    worker = background.trainer._worker
    watched = service.request(RunRequest(PAIR, replace(TRAIN, epochs=1, seed=3), DataConfig()), "tab-2")
    assert watched.join(WAIT) and watched.status == "finished", watched.message
    assert watched.trainer._worker is worker  # no new process
    assert not background.done and background.view().step < background.view().total_steps  # it waited, parked
    assert background.join(WAIT) and background.status == "finished", background.message
    here = Trainer(PAIR, train, DataConfig())
    here.set_threads(1)
    local = [r for records in here.run() for r in records]
    for key in PAIR:
        assert _losses(background.history().records, key) == _losses(local, key)
    assert background.saved, background.save_error


def test_a_failure_in_the_child_fails_the_run_with_its_message():
    good = Trainer(PAIR, TRAIN, DataConfig())
    state = good.capture()
    broken = replace(state, models={**state.models, "A": {}})  # weights that do not fit the model
    trainer = RemoteTrainer(PAIR, TRAIN, DataConfig(), start=broken)
    with pytest.raises(RuntimeError, match="Missing key"):
        list(trainer.run())
    assert trainer._worker.alive  # it said why and waits for the next run


def test_a_killed_child_fails_the_run_instead_of_hanging():
    trainer = RemoteTrainer(PAIR, replace(TRAIN, epochs=50), DataConfig())
    with pytest.raises(RuntimeError, match="ended unexpectedly"):
        for records in trainer.run():
            if records[0].step == 2:
                os.kill(trainer._worker.process.pid, signal.SIGKILL)


class _FakeWorker:
    """A worker process as the pool sees it: alive, ready or still starting, closed."""

    def __init__(self, ready: bool = True) -> None:
        self.started_up, self.alive, self.closed = ready, True, False

    def ready(self) -> bool:
        return self.started_up

    def close(self) -> None:
        self.alive, self.closed = False, True


def _pool(*free: _FakeWorker) -> tuple[WorkerPool, list[_FakeWorker]]:
    """A pool holding `free` (oldest first), and the list of workers it starts itself."""
    started: list[_FakeWorker] = []

    def start() -> _FakeWorker:
        started.append(_FakeWorker(ready=False))
        return started[-1]

    pool = WorkerPool(idle=3, start=start)
    pool._free = list(free)
    return pool, started


def _take_in_thread(pool: WorkerPool) -> tuple[threading.Thread, list]:
    got: list = []
    thread = threading.Thread(target=lambda: got.append(pool.take()))
    thread.start()
    return thread, got


def test_the_pool_gives_a_ready_worker_before_one_still_starting():
    ready, starting = _FakeWorker(), _FakeWorker(ready=False)
    pool, started = _pool(ready, starting)  # the newest last
    assert pool.take() is ready and pool._free == [starting] and not started


def test_with_none_ready_a_run_waits_for_the_first_free_one_to_be_ready_not_for_a_new_process():
    older, newer = _FakeWorker(ready=False), _FakeWorker(ready=False)
    pool, started = _pool(older, newer)
    thread, got = _take_in_thread(pool)
    older.started_up = True  # whenever the taker looks next, this one is ready
    thread.join(WAIT)
    assert got == [older] and pool._free == [newer] and not started


def test_a_run_finding_no_free_worker_waits_for_one_a_parking_run_hands_back():
    """On a fresh server a student's Train beside a running sweep took a worker still importing torch (3.4 s)
    while the sweep's parked worker came back 0.26 s after the click."""
    pool, started = _pool()
    back = _FakeWorker()
    with pool.returning():
        thread, got = _take_in_thread(pool)
        pool.give(back)
    thread.join(WAIT)
    assert got == [back] and not started


def test_with_no_free_worker_and_none_coming_back_a_new_one_starts_at_once():
    pool, started = _pool()
    assert pool.take() is started[0] and len(started) == 1


def test_a_dead_free_worker_is_closed_and_passed_over():
    dead, ready = _FakeWorker(), _FakeWorker()
    dead.alive = False
    pool, started = _pool(dead, ready)
    assert pool.take() is ready and dead.closed and pool._free == [] and not started


def test_a_worker_never_ready_is_taken_as_it_is_after_the_longest_wait(monkeypatch):
    stuck = _FakeWorker(ready=False)
    pool, started = _pool(stuck)
    monkeypatch.setattr(WorkerPool, "LONGEST_WAIT", 0.0)
    assert pool.take() is stuck and not started


def test_a_real_worker_says_it_is_ready_and_a_run_reads_past_that():
    """The "ready" message is read by `ready()`, or skipped by the run when it comes first."""
    pool = WorkerPool(idle=1)
    first = Worker()
    pool.give(first)
    assert pool.take() is first and first.ready()  # the pool waited for its start-up
    second = Worker()  # not asked whether it is ready: its run's first read skips the message
    try:
        second.put(("go", 1, {}, False))  # as if sent ahead for a run that ended: a worker drops it
        second.put((PAIR, TRAIN, load_dataset(DataConfig()), None, {}, 1, 0))
        message = second.get()
        assert message[0] == "step" and second._ready
    finally:
        first.close()
        second.close()


def test_a_worker_trains_in_the_servers_own_openmp_environment(monkeypatch):
    """No OpenMP override in a worker: with OMP_NUM_THREADS=1 there, OpenMP threads waited busily beside the pair's
    model threads (the default pair at 0.79-0.84 of the headless engine, 0.90-0.98 without it; see `Worker`)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")  # one the server has: the worker has it too
    w = Worker()
    try:
        assert w._read() == ("ready",)  # it runs the worker's own code: /proc shows its environment, not its parent's
        text = Path(f"/proc/{w.process.pid}/environ").read_text()
        environ = dict(item.split("=", 1) for item in text.split("\0") if "=" in item)
    finally:
        w.close()
    assert "OMP_NUM_THREADS" not in environ and environ["OMP_WAIT_POLICY"] == "passive"


def test_a_full_pool_keeps_a_worker_given_back_ready_and_closes_one_still_starting():
    first, second = _FakeWorker(ready=False), _FakeWorker(ready=False)
    pool, _ = _pool(first, second)
    pool.idle = 2
    back = _FakeWorker()
    pool.give(back)
    assert pool._free == [first, back] and second.closed and not back.closed
    another = _FakeWorker()
    pool.give(another)  # all but one ready: the one still starting goes
    assert pool._free == [back, another] and first.closed
    last = _FakeWorker()
    pool.give(last)  # all ready: the oldest goes
    assert pool._free == [another, last] and back.closed


def test_a_worker_process_loads_no_service_frames_or_plots():
    """A worker's start-up is what a first click on a fresh server waits for: the run service, pandas and Plotly
    (a quarter to half a second of it) stay out of the worker; every name of `resnet_viz.runs` still loads."""
    code = (
        "import sys, resnet_viz.runs.worker, resnet_viz.runs as runs; "
        "print(sorted(m for m in ('pandas', 'plotly', 'resnet_viz.runs.service') if m in sys.modules)); "
        "print(all(getattr(runs, name) is not None for name in runs.__all__), "
        "sorted(runs._HOMES) == sorted(runs.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True True"]


def test_the_pool_says_when_a_run_must_wait_for_a_start_up():
    told: list[str] = []
    ready = _FakeWorker()
    pool, _ = _pool(ready)
    assert pool.take(lambda: told.append("ready one")) is ready and told == []
    pool, started = _pool()
    assert pool.take(lambda: told.append("none")) is started[0] and told == ["none"]
    pool, started = _pool()
    back = _FakeWorker()
    with pool.returning():  # a parking run's worker is on its way: a step away, not a start-up
        thread, got = _take_in_thread(pool)
        pool.give(back)
    thread.join(WAIT)
    assert got == [back] and told == ["none"]


def test_a_click_does_not_wait_for_first_points_behind_a_worker_start_up(service):
    """On a fresh server the click waited its full two seconds for points that could not come before a worker
    had imported torch, and only then drew the page (which says the run is starting)."""
    POOL.close()  # no worker: this run's must start up
    run = service.request(RunRequest(PAIR, TRAIN, DataConfig()), "tab-1")
    assert run.wait_for_step(2, WAIT) is False and run.view().step == 0
    assert run.join(WAIT) and run.status == "finished", run.message
