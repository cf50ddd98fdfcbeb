"""Figure builders: pure functions of tidy data, with both models, titles, axes and log scales."""

import json

import numpy as np
import pandas as pd
from plotly.subplots import make_subplots

from resnet_viz import figures
from resnet_viz.data import DataConfig
from resnet_viz.figures.attribution import map_figure
from resnet_viz.figures.common import MAX_HEATMAP_COLUMNS, TEMPLATE, bare, row_of_subplots
from resnet_viz.figures.lab import _bin_columns
from resnet_viz.figures.limits import cost_figure, reliability_figure, robustness_figure
from resnet_viz.models import ModelConfig
from resnet_viz.runs.tables import ChartTables
from resnet_viz.training import TrainConfig, train_models

LABELS = {"A": "A · plain 8", "B": "B · residual 8"}


def _history():
    models = {"A": ModelConfig(depth=8, width=8, skip=False), "B": ModelConfig(depth=8, width=8)}
    _, history = train_models(models, TrainConfig(epochs=2, val_every=5), DataConfig())
    return history


HISTORY = _history()
STEPS, LAYERS = HISTORY.steps_frame(), HISTORY.layers_frame()


def _names(fig):
    return [t.name for t in fig.data]


def test_loss_figure_has_both_models_log_axis_and_skip_marks():
    fig = figures.loss_figure(STEPS, LABELS, skip_events=[("B", 7, 0.5)], diverged={"A": 12})
    assert {"A · plain 8: train", "B · residual 8: train", "A · plain 8: validation"} <= set(_names(fig))
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "step"
    # Powers of ten, and no bare "2" or "5" at minor ticks (read as values under a decade).
    assert fig.layout.yaxis.exponentformat == "power" and fig.layout.yaxis.minorloglabels == "none"
    assert "Loss" in fig.layout.title.text and fig.layout.uirevision == "keep"
    train_a = next(t for t in fig.data if t.name == "A · plain 8: train")
    assert list(train_a.x) == list(range(1, 21))  # a short run keeps every point
    assert fig.data[0].line.color == figures.COLORS["A"] and fig.data[2].line.color == figures.COLORS["B"]
    shapes = [s.x0 for s in fig.layout.shapes]
    assert 7 in shapes and 12 in shapes


def test_skip_changes_close_together_share_one_label_and_models_label_apart():
    """A slider moved with the arrow keys changes α at successive steps: their labels printed over each
    other ("AAαα0.05"). Every change keeps its line; one label per burst, at its end; A's and B's on their own
    lines."""
    events = [("A", 5, 1.0), ("A", 15, 0.2), ("A", 16, 0.15), ("B", 16, 0.5), ("A", 17, 0.05)]
    fig = figures.loss_figure(STEPS, LABELS, skip_events=events)
    assert [s.x0 for s in fig.layout.shapes] == [5, 15, 16, 17, 16]
    labels = {(a.text, a.x, a.yshift) for a in fig.layout.annotations}
    assert labels == {("A: α=1", 5, 0), ("A: α=0.05", 17, 0), ("B: α=0.5", 16, -16)}


def test_model_labels_name_a_model_keyed_by_its_kind_once():
    deep = ModelConfig(depth=56)
    assert figures.common.model_label("A", deep.with_skip(False)) == "A · plain 56"
    assert figures.common.model_label("plain", deep.with_skip(False)) == "plain 56"  # was "plain · plain 56"
    assert figures.common.model_label("residual", ModelConfig(depth=56, order="pre")) == "residual 56 (pre-act)"
    assert figures.common.model_label("plain", deep) == "plain · residual 56"  # a key that is not its kind stays


def test_a_skip_scale_moved_live_is_named_and_one_left_alone_is_not():
    plain = ModelConfig(depth=20, skip=False)
    assert figures.common.model_label("A", plain, 0.5) == "A · plain 20 (α=0.5 live)"  # half the shortcut back
    assert figures.common.model_label("A", plain, 0.0) == "A · plain 20"  # its own α
    assert figures.common.model_label("B", ModelConfig(depth=20), 1.0) == "B · residual 20"
    pre = ModelConfig(depth=20, order="pre")
    assert figures.common.model_label("B", pre, 0.25) == "B · residual 20 (pre-act, α=0.25 live)"


