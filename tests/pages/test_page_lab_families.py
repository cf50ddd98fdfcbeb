"""AppTest: the lab trains Transformers and GCNs and draws their own charts; Home's "Beyond CNNs" row;
the analysis pages say they study CNNs when handed a Transformer run."""

from __future__ import annotations

import numpy as np
import pytest
from harness import board_charts, open_page, plotly_figures, run_to_the_end, trace_array

from resnet_viz.lab import BEYOND, PRESETS
from resnet_viz.runs import Replay
from resnet_viz.ui.session import SESSION_KEY
from resnet_viz.ui.snapshots import FRESH
from resnet_viz.ui.store import run_store

SORT = {"dataset": "sort", "a.depth": "6", "a.width": "16", "a.heads": "2", "epochs": "1", "n_samples": "300"}
GRAPHS = {"dataset": "sbm", "input_size": "16", "a.depth": "6", "a.width": "8", "epochs": "1", "n_samples": "300"}


def _train(params: dict[str, str]):
    at = open_page("pages/lab.py", params)
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    assert job.join(120) and job.status == "finished", job.message
    at.run()  # redraw from the finished job (timers do not run in AppTest)
    assert not at.exception, [e.value for e in at.exception]
    return at, {fig.layout.title.text: fig for fig in plotly_figures(at)}


def test_transformer_run_draws_sublayer_gradients_and_attention_maps():
    at, figs = _train(SORT)
    assert at.select_slider(key="lab.a.heads").value == 2
    assert at.radio(key="lab.a.norm").options == ["layer", "none"] and at.radio(key="lab.a.norm").value == "layer"
    assert not any(r.key == "lab.a.block" for r in at.radio)  # one kind of block
    sub = next(f for t, f in figs.items() if t.startswith("Gradient norm: attention and MLP sub-layers"))
    names = {t.name.split(" (step")[0] for t in sub.data}
    assert names == {
        f"{k} · {kind} 6 (post-LN): {s}"
        for k, kind in (("A", "plain"), ("B", "residual"))
        for s in ("attention", "MLP")
    }
    assert all(len(t.x) == 2 for t in sub.data)  # two encoder layers each
    attention = next(f for t, f in figs.items() if t.startswith("Attention of one test sequence"))
    heatmaps = [t for t in attention.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 * 2 * 2  # two models x first and last layer x two heads
    assert all(np.allclose(trace_array(h.z).sum(1), 1, atol=1e-4) for h in heatmaps)  # each query's weights sum to 1
    assert any(c["caption"].startswith("What to look for: the attention") for c in board_charts(at))
    # stored, and reopened from the store: the attention maps are drawn again from the stored weights
    stored = next(r for r in run_store().list_runs() if r.dataset == "sort")
    at.selectbox(key="lab.stored").set_value(stored.key).run()
    at.button(key="lab.stored.open").click().run()
    assert not at.exception and isinstance(at.session_state[SESSION_KEY].lab, Replay)
    replayed = {fig.layout.title.text: fig for fig in plotly_figures(at)}
    again = next(f for t, f in replayed.items() if t.startswith("Attention of one test sequence"))
    assert [trace_array(h.z).tolist() for h in again.data] == [trace_array(h.z).tolist() for h in heatmaps]


def test_gcn_run_draws_the_oversmoothing_measure():
    at, figs = _train(GRAPHS)
    assert at.radio(key="lab.a.norm").options == ["batch", "layer", "none"]
    assert at.select_slider(key="lab.data.input_size").label == "Nodes per graph"
    smoothing = next(f for t, f in figs.items() if t.startswith("Oversmoothing: Dirichlet energy"))
    assert [list(t.x) for t in smoothing.data] == [["stem", *[f"stage1.block{b}" for b in range(1, 5)]]] * 2
    assert all(
        ((trace_array(t.y) >= 0) & (trace_array(t.y) <= 2)).all() for t in smoothing.data
    )  # Â's spectrum is in (-1, 1]: Δ's in [0, 2)
    assert any("Gradient norm per layer" in t for t in figs)


def test_home_has_a_beyond_cnns_row_linking_to_its_presets():
    at = open_page("pages/home.py")
    assert any(BEYOND in m.value for m in at.markdown)
    beyond = [p for p in PRESETS.values() if p.group == BEYOND]
    assert {p.key for p in beyond} == {"postln", "transformer", "oversmooth"}
    titles = [m.value for m in at.markdown]
    assert all(f"**{p.title}**" in titles for p in beyond)


@pytest.mark.parametrize("page", ["pages/limits.py", "pages/attributions.py"])
def test_analysis_pages_explain_they_study_cnns_for_a_transformer_setup(page):
    at = open_page("pages/lab.py", SORT)
    at.switch_page(page).run()
    at.radio(key=next(r.key for r in at.radio if r.label == "Models")).set_value(FRESH).run()
    assert not at.exception
    assert any("this page analyses CNNs and MLPs" in i.value for i in at.info)


@pytest.mark.parametrize("key", ["postln", "transformer", "oversmooth"])
def test_beyond_cnns_presets_open_configured(key):
    """Each "Beyond CNNs" preset opens the lab as its demo: banner, dataset, both models as the preset has them
    (their results are checked in test_families_reference.py; the browser walk trains one from Home)."""
    preset = PRESETS[key]
    at = open_page("pages/lab.py", {"preset": key})
    assert any(preset.title in i.value for i in at.info)
    assert at.session_state["lab.config"] == preset.config.normalized()
    assert at.selectbox(key="lab.data.name").value == preset.config.data.name


def test_loss_landscape_page_draws_a_gcn_pair():
    """The loss landscape is defined for any net: the page computes it for the lab's GCN setup too."""
    at = open_page("pages/lab.py", GRAPHS)
    at.switch_page("pages/loss_landscape.py").run()
    at.radio(key="landscape.source").set_value(FRESH).run()
    at.select_slider(key="landscape.grid").set_value(7)
    at.select_slider(key="landscape.examples").set_value(100)
    at.select_slider(key="landscape.iterations").set_value(10)
    run_to_the_end(at, "Compute landscapes", "landscape", 300)
    contour = next(f for f in plotly_figures(at) if f.layout.title.text.startswith("Loss around the initial weights"))
    traces = [t for t in contour.data if t.type == "contour"]
    assert [t.name for t in traces] == ["A · plain 6", "B · residual 6"]
    for t in traces:
        z = trace_array(t.z)
        assert z.shape == (7, 7) and np.isfinite(z).all()
