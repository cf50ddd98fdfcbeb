"""Every analysis page in Chromium against the real server: drawn, no exception, a screenshot each.

The pages' AppTests (tests/pages/) check their numbers; these check what a student's browser shows.
"""

from __future__ import annotations

import re
import zipfile

from browser_utils import ARTIFACTS, TIMEOUT_MS, main, new_page, no_exception
from harness import browse
from playwright.sync_api import Page, expect

from resnet_viz.ui.snapshots import FRESH


def wait_for_chart_title(page: Page, title: str, timeout: float = TIMEOUT_MS) -> None:
    """Until a drawn Plotly chart's title contains `title` (a new chart, not the one still on screen)."""
    page.wait_for_function(
        "t => [...document.querySelectorAll('.js-plotly-plot .gtitle')].some(e => e.textContent.includes(t))",
        arg=title,
        timeout=timeout,
    )


def test_attributions_screenshot(server, browser):
    page = new_page(browser)
    page.goto(server)  # a fresh server knows the app's pages only after one run of app.py
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible()
    page.goto(f"{server}/attributions")
    body = main(page)
    expect(page.get_by_role("heading", name="Attributions")).to_be_visible()
    trained = body.get_by_text(re.compile("Models of the server's default pair"))
    expect(trained).to_be_visible(timeout=TIMEOUT_MS)  # the server trains the pair first (seconds)
    page.locator(".js-plotly-plot .main-svg").first.wait_for()
    sanity = body.get_by_role("button", name=re.compile("Run the sanity check"))
    sanity.click()  # the button goes at once; wait for the chart before the next click (it would interrupt the run)
    expect(body.get_by_text("Sanity check: similarity to the trained")).to_be_visible(timeout=TIMEOUT_MS)
    localise = body.get_by_role("button", name=re.compile("Compute localisation scores"))
    localise.click()
    expect(body.get_by_text("Localisation on shapes: does the map")).to_be_visible(timeout=TIMEOUT_MS)
    expect(body.get_by_test_id("stDataFrame")).to_be_visible()
    # Streamlit scrolls inside its own container: grow the viewport to the content to draw and capture every chart
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1500, "height": min(6000, height + 100)})
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .gtitle').length >= 6")
    titles = " | ".join(body.locator(".js-plotly-plot .gtitle").all_text_contents())
    for title in (
        "A · plain 14: Saliency for",
        "B · residual 14: Saliency for",
        "Grad-CAM across depth",
        "Sanity check: similarity",
        "Localisation on shapes",
    ):
        assert title in titles, titles
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "attributions.png"), full_page=True)
    # Other models on other data: the image picker shows the new models' label, not the shapes' one it had.
    picker = body.get_by_role("combobox", name="Image (test index)")
    expect(picker).to_have_value(re.compile(r"#\d+ · true (disk|square|triangle|cross) · A: "))
    body.get_by_role("radiogroup", name="Models").get_by_text("Fresh from the lab setup").click()
    expect(body.get_by_text(re.compile("A · plain 20 predicts"))).to_be_visible()
    expect(picker).to_have_value(re.compile(r"#\d+ · true \d · A: "))  # digits now
    no_exception(page)
    page.context.close()