def test_reliability_legend_names_each_models_bars_in_its_colour():
    """The legend showed "before" and "after temperature scaling" in A's colour only, under B's blue bars."""
    rows = [
        {"model": m, "scaled": scaled, "lower": 0.5, "upper": 0.6, "count": 10, "accuracy": 0.5, "confidence": 0.55}
        for m in ("A", "B")
        for scaled in (False, True)
    ]
    fig = reliability_figure(pd.DataFrame(rows), LABELS)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [(t.name, t.marker.color, t.showlegend is not False) for t in bars] == [
        ("A · plain 8: before", figures.COLORS["A"], True),
        ("A · plain 8: after temperature scaling", figures.COLORS["A"], True),
        ("B · residual 8: before", figures.COLORS["B"], True),
        ("B · residual 8: after temperature scaling", figures.COLORS["B"], True),
    ]


def test_thin_keeps_ends_and_bounds_points():
    frame = pd.DataFrame({"step": range(5000)})
    thinned = figures.thin(frame, 100)
    assert len(thinned) <= 100 and thinned.step.iloc[0] == 0 and thinned.step.iloc[-1] == 4999


def test_gradient_profile_is_in_network_order():
    fig = figures.grad_profile_figure(LAYERS, LABELS)
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log" and fig.layout.yaxis.minorloglabels == "none"
    order = list(fig.layout.xaxis.categoryarray)
    assert order[0] == "stem.conv" and order[-1] == "head" and len(order) == 8
    assert all(v > 0 for v in fig.data[0].y)


def test_profile_verdict_reads_the_latest_step_of_each_model():
    grad = LAYERS[LAYERS.metric == "grad_norm"]
    expected = []
    for key, label in LABELS.items():
        mine = grad[(grad.model == key) & (grad.step == 20)].sort_values("depth_index")
        expected.append(f"{label} {mine.value.iloc[0] / mine.value.iloc[-1]:.2g}× at step 20")
    verdict = figures.profile_verdict(LAYERS, LABELS)
    assert verdict == "Here, the first layer's gradient norm over the last layer's: " + "; ".join(expected) + "."
    early = LAYERS[LAYERS.step <= 3]
    assert "at step 3" in figures.profile_verdict(early, LABELS) and "at step 20" not in figures.profile_verdict(
        early, LABELS
    )
    assert figures.profile_verdict(LAYERS.iloc[:0], LABELS) == ""  # nothing probed yet: no sentence


def test_heatmap_shares_one_log_colour_scale():
    fig = figures.heatmap_figure(LAYERS, LABELS)
    assert len(fig.data) == 2 and all(t.coloraxis == "coloraxis" for t in fig.data)
    values = np.log10(LAYERS[LAYERS.metric == "grad_norm"].value)
    assert fig.layout.coloraxis.cmin == float(values.min()) and fig.layout.coloraxis.cmax == float(values.max())
    assert np.asarray(fig.data[0].z).shape == (8, 20)  # 8 layers x 20 steps
    # Layer names on y: a y axis forced to "linear" placed no row and the browser drew an empty chart.
    assert list(fig.data[0].y)[0] == "stem.conv"
    assert {fig.layout.yaxis.type, fig.layout.yaxis2.type} <= {None, "category"}
    # Same layers in both models: names once, on the left (drawn twice, the right panel's covered the left one).
    assert fig.layout.yaxis.showticklabels and fig.layout.yaxis2.showticklabels is False


def test_heatmap_puts_the_input_at_the_top_from_its_first_empty_draw_on():
    # A live chart keeps an axis's autorange through Plotly.react: an axis first drawn empty and
    # unreversed stayed unreversed (input at the bottom) once the gradients came.
    for layers in (LAYERS, LAYERS.iloc[0:0]):
        fig = figures.heatmap_figure(layers, LABELS)
        assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis2.autorange == "reversed"


