"""AppTest: every page renders; the lab trains, restores its config from the URL, explains bad input."""

import ast
import gc
import threading
from pathlib import Path

import pytest
from harness import live_boards, open_page, plotly_figures, trace_array

from resnet_viz.lab import PRESETS
from resnet_viz.runs import WATCHED, Replay, Scheduler
from resnet_viz.runs.budget import estimate
from resnet_viz.runs.defaults import SERVER_PAIR
from resnet_viz.ui import live_chart
from resnet_viz.ui.session import SESSION_KEY, _preload
from resnet_viz.ui.store import run_store

PAGES = ["pages/home.py", "pages/lab.py"]
TINY = {"a.depth": "8", "a.width": "8", "epochs": "1"}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(page):
    at = open_page(page)
    assert at.title


def test_home_presets_link_to_a_configured_lab():
    at = open_page("pages/home.py")
    links = at.get("page_link")
    assert len(links) == len(PRESETS)
    assert all(link.proto.page.endswith("lab") or "lab" in link.proto.page for link in links)


def test_train_draws_both_models_on_every_chart():
    at = open_page("pages/lab.py", TINY)
    train = next(b for b in at.button if b.label == "Train")
    train.click().run()
    job = at.session_state[SESSION_KEY].lab
    job.join(120)
    assert job.status == "finished"
    at.run()  # redraw from the finished job (timers do not run in AppTest)
    assert not at.exception
    figs = plotly_figures(at)
    assert len(figs) == 5
    for fig in figs:  # every chart draws both models
        names = " ".join(t.name or "" for t in fig.data) + " ".join(a.text or "" for a in fig.layout.annotations)
        assert "A · plain 8" in names and "B · residual 8" in names, fig.layout.title.text
    train_a = next(t for t in figs[0].data if t.name == "A · plain 8: train")
    assert trace_array(train_a.x).tolist() == list(range(1, job.trainer.total_steps + 1))
    assert any("Finished" in s.value for s in at.success)
    # The sidebar's run line (a timer of its own in every tab) is for the other pages (a browser test checks
    # it on Home); the lab shows the run itself.
    assert [c.value for c in at.sidebar.caption] == ["Why skip connections matter, trained live."]
    assert [b.label for b in at.get("download_button")] == [
        "Download script",
        "Download model (zip)",
        "Steps CSV",
        "Layers CSV",
    ]


def test_query_params_restore_a_config():
    at = open_page("pages/lab.py", {"a.depth": "14", "b.skip_scale": "0.5", "lr": "0.05", "dataset": "shapes"})
    assert at.select_slider(key="lab.a.depth").value == 14
    assert at.slider(key="lab.b.skip_scale").value == 0.5
    assert at.number_input(key="lab.train.lr").value == 0.05
    assert at.selectbox(key="lab.data.name").value == "shapes"
    assert at.query_params["a.depth"] == "14"


def test_changing_a_widget_updates_the_url():
    at = open_page("pages/lab.py")
    at.select_slider(key="lab.a.depth").set_value(32).run()
    assert at.query_params["a.depth"] == "32"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"a.depth": "21"}, "a.depth"),
        ({"lr": "-3"}, "lr"),
        ({"a.skip_scale": "7"}, "a.skip_scale"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"epochs": "many"}, "epochs"),
    ],
)
def test_invalid_config_in_url_shows_a_message_not_an_exception(params, field):
    at = open_page("pages/lab.py", params)
    warnings = [w.value for w in at.warning]
    assert any(field in w for w in warnings), warnings


def test_preset_banner_and_mlp_boundary():
    at = open_page(
        "pages/lab.py", {"dataset": "spirals", "a.depth": "4", "a.width": "8", "epochs": "2", "preset": "spirals"}
    )
    assert not at.info or "Residual MLP" not in at.info[0].value  # config differs from the preset: no banner
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    job.join(120)
    at.run()
    titles = [fig.layout.title.text for fig in plotly_figures(at)]
    assert any("Decision boundary" in t for t in titles)


