"""Two browser tabs on the same lab config share one training; moving α in one forks it for that tab only.

Issue 9, items 1 and 2, in Chromium against the real server: both tabs click Train on the same
URL and attach to one run (same run id in both URLs, "2 watching", the same loss curves). Then
one tab (the mover) drags model B's live skip scale to 0: it gets its own copy of the run from
that step ("your copy from here" on its loss chart), continuing from the shared weights and
optimizer state. Model A's curve stays the same in both tabs; B's is the same up to the fork step
and differs after it; the other tab keeps the shared run, untouched.
"""

from __future__ import annotations

import re

import pytest
from browser_utils import ARTIFACTS, TIMEOUT_MS, main, new_page, no_exception
from playwright.sync_api import Page, expect

CONFIG = "a.depth=8&a.width=8&epochs=60"  # 600 steps of a tiny pair: training while the tabs look
B_SLIDER = "Live skip scale α of B · residual 8"
FORK_MARK = "your copy from here"
AFTER_FORK = 25  # steps both runs must have drawn past the fork before comparing

LOSS_CHART = """() => {
    const decode = (v) => {  // Plotly's typed-array spec ({dtype, bdata}) or a plain array
        if (!v) return [];
        if (!v.bdata) return Array.from(v);
        const types = {f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
                       u2: Uint16Array, i1: Int8Array, u1: Uint8Array};
        const bytes = Uint8Array.from(atob(v.bdata), (c) => c.charCodeAt(0));
        return Array.from(new types[v.dtype](bytes.buffer));
    };
    // The loss chart (its title is bold: "<b>Loss: ..."), not the stale copy a redraw leaves for a moment.
    const plot = [...document.querySelectorAll('.js-plotly-plot')].filter((p) =>
        p.layout && String((p.layout.title || {}).text || '').includes('Loss:')
        && p.closest('[data-testid=stElementContainer]').getAttribute('data-stale') !== 'true'
    ).pop();
    if (!plot || !plot.data) return null;
    return {
        traces: Object.fromEntries(plot.data.map((t) => [t.name, {x: decode(t.x), y: decode(t.y)}])),
        annotations: (plot.layout.annotations || []).map((a) => ({text: String(a.text), x: a.x})),
    };
}"""


WHEN_DRAWN = f"""(want) => {{
    const chart = ({LOSS_CHART})();
    if (!chart) return null;
    const train = Object.entries(chart.traces).filter(([name]) => name.endsWith(': train'));
    const reached = train.length === 2 && train.every(([, t]) => t.x.length >= 2 && Math.max(...t.x) >= want.step);
    const marked = !want.mark || chart.annotations.some((a) => a.text === want.mark);
    return reached && marked ? chart : null;
}}"""


def _loss_chart(page: Page, step: int = 1, mark: str = "") -> dict:
    """The loss chart's traces and annotations, once both training curves reach `step` (and `mark` shows)."""
    handle = page.wait_for_function(WHEN_DRAWN, arg={"step": step, "mark": mark}, timeout=TIMEOUT_MS)
    return handle.json_value()


def _train_curves(chart: dict) -> dict[str, dict[int, float]]:
    """Model label -> {step: training loss} from the loss chart (bin = step while a run has <= 600 steps)."""
    return {
        name.removesuffix(": train"): dict(zip(t["x"], t["y"], strict=True))
        for name, t in chart["traces"].items()
        if name.endswith(": train")
    }


def _run_id(page: Page) -> str:
    match = re.search(r"[?&]run=([^&]+)", page.url)
    assert match, f"the lab did not write its run into the URL: {page.url}"
    return match.group(1)


