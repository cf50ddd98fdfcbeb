"""A classroom on one server: many tabs on the training lab, measured against a real `streamlit run`.

Each scenario starts its own `streamlit run app.py` with an empty run store and drives it with
protocol-level tabs (`benchmarks.st_client`: Streamlit's websocket protocol, fragment timers as the
browser keeps them; no browser, so the server has the cores to itself apart from this process,
whose CPU is reported apart). Scenarios:

- `same` (for each N of --sessions): N tabs open the same lab URL (--query; default: the lab's
  default config, depth 20 plain vs residual on digits for 10 epochs) and click Train at once.
  Reported: click -> first drawn loss point per tab (min / median / max), trainings actually run,
  server peak RSS and CPU seconds (the server process's own per tab and second), and the run's own
  training speed (its progress line) against the engine headless on the same config in this process
  (the mean of a run just before the scenario's server starts and one just after it stops).
- `distinct`: --distinct tabs, each a different seed of a small config (depth 8, width 8), click
  Train one after another. Reported: the queue places each tab showed, start and finish order
  against click order (FIFO; two starts the tabs see within one refresh of each other are a tie), and
  how long any tab stayed queued after all the work ahead of it was done (a scheduler that leaves a
  slot idle while a run waits shows up there).
- `visit-first`: one tab opens Attributions, then Receptive fields (each drawn once, as a new user
  clicking through), then the lab with the default config, and clicks Train: click -> first point.
  The default config is the Receptive fields page's default pair, so the lab attaches to it.
- `visit-first-other`: the same, but the lab asks for a config nobody else asked for (depth 14):
  the analysis pages' pairs must not hold the training slots it needs.

Definitions:
- "first drawn loss point": the first loss chart the tab receives whose training curves have at
  least two points for both models (a line needs two: the same as `bench_app`'s browser check),
  timed when the message arrives at the tab (no rendering: a browser adds its draw time).
- "trainings actually run": distinct live run ids the tabs' URLs named (the lab writes `run=<id>`
  while a run trains; every live run has its own unguessable id, so two trainings of one config
  show as two ids), checked against the runs in the store once everything has finished, and the
  most viewers one run had (its progress line says "N watching").
- "server" CPU and memory count the server and its training workers (benchmarks/server.py);
  `peak_rss_mb` sums each process's peak, `server_peak_rss_mb` is the server's own.
- Times are `time.perf_counter()` in this process; the fragment timer is 1 s, so start and finish
  times seen by a tab are late by up to about 1 s.

Goals (issue 9; reported, not asserted): same preset, every tab's first point <= 2 s at N = 30 and
server peak RSS <= 2 GB; the visit-first case <= 1.5 s; nothing trained twice.

Before each scenario a teacher's tab opens Home and stays --warm seconds (default 10), as a teacher
opens the app before class; `--warm 0` measures a cold server (its start-up work and the students'
first clicks share the cores).

    python -m benchmarks.bench_classroom                                    # everything (< ~10 min, 2 quiet cores)
    python -m benchmarks.bench_classroom --sessions 1,3 --scenarios same    # a part
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time
from dataclasses import dataclass, field

from benchmarks.bench_app import headless_rate
from benchmarks.server import Server
from benchmarks.st_client import CHART_KINDS, Event, Tab, element_text, figure_title, plotly_array, plotly_figures
from resnet_viz.lab import decode
from resnet_viz.store import RunStore  # imports torch: here, not inside a measured span
from resnet_viz.training import Trainer

SMALL = "a.depth=8&a.width=8"  # the distinct scenario's config (seeds differ); digits, linked B
OTHER = "a.depth=14"  # visit-first-other: a config no page asked for
REFRESH_S = 1.0  # the lab's fragment timer: a tab sees a start or finish up to this late
GOALS = {
    "same_first_point_max_s_at_30": 2.0,
    "server_peak_rss_mb": 2048,
    "visit_first_point_s": 1.5,
    "trainings_per_config": 1,
    "run_speed_in_app_to_headless": 0.85,
}
QUEUED = re.compile(r"^Queued: place (\d+) in the server's queue(?: \(about ([^)]*)\))?")
# speed and ETA are left out while a run has none (queued, or a stored run replayed)
PROGRESS = re.compile(r"^step (\d+)/(\d+) · epoch [^·]*(?:· ([\d.]+) steps/s)?.*?(?:· (\d+) watching)?$")
FINISHED = re.compile(r"^(Finished \d+ steps|Finished \d+ steps; .*diverged\.|Stopped at step \d+)")


# ---------------------------------------------------------------------------------------------- server


# ---------------------------------------------------------------------------------------------- one tab


@dataclass
class Watch:
    """What one tab saw of its lab run."""

    tab: Tab
    clicked: float = 0.0
    first_point: float | None = None  # first loss chart with >= 2 training points per model
    started: float | None = None  # first progress line with a step done and no queue line before it
    finished: float | None = None  # "Finished N steps." (or stopped)
    outcome: str = ""
    queue_places: list[int] = field(default_factory=list)  # every place shown, in order (repeats dropped)
    queue_estimates: list[str] = field(default_factory=list)  # the wait estimates shown next to them
    run_ids: set[str] = field(default_factory=set)
    max_watching: int = 1
    steps_per_s: float | None = None  # the run's own training speed, from the last progress line seen
    replayed: bool = False  # the lab opened a stored run instead of training

    def on_element(self, tab: Tab, ev: Event) -> None:
        if self.clicked == 0.0 or ev.path[:1] != (0,):  # before the click, or the sidebar
            return
        self.run_ids.update(v for k, v in _params(tab.query) if k == "run")
        el = ev.element
        kind = el.WhichOneof("type")
        if kind in CHART_KINDS and self.first_point is None:
            for fig in plotly_figures(el):
                if figure_title(fig).startswith("Loss"):
                    train = [t for t in fig.get("data", []) if str(t.get("name", "")).endswith(": train")]
                    if len(train) >= 2 and all(len(plotly_array(t.get("x"))) >= 2 for t in train):
                        self.first_point = ev.t
            return
        text = element_text(el)
        if not text:
            return
        if m := QUEUED.match(text):
            place = int(m.group(1))
            if not self.queue_places or self.queue_places[-1] != place:
                self.queue_places.append(place)
                self.queue_estimates.append(m.group(2) or "")
        elif m := PROGRESS.match(text):
            if int(m.group(1)) > 0 and self.started is None:
                self.started = ev.t
            self.max_watching = max(self.max_watching, int(m.group(4) or 1))
            self.steps_per_s = float(m.group(3) or 0.0)
        elif m := FINISHED.match(text):
            if self.finished is None:
                self.finished, self.outcome = ev.t, m.group(1)
        elif text.startswith("Stored run "):
            self.replayed = True


def _params(query: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in query.split("&") if "=" in p]


async def open_tabs(server: Server, n: int, page: str, queries: list[str], timeout: float) -> list[Watch]:
    """n tabs on `page`, each with its query; returns once every one is drawn."""
    watches = []
    for i in range(n):
        tab = Tab(server.url, name=f"tab{i}")
        watch = Watch(tab)
        tab.on_element = watch.on_element
        watches.append(watch)
    await asyncio.gather(*(w.tab.connect() for w in watches))
    for w, q in zip(watches, queries, strict=True):
        await w.tab.open(page, q)
    drawn = await asyncio.gather(*(w.tab.settle(timeout) for w in watches))
    if not all(drawn) or any("Train" not in w.tab.buttons for w in watches):
        raise RuntimeError(f"{drawn.count(False)} of {n} tabs did not draw the lab: {watches[0].tab.errors}")
    return watches


async def wait_all(watches: list[Watch], what: str, timeout: float) -> int:
    """Wait (at most `timeout` s in all) until every tab has seen `what`; returns how many did not."""
    results = await asyncio.gather(
        *(w.tab.wait_for(lambda w=w: getattr(w, what) is not None, timeout) for w in watches)
    )
    return results.count(False)


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _tab_stats(watches: list[Watch]) -> dict:
    firsts = [w.first_point - w.clicked for w in watches if w.first_point is not None]
    return {
        "click_to_first_point_s": _summary(firsts),
        "tabs_without_first_point": sum(w.first_point is None for w in watches),
        "distinct_live_run_ids": len(set().union(*(w.run_ids for w in watches))),
        "max_watching_one_run": max(w.max_watching for w in watches),
        "tabs_replaying_a_stored_run": sum(w.replayed for w in watches),
        "tab_errors": sorted({e for w in watches for e in w.tab.errors})[:5],
        "fragment_reruns_sent": sum(w.tab.fragment_reruns_sent for w in watches),
        "mb_received": round(sum(w.tab.bytes_in for w in watches) / 2**20, 1),
    }


async def _close(watches: list[Watch]) -> None:
    await asyncio.gather(*(w.tab.close() for w in watches), return_exceptions=True)


# ---------------------------------------------------------------------------------------------- scenarios


async def same(server: Server, n: int, query: str, args: argparse.Namespace) -> dict:
    watches = await open_tabs(server, n, "lab", [query] * n, args.page_timeout)
    cpu0, own0, client0 = server.cpu_seconds(), server.cpu_seconds(server_only=True), time.process_time()
    rss_before = server.memory_mb()["rss_mb"]
    clicks = await asyncio.gather(*(w.tab.click("Train") for w in watches))
    for w, t in zip(watches, clicks, strict=True):
        w.clicked = t
    await wait_all(watches, "first_point", args.point_timeout)
    unfinished = await wait_all(watches, "finished", args.run_timeout)
    own = server.cpu_seconds(server_only=True) - own0
    seconds = max((w.finished or 0) for w in watches) - min(clicks) if not unfinished else None
    rates = [w.steps_per_s for w in watches if w.steps_per_s]  # none when every tab replayed a stored run
    out = {
        "sessions": n,
        "query": query or "(default lab config)",
        **_tab_stats(watches),
        "tabs_not_finished": unfinished,
        "stored_runs_after": len(RunStore(server.data_dir).list_runs()),
        "server_rss_before_click_mb": round(rss_before, 1),
        "server_cpu_s_click_to_finish": round(server.cpu_seconds() - cpu0, 2),
        # The server process alone (its tabs' script runs, the run's figures, websockets), per tab and
        # second: an upper bound of what one watching tab costs (it includes the clicks and the figures).
        "server_process_cpu_s_click_to_finish": round(own, 2),
        "server_process_cpu_pct_of_a_core_per_tab": round(100 * own / (n * seconds), 2) if seconds else None,
        "run_steps_per_s": statistics.median(rates) if rates else None,
        "clients_cpu_s": round(time.process_time() - client0, 2),
        "seconds_click_to_last_finish": round(seconds, 2) if seconds else None,
    }
    await _close(watches)
    return out


async def distinct(server: Server, n: int, args: argparse.Namespace) -> dict:
    queries = [f"{SMALL}&epochs={args.distinct_epochs}&seed={i}" for i in range(n)]
    watches = await open_tabs(server, n, "lab", queries, args.page_timeout)
    cpu0, client0 = server.cpu_seconds(), time.process_time()
    for w in watches:  # one after another: the server has the run (the URL names it) before the next click
        w.clicked = await w.tab.click("Train")
        await w.tab.wait_for(lambda w=w: "run=" in w.tab.query, args.page_timeout)
    unfinished = await wait_all(watches, "finished", args.run_timeout)
    done = [w for w in watches if w.finished is not None and w.started is not None]
    finish_order = [watches.index(w) for w in sorted(done, key=lambda w: w.finished)]
    start_order = [watches.index(w) for w in sorted(done, key=lambda w: w.started)]
    late = []  # how long each tab stayed queued after everything clicked before it had finished
    for i, w in enumerate(watches[1:], 1):
        ahead = [a.finished for a in watches[:i]]
        if w.started is None or None in ahead:
            continue
        late.append(max(0.0, w.started - max([w.clicked, *ahead])))
    t0 = watches[0].clicked
    out = {
        "sessions": n,
        "query": f"{SMALL}&epochs={args.distinct_epochs}&seed=0..{n - 1}",
        "queue_places_shown": [w.queue_places for w in watches],
        "queue_wait_estimates_shown": [w.queue_estimates[0] if w.queue_estimates else "" for w in watches],
        "seconds_queued": [round(w.started - w.clicked, 2) if w.started else None for w in watches],
        "click_s": [round(w.clicked - t0, 2) for w in watches],
        "start_s": [round(w.started - t0, 2) if w.started else None for w in watches],
        "finish_s": [round(w.finished - t0, 2) if w.finished else None for w in watches],
        "start_order": start_order,
        "finish_order": finish_order,
        # FIFO is the start order (two runs train at once, so two neighbours may finish swapped), as far as
        # tabs can see it: each sees its start at its next refresh, so starts within one refresh are a tie
        "fifo_start": len(done) == n
        and all(b.started + REFRESH_S >= a.started for i, a in enumerate(watches) for b in watches[i + 1 :]),
        "max_queued_after_work_ahead_done_s": round(max(late), 2) if late else None,
        "tabs_not_finished": unfinished,
        "outcomes": sorted({w.outcome for w in watches}),
        "distinct_live_run_ids": len(set().union(*(w.run_ids for w in watches))),
        "stored_runs_after": len(RunStore(server.data_dir).list_runs()),
        "server_cpu_s": round(server.cpu_seconds() - cpu0, 2),
        "clients_cpu_s": round(time.process_time() - client0, 2),
        "tab_errors": sorted({e for w in watches for e in w.tab.errors})[:5],
    }
    await _close(watches)
    return out


async def visit_first(server: Server, query: str, args: argparse.Namespace) -> dict:
    tab = Tab(server.url, name="visitor")
    watch = Watch(tab)
    tab.on_element = watch.on_element
    await tab.connect()
    visits = {}
    for page in ("attributions", "receptive_fields"):
        t = time.perf_counter()
        await tab.open(page)
        visits[page] = round(time.perf_counter() - t, 2) if await tab.settle(args.page_timeout) else None
    await tab.open("lab", query)
    if not await tab.settle(args.page_timeout):
        raise RuntimeError(f"the lab was not drawn: {tab.errors}")
    cpu0 = server.cpu_seconds()
    watch.clicked = await tab.click("Train")
    await tab.wait_for(lambda: watch.first_point is not None, args.point_timeout)
    out = {
        "query": query or "(default lab config)",
        "page_drawn_s": visits,
        "click_to_first_point_s": round(watch.first_point - watch.clicked, 3) if watch.first_point else None,
        "queue_places_shown": watch.queue_places,
        "live_run_id": sorted(watch.run_ids),
        "server_cpu_s_click_to_first_point": round(server.cpu_seconds() - cpu0, 2),
        "tab_errors": tab.errors[:5],
    }
    await tab.close()
    return out


# ---------------------------------------------------------------------------------------------- main


async def teacher_visit(server: Server, seconds: float) -> None:
    """The teacher opens Home before class and waits: the server's start-up work (a training worker,
    the default pairs' data and cost estimates) is done before the students click."""
    tab = Tab(server.url, name="teacher")
    await tab.connect()
    await tab.open("")
    await tab.settle(60)
    await asyncio.sleep(seconds)
    await tab.close()


