"""Limits & pitfalls page: every analysis under AppTest (fresh models; one real training grid), the grid
figures on synthetic tables, and one browser walk through the model analyses."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import plotly.io as pio
import torch
from harness import open_page, run_to_the_end
from streamlit.testing.v1 import AppTest

from resnet_viz.data import DataConfig
from resnet_viz.figures import limits as figs
from resnet_viz.figures.common import color
from resnet_viz.models import ModelConfig
from resnet_viz.store import IMPORTED_PREFIX, RunStore
from resnet_viz.training import TrainConfig, train_models
from resnet_viz.ui.snapshots import FRESH, STORED
from resnet_viz.ui.store import run_store

PAGE = "pages/limits.py"


def _open(analysis: str) -> AppTest:
    # the lab setup's models: nothing to train
    return open_page(PAGE, state={"limits.source": FRESH, "limits.analysis": analysis}, timeout=300)


def _titles(at: AppTest) -> list[str]:
    return [pio.from_json(el.proto.spec).layout.title.text for el in at.get("plotly_chart")]


def test_model_analyses_draw_every_chart_with_a_caption():
    at = _open("Lesions")
    assert at.title[0].value == "Limits & pitfalls"
    assert any("Freshly built" in c.value for c in at.caption)
    expected = {
        "Lesions": ["Test error after deleting one block", "Test error after deleting k random", "Paths through"],
        "Calibration": ["Reliability"],
        "Robustness": ["Test accuracy under input corruptions"],
        "Cost": ["What depth costs"],
    }
    for analysis, titles in expected.items():
        at.radio(key="limits.analysis").set_value(analysis).run()
        assert not at.exception, [e.value for e in at.exception]
        drawn = _titles(at)
        assert len(drawn) == len(titles) and all(t in d for t, d in zip(titles, drawn, strict=True)), drawn
        assert sum(c.value.startswith("What to look for") for c in at.caption) == len(titles)
        if analysis == "Lesions":  # the k chart says how few sets of k blocks each point averages
            assert any("Each point for k > 1 averages 1 to 4 sets of k blocks" in c.value for c in at.caption)
    at.radio(key="limits.analysis").set_value("Calibration").run()
    summary = at.dataframe[0].value
    assert list(summary.model) == ["A · plain 20", "B · residual 20"] and (summary.ece >= 0).all()
    headers = {name: c["label"] for name, c in json.loads(at.dataframe[0].proto.columns).items() if "label" in c}
    assert set(headers) == set(summary.columns) and not any("_" in h for h in headers.values()), headers


def test_a_model_with_non_finite_weights_is_refused_not_measured():
    """An imported run with NaN weights was "about calibrated (T = 1.00; ECE 0.000 -> 0.000)": pandas summed
    NaN bins as nothing. Cost (the architecture's) still works."""
    models = {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}
    trainer, history = train_models(models, TrainConfig(epochs=1, seed=31), DataConfig())
    with torch.no_grad():
        for p in trainer.models["plain"].parameters():
            p.fill_(float("nan"))
    key = run_store().save(trainer, history)
    at = open_page(PAGE, state={"limits.source": STORED, "limits.stored": key, "limits.analysis": "Calibration"})
    for analysis in ("Calibration", "Lesions", "Robustness"):
        at.radio(key="limits.analysis").set_value(analysis).run()
        assert not at.exception and not at.get("plotly_chart") and not at.dataframe
        assert [e.value for e in at.error] == [
            "plain 8 has non-finite weights at this step (its training diverged): it has no errors, "
            "calibration or robustness to measure. Choose an earlier step or another source."
        ]
    at.radio(key="limits.analysis").set_value("Cost").run()
    assert not at.exception and not at.error and at.get("plotly_chart")
    steps = at.select_slider(key="limits.step")  # the stored snapshots before the weights were broken
    steps.set_value(5).run()
    at.radio(key="limits.analysis").set_value("Calibration").run()
    assert not at.error and list(at.dataframe[0].value.model) == ["plain 8", "residual 8"]
    with sqlite3.connect(run_store().path) as conn:  # as an imported run: final weights only, no step slider
        conn.execute("DELETE FROM snapshots WHERE key = ?", (key,))
    again = open_page(PAGE, state={"limits.source": STORED, "limits.stored": key, "limits.analysis": "Lesions"})
    assert [e.value for e in again.error] == [
        "plain 8 has non-finite weights at this step (its training diverged): it has no errors, calibration or "
        "robustness to measure. Choose another source."
    ]


def test_an_imported_run_has_the_step_slider_of_the_run_it_was_exported_from(tmp_path):
    """Exports carried final weights only: an imported run had no "Training step" slider."""
    models = {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}
    trainer, history = train_models(models, TrainConfig(epochs=1, seed=32), DataConfig())
    elsewhere = RunStore(tmp_path / "teacher")
    exported = elsewhere.export_zip(elsewhere.save(trainer, history))
    key = run_store().import_zip(exported, "run.zip")
    assert key.startswith(IMPORTED_PREFIX)
    at = open_page(PAGE, state={"limits.source": STORED, "limits.stored": key, "limits.analysis": "Cost"})
    steps = at.select_slider(key="limits.step")
    assert steps.options == [str(s) for s in ["init", *range(1, 11)]]  # init, the 9 between, the final 10
    steps.set_value(5).run()
    at.radio(key="limits.analysis").set_value("Calibration").run()
    assert not at.exception and not at.error and list(at.dataframe[0].value.model) == ["plain 8", "residual 8"]


def test_init_grid_runs_through_the_run_service_and_draws():
    at = _open("Initialisation")
    at.select_slider(key="limits.init.depth").set_value(8).run()
    at.number_input(key="limits.init.epochs").set_value(1).run()
    at.number_input(key="limits.init.seeds").set_value(1).run()
    run_to_the_end(at, "Run grid", "limits_init", 600)
    assert _titles(at) == ["Final training loss by initialisation (each seed a point)"]
    assert set(at.dataframe[0].value.scheme) == {"kaiming x0.5", "kaiming x1", "kaiming x2", "xavier", "pytorch"}


def test_global_reasoning_shows_the_task_and_its_grid_controls():
    at = _open("Global reasoning")
    assert [b.label for b in at.button][:2] == ["Run grid", "Stop"]
    assert any("Plain/residual pairs at depths 8, 14, 20" in c.value for c in at.caption)
    at.multiselect(key="limits.global.depths").set_value([20, 8]).run()
    at.number_input(key="limits.global.epochs").set_value(2).run()
    assert any("depths 8, 20 on 32 px images, 2 epochs with Adam" in c.value for c in at.caption)
    at.multiselect(key="limits.global.depths").set_value([]).run()
    assert not at.exception and [b.label for b in at.button] == []
    assert "Pick at least one depth" in at.info[0].value


def test_global_reasoning_grid_runs_through_the_run_service_and_draws():
    """One depth-8 pair for one epoch: the chart against both fields and the table with its field columns."""
    at = _open("Global reasoning")
    at.multiselect(key="limits.global.depths").set_value([8]).run()
    at.number_input(key="limits.global.epochs").set_value(1).run()
    run_to_the_end(at, "Run grid", "limits_global", 600)
    assert not at.exception, [e.value for e in at.exception]
    assert _titles(at) == ["Corners task: accuracy against how much of the image the last block sees (chance: dashed)"]
    table = at.dataframe[0].value
    assert list(table.model) == ["plain", "residual"] and (table.rf_side == 25).all()
    assert not table.rf_holds_both_marks.any() and ((table.erf_share > 0) & (table.erf_share <= table.rf_share)).all()
    assert sum(c.value.startswith("What to look for") for c in at.caption) == 1


def test_grid_figures_on_synthetic_tables():
    table = pd.DataFrame(
        {
            "depth": [8, 8, 14, 14],
            "model": ["plain", "residual"] * 2,
            "test_acc": [0.5, 0.52, 0.9, 0.95],
            "rf_share": [0.6, 0.6, 1.0, 1.0],
            "erf_share": [0.4, 0.3, 0.8, 0.7],
        }
    )
    fig = figs.global_reasoning_figure(table)
    assert [t.name for t in fig.data] == ["plain", "residual"] * 2 and "chance" in fig.layout.title.text
    assert list(fig.data[1].text) == ["d8", "d14"]
    solved = table.assign(test_acc=[0.5, 0.5, 1.0, 1.0], rf_share=[0.6, 0.6, 1.0, 1.0])
    solved = pd.concat([solved, solved.iloc[2:].assign(depth=20)])  # depth 20 lands where depth 14 is
    labels = [list(t.text) for t in figs.global_reasoning_figure(solved).data[:2]]
    assert labels == [["d8", "d14, d20", ""], ["d8", "d14, d20", ""]]
    runs = pd.DataFrame(
        {
            "model": ["plain", "residual"],
            "depth": [8, 8],
            "val_acc": [0.9, 0.95],
            "latency_ms": [1.0, 1.1],
            "knee": [True, True],
        }
    )
    fig = figs.accuracy_latency_figure(runs)
    names = ["plain", "plain: depth stops paying", "residual", "residual: depth stops paying"]
    assert [t.name for t in fig.data] == names
    # the two nets' depth labels sat on top of each other (same depth, about the same latency)
    assert [(t.textposition, t.textfont.color) for t in fig.data[::2]] == [
        ("top left", color("plain", 0)),
        ("bottom right", color("residual", 1)),
    ]