def test_stop_and_reset():
    at = open_page("pages/lab.py", {"a.depth": "8", "a.width": "8", "epochs": "200"})
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    assert not at.slider(key=f"lab.live.{job.id}.B").disabled  # live: drawn with the page, not each refresh
    next(b for b in at.button if b.label == "Stop").click().run()
    job.join(60)
    assert job.status in ("stopped", "finished") and job.view().step < job.trainer.total_steps
    at.run()
    assert any("Stopped" in w.value for w in at.warning)
    assert at.slider(key=f"lab.live.{job.id}.B").disabled  # the rerun that shows the end locks it
    next(b for b in at.button if b.label == "Reset").click().run()
    assert at.session_state[SESSION_KEY].lab is None


def test_a_plain_net_whose_skip_was_raised_live_is_not_called_plain_alone():
    """Its legend said "A · plain 8" after α went from 0 to 0.5: a net with half its shortcut back."""
    at = open_page("pages/lab.py", {"a.depth": "8", "a.width": "8", "epochs": "200"})
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    slider = at.slider(key=f"lab.live.{job.id}.A")
    assert slider.label == "Live skip scale α of A · plain 8"
    slider.set_value(0.5).run()
    job.wait_for_step(job.view().step + 2, 60)  # the change is in force and on the chart
    at.run()
    names = {t.name for fig in plotly_figures(at) for t in fig.data if t.name}
    assert "A · plain 8 (α=0.5 live)" in names and "A · plain 8" not in names
    assert "B · residual 8" in names  # B's α was not moved: its name stays
    assert at.slider(key=f"lab.live.{job.id}.A").label == "Live skip scale α of A · plain 8"  # the slider's own
    next(b for b in at.button if b.label == "Stop").click().run()
    job.join(60)


def _setup_table(at) -> str | None:
    return next((m.value for m in at.markdown if m.value.startswith("| | Model A | Model B |")), None)


def test_a_running_setup_is_a_table_and_its_widgets_come_back_with_their_values():
    """While a run trains the setup is a table, not ~40 disabled widgets (their session key scans were a
    quarter of a Train click's server CPU); a value typed just before Train still counts; after the run
    the widgets are back with the values it was trained with."""
    at = open_page("pages/lab.py", {"a.depth": "8", "a.width": "8", "epochs": "200", "seed": "13"})
    assert _setup_table(at) is None
    at.number_input(key="lab.train.epochs").set_value(150)  # typed, then Train, in one rerun
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    assert job.request.train.epochs == 150
    assert at.number_input(key="lab.train.epochs").disabled  # that click's run read (and drew) the widgets
    at.run()  # any later rerun while it trains: the table
    table = _setup_table(at)
    assert table is not None and "| Depth (weighted layers) | 8 | 8 |" in table and "**Training**: 150 epochs" in table
    assert not [w for w in at.number_input if w.key == "lab.train.epochs"]
    next(b for b in at.button if b.label == "Stop").click().run()
    job.join(60)
    at.run()
    assert _setup_table(at) is None
    assert at.number_input(key="lab.train.epochs").value == 150 and not at.number_input(key="lab.train.epochs").disabled
    assert at.select_slider(key="lab.a.depth").value == 8 and at.select_slider(key="lab.a.width").value == 8
    next(b for b in at.button if b.label == "Train").click().run()  # nothing edited: this click draws the table
    assert _setup_table(at) is not None and at.session_state[SESSION_KEY].lab.request.train.epochs == 150
    next(b for b in at.button if b.label == "Stop").click().run()


