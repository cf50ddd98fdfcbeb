"""Receptive-fields page: figure builders on synthetic fields, the page under AppTest, one browser screenshot."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
import torch
from harness import open_page, plotly_figures, trace_array
from streamlit.testing.v1 import AppTest

from resnet_viz.data import DataConfig
from resnet_viz.figures import receptive_field as figs
from resnet_viz.figures.common import COLORS
from resnet_viz.models import ModelConfig, build_model
from resnet_viz.receptive_field import ERFResult, RFInfo, growth_rows
from resnet_viz.training import TrainConfig, train_models
from resnet_viz.ui.session import SESSION_KEY
from resnet_viz.ui.snapshots import CACHE_KEY, FRESH, STORED
from resnet_viz.ui.store import run_store

PAGE = "pages/receptive_fields.py"
TINY = {"a.depth": "8", "a.width": "8", "epochs": "1"}
LABELS = {"A": "A · plain 8", "B": "B · residual 8"}
MODELS_8 = {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}


# --------------------------------------------------------------------------------------------------
# Pure figures, synthetic fields


def _info(name: str, size: int, centre: int, input_size: int, jump: int = 1) -> RFInfo:
    half = (size - 1) // 2
    return RFInfo(
        name=name,
        size_hw=(size, size),
        jump_hw=(jump, jump),
        origin=(centre - half, centre - half),
        output_shape=(input_size, input_size),
        input_shape=(input_size, input_size),
        reach=(0, 0, input_size - 1, input_size - 1),
        unit=(0, 0),
    )


def _erf(name: str, size: int, canvas: int = 11, sigma: float = 1.0) -> ERFResult:
    """A Gaussian blob centred on a canvas that holds a theoretical field of side `size`."""
    c = (canvas - 1) // 2
    rows, cols = np.indices((canvas, canvas))
    erf = np.exp(-((rows - c) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
    return ERFResult(
        name=name,
        map=erf,
        centre=(c, c),
        canvas_size=canvas,
        radius50=1.0,
        radius90=2.0,
        area_fraction50=0.2,
        area_fraction90=0.5,
        n_samples=2,
        theoretical=_info(name, size, c, canvas),
        clipped=False,
    )


def _results(sigma_b: float = 1.0) -> dict[str, dict[str, ERFResult]]:
    layers = [("stem.conv", 3), ("stage1.block1", 7), ("stage2.block1", 9)]
    return {
        "A": {n: _erf(n, s, sigma=1.5) for n, s in layers},
        "B": {n: _erf(n, s, sigma=sigma_b) for n, s in layers},
    }


def test_growth_figure_draws_both_models_with_one_shared_theoretical_line():
    results = _results()
    rows = {k: growth_rows(r) for k, r in results.items()}
    fig = figs.growth_figure(rows, LABELS)
    names = [t.name for t in fig.data]
    assert names == [f"{LABELS[k]}: {what}" for k in "AB" for what in ("theoretical", "ERF 50% mass", "ERF 90% mass")]
    theory = {t.name[0]: t for t in fig.data if t.name.endswith("theoretical")}
    assert theory["A"].y.tolist() == theory["B"].y.tolist() == [1.0, 3.0, 4.0]  # (size - 1) / 2
    assert theory["A"].line.dash == theory["B"].line.dash == "dash"
    assert theory["A"].line.width > theory["B"].line.width  # the wide one under the narrow one: both visible
    assert {t.line.color for t in fig.data if t.name.startswith("A")} == {COLORS["A"]}
    assert {t.line.color for t in fig.data if t.name.startswith("B")} == {COLORS["B"]}
    assert any("identical" in a.text for a in fig.layout.annotations)
    assert "px" in fig.layout.yaxis.title.text and fig.layout.title.text
    assert list(fig.layout.xaxis.categoryarray) == ["stem.conv", "stage1.block1", "stage2.block1"]


def test_growth_figure_without_identical_fields_and_on_a_log_axis():
    results = _results()
    results["B"] = {"stem.conv": _erf("stem.conv", 5)}
    results["A"]["stem.conv"] = ERFResult(**{**vars(results["A"]["stem.conv"]), "radius50": 0.0})
    fig = figs.growth_figure({k: growth_rows(r) for k, r in results.items()}, LABELS, log_y=True)
    assert not any("identical" in (a.text or "") for a in fig.layout.annotations)
    assert fig.layout.yaxis.type == "log"
    r50 = next(t for t in fig.data if t.name == "A · plain 8: ERF 50% mass")
    assert math.isnan(r50.y[0])  # a radius of 0 cannot sit on a log axis: left out, not clamped


def test_network_order_puts_blocks_after_their_convs_and_merges_depths():
    names = ["stage1.block1", "stage1.block1.conv1", "head", "stem.conv", "stage2.block1.conv2", "stage1.block2"]
    assert sorted(names, key=figs.layer_sort_key) == [
        "stem.conv",
        "stage1.block1.conv1",
        "stage1.block1",
        "stage1.block2",
        "stage2.block1.conv2",
        "head",
    ]
    merged = figs.merged_order([["stem.conv", "stage1.block1"], ["stem.conv", "stage1.block1", "stage1.block2"]])
    assert merged == ["stem.conv", "stage1.block1", "stage1.block2"]


def test_mass_outside_the_image():
    erf = np.zeros((5, 5))
    erf[2, 2], erf[2, 3], erf[0, 0] = 6.0, 3.0, 1.0
    result = ERFResult(**{**vars(_erf("x", 3, canvas=5)), "map": erf, "centre": (2, 2)})
    inside = _info("x", 3, 0, 4)  # the probed unit sits at image pixel (0, 0) of a 4 x 4 image
    assert figs.erf_offset(result, inside) == (-2, -2)
    # shifted by (-2, -2): (2,2) -> (0,0) and (2,3) -> (0,1) are inside, (0,0) -> (-2,-2) is padding
    assert figs.mass_outside_image(result, inside) == pytest.approx(0.1)
    assert math.isnan(figs.mass_outside_image(ERFResult(**{**vars(result), "map": np.zeros((5, 5))}), inside))


def test_erf_maps_figure_outlines_the_theoretical_field_at_equal_aspect():
    results = {k: r["stage2.block1"] for k, r in _results(sigma_b=0.7).items()}
    fig = figs.erf_maps_figure(results, LABELS)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert [h.name for h in heatmaps] == list(LABELS.values())
    for h in heatmaps:
        assert np.asarray(h.z).max() == pytest.approx(1.0)  # each map relative to its own peak
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis2.scaleanchor == "x2"
    dashed = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(dashed) == 2  # the theoretical field, once per panel: region (1, 1, 9, 9) around whole pixels
    assert (dashed[0].x0, dashed[0].x1, dashed[0].y0, dashed[0].y1) == (0.5, 9.5, 0.5, 9.5)
    assert {s.xref for s in dashed} == {"x", "x2"}
    titles = " ".join(a.text for a in fig.layout.annotations)
    assert "A · plain 8" in titles and "B · residual 8" in titles


def test_overlay_figure_draws_the_image_to_scale_with_the_fields_beyond_its_edge():
    image = np.arange(16, dtype=float).reshape(4, 4)
    results = {k: r["stage2.block1"] for k, r in _results().items()}
    infos = {k: _info("stage2.block1", 9, 1, 4) for k in "AB"}  # field rows/cols -3..5: past the 4 px image
    fig = figs.overlay_figure(image, results, infos, LABELS)
    images = [t for t in fig.data if t.name == "image"]
    assert len(images) == 2 and np.asarray(images[0].z).shape == (4, 4)
    erfs = [t for t in fig.data if t.name and t.name.endswith(": ERF")]
    assert [t.name for t in erfs] == [f"{label}: ERF" for label in LABELS.values()]
    assert trace_array(erfs[0].x)[0] == -4  # canvas centre 5 moved onto image pixel 1
    assert COLORS["A"] == "#D55E00" and erfs[0].colorscale[-1][1] == "rgba(213,94,0,0.75)"  # A's colour at the peak
    assert erfs[0].colorscale[0][1] == "rgba(213,94,0,0.0)"  # no gradient is transparent: the image shows through
    theory = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(theory) == 2 and (theory[0].x0, theory[0].x1) == (-3.5, 5.5)
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis2.scaleanchor == "x2"
    assert fig.layout.xaxis.range[0] < -3.5 and fig.layout.xaxis.range[1] > 5.5  # the whole field is in view
    assert [a.text for a in fig.layout.annotations][:2] == list(LABELS.values())


def test_rf_table_has_one_set_of_theoretical_columns_when_the_models_agree():
    results = _results()
    infos = {k: [r.theoretical for r in per.values()] for k, per in results.items()}
    table = figs.rf_table(infos, results, LABELS)
    assert table.layer.tolist() == ["stem.conv", "stage1.block1", "stage2.block1"]
    assert {"RF size (px)", "jump (px)", "region (centre unit)", "A: ERF r90 (px)", "B: ERF r50 (px)"} <= set(table)
    assert table["RF size (px)"].tolist() == [3, 7, 9]
    infos["B"] = infos["B"][:2]
    table = figs.rf_table(infos, results, LABELS)
    assert "A: RF size (px)" in table and "B: RF size (px)" in table and "RF size (px)" not in table
    assert table["B: RF size (px)"].isna().tolist() == [False, False, True]
    # Every convolution too: layers without an ERF have empty (NA) cells, not Python None shown as "None".
    del results["A"]["stage2.block1"]
    table = figs.rf_table(infos, results, LABELS)
    erf = table["A: ERF r90 (px)"]
    assert str(erf.dtype) == "Float64" and erf.isna().tolist() == [False, False, True]
    assert not any(v is None for v in table.to_numpy().ravel())


# --------------------------------------------------------------------------------------------------
# The page under AppTest


def _open(first: str = "pages/home.py", params: dict[str, str] | None = None, fresh: bool = False) -> AppTest:
    """The app on page `first`; with `fresh`, this page starts on the lab setup's models (nothing to train)."""
    return open_page(first, params, state={"rf.source": FRESH} if fresh else None)


