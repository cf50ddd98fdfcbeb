"""Browser tests of the training lab: preset, train, page round trip, stop, two sessions, bad URL."""

from __future__ import annotations

import re
from pathlib import Path

from browser_utils import ARTIFACTS, main, new_page, no_exception, open_preset, seen_chart, wait_for_loss_lines
from playwright.sync_api import Page, expect

from resnet_viz.figures.common import TEMPLATE


def _step(page: Page) -> int:
    text = page.get_by_text(re.compile(r"step \d+/\d+ · epoch")).first.inner_text()
    return int(re.search(r"step (\d+)/", text).group(1))


def _legend(page: Page) -> str:
    return page.locator(".js-plotly-plot").first.locator(".legend").text_content() or ""


def test_preset_train_switch_pages_and_stop(server, browser):
    page = new_page(browser)
    page.goto(server)
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    open_preset(page, "depth")
    expect(page.get_by_text("Depth hurts plain nets:")).to_be_visible()
    assert "a.depth=56" in page.url
    epochs = page.get_by_label("Epochs")
    epochs.fill("60")  # long enough that it is still training after a trip to another page
    epochs.press("Enter")
    page.wait_for_url(re.compile(r"epochs=60"))  # the rerun took the new value
    main(page).get_by_role("button", name="Train").click()
    wait_for_loss_lines(page)
    legend = _legend(page)
    assert "A · plain 56" in legend and "B · residual 56" in legend
    heatmap = seen_chart(page, "Gradient norm per layer over training")
    expect(heatmap.locator(".heatmaplayer image")).to_have_count(2)  # each net's gradient heatmap
    # Input at the top, as its axis says: the y range runs down (first drawn before any gradient came).
    low, high = heatmap.evaluate("el => el._fullLayout.yaxis.range")
    assert low > high, (low, high)
    # Each chart has the shared look, though a live board sends the template once, not with each figure.
    looks = page.evaluate(
        """() => [...document.querySelectorAll('.rv-board .js-plotly-plot')].map(
            (el) => [el._fullLayout.plot_bgcolor, el._fullLayout.xaxis.gridcolor])"""
    )
    template = TEMPLATE["layout"]
    assert looks == [[template["plot_bgcolor"], template["xaxis"]["gridcolor"]]] * 5, looks
    page.screenshot(path=str(ARTIFACTS / "lab_training.png"), full_page=True)
    # One live board: the first four charts two to a row, the heatmap across both, a caption under each.
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('.rv-board > .rv-cell')].map((cell) => {
            const plot = cell.querySelector('.rv-live-plot').getBoundingClientRect();
            return [plot.x, plot.width, cell.querySelector('.rv-caption').textContent];
        })"""
    )
    assert len(boxes) == 5 and all(caption.startswith("What to look for") for *_, caption in boxes), boxes
    (x0, w0, _), (x1, w1, _), (x4, w4, _) = boxes[0], boxes[1], boxes[4]
    assert x1 > x0 + w0 - 1 and abs(w0 - w1) < 1 and abs(x4 - x0) < 1 and w4 > 1.9 * w0, boxes
    before = _step(page)
    # The loss chart is updated in place (Plotly.react), not rebuilt: the same plot, with a longer line.
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    line = page.evaluate(
        """() => { window.__lossPlot = document.querySelector('.js-plotly-plot');
                   return window.__lossPlot.querySelector('.scatterlayer .trace path.js-line').getAttribute('d'); }"""
    )
    page.wait_for_function(
        """(line) => {
            const plot = document.querySelector('.js-plotly-plot');
            const now = plot && plot.querySelector('.scatterlayer .trace path.js-line');
            return now && now.getAttribute('d') !== line;
        }""",
        arg=line,
    )
    assert page.evaluate("() => document.querySelector('.js-plotly-plot') === window.__lossPlot")
    # Plotly's mode bar, shown on hover, stays off the title (across the top it covered "(dashed)").
    loss = page.locator(".js-plotly-plot").first
    loss.hover()
    expect(loss.locator(".modebar")).to_be_visible()
    bar, title = loss.locator(".modebar").bounding_box(), loss.locator(".gtitle").bounding_box()
    apart = bar["x"] >= title["x"] + title["width"] or bar["y"] >= title["y"] + title["height"]
    assert apart and bar["height"] > bar["width"], (bar, title)  # upright, beside the title
    buttons = loss.locator(".modebar-btn").evaluate_all("(bs) => bs.map((b) => b.getAttribute('data-title'))")
    assert sorted(buttons) == ["Download plot as a PNG", "Pan", "Reset axes", "Zoom"], buttons  # no "Share chart..."

    page.get_by_role("link", name="Home").click()
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Lab run training: step \d+"))).to_be_visible()
    page.get_by_role("link", name="Training lab").click()
    wait_for_loss_lines(page)
    page.wait_for_function(
        f"""() => {{
            const m = document.body.innerText.match(/step (\\d+)\\/\\d+ · epoch/);
            return m && Number(m[1]) > {before};
        }}"""
    )  # training went on while we were away
    assert "a.depth=56" in page.url  # the config survived the round trip
    # While it trains the setup is a table of what it trains, not locked widgets. (Opened last: the table
    # moves the charts down, and a chart out of view is not redrawn until it is scrolled to.)
    main(page).get_by_text("Setup: models, data and training").click()
    expect(main(page).get_by_role("table")).to_contain_text("Depth (weighted layers)")
    expect(main(page).get_by_role("table")).to_contain_text("56")
    expect(page.get_by_label("Epochs")).to_have_count(0)
    main(page).get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"Stopped at step \d+"))).to_be_visible()
    with page.expect_download() as download:  # the table is built on the click (a callable, not every rerun)
        main(page).get_by_role("button", name="Steps CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("model,step,") and len(lines) > 2 * before, lines[:3]  # a row per model and step
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "lab_stopped.png"), full_page=True)
    page.context.close()


def test_two_sessions_train_at_once_without_sharing(server, browser):
    first, second = new_page(browser), new_page(browser)
    first.goto(f"{server}/lab?a.depth=14&a.width=8&epochs=200")
    second.goto(f"{server}/lab?a.depth=8&a.width=8&epochs=200&lr=0.05")
    for page in (first, second):
        main(page).get_by_role("button", name="Train").click()
    for page in (first, second):
        wait_for_loss_lines(page)
    assert "plain 14" in _legend(first) and "plain 8" not in _legend(first)
    assert "plain 8" in _legend(second) and "plain 14" not in _legend(second)
    # Each tab's progress counts its own run (different totals: 10 steps/epoch either way, own epochs).
    for page in (first, second):
        main(page).get_by_role("button", name="Stop").click()
        expect(page.get_by_text(re.compile(r"Stopped at step \d+"))).to_be_visible()
        no_exception(page)
    second.screenshot(path=str(ARTIFACTS / "lab_second_session.png"), full_page=True)
    first.context.close()
    second.context.close()


def test_invalid_url_explains_itself(server, browser):
    page = new_page(browser)
    page.goto(f"{server}/lab?a.depth=21&lr=-1")
    expect(page.get_by_text(re.compile("Ignored a value in the URL: a.depth"))).to_be_visible()
    expect(page.get_by_text(re.compile("Ignored a value in the URL: lr"))).to_be_visible()
    no_exception(page)
    page.context.close()