def test_heatmap_of_models_with_different_layers_names_each_panels_rows():
    deeper = LAYERS[LAYERS.model == "B"].assign(layer=lambda f: f.layer + ".x")
    fig = figures.heatmap_figure(pd.concat([LAYERS[LAYERS.model == "A"], deeper]), LABELS)
    assert fig.layout.yaxis.showticklabels and fig.layout.yaxis2.showticklabels
    assert fig.layout.xaxis2.domain[0] - fig.layout.xaxis.domain[1] > 0.2  # room for the right panel's names


def test_heatmap_bins_long_runs():
    grid = pd.DataFrame(np.arange(3 * 1000, dtype=float).reshape(3, 1000), columns=range(1, 1001))
    binned = _bin_columns(grid)
    assert binned.shape == (3, MAX_HEATMAP_COLUMNS) and binned.columns[-1] == 1000


def test_block_figure_and_empty_inputs():
    fig = figures.block_figure(LAYERS, LABELS)
    assert len(fig.data) == 4 and fig.layout.yaxis.type == "log"
    empty = LAYERS.iloc[0:0]
    for builder in (figures.grad_profile_figure, figures.block_figure, figures.heatmap_figure):
        builder(empty, LABELS)  # a run that has not probed yet draws empty axes, no exception
    figures.loss_figure(STEPS.iloc[0:0], LABELS)


def test_decision_boundary_figure():
    xs = ys = np.linspace(-1, 1, 5)
    grids = {"A": (xs, ys, np.full((5, 5), 0.2)), "B": (xs, ys, np.full((5, 5), 0.8))}
    points, targets = np.array([[0.0, 0.0], [0.5, 0.5]]), np.array([0, 1])
    fig = figures.decision_boundary_figure(grids, points, targets, LABELS)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 and fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1


def test_subplot_layouts_are_made_as_make_subplots_does_and_never_shared():
    made = make_subplots(rows=1, cols=2, subplot_titles=("a", "b"), horizontal_spacing=0.1).layout
    grid = row_of_subplots(["a", "b"], 0.1)
    assert grid["xaxis2"]["domain"] == list(made.xaxis2.domain)
    assert [a["text"] for a in grid["annotations"]] == ["a", "b"]
    # Each figure gets its own copy: a panel set up by one figure is not set up in the next one.
    both = figures.heatmap_figure(LAYERS, LABELS)
    only_a = figures.heatmap_figure(LAYERS[LAYERS.model == "A"], LABELS)
    assert both.layout.yaxis2.showticklabels is False and only_a.layout.yaxis2.showticklabels is None
    assert len(only_a.data) == 1


def test_bare_figures_serialise_as_checked_ones_once_the_template_is_back():
    """The live lab builds its figures `bare` (no Plotly checks, no template: the board sends it once). What the
    checks would have changed must already be in the figure code, so each bare figure's JSON, with the template
    put back as the page does, is the checked figure's JSON: for the full history's frames and for the live
    chart tables' (binned, smoothed) frames, with skip marks, a divergence and a fork."""
    tables = ChartTables.of(HISTORY)
    xs = ys = np.linspace(-1, 1, 5)
    grids = {"A": (xs, ys, np.full((5, 5), 0.2)), "B": (xs, ys, np.full((5, 5), 0.8))}
    makers = []
    for steps, layers in ((STEPS, LAYERS), (tables.steps_frame(), tables.layers_frame())):
        makers += [
            lambda s=steps: figures.loss_figure(s, LABELS, [("B", 7, 0.5)], {"A": 12}, fork_step=5),
            lambda s=steps: figures.accuracy_figure(s, LABELS),
            lambda la=layers: figures.grad_profile_figure(la, LABELS),
            lambda la=layers: figures.block_figure(la, LABELS),
            lambda la=layers: figures.heatmap_figure(la, LABELS),
            lambda la=layers: figures.families.sublayer_grad_figure(la, LABELS),
        ]
    makers.append(lambda: figures.decision_boundary_figure(grids, np.zeros((2, 2)), np.array([0, 1]), LABELS))
    for make in makers:
        checked = json.loads(make().to_json())
        with bare():
            fig = make()
        drawn = json.loads(fig.to_json())
        assert drawn["layout"]["template"] == {}
        drawn["layout"]["template"] = TEMPLATE
        assert drawn == checked
        assert fig._validate is False  # built without the checks (what makes it cheaper)