def _layer_box(at: AppTest):
    """The layer box: its key names the fields its labels give (`relabelled_key`), so find it by label."""
    return next(box for box in at.selectbox if box.label == "Layer")


def _page(at: AppTest) -> AppTest:
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _check_both_models(at: AppTest, a: str, b: str) -> None:
    figures = plotly_figures(at)
    assert len(figures) == 3
    for fig in figures:
        names = " ".join(t.name or "" for t in fig.data) + " ".join(x.text or "" for x in fig.layout.annotations)
        assert a in names and b in names, fig.layout.title.text
    growth = figures[0]
    theory = [t for t in growth.data if t.name.endswith("theoretical")]
    assert len(theory) == 2 and trace_array(theory[0].y).tolist() == trace_array(theory[1].y).tolist()
    assert list(theory[0].x) == list(theory[1].x)
    table = at.dataframe[0].value
    assert table.layer.tolist() == list(theory[0].x)  # one row per ERF layer by default


def test_page_renders_with_fresh_models_then_layer_and_real_images():
    at = _page(_open(fresh=True))
    assert at.title[0].value == "Receptive fields"
    _check_both_models(at, "A · plain 20", "B · residual 20")
    layer = _layer_box(at)
    assert layer.value == "stage3.block3" and layer.options[-1].startswith("stage3.block3")  # the deepest block
    layer.set_value("stage1.block2").run()
    assert not at.exception
    maps = plotly_figures(at)[1]
    assert all("stage1.block2" in a.text for a in maps.layout.annotations if "·" in a.text)
    assert any("Theoretical field at stage1.block2: 11 px" in m.value for m in at.markdown)
    at.radio(key="rf.inputs").set_value("Test images of the dataset").run()
    assert not at.exception
    cache = at.session_state["rf.cache"]
    assert any(key[0] == "erf" and key[3][0] == "images" for key in cache)
    _check_both_models(at, "A · plain 20", "B · residual 20")
    at.toggle(key="rf.table.all").set_value(True).run()
    table = at.dataframe[0].value
    assert len(table) == 29 and table.layer.iloc[-1] == "head"  # 19 convs, 9 blocks and the head of depth 20
    assert table["A: ERF r50 (px)"].isna().sum() == 19  # ERFs are computed for the stem and the blocks