def run_scenario(name: str, coro_of, warm: float) -> dict:
    """A fresh server for one scenario; its RSS, CPU and log go with the scenario's numbers."""
    server = Server()
    try:
        startup = server.wait_healthy()
        if warm > 0:
            asyncio.run(teacher_visit(server, warm))
        result = asyncio.run(coro_of(server))
        result.update(server.memory_mb())
        result["server_cpu_s_total"] = round(server.cpu_seconds(), 2)
        result["server_startup_s"] = round(startup, 2)
        result["teacher_visit_s"] = warm
    except Exception as err:  # one broken scenario is reported; the others still run
        result = {"error": f"{type(err).__name__}: {err}"[:800]}
    finally:
        result.update(server.stop())
    return {"scenario": name, **result}


def same_against_headless(n: int, params: dict[str, str], args: argparse.Namespace) -> dict:
    """`same` for n tabs, with the engine headless on the same config in this process just before the
    scenario's server starts and just after it stops. This VM's speed drifts within minutes (the two
    headless runs around one N = 1 scenario, a minute apart, differed by 8% and 12% here), so the app's
    run is compared with the mean of the two measured around it (both are reported), not with headless
    runs at the start and end of the whole benchmark."""
    before = headless_rate(params)
    result = run_scenario("same", lambda s: same(s, n, args.query, args), args.warm)
    after = headless_rate(params)
    result["headless_steps_per_s_before_after"] = [round(before, 2), round(after, 2)]
    if result.get("run_steps_per_s"):
        result["run_speed_in_app_to_headless"] = round(result["run_steps_per_s"] / statistics.mean([before, after]), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,10,30", help="tab counts for the `same` scenario")
    parser.add_argument("--scenarios", default="same,distinct,visit-first,visit-first-other")
    parser.add_argument("--query", default="", help="lab query string of `same` (default: the default config)")
    parser.add_argument("--distinct", type=int, default=10, help="tabs (and seeds) of the `distinct` scenario")
    parser.add_argument("--distinct-epochs", type=int, default=10, help="epochs of each `distinct` run")
    parser.add_argument("--page-timeout", type=float, default=60.0, help="s for a page to be drawn")
    parser.add_argument("--point-timeout", type=float, default=60.0, help="s from click to first point")
    parser.add_argument("--run-timeout", type=float, default=120.0, help="s from click until runs finish")
    parser.add_argument(
        "--warm", type=float, default=10.0, help="s a teacher's tab stays on Home before the scenario (0: cold server)"
    )
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    known = {"same", "distinct", "visit-first", "visit-first-other"}
    if bad := [s for s in scenarios if s not in known]:
        parser.error(f"--scenarios: unknown {bad}; allowed: {sorted(known)}")
    sessions = [int(s) for s in args.sessions.split(",") if s.strip()]

    started, load = time.perf_counter(), os.getloadavg()[0]
    params = dict(_params(args.query))
    if "same" in scenarios:
        cfg, _ = decode(params)
        Trainer(cfg.models(), cfg.train, cfg.data)  # first-use costs (1.3 s: the first optimizer imports torch._dynamo)
    results: list[dict] = []
    for name in scenarios:
        if name == "same":
            for n in sessions:
                results.append(same_against_headless(n, params, args))
        elif name == "distinct":
            results.append(run_scenario("distinct", lambda s: distinct(s, args.distinct, args), args.warm))
        else:
            query = "" if name == "visit-first" else OTHER
            results.append(run_scenario(name, lambda s, q=query: visit_first(s, q, args), args.warm))
    print(
        json.dumps(
            {
                "benchmark": "classroom",
                "cpu_count": os.cpu_count(),
                "load_avg_1min_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
                "goals": GOALS,
                "results": results,
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