def test_depth_study_tiny_sweep_charts_and_export_import(server, browser, tmp_path):
    page = new_page(browser)
    page.goto(server)  # a fresh server knows its pages only after one run: a first deep link says "Page not found"
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible()
    page.goto(f"{server}/depth_study")
    body = main(page)
    expect(page.get_by_role("heading", name="Depth study")).to_be_visible()
    depths = body.get_by_test_id("stMultiSelect")
    depths.get_by_role("button", name="Clear all").click()  # drop the classroom defaults, then pick 8 and 14
    expect(body.get_by_text(re.compile("depths: must be one or more"))).to_be_visible()
    for depth in ("8", "14"):
        depths.locator("input").fill(depth)
        page.get_by_role("option", name=depth, exact=True).click()
        expect(depths.get_by_text(depth, exact=True)).to_be_visible()
    epochs = body.get_by_label("Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Enter")
    expect(body.get_by_text("2 runs (a plain/residual pair each)", exact=False)).to_be_visible()
    body.get_by_role("button", name="Run", exact=True).click()
    expect(body.get_by_text(re.compile(r"Finished: 2 runs"))).to_be_visible(timeout=TIMEOUT_MS)
    plots = body.locator(".js-plotly-plot")
    expect(plots).to_have_count(5)
    for i in range(5):
        plots.nth(i).locator(".main-svg").first.wait_for()
    legend = plots.first.locator(".legend").text_content() or ""
    assert "plain net" in legend and "residual net" in legend
    # the full rerun after the sweep lists the stored runs (other tests' lab runs on this server too) with
    # the sweep's deepest pair chosen
    chosen = re.compile(r"1 ep · seed 0 · plain 14 · residual 14")
    expect(body.get_by_role("combobox", name="Run")).to_have_value(chosen)
    no_exception(page)
    # Streamlit scrolls inside its own container: grow the viewport to the content to capture every chart
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1500, "height": min(5000, height + 100)})
    page.screenshot(path=str(ARTIFACTS / "depth_study.png"), full_page=True)

    with page.expect_download() as download:
        body.get_by_role("button", name="Export", exact=True).click()
    path = tmp_path / "depth_study_run.zip"
    download.value.save_as(path)
    assert zipfile.is_zipfile(path)
    body.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
    # The server's own run brought back: recognised, not stored a second time as an import.
    back = re.compile(r"depth_study_run.zip is run [0-9a-f]{12}, trained on this server and already stored")
    expect(body.get_by_text(back)).to_be_visible()
    no_exception(page)
    page.context.close()


def test_loss_landscape_walk(server, browser):
    page, body = browse(browser, server, "loss_landscape", "Loss landscape", height=3600)
    body.get_by_text(FRESH).click()
    for label in ("Grid points per axis", "Training examples", "Lanczos steps (Hessian)"):
        thumb = body.get_by_test_id("stSlider").filter(has_text=label).get_by_role("slider")
        thumb.focus()
        thumb.press("Home")  # the smallest option: 7 points, 100 examples, 10 steps
    expect(body.get_by_test_id("stSlider").filter(has_text="Grid points per axis")).to_contain_text("7")
    body.get_by_role("button", name="Compute landscapes").click()
    expect(body.get_by_text("Done: 2 landscapes")).to_be_visible(timeout=TIMEOUT_MS * 3)
    expect(body.locator("text=B · residual 20: |λ_min / λ_max|")).to_be_visible()  # the final draw, not a stale one
    expect(body.locator("[data-stale=true]")).to_have_count(0)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
    expect(body.locator(".js-plotly-plot .contour").first).to_be_attached()
    expect(body.get_by_text("A · plain 20").first).to_be_visible()
    expect(body.get_by_text("B · residual 20").first).to_be_visible()
    page.wait_for_function(  # both 3-D scenes made their WebGL plots (drawn after the SVG charts)
        """() => [...document.querySelectorAll('.js-plotly-plot')].some(gd => gd._fullLayout &&
            ['scene', 'scene2'].every(s => gd._fullLayout[s] && gd._fullLayout[s]._scene &&
                gd._fullLayout[s]._scene.glplot))"""
    )
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "loss_landscape.png"), full_page=True)
    page.context.close()


def test_limits_walk(server, browser):
    page, body = browse(browser, server, "limits", "Limits & pitfalls")
    body.get_by_text(FRESH).click()
    walk = (
        ("Lesions", "Paths through the residual net"),
        ("Calibration", "Reliability: accuracy"),
        ("Robustness", "Test accuracy under input corruptions"),
        ("Cost", "What depth costs"),
    )
    for analysis, title in walk:
        body.get_by_text(analysis, exact=True).click()
        wait_for_chart_title(page, title)
        expect(body.get_by_text("What to look for").first).to_be_visible()
        no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "limits.png"), full_page=True)
    page.context.close()