def test_two_tabs_share_a_run_and_moving_alpha_forks_it_for_the_mover_only(server, browser):
    other, mover = new_page(browser), new_page(browser)
    for page in (other, mover):
        page.goto(f"{server}/lab?{CONFIG}")
        main(page).get_by_role("button", name="Train").wait_for()
    for page in (other, mover):
        main(page).get_by_role("button", name="Train").click()
    for page in (other, mover):
        _loss_chart(page)
        expect(main(page).get_by_text(re.compile(r"step \d+/600 · .* · 2 watching"))).to_be_visible()
    shared = _run_id(other)
    assert _run_id(mover) == shared  # one training, two viewers
    for page in (other, mover):  # neither may stop the other's training (the first tab's Stop too, within 3 s)
        expect(main(page).get_by_role("button", name="Stop")).to_be_disabled()

    # Both tabs draw the same run: their curves agree wherever both have drawn a step.
    before = {p: _train_curves(_loss_chart(p)) for p in (other, mover)}
    assert set(before[other]) == {"A · plain 8", "B · residual 8"}
    for label, curve in before[other].items():
        common = sorted(set(curve) & set(before[mover][label]))
        assert common and [curve[s] for s in common] == [before[mover][label][s] for s in common]
    mover.screenshot(path=str(ARTIFACTS / "sharing_before_fork.png"), full_page=True)

    thumb = main(mover).get_by_test_id("stSlider").filter(has_text=B_SLIDER).get_by_role("slider")
    expect(thumb).to_have_value("1")
    thumb.press("Home")  # α of B to 0: B becomes the plain net from here, in the mover's copy only
    fork = next(a["x"] for a in _loss_chart(mover, mark=FORK_MARK)["annotations"] if a["text"] == FORK_MARK)
    assert isinstance(fork, int | float) and fork > 0
    mover.wait_for_url(re.compile(r"[?&]run=(?!" + re.escape(shared) + r"(&|$))[^&]+"))  # its own run now
    target = min(int(fork) + AFTER_FORK, 600)
    their_chart = _loss_chart(other, target)
    mine, theirs = _train_curves(_loss_chart(mover, target)), _train_curves(their_chart)
    steps_a = sorted(set(mine["A · plain 8"]) & set(theirs["A · plain 8"]))
    assert steps_a[-1] >= target
    # Model A was not touched: the fork trains it on from the same weights, optimizer state and batches.
    # Equal up to float rounding: the two runs share the cores, so each may train with another number of
    # intra-op threads than the shared run had (sums in another order); a different model would differ by
    # far more than 1e-5 (tests/unit/test_runs.py checks bit-identity at a fixed thread count).
    assert [mine["A · plain 8"][s] for s in steps_a] == pytest.approx(
        [theirs["A · plain 8"][s] for s in steps_a], rel=1e-5
    )
    # Model B: the shared history up to the fork step, the mover's own (α = 0) after it, and named so there only.
    assert set(mine) == {"A · plain 8", "B · residual 8 (α=0 live)"}
    assert set(theirs) == {"A · plain 8", "B · residual 8"}
    b_mine, b_theirs = mine["B · residual 8 (α=0 live)"], theirs["B · residual 8"]
    steps_b = sorted(set(b_mine) & set(b_theirs))
    up_to = [s for s in steps_b if s <= fork]
    after = [s for s in steps_b if s > fork]
    assert up_to and [b_mine[s] for s in up_to] == [b_theirs[s] for s in up_to]
    assert len(after) >= AFTER_FORK and all(b_mine[s] != b_theirs[s] for s in after)

    # The other tab still watches the shared run, alone now, with α of B unchanged and no fork mark. (Its URL
    # names the run while it trains; on a busy machine the 600 steps may be done by now, and a finished
    # run is no longer named.)
    other.wait_for_function(
        "id => location.search.includes('run=' + id) || document.body.innerText.includes('Finished 600 steps')",
        arg=shared,
    )
    expect(main(other).get_by_text(re.compile(r"step \d+/600 · .* watching"))).to_have_count(0)
    other_thumb = main(other).get_by_test_id("stSlider").filter(has_text=B_SLIDER).get_by_role("slider")
    expect(other_thumb).to_have_value("1")
    assert not any(a["text"] == FORK_MARK for a in their_chart["annotations"])
    expect(thumb).to_have_value("0")
    # alone on the shared run now, the other tab may stop it: its Stop comes back by itself, no click needed
    # (unless the run has just finished)
    other.wait_for_function(
        r"""() => {
            const body = document.querySelector('[data-testid=stMainBlockContainer]');
            const stop = [...body.querySelectorAll('button')].find(b => /\bStop\b/.test(b.innerText));
            return (stop && !stop.disabled) || body.innerText.includes('Finished 600 steps');
        }"""
    )

    other.screenshot(path=str(ARTIFACTS / "sharing_other_after_fork.png"), full_page=True)
    mover.screenshot(path=str(ARTIFACTS / "sharing_mover_after_fork.png"), full_page=True)
    mover.wait_for_function(  # the mover's copy is its own: it may stop it (unless it has just finished)
        r"""() => {
            const body = document.querySelector('[data-testid=stMainBlockContainer]');
            const stop = [...body.querySelectorAll('button')].find(b => /\bStop\b/.test(b.innerText));
            return (stop && !stop.disabled) || body.innerText.includes('Finished 600 steps');
        }"""
    )
    # forced: the copy may finish between that check and the click (its Stop is then disabled, the click a no-op)
    main(mover).get_by_role("button", name="Stop").click(force=True)
    expect(mover.get_by_text(re.compile(r"Stopped at step \d+|Finished 600 steps"))).to_be_visible(timeout=TIMEOUT_MS)
    # The other tab leaves the shared run (Reset): the run stops once nobody watches it.
    main(other).get_by_role("button", name="Reset", exact=True).click()
    expect(main(other).get_by_role("button", name="Train")).to_be_enabled(timeout=TIMEOUT_MS)
    for page in (other, mover):
        no_exception(page)
        page.context.close()
