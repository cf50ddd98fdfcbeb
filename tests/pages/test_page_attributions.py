"""Attributions page: the server's default pair without a lab run, a lab run, method and target switches,
an unexplainable model, 2-D runs, the on-demand checks; and one browser screenshot."""

from __future__ import annotations

import re

import pytest
from harness import new_app, open_page, page_texts, plotly_figures
from streamlit.testing.v1 import AppTest

from resnet_viz.data import DataConfig
from resnet_viz.lab import LabConfig
from resnet_viz.models import ModelConfig
from resnet_viz.runs import LiveRun, RunRequest, RunService, Scheduler
from resnet_viz.runs.defaults import SHAPES_PAIR
from resnet_viz.store import RunStore
from resnet_viz.training import TrainConfig
from resnet_viz.ui.session import SESSION_KEY

PAGE = "pages/attributions.py"


def _open(lab: LiveRun | None = None, lab_config: LabConfig | None = None, pair: LiveRun | None = None) -> AppTest:
    """The page in a session that holds the given lab run and/or the server's finished default pair."""

    def hand_over(at: AppTest) -> None:
        jobs = at.session_state[SESSION_KEY]
        jobs.lab, jobs.lab_config = lab, lab_config
        if pair is not None:
            jobs.pairs["attributions"] = pair

    return open_page(PAGE, prepare=hand_over)


def _by_title(at: AppTest, text: str) -> list:
    return [f for f in plotly_figures(at) if text in (f.layout.title.text or "")]


def _names(fig) -> str:
    return " ".join(t.name or "" for t in fig.data) + " " + " ".join(a.text or "" for a in fig.layout.annotations)


def _index(option: str) -> int:
    """The test index in an image option ("#12 · true disk · ...")."""
    return int(re.match(r"#(\d+)", option).group(1))


def _box(at: AppTest, label: str):
    """A box whose key names the models its labels describe (`relabelled_key`): found by its label."""
    return next(box for box in at.selectbox if box.label == label)


def _image_box(at: AppTest):
    return _box(at, "Image (test index)")


def _lab_run(data: DataConfig, depth: int, nan_in_b: bool = False) -> tuple[LiveRun, LabConfig]:
    """A finished tiny lab run, assigned straight into the registry; optionally with B's weights broken."""
    cfg = LabConfig(
        a=ModelConfig(depth=depth, width=8, skip=False),
        b=ModelConfig(depth=depth, width=8),
        train=TrainConfig(epochs=1, warmup_steps=0, probe_every=0),
        data=data,
    ).normalized()
    job = RunService(None, Scheduler()).request(RunRequest(cfg.models(), cfg.train, cfg.data), "test")
    job.join(120)
    assert job.status == "finished"
    if nan_in_b:  # what a diverged run leaves behind
        job.trainer.snapshots["B"][-1].state["head.weight"].fill_(float("nan"))
    return job, cfg


@pytest.fixture(scope="module")
def default_pair(tmp_path_factory) -> LiveRun:
    """The server's default pair for this page (shapes), trained once for these tests."""
    service = RunService(RunStore(tmp_path_factory.mktemp("pair-store")), Scheduler())
    run = service.request(SHAPES_PAIR.request, "tests")
    run.join(600)
    assert run.status == "finished"
    return run


def test_no_lab_run_requests_the_default_pair_and_shows_its_progress():
    at = new_app()
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.radio(key="attributions.source").value == "The server's default pair"
    run = at.session_state[SESSION_KEY].pairs["attributions"]
    assert isinstance(run, LiveRun) and run.request.key == SHAPES_PAIR.request.key
    assert not at.get("plotly_chart") and at.get("progress")  # nothing to explain yet: its progress
    run.stop()


def test_no_lab_run_explains_the_default_pair(default_pair):
    at = _open(pair=default_pair)
    said = page_texts(at)
    assert re.search(r"Models of the server's default pair \(plain vs residual, depth 14.*\) \(finished\)", said)
    maps = _by_title(at, "Saliency for")
    assert [f.layout.title.text.split(":")[0] for f in maps] == ["A · plain 14", "B · residual 14"]
    for fig, label in zip(maps, ("A · plain 14", "B · residual 14"), strict=True):
        assert f"{label}: Saliency" in _names(fig)
        assert fig.layout.yaxis.scaleanchor == "x"  # square pixels
    gallery = _by_title(at, "Test images")[0]
    assert len(gallery.data) == 16
    depth = _by_title(at, "Grad-CAM across depth")[0]
    assert "A · plain 14: Grad-CAM at stage3" in _names(depth) and "B · residual 14: Grad-CAM at stage1" in _names(
        depth
    )
    assert "predicts" in page_texts(at)
    assert not _by_title(at, "Sanity check")  # on demand only
    assert "attributions" in at.session_state[SESSION_KEY].pairs


