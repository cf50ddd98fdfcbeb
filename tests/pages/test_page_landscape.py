"""Loss-landscape page: figure builders on synthetic landscapes, the page under AppTest, one browser walk."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import plotly.io as pio
import pytest
from harness import open_page, run_to_the_end, trace_array
from streamlit.testing.v1 import AppTest

from resnet_viz.figures import landscape as figs
from resnet_viz.figures.common import COLORS
from resnet_viz.landscape import Curvature, Interpolation, NetLandscape, Surface, Trajectory
from resnet_viz.ui.snapshots import FRESH

PAGE = "pages/loss_landscape.py"


# --------------------------------------------------------------------------------------------------
# Pure figures, synthetic landscapes


def _surface(scale: float, ripple: float = 0.0) -> Surface:
    axis = np.linspace(-1, 1, 5)
    a, b = np.meshgrid(axis, axis)
    loss = scale * (0.1 + a**2 + b**2) + ripple * np.cos(6 * a)
    return Surface(axis, axis.copy(), loss, float(loss[2, 2]))


def _landscape(key: str, label: str, scale: float, with_path: bool = True) -> NetLandscape:
    t = np.arange(-5, 26) / 20
    line = Interpolation(t, 2.3 - 2 * np.clip(t, 0, 1) + scale * (t - 1).clip(0), 2.4 - 1.9 * np.clip(t, 0, 1))
    path = Trajectory([0, 10, 20], np.array([[3.0, 1.0], [1.0, -0.5], [0.0, 0.0]]), (0.8, 0.15), _surface(scale))
    notes = {} if with_path else {"trajectory": "No training path: test."}
    curvature = Curvature(50.0 * scale, -5.0, 20)
    return NetLandscape(key, label, 20, _surface(scale), line, curvature, path if with_path else None, notes)


RESULTS = {"A": _landscape("A", "A · plain 20", 100.0), "B": _landscape("B", "B · residual 20", 1.0, False)}


def test_verdicts_say_what_these_landscapes_showed_and_name_the_weights():
    # A: ratio 5 / 5000 = 0.001; B: 5 / 50 = 0.1. Both surfaces are bowls with one minimum.
    assert (
        figs.curvature_verdict(RESULTS)
        == "Here B · residual 20 has the larger ratio (0.100 against 0.001 for A · plain 20)."
    )
    surface = figs.surface_verdict(RESULTS)
    assert surface.startswith("Here, on this grid: A · plain 20: 1 local minimum and 0.00 from a quadratic bowl; ")
    assert figs.weights_name(RESULTS) == "the trained weights"
    fresh = {k: dataclasses.replace(r, step=0) for k, r in RESULTS.items()}
    assert figs.weights_name(fresh) == "the initial weights"
    assert figs.contour_figure(
        fresh, figs.loss_scale([r.surface for r in fresh.values()])
    ).layout.title.text.startswith("Loss around the initial weights")


def test_contour_and_surface_share_one_log_colour_scale():
    scale = figs.loss_scale([r.surface for r in RESULTS.values()])
    assert scale.log  # 0.1 (B's minimum) to 210 (A's corners): decades apart
    assert scale.low == pytest.approx(np.log10(0.1)) and scale.high == pytest.approx(np.log10(210.0))
    contour = figs.contour_figure(RESULTS, scale)
    contours = [t for t in contour.data if t.type == "contour"]
    assert [t.name for t in contours] == ["A · plain 20", "B · residual 20"]
    assert {t.coloraxis for t in contours} == {"coloraxis"}
    assert (contour.layout.coloraxis.cmin, contour.layout.coloraxis.cmax) == (scale.low, scale.high)
    assert "10" in contour.layout.coloraxis.colorbar.ticktext  # ticks in loss units
    np.testing.assert_allclose(np.asarray(contours[1].z)[2, 2], np.log10(0.1))
    marks = [t for t in contour.data if t.type == "scatter"]
    assert marks[0].marker.line.color == COLORS["A"] and marks[1].marker.line.color == COLORS["B"]
    assert "filter-normalised" in contour.layout.xaxis.title.text and contour.layout.title.text
    surface = figs.surface_figure(RESULTS, scale)
    assert [t.type for t in surface.data] == ["surface", "surface"]
    assert list(surface.layout.scene.zaxis.range) == list(surface.layout.scene2.zaxis.range) == [scale.low, scale.high]
    # z is named in the title: the scene's own z title was cut at its left edge
    assert not surface.layout.scene.zaxis.title.text
    assert "height and colour: loss, log scale" in surface.layout.title.text
    # Ten decades (0.01 to 1e7) get at most five labels on the 3-D z axis, every other decade here.
    wide = figs.LossScale(-2.0, 7.0, True).axis()
    assert wide["ticktext"] == ["0.01", "1", "100", "10000", "1e+06"]


def test_a_surface_being_computed_is_drawn_without_nan():
    """plotly.js's WebGL scene breaks on NaN (an all-NaN surface took both 3-D scenes down in Chromium)."""
    partial, empty = _surface(100.0), _surface(1.0)
    partial.loss[3:] = np.nan  # rows 3-4 not evaluated yet
    partial.loss[1, 2] = np.inf  # the loss overflowed there
    empty.loss[:] = np.nan
    results = {
        "A": NetLandscape("A", "A · plain 20", 20, partial),
        "B": NetLandscape("B", "B · residual 20", 20, empty),
    }
    scale = figs.loss_scale([partial, empty])
    fig = figs.surface_figure(results, scale)
    [trace] = fig.data  # B has no computed row: no trace, a note instead
    z = np.asarray(trace.z, dtype=float)
    assert z.shape == (3, 5) and np.isfinite(z).all() and list(trace.y) == list(partial.betas[:3])
    assert z[1, 2] == scale.high  # an overflow is drawn at the top of the shared range
    # the axes span the whole grid: three rows of five show as part of the surface, not as all of it
    assert list(fig.layout.scene.yaxis.range) == [-1.0, 1.0] and list(fig.layout.scene.xaxis.range) == [-1.0, 1.0]
    assert [a.text for a in fig.layout.annotations if "computed" in a.text] == [
        "drawn when two rows of its grid are computed"
    ]


