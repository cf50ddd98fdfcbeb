"""Depth sweep: validation, stop and resume from the store, the CLI, and He et al. 2015's Fig. 1 on digits."""

import json
import math
import signal
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

from resnet_viz.cli import main
from resnet_viz.data import DataConfig
from resnet_viz.models import ConfigError, ModelConfig
from resnet_viz.options import allowed_depths
from resnet_viz.runs import RunService, Scheduler
from resnet_viz.store import RunStore
from resnet_viz.sweep import (
    DEFAULT_DEPTHS,
    RESULT_COLUMNS,
    SweepConfig,
    SweepJob,
    classroom_sweep,
    describe,
    run_sweep,
    stored_count,
)
from resnet_viz.tasks import ThreadExecutor
from resnet_viz.training import TrainConfig

TINY = SweepConfig(
    depths=(8, 14),
    model=ModelConfig(width=8),
    train=TrainConfig(epochs=1, warmup_steps=0),
    data=DataConfig(name="digits"),
)
TINY_FLAGS = ["--depths", "8,14", "--width", "8", "--epochs", "1", "--warmup-steps", "0"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"depths": (9,)}, "depths"),
        ({"depths": ()}, "depths"),
        ({"depths": (8, 8)}, "depths"),
        ({"depths": (8,), "model": ModelConfig(block="bottleneck")}, "depths"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (0, 1, 2, 3)}, "seeds"),
        ({"seeds": (1, 1)}, "seeds"),
        ({"seeds": (-1,)}, "seeds"),
        ({"train": TrainConfig(epochs=0)}, "epochs"),
        ({"model": ModelConfig(width=0)}, "width"),
    ],
)
def test_invalid_sweep_config_names_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        replace(TINY, **changes).validate()
    assert err.value.field == field


def test_grid_pairs_plain_and_residual_per_depth_and_seed():
    config = replace(TINY, depths=(14, 8), seeds=(3, 5)).validate()
    assert config.points() == [(8, 3), (14, 3), (8, 5), (14, 5)]
    pair = config.models(14)
    assert pair["plain"] == replace(pair["residual"], skip=False) and pair["residual"].depth == 14
    assert config.train_for(5).seed == 5
    preset = classroom_sweep().validate()
    assert preset.depths == (8, 14, 20, 32, 44, 56) and preset.data.name == "digits"


def test_stop_then_resume_from_the_store(tmp_path):
    store = RunStore(tmp_path)
    views = []

    def stop_after_first_run(view):
        views.append(view)
        if view.runs_done == 1:
            job.stop()

    job = SweepJob(TINY, RunService(store, Scheduler(cores=1)), on_progress=stop_after_first_run)
    job.run()
    stopped = job.view()
    assert stopped.status == "stopped" and stopped.runs_done == 1 and stopped.total_runs == 2
    assert "stopped after 1 of 2" in stopped.message and stopped.current is None
    assert len(store.list_runs()) == 1  # the interrupted depth-14 run was not stored
    training = [v for v in views if v.current == (8, 0)]
    assert [v.step for v in training if v.step] == list(range(1, 11)) and training[-1].total_steps == 10
    assert any(math.isfinite(v.eta_seconds) and v.eta_seconds > 0 for v in training)

    resumed = SweepJob(TINY, RunService(store, Scheduler(cores=1)))
    ThreadExecutor().submit(resumed)  # the page's way: a background thread
    resumed.join()
    view = resumed.view()
    assert view.status == "finished" and view.runs_done == 2 and view.cached_runs == 1 and view.eta_seconds == 0
    assert [(r.depth, r.run.cached) for r in view.runs] == [(8, True), (14, False)]

    results = view.results_frame()
    assert list(results.columns) == RESULT_COLUMNS and len(results) == 4
    assert set(zip(results.depth, results.model, strict=True)) == {
        (d, m) for d in (8, 14) for m in ("plain", "residual")
    }
    assert (results.final_train_error.between(0, 1)).all() and (results.flops > 0).all()
    assert results.groupby("depth").params.nunique().eq(1).all()  # identity shortcuts add no parameters
    curves = view.curves_frame()
    assert len(curves) == 2 * 2 * 10 and {"depth", "seed", "model", "step", "loss", "val_loss"} <= set(curves)
    responses = view.responses_frame()
    assert set(responses.depth) == {14} and len(responses) == 2 * 6  # 6 blocks per depth-14 net, two nets
    assert (responses.act_std > 0).all()

    replay = run_sweep(TINY, RunService(store))
    assert replay.status == "finished" and replay.cached_runs == 2


