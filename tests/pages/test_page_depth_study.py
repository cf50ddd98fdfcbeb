"""Depth study page: figures from synthetic sweep tables, the page under AppTest, and one browser run."""

from __future__ import annotations

import io
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from harness import open_page, plotly_figures, texts, trace_array
from streamlit.testing.v1 import AppTest

from resnet_viz.data import DataConfig
from resnet_viz.figures import depth as figs
from resnet_viz.figures.common import COLORS
from resnet_viz.models import ModelConfig
from resnet_viz.runs import WATCHED
from resnet_viz.runs.budget import estimate
from resnet_viz.store import RunStore
from resnet_viz.training import TrainConfig
from resnet_viz.ui.session import SESSION_KEY, run_service
from resnet_viz.ui.store import run_store

PAGE = "pages/depth_study.py"


# --------------------------------------------------------------------------------------------------
# Pure figures, synthetic frames


def _results(depths=(8, 20), seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for depth in depths:
        for seed in seeds:
            for model, base in (("plain", 0.01 * depth), ("residual", 0.01)):
                rows.append(
                    {
                        "depth": depth,
                        "seed": seed,
                        "model": model,
                        "status": "finished",
                        "final_train_loss": base + 0.001 * seed,
                        "final_train_error": base / 2 + 0.01 * seed,
                        "final_val_loss": base * 2,
                        "final_val_error": base + 0.02 * seed,
                        "params": 1000 * depth**2,
                        "flops": 50_000 * depth,
                        "seconds": 1.0,
                        "cached": False,
                        "key": f"k{depth}{seed}",
                    }
                )
    return pd.DataFrame(rows)


def test_error_vs_depth_spreads_over_seeds_in_the_model_colours():
    fig = figs.error_vs_depth_figure(_results())
    names = [t.name for t in fig.data]
    assert names == [
        "plain net: training",
        "plain net: validation",
        "residual net: training",
        "residual net: validation",
    ]
    plain_train = fig.data[0]
    assert plain_train.line.color == COLORS["plain"] and fig.data[2].line.color == COLORS["residual"]
    assert trace_array(plain_train.x).tolist() == [8, 20]
    # depth 8 plain: train error 0.04 (seed 0) and 0.05 (seed 1): mean 4.5 %, bars to 4 % and 5 %
    assert np.allclose(trace_array(plain_train.y), [4.5, 10.5])
    assert np.allclose(trace_array(plain_train.error_y.array), [0.5, 0.5])
    assert np.allclose(trace_array(plain_train.error_y.arrayminus), [0.5, 0.5])
    assert fig.data[1].line.dash == "dash"
    assert "error" in fig.layout.yaxis.title.text and "depth" in fig.layout.xaxis.title.text


def test_the_error_caption_says_what_this_sweep_shows():
    results = _results()  # plain: 4.5% at depth 8 -> 10.5% at depth 20; residual flat at 1%
    assert figs.degradation_verdict(results) == (
        "Here, final training error: plain 4.5% at depth 8 → 10.5% at depth 20; residual 1.0% at depth 8 → 1.0% "
        "at depth 20. The plain nets degrade with depth and the residual nets do not, as in He et al."
    )
    flat = results.assign(final_train_error=0.02)
    assert figs.degradation_verdict(flat).endswith("Neither degrades at these depths and this budget.")
    both = results.assign(final_train_error=results.depth / 200)
    assert figs.degradation_verdict(both).endswith("Both degrade with depth at this budget.")
    backwards = results.assign(final_train_error=np.where(results.model == "plain", 0.02, results.depth / 200))
    assert figs.degradation_verdict(backwards).endswith(
        "The residual nets degrade and the plain ones do not, against He et al."
    )
    assert figs.degradation_verdict(results[results.depth == 8]) == ""  # one depth: nothing to compare


def test_loss_vs_depth_is_log_and_leaves_out_diverged_runs():
    results = _results()
    results.loc[(results.depth == 20) & (results.model == "plain") & (results.seed == 1), "final_train_loss"] = np.inf
    fig = figs.loss_vs_depth_figure(results)
    assert fig.layout.yaxis.type == "log"
    plain = fig.data[0]
    assert np.allclose(trace_array(plain.y), [0.0805, 0.2])  # depth 20: only the finite seed 0 is left
    stats = figs.spread(results, "final_train_loss")
    assert stats[(stats.model == "plain") & (stats.depth == 20)].n.item() == 1
    # a run stopped for diverging ends on a finite, huge loss: its status leaves it out, not its value
    stopped = (results.depth == 8) & (results.model == "residual") & (results.seed == 1)
    results.loc[stopped, ["status", "final_train_loss"]] = ["diverged", 29_647.0]
    stats = figs.spread(results, "final_train_loss")
    row = stats[(stats.model == "residual") & (stats.depth == 8)]
    assert row.n.item() == 1 and row["mean"].item() == 0.01


def _curves(depths=(8, 14, 20, 32), seeds=(0, 1)) -> pd.DataFrame:
    rows = [
        {"depth": d, "seed": s, "model": m, "step": step, "epoch": step / 10, "loss": 2.0 / step}
        for d in depths
        for s in seeds
        for m in ("plain", "residual")
        for step in range(1, 21)
    ]
    return pd.DataFrame(rows)


def test_curves_are_small_multiples_with_one_legend_entry_per_model():
    fig = figs.curves_figure(_curves())
    assert [a.text for a in fig.layout.annotations] == ["depth 8", "depth 14", "depth 20", "depth 32"]
    assert len(fig.data) == 4 * 2 * 2  # depths x models x seeds
    assert [t.name for t in fig.data if t.showlegend] == ["plain net", "residual net"]
    assert {t.line.color for t in fig.data if t.name == "plain net"} == {COLORS["plain"]}
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis4.title.text == "step"  # bottom row (2 x 3 grid: panel 4 is in row 2)


def test_responses_figure_in_order_and_sorted():
    stds = {"plain": [1.0, 3.0, 2.0], "residual": [0.5, 0.4, 0.6]}
    rows = [
        {"depth": 14, "seed": 0, "model": m, "block": f"b{i}", "depth_index": i, "act_std": v}
        for m, vals in stds.items()
        for i, v in enumerate(vals)
    ]
    fig = figs.responses_figure(pd.DataFrame(rows))
    assert "depth 14" in fig.layout.title.text
    in_order, ranked = fig.data[0], fig.data[1]
    assert in_order.name == "plain net 14" and trace_array(in_order.y).tolist() == [1.0, 3.0, 2.0]
    assert trace_array(ranked.y).tolist() == [3.0, 2.0, 1.0]
    assert fig.data[2].line.color == COLORS["residual"]


def test_cost_figure_goes_log_when_sizes_span_decades():
    small = figs.cost_figure(_results(depths=(8, 14)))
    assert small.layout.yaxis.type != "log" and small.layout.barmode == "group"
    assert [t.name for t in small.data if t.showlegend] == ["plain net", "residual net"]
    wide = figs.cost_figure(_results(depths=(8, 110)))
    assert wide.layout.yaxis.type == "log" and wide.layout.yaxis2.type == "log"


def test_figures_accept_empty_frames():
    empty_results = pd.DataFrame(columns=_results().columns)
    for fig in (
        figs.error_vs_depth_figure(empty_results),
        figs.loss_vs_depth_figure(empty_results),
        figs.cost_figure(empty_results),
        figs.curves_figure(_curves().iloc[:0]),
        figs.responses_figure(pd.DataFrame(columns=["depth", "seed", "model", "block", "depth_index", "act_std"])),
    ):
        assert fig.layout.title.text


# --------------------------------------------------------------------------------------------------
# The page under AppTest


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty run store for this test: the env var is read when the cached store is created."""
    monkeypatch.setenv("RESNET_VIZ_DATA_DIR", str(tmp_path))
    run_store.clear()
    yield tmp_path
    run_store.clear()  # the next user builds its store from its own environment


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _tiny_sweep(at: AppTest) -> None:
    at.multiselect(key="depth.depths").set_value([8, 14])
    at.number_input(key="depth.epochs").set_value(1)
    at.select_slider(key="depth.width").set_value(8).run()


def test_page_renders_with_an_empty_store(data_dir):
    at = open_page(PAGE)
    assert at.title[0].value == "Depth study"
    assert "No stored runs yet" in texts(at.caption)
    assert "0 of 6 runs already stored" in texts(at.caption)
    assert not at.get("plotly_chart")


def test_sweep_form_offers_only_the_norms_cnns_take():
    """The option table lists LayerNorm too (for Transformers and GCNs); the depth study's nets do not take it."""
    at = open_page(PAGE)
    assert at.radio(key="depth.norm").options == ["batch", "none"]
    assert "sort" not in at.selectbox(key="depth.dataset").options


def test_tiny_sweep_draws_both_models_replays_from_the_store_and_round_trips_a_zip(data_dir):
    at = open_page(PAGE)
    _tiny_sweep(at)
    assert "2 runs (a plain/residual pair each): 0 already stored, 2 to train" in texts(at.caption)
    _button(at, "Run").click().run()
    job = at.session_state[SESSION_KEY].others["depth_sweep"]
    job.join(120)
    assert job.status == "finished", job.message
    at.run()  # AppTest does not run fragment timers: redraw from the finished sweep
    assert not at.exception, [e.value for e in at.exception]
    assert "Finished: 2 runs, 0 from the store, 2 trained now." in texts(at.success)
    figures = plotly_figures(at)
    assert len(figures) == 5
    for fig in figures:
        names = " ".join(t.name or "" for t in fig.data)
        assert "plain net" in names and "residual net" in names, fig.layout.title.text
    assert [a.text for a in figures[2].layout.annotations] == ["depth 8", "depth 14"]
    assert "depth 14" in figures[3].layout.title.text  # block responses of the deepest pair
    table = at.dataframe[-1].value
    assert len(table) == 2 and set(table.dataset) == {"digits"}
    deepest = next(r for r in job.view().runs if r.depth == 14).run.key
    assert at.selectbox(key="depth.stored.pick").value == deepest  # the sweep's deepest run is chosen

    _button(at, "Run").click().run()  # the same sweep again: everything comes from the store
    assert not at.exception
    assert "Finished: 2 runs, 2 from the store, 0 trained now." in texts(at.success)

    store = RunStore(data_dir)
    key = store.list_runs()[0].key
    folder = store.export(key, data_dir / "export" / "run")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.iterdir():
            archive.write(path, f"run/{path.name}")
    at.selectbox(key="depth.stored.pick").set_value(key).run()
    _button(at, "Delete").click().run()
    assert len(at.dataframe[-1].value) == 2  # nothing deleted before the confirmation
    _button(at, "Yes, delete").click().run()
    assert f"Deleted run {key[:12]}." in texts(at.success)
    assert len(at.dataframe[-1].value) == 1
    at.file_uploader(key="depth.import").set_value(("run.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception
    assert re.search(r"Imported run imported-[0-9a-f]{12} from `run\.zip`", texts(at.success)), texts(at.success)
    assert sorted(at.dataframe[-1].value["origin"]) == ["imported", "trained here"]  # kept apart from trained runs


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"this is not a zip", "not a zip file"),
        ({"notes.txt": "hello"}, "manifest.json: missing"),
        ({"run/manifest.json": '{"format": "something-else"}'}, "not a resnet-viz-run manifest"),
        ({"../evil/manifest.json": "{}"}, "unsafe path"),
    ],
)
def test_importing_a_malformed_zip_shows_an_error_not_an_exception(data_dir, content, problem):
    if isinstance(content, dict):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, text in content.items():
                archive.writestr(name, text)
        content = buffer.getvalue()
    at = open_page(PAGE)
    at.file_uploader(key="depth.import").set_value(("bad.zip", content, "application/zip")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = texts(at.error)
    assert "Cannot import `bad.zip`" in errors and problem in errors, errors  # file names are shown as code


def test_empty_depths_are_explained_next_to_the_control(data_dir):
    at = open_page(PAGE)
    at.multiselect(key="depth.depths").set_value([]).run()
    assert any("depths" in e.value and "one or more" in e.value for e in at.error), texts(at.error)
    assert _button(at, "Run").disabled
    at.selectbox(key="depth.dataset").set_value("spirals").run()  # MLPs: their own depth rule and defaults
    assert at.multiselect(key="depth.depths").value == [4, 8, 16, 32]
    assert not at.error and not _button(at, "Run").disabled


def test_the_form_keeps_its_values_across_pages(data_dir):
    at = open_page(PAGE)
    at.multiselect(key="depth.depths").set_value([8, 20])
    at.number_input(key="depth.epochs").set_value(3).run()
    at.switch_page("pages/home.py").run()
    at.switch_page(PAGE).run()
    assert at.multiselect(key="depth.depths").value == [8, 20]
    assert at.number_input(key="depth.epochs").value == 3


def test_stop_keeps_finished_runs_and_says_how_to_resume(data_dir):
    at = open_page(PAGE)
    at.multiselect(key="depth.depths").set_value([8, 14])
    at.select_slider(key="depth.width").set_value(8)
    at.number_input(key="depth.epochs").set_value(100).run()
    _button(at, "Run").click().run()
    job = at.session_state[SESSION_KEY].others["depth_sweep"]
    _button(at, "Stop").click().run()
    job.join(60)
    assert job.status == "stopped"
    at.run()
    assert any("Run the same sweep again to resume" in w.value for w in at.warning), texts(at.warning)
    assert not _button(at, "Run").disabled


def test_a_sweep_waiting_for_a_training_slot_says_it_is_queued(data_dir):
    scheduler = run_service().scheduler
    cost = estimate({"A": ModelConfig(depth=8, width=8)}, TrainConfig(epochs=1), DataConfig())
    held = [scheduler.ticket(cost, WATCHED) for _ in range(scheduler.cores)]
    for ticket in held:  # every core busy, as if other sessions were training
        assert scheduler.acquire(ticket, threading.Event())
    try:
        at = open_page(PAGE)
        _tiny_sweep(at)
        _button(at, "Run").click().run()
        job = at.session_state[SESSION_KEY].others["depth_sweep"]
        assert scheduler.wait_until(lambda: scheduler.counts()[1] == 1, 60)  # the sweep's run is queued
        at.run()
        assert any("Queued: place 1" in i.value and "training lab" in i.value for i in at.info), texts(at.info)
        # the classroom card's stored count would stand still while the sweep stores its runs: it points below
        assert "A sweep is running: its progress is below." in texts(at.caption)
        assert "runs already stored" not in texts(at.caption)
        assert not _button(at, "Stop").disabled
        _button(at, "Stop").click().run()
        assert job.status == "stopped"
    finally:
        for ticket in held:
            scheduler.release(ticket)


def test_a_damaged_store_offers_to_move_it_aside(data_dir):
    (data_dir / "runs.sqlite3").write_bytes(b"definitely not sqlite" * 100)
    at = open_page(PAGE)
    assert "The run store file is damaged" in texts(at.error)
    _button(at, "Move the damaged store aside").click().run()
    _button(at, "Yes, move the damaged store aside").click().run()
    assert "Moved to" in texts(at.success)
    at.run()
    assert not at.error and "No stored runs yet" in texts(at.caption)


# --------------------------------------------------------------------------------------------------
# The browser