def test_page_with_a_lab_run_and_a_quick_pair():
    at = _open("pages/lab.py", TINY)
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    job.join(120)
    assert job.status == "finished"
    _page(at)
    assert at.radio(key="rf.source").value == "Lab run of this session"
    assert any("lab run of this session" in c.value.lower() for c in at.caption)
    _check_both_models(at, "A · plain 8", "B · residual 8")
    trained = dict(at.session_state["rf.cache"])
    steps = at.select_slider(key="rf.step")
    assert steps.value == job.trainer.total_steps and "init" in steps.options  # the latest snapshot by default
    steps.set_value(0).run()  # back to initialisation: another model, its own cached fields
    assert not at.exception and any("at step 0" in c.value for c in at.caption)
    assert len(at.session_state["rf.cache"]) > len(trained)
    _check_both_models(at, "A · plain 8", "B · residual 8")
    at.radio(key="rf.origin").set_value("A CNN pair built here").run()
    at.select_slider(key="rf.quick.depth").set_value(14).run()
    assert not at.exception
    _check_both_models(at, "A · plain 14", "B · residual 14")
    assert _layer_box(at).value == "stage3.block2"  # the late-block default follows the depth


def test_a_transformer_lab_setup_gives_a_cnn_quick_pair():
    """A Transformer setup's LayerNorm became the quick pair's norm, which no CNN takes: the page raised."""
    at = _page(_open("pages/lab.py", {"preset": "postln"}, fresh=True))
    at.radio(key="rf.origin").set_value("A CNN pair built here").run()
    assert not at.exception, [e.value for e in at.exception]
    norm = at.radio(key="rf.quick.norm")
    assert norm.value == "batch" and list(norm.options) == ["batch", "none"]
    _check_both_models(at, "A · plain 20", "B · residual 20")