def test_limits_initialisation_grid_trains_and_draws(server, browser):
    """The Initialisation analysis trains its grid through the run service (five small pairs here)."""
    page, body = browse(browser, server, "limits", "Limits & pitfalls")
    body.get_by_text("Initialisation", exact=True).click()
    thumb = body.get_by_test_id("stSlider").filter(has_text="Depth").get_by_role("slider")
    thumb.focus()
    thumb.press("Home")  # depth 8
    for label in ("Epochs", "Seeds"):
        box = body.get_by_label(label)
        box.fill("1")
        box.press("Enter")
        expect(box).to_have_value("1")
    expect(body.get_by_text("5 plain/residual runs on digits")).to_be_visible()
    body.get_by_role("button", name="Run grid").click()
    wait_for_chart_title(page, "Final training loss by initialisation", TIMEOUT_MS * 4)
    expect(body.locator(".js-plotly-plot .boxlayer .trace").first).to_be_attached()
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "limits_initialisation.png"), full_page=True)
    page.context.close()


def test_limits_global_reasoning_grid_trains_and_draws(server, browser):
    """Global reasoning trains its corners grid through the run service (one depth-8 pair, one epoch here)."""
    page, body = browse(browser, server, "limits", "Limits & pitfalls")
    body.get_by_text("Global reasoning", exact=True).click()
    expect(body.get_by_text("Plain/residual pairs at depths 8, 14, 20")).to_be_visible()
    depths = body.get_by_test_id("stMultiSelect").filter(has_text="Depths").locator("input")
    depths.click()
    for _ in range(2):  # Backspace removes the last chosen depth: 20, then 14
        depths.press("Backspace")
    page.keyboard.press("Escape")
    box = body.get_by_label("Epochs", exact=True)
    box.fill("1")
    box.press("Enter")
    expect(body.get_by_text("Plain/residual pairs at depths 8 on 32 px images, 1 epoch with Adam")).to_be_visible()
    body.get_by_role("button", name="Run grid").click()
    wait_for_chart_title(page, "chance", TIMEOUT_MS * 4)
    expect(body.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_attached()
    no_exception(page)
    body.locator(".js-plotly-plot").first.screenshot(path=str(ARTIFACTS / "limits_global.png"))
    page.context.close()


def test_receptive_fields_screenshot(server, browser):
    page = new_page(browser)
    page.set_viewport_size({"width": 1500, "height": 3100})  # Streamlit scrolls inside the page: show all of it
    page.goto(server)  # one full run of st.navigation on this server first, so the deep link below resolves
    expect(page.get_by_role("heading", name="Why skip connections matter")).to_be_visible(timeout=TIMEOUT_MS)
    page.goto(f"{server}/receptive_fields")
    expect(main(page).get_by_role("heading", name="Receptive fields")).to_be_visible(timeout=TIMEOUT_MS)
    expect(main(page).get_by_text("Theoretical field at stage3.block3")).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
    page.locator(".js-plotly-plot .main-svg").first.wait_for()
    page.wait_for_function(  # the table has drawn its rows (the grid renders after the rest of the page)
        "() => document.querySelectorAll('[data-testid=stDataFrame] [role=gridcell]').length >= 10"
    )
    expect(page.get_by_text("Page not found")).to_have_count(0)
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "receptive_fields.png"), full_page=True)
    # st.plotly_chart's mode bar as the live board's: upright, and without Plotly Cloud's "Share chart..."
    chart = page.locator(".js-plotly-plot").first
    chart.hover()
    expect(chart.locator(".modebar")).to_be_visible()
    bar = chart.locator(".modebar").bounding_box()
    buttons = chart.locator(".modebar-btn").evaluate_all("(bs) => bs.map((b) => b.getAttribute('data-title'))")
    assert bar["height"] > bar["width"] and "Share chart..." not in buttons, (bar, buttons)
    page.context.close()