def test_stop_before_start_trains_nothing(tmp_path):
    stop = threading.Event()
    stop.set()
    view = run_sweep(TINY, RunService(RunStore(tmp_path)), stop=stop)
    assert view.status == "stopped" and view.runs_done == 0


def test_cli_sweep_json_then_cached(tmp_path, capsys):
    args = ["sweep", *TINY_FLAGS, "--store", str(tmp_path), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "finished" and len(first["results"]) == 4
    assert {r["depth"] for r in first["results"]} == {8, 14} and not any(r["cached"] for r in first["results"])
    assert main(args[:-1]) == 0  # the table, from the store
    captured = capsys.readouterr()
    assert "final_train_loss" in captured.out and "True" in captured.out and "run 2/2 (2 cached)" in captured.err


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--depths", "8,9"], "depths"),
        (["--depths", "eight"], "--depths"),
        (["--seeds", "4"], "seeds"),
        (["--depth", "20"], "depth"),
        (["--no-skip"], "skip"),
        (["--classroom", "--epochs", "3"], "classroom"),
        (["--lr", "0"], "lr"),
    ],
)
def test_cli_sweep_bad_input_is_one_line_exit_2(args, field, capsys, tmp_path):
    try:
        code = main(["sweep", *args, "--store", str(tmp_path)])
    except SystemExit as exit_:  # argparse's own errors exit from inside parse_args
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and field in err[0]


def test_cli_ctrl_c_stops_cleanly_and_keeps_finished_runs(tmp_path):
    # Ctrl-C once the depth-8 run is stored; the depth-56 run (much longer) is interrupted, not stored.
    cmd = [sys.executable, "-m", "resnet_viz", "sweep", "--depths", "8,56", "--width", "8", "--epochs", "2"]
    proc = subprocess.Popen([*cmd, "--store", str(tmp_path)], stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    seen = b""
    while b"run 1/2" not in seen:
        chunk = proc.stderr.read1(4096)
        assert chunk, seen.decode()
        seen += chunk
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert b"stopped after 1 of 2 runs" in err and b"Traceback" not in err
    assert [info.depths["plain"] for info in RunStore(tmp_path).list_runs()] == [8]


def test_he2015_fig1_degradation_in_the_sweep(tmp_path):
    # He et al. 2015, Fig. 1 (and Fig. 6): under one budget the 56-layer plain net ends with a *higher
    # training* loss than the 8-layer one (degradation, not overfitting), while the 56-layer ResNet
    # trains fine. Fig. 7: residual functions respond more weakly than the plain net's layers.
    # 4 epochs (measured: plain 56 at 2.20, plain 8 at 0.056, residual 56 at 0.145; response std 1.56 vs 0.99)
    config = SweepConfig(depths=(8, 56), train=TrainConfig(epochs=4), data=DataConfig(name="digits"))
    view = run_sweep(config, RunService(RunStore(tmp_path)))
    loss = view.results_frame().set_index(["depth", "model"]).final_train_loss
    assert loss[56, "plain"] > loss[8, "plain"] + 0.5
    assert loss[56, "residual"] < loss[56, "plain"] / 10
    responses = view.responses_frame().groupby("model").act_std.mean()
    assert responses["residual"] < responses["plain"]


def test_a_sweep_is_described_in_one_line_and_counts_its_stored_points(tmp_path):
    assert describe(TINY) == (
        "digits · depths 8, 14 · 1 seed · 1 epoch · width 8 · basic blocks (post-activation, BatchNorm, identity "
        "shortcuts) · SGD lr 0.1, batch 128"
    )
    store = RunStore(tmp_path)
    assert stored_count(store, TINY) == 0
    run_sweep(replace(TINY, depths=(8,)), RunService(store, Scheduler(cores=1)))
    assert stored_count(store, TINY) == 1  # depth 8 replays from the store, depth 14 would train
    for rule, depths in DEFAULT_DEPTHS.items():  # every default grid is valid for its depth rule
        family, block = ("mlp", "basic") if rule == "mlp" else ("cnn", rule)
        assert set(depths) <= set(allowed_depths(family, block)), rule