def test_method_target_and_filters_switch(default_pair):
    at = _open(pair=default_pair)
    at.selectbox(key="attributions.method").set_value("integrated_gradients").run()
    assert not at.exception
    maps = _by_title(at, "Integrated Gradients for")
    assert len(maps) == 2 and "B · residual 14: Integrated Gradients" in _names(maps[1])
    assert "completeness error" in page_texts(at) and "logits" in page_texts(at)
    at.selectbox(key="attributions.method").set_value("gradcam").run()
    assert len(_by_title(at, "Grad-CAM for")) == 2
    at.radio(key="attributions.target").set_value("true").run()
    at.selectbox(key="attributions.class").set_value(2).run()  # triangles only
    assert not at.exception
    chosen = _image_box(at)
    assert all("true triangle" in option for option in chosen.options)  # AppTest lists the formatted options
    chosen.set_value(_index(chosen.options[-1])).run()
    assert not at.exception and len(_by_title(at, "Grad-CAM for")) == 2
    _box(at, "Show").set_value("A-B+").run()
    assert not at.exception  # matches or says none do
    assert _by_title(at, "Grad-CAM for") or any("No test image matches" in w.value for w in at.warning)


def test_sanity_check_and_localisation_on_demand(default_pair):
    at = _open(pair=default_pair)
    at.button(key="attributions.sanity.run").click().run()
    at.button(key="attributions.loc.run").click().run()
    assert not at.exception
    sanity = _by_title(at, "Sanity check")[0]
    assert len(sanity.data) == 8  # 2 models x 2 methods x (Spearman, SSIM)
    assert "A · plain 14: Saliency" in _names(sanity) and "B · residual 14: Grad-CAM" in _names(sanity)
    loc = _by_title(at, "Localisation on shapes")[0]
    assert "A · plain 14" in _names(loc) and "B · residual 14" in _names(loc)
    table = at.dataframe[0].value
    assert len(table) == 14 and set(table.model) == {"A · plain 14", "B · residual 14"}
    # Cached: a widget that does not change them redraws without the buttons.
    image = _image_box(at)
    image.set_value(_index(image.options[3])).run()
    at.selectbox(key="attributions.method").set_value("occlusion").run()
    assert _by_title(at, "Sanity check") and _by_title(at, "Localisation on shapes")


def test_lab_run_from_the_lab_page():
    at = new_app()
    for key, value in {"a.depth": "8", "a.width": "8", "epochs": "1"}.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("pages/lab.py").run()
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    job.join(120)
    assert job.status == "finished"
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="attributions.source").value == "Lab run of this session"
    maps = _by_title(at, "Saliency for")
    assert "A · plain 8: Saliency" in _names(maps[0]) and "B · residual 8: Saliency" in _names(maps[1])
    assert "attributions" not in at.session_state[SESSION_KEY].pairs  # no default pair requested
    assert any("Only the shapes dataset has masks" in i.value for i in at.info)
    at.select_slider(key="attributions.step").set_value(0).run()  # the initialisation snapshot
    assert not at.exception and len(_by_title(at, "Saliency for")) == 2


def test_unexplainable_model_shows_the_reason():
    job, cfg = _lab_run(DataConfig(name="digits"), depth=8, nan_in_b=True)
    at = _open(lab=job, lab_config=cfg)
    warnings = " ".join(w.value for w in at.warning)
    assert "B · residual 8 gives non-finite outputs" in warnings
    assert "Saliency cannot explain B · residual 8: the model's outputs are not finite" in warnings
    maps = _by_title(at, "Saliency for")
    assert len(maps) == 1 and "A · plain 8" in _names(maps[0])
    options = at.selectbox(key="attributions.method").options
    assert all("unavailable for B" in o and "unavailable for A" not in o for o in options), options
    at.selectbox(key="attributions.method").set_value("deeplift").run()
    assert not at.exception
    assert any("DeepLift cannot explain B · residual 8" in w.value for w in at.warning)


def test_two_d_run_explains_why_and_offers_the_default_pair(default_pair):
    job, cfg = _lab_run(DataConfig(name="spirals"), depth=4)
    at = _open(lab=job, lab_config=cfg, pair=default_pair)
    assert any("2-D points" in i.value for i in at.info) and not at.get("plotly_chart")
    at.button(key="attributions.use_default").click().run()
    assert not at.exception
    assert at.radio(key="attributions.source").value == "The server's default pair"
    assert len(_by_title(at, "Saliency for")) == 2