def test_linear_scale_when_the_losses_are_close():
    bowl = _surface(1.0)
    bowl.loss += 0.9  # 1.0 to 3.0
    scale = figs.loss_scale([bowl])
    assert not scale.log and (scale.low, scale.high) == pytest.approx((1.0, 3.0))
    bowl.loss[[0, -1]] = np.nan  # rows not evaluated yet: left out of the scale, drawn blank
    assert figs.loss_scale([bowl]).high == pytest.approx(2.25)
    empty = Surface(bowl.alphas, bowl.betas, np.full((5, 5), np.nan), 1.0)
    assert figs.loss_scale([empty]) == figs.LossScale(0.0, 1.0, False)


def test_interpolation_trajectory_curvature_and_table():
    line = figs.interpolation_figure(RESULTS)
    assert [t.name for t in line.data] == [
        f"{label}: {what}" for label in ("A · plain 20", "B · residual 20") for what in ("training", "validation")
    ]
    assert line.data[0].line.color == COLORS["A"] and line.data[3].line.dash == "dash"
    assert line.layout.yaxis.type == "log" and "nats" in line.layout.yaxis.title.text
    path = figs.trajectory_figure(RESULTS)  # B has no path: one panel
    scatter = [t for t in path.data if t.type == "scatter"]
    assert len(scatter) == 1 and list(scatter[0].text) == ["step 0", "step 10", "step 20"]
    assert path.layout.xaxis.title.text == "PC1 (80.0% of variance)"
    curvature = figs.curvature_figure(RESULTS)
    assert [t.name for t in curvature.data] == [
        "A · plain 20: |λ_min / λ_max| = 0.001",
        "B · residual 20: |λ_min / λ_max| = 0.100",
    ]
    table = figs.summary_table(RESULTS, cached={"B"})
    assert table["|λ_min / λ_max|"].tolist() == pytest.approx([0.001, 0.1])
    assert table["source"].tolist()[1] == "run store"


# --------------------------------------------------------------------------------------------------
# The page under AppTest


def _open() -> AppTest:
    # the lab setup at initialisation: nothing to train first
    return open_page(PAGE, state={"landscape.source": FRESH}, timeout=180)


def test_page_computes_contour_and_surface_for_both_nets():
    at = _open()
    assert at.title[0].value == "Loss landscape"
    assert not at.get("plotly_chart")  # nothing until Compute
    at.select_slider(key="landscape.grid").set_value(7)
    at.select_slider(key="landscape.examples").set_value(100)
    at.select_slider(key="landscape.iterations").set_value(10)
    run_to_the_end(at, "Compute landscapes", "landscape", 300)
    figures = {f.layout.title.text: f for f in (pio.from_json(el.proto.spec) for el in at.get("plotly_chart"))}
    # fresh models: the pictures are around the initial weights, and say so (they said "trained")
    contour = next(f for title, f in figures.items() if title.startswith("Loss around the initial weights"))
    surface = next(f for title, f in figures.items() if title.startswith("The loss surfaces in 3-D"))
    for fig, kind in ((contour, "contour"), (surface, "surface")):
        traces = [t for t in fig.data if t.type == kind]
        assert [t.name for t in traces] == ["A · plain 20", "B · residual 20"]
        assert all(np.isfinite(trace_array(t.z)).all() for t in traces)
        assert trace_array(traces[0].z).shape == (7, 7)
    assert any(t.startswith("Extreme Hessian eigenvalues at the initial weights") for t in figures)
    assert "2-D: around the initial weights" in [h.value for h in at.subheader]
    captions = " ".join(c.value for c in at.caption)
    assert "eval mode with the running statistics of these weights" in captions
    minima = at.dataframe[0].value["local minima on the grid"].tolist()
    assert f"Here, on this grid: A · plain 20: {minima[0]} local minim" in captions  # what this grid showed
    assert re.search(r"Here B · residual 20|Here A · plain 20", captions)  # which net's ratio is the larger
    assert "No training path: a net at its initialisation has no training path." in captions
    assert len(at.dataframe[0].value) == 2 and any("Done: 2 landscapes" in s.value for s in at.success)


# --------------------------------------------------------------------------------------------------
# Browser