def test_live_chart_tables_draw_what_the_full_history_draws():
    """Below the bin limits (600 points, 240 heatmap columns) a live run's chart tables hold every step, so
    each lab chart drawn from them shows the stored run's chart: the same traces with the same points.
    The live accuracy chart once showed no validation points (the table's validation rows have no
    training accuracy, and the figure took validation points only from rows with one)."""
    tables = ChartTables.of(HISTORY)
    live_steps, live_layers = tables.steps_frame(), tables.layers_frame()
    pairs = [
        (figures.loss_figure(live_steps, LABELS), figures.loss_figure(STEPS, LABELS)),
        (figures.accuracy_figure(live_steps, LABELS), figures.accuracy_figure(STEPS, LABELS)),
        (figures.grad_profile_figure(live_layers, LABELS), figures.grad_profile_figure(LAYERS, LABELS)),
        (figures.block_figure(live_layers, LABELS), figures.block_figure(LAYERS, LABELS)),
        (figures.heatmap_figure(live_layers, LABELS), figures.heatmap_figure(LAYERS, LABELS)),
    ]
    for live, full in pairs:
        assert _names(live) == _names(full)
        for a, b in zip(live.data, full.data, strict=True):
            assert len(b.x) > 0 and list(a.x) == list(b.x)
            if a.type == "heatmap":
                np.testing.assert_allclose(np.asarray(a.z), np.asarray(b.z), rtol=1e-6)
                assert list(a.y) == list(b.y)
            else:
                np.testing.assert_allclose(np.asarray(a.y, dtype=float), np.asarray(b.y, dtype=float), rtol=1e-6)
        for axis in ("xaxis", "xaxis2"):
            if axis in full.layout:
                assert live.layout[axis].categoryarray == full.layout[axis].categoryarray
    validation = [t for t in pairs[1][0].data if t.name.endswith("validation")]
    validated = [r.step for r in HISTORY.records if r.model == "A" and r.val_acc is not None]
    assert len(validated) >= 2 and [list(t.x) for t in validation] == [validated, validated]


def test_subplot_rows_title_each_axis_once():
    """A shared y axis is titled at the left panel only, and a grid's x titles sit under its bottom row:
    repeated, they were drawn over the neighbouring panel and the next row's subplot titles."""
    rows = [[m, c, s, 0.9 - 0.1 * s] for m in ("a", "b") for c in ("blur", "noise", "mean") for s in range(6)]
    fig = robustness_figure(pd.DataFrame(rows, columns=["model", "corruption", "severity", "accuracy"]), LABELS)
    titles = [fig.layout[f"yaxis{i if i > 1 else ''}"].title.text for i in (1, 2, 3)]
    assert titles == ["test accuracy (fraction)", None, None]
    costs = pd.DataFrame(
        [
            {
                "depth": d,
                "block": "basic",
                "skip": k,
                "params": d * 1e4,
                "flops": d * 1e6,
                "latency_b1_ms": d / 10,
                "latency_b64_ms": d / 100,
                "inference_peak_kib": 20,
                "train_activation_kib": d,
            }
            for d in (8, 20, 56)
            for k in (False, True)
        ]
    )
    fig = cost_figure(costs)
    assert [fig.layout[f"xaxis{i if i > 1 else ''}"].title.text for i in range(1, 7)] == [None] * 3 + ["depth"] * 3
    assert all(fig.layout[f"yaxis{i if i > 1 else ''}"].minorloglabels == "none" for i in range(1, 7))


def test_attribution_map_panels_keep_apart():
    """The input and the map side by side in half a page: short titles, and the map's rows read off the input's
    axis (its own tick labels ran into the input image)."""
    image, attr = np.zeros((8, 8)), np.linspace(-1, 1, 64).reshape(8, 8)
    fig = map_figure(image, attr, method="integrated_gradients", label="A · plain 8", key="A", class_name="3")
    assert [a.text for a in fig.layout.annotations] == ["input", "Integrated Gradients map"]
    assert fig.layout.yaxis2.showticklabels is False and fig.layout.yaxis.title.text == "y (px)"