def test_a_stored_sweep_run_whose_models_are_plain_and_residual():
    """Depth-study and Limits grid runs name their models plain and residual, not A and B: the page read
    results["A"] and raised a KeyError on them."""
    trainer, history = train_models(MODELS_8, TrainConfig(epochs=1, seed=23), DataConfig())
    key = run_store().save(trainer, history)
    at = open_page("pages/home.py", state={"rf.source": STORED})
    at.session_state["rf.stored"] = key
    _page(at)
    assert _layer_box(at).options and not at.exception
    figures = plotly_figures(at)
    assert len(figures) == 3 and any("plain 8" in (t.name or "") for t in figures[0].data)


def test_a_stored_run_offers_its_training_steps():
    """A run replayed from the store (as every session but the one that trained it sees it) has the step
    slider of a live run: init, the snapshots the store kept, and the final weights."""
    trainer, history = train_models(MODELS_8, TrainConfig(epochs=1, seed=29), DataConfig())
    key = run_store().save(trainer, history)
    at = open_page("pages/home.py", state={"rf.source": STORED})
    at.session_state["rf.stored"] = key
    _page(at)
    steps = at.select_slider(key="rf.step")
    assert list(steps.options) == ["init", *map(str, range(1, 11))] and steps.value == 10
    assert any(f"stored run {key[:12]}, final weights" in c.value for c in at.caption)
    steps.set_value(0).run()
    assert not at.exception and any(f"stored run {key[:12]}, at step 0" in c.value for c in at.caption)
    model = at.session_state[CACHE_KEY][(key, "plain", 0)]
    fresh = build_model(trainer.configs["plain"], seed=29).state_dict()
    assert all(torch.equal(t, fresh[n]) for n, t in model.state_dict().items())  # the initial weights


def test_a_stored_run_with_a_damaged_snapshot_falls_back_to_its_final_weights():
    trainer, history = train_models(MODELS_8, TrainConfig(epochs=1, seed=37), DataConfig())
    store = run_store()
    key = store.save(trainer, history)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE snapshots SET data = ? WHERE key = ? AND step = 3", (b"forged", key))
    at = open_page("pages/home.py", state={"rf.source": STORED})
    at.session_state["rf.stored"] = key
    _page(at)
    assert not at.exception and "rf.step" not in [s.key for s in at.select_slider]
    assert [w.value for w in at.warning][0].startswith("This run's weight snapshots cannot be read")
    assert any(f"stored run {key[:12]}, final weights" in c.value for c in at.caption)


def test_mlp_lab_setup_explains_instead_of_failing():
    at = _page(_open("pages/lab.py", {"dataset": "spirals", "a.depth": "4", "a.width": "8"}, fresh=True))
    assert any("Receptive fields are about images" in i.value for i in at.info)
    _check_both_models(at, "A · plain 20", "B · residual 20")  # a CNN pair built here instead


# --------------------------------------------------------------------------------------------------
# Browser