def test_lab_charts_are_one_live_board_that_keeps_its_identity_as_the_run_goes_on():
    """One element, keyed "lab.charts", holds the five charts and their captions, and its figures change in
    place (the page calls Plotly.react). `st.plotly_chart` put the figure in the element's id, so every refresh
    was a new plot in Chromium; an element per chart, caption and column was a dozen deltas per refresh."""
    at = open_page("pages/lab.py", {**TINY, "seed": "12"})
    next(b for b in at.button if b.label == "Train").click().run()
    (board,) = live_boards(at)
    first_id, first = board.proto.id, board.proto.bytes
    charts = live_chart.charts_of(first)
    assert first_id.endswith("lab.charts")
    assert [c["key"] for c in charts] == ["lab.loss", "lab.acc", "lab.gradprofile", "lab.blocks", "lab.heatmap"]
    assert [c["wide"] for c in charts] == [False, False, False, False, True]  # two to a row, the heatmap across
    assert all(c["caption"].startswith("What to look for") for c in charts)
    assert not [c for c in at.caption if c.value.startswith("What to look for")]  # in the board, not elements
    job = at.session_state[SESSION_KEY].lab
    assert job.join(120) and job.status == "finished"
    at.run()
    (board,) = live_boards(at)
    assert board.proto.id == first_id and board.proto.bytes != first
    last = live_chart.charts_of(board.proto.bytes)
    assert all(a["digest"] != b["digest"] for a, b in zip(charts, last, strict=True))
    loss = plotly_figures(at)[0]
    assert trace_array(loss.data[0].x).tolist() == list(range(1, 11))  # the whole run, drawn in the same element


def test_finished_runs_are_stored_and_can_be_reopened():
    at = open_page("pages/lab.py", {**TINY, "seed": "11"})
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[SESSION_KEY].lab
    job.join(120)
    at.run()
    runs = [r for r in run_store().list_runs() if r.seed == 11 and r.depths == {"A": 8, "B": 8}]
    assert len(runs) == 1 and runs[0].status == {"A": "finished", "B": "finished"}
    at.selectbox(key="lab.stored").set_value(runs[0].key).run()
    at.button(key="lab.stored.open").click().run()
    assert not at.exception
    jobs = at.session_state[SESSION_KEY]
    assert isinstance(jobs.lab, Replay) and jobs.lab.run.key == runs[0].key
    assert any("Stored run" in i.value for i in at.info)
    loss = plotly_figures(at)[0]
    train_b = next(t for t in loss.data if t.name == "B · residual 8: train")
    assert trace_array(train_b.x).tolist() == list(range(1, 11))


def test_every_page_first_asks_for_the_apps_shell():
    """A page opened as a fresh server's first request runs outside app.py's navigation (Streamlit's legacy
    pages/ mode) unless it asks for the shell first: Limits and Loss landscape did not, and a deep link to
    them showed the raw file list as the sidebar (the browser test covers the mechanism on two pages)."""
    for path in sorted((Path(__file__).parents[2] / "pages").glob("*.py")):
        main = next(f for f in ast.parse(path.read_text()).body if isinstance(f, ast.FunctionDef) and f.name == "main")
        first = main.body[0]
        assert isinstance(first, ast.Expr) and ast.unparse(first.value) == "require_shell()", path.name


def test_the_servers_start_up_puts_what_it_loaded_out_of_the_collectors_sight():
    """A full collection walked the whole server (Streamlit, torch, Plotly, pandas, Captum, SciPy): 200-320 ms on
    whichever thread set it off, at a run's end the one reading the run's last message. The start-up freezes
    what it loaded, so collections walk only what came after."""
    gc.unfreeze()
    try:
        _preload(processes=False, scheduler=Scheduler(cores=1))
        assert gc.get_freeze_count() > 100_000
    finally:
        gc.unfreeze()


def test_the_start_up_loads_the_analysis_libraries_only_once_no_run_trains(monkeypatch):
    """On a cold server the first run trained at half the engine's speed beside the start-up's second worker and
    its imports under the GIL: those wait for the scheduler to have nothing training or queued."""
    scheduler, pair = Scheduler(cores=1), SERVER_PAIR.request
    running = scheduler.ticket(estimate(pair.models, pair.train, pair.data), WATCHED)
    assert scheduler.acquire(running, threading.Event())
    waiting = threading.Event()
    wait_until = scheduler.wait_until

    def noted(predicate, timeout):
        waiting.set()
        return wait_until(predicate, timeout)

    monkeypatch.setattr(scheduler, "wait_until", noted)
    gc.unfreeze()
    try:
        preload = threading.Thread(target=_preload, args=(False, scheduler))
        preload.start()
        assert waiting.wait(60)
        assert preload.is_alive() and gc.get_freeze_count() == 0  # blocked: the run still trains
        scheduler.release(running)
        preload.join(60)
        assert not preload.is_alive() and gc.get_freeze_count() > 100_000
    finally:
        gc.unfreeze()
