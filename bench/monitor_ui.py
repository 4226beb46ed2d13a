"""How fast the Monitor page draws a year of weekly batches (52) in a real browser.

Seeds a temporary WORKBENCH_HOME's run history with the 52 scored and shift-checked batches (and their alerts)
of tests/ui/test_monitor_browser.py (no model needed), starts ``streamlit run workbench/app.py`` headless and
drives Debian Chromium with Playwright: one warm-up load (Streamlit compiles the page), then timed loads from
navigation to the timeline drawn (Vega rendered the chart's canvas) and to the alert list shown. Prints a markdown
table and writes bench/results/monitor_ui.json. Target: <= 3 s.

    .venv/bin/python bench/monitor_ui.py [--runs 5] [--weeks 52]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import stop  # noqa: E402
from tests.ui.test_monitor_browser import CHROMIUM, CHROMIUM_ARGS, DRAWN, monitor_server, seed_history  # noqa: E402

TARGET_S = 3.0

#: Two bare pages drawing the same 52 weeks (six series, one on a log axis) with plotly and with Vega-Lite: how
#: much of the page's time is the chart library itself (`--compare-charts`).
_PLOTLY_PAGE = """
import numpy as np, pandas as pd, plotly.graph_objects as go, streamlit as st
x = pd.date_range("2025-12-01", periods=52, freq="W")
rng = np.random.default_rng(0)
fig = go.Figure()
for k in range(5):
    fig.add_trace(go.Scatter(x=x, y=rng.random(52), mode="lines+markers", name=f"flagged: k{k}"))
fig.add_trace(go.Scatter(x=x, y=rng.random(52), mode="lines+markers", name="shift", yaxis="y2"))
fig.update_layout(yaxis2={"type": "log", "overlaying": "y", "side": "right"})
st.plotly_chart(fig)
"""
_VEGA_PAGE = """
import altair as alt, numpy as np, pandas as pd, streamlit as st
x = pd.date_range("2025-12-01", periods=52, freq="W")
rng = np.random.default_rng(0)
shares = pd.concat([pd.DataFrame({"t": x, "share": rng.random(52), "kind": f"k{k}"}) for k in range(5)])
p = pd.DataFrame({"t": x, "p": rng.random(52)})
a = alt.Chart(shares).mark_line(point=True).encode(x="t:T", y="share:Q", color="kind:N")
b = alt.Chart(p).mark_line(point=True).encode(x="t:T", y=alt.Y("p:Q", scale=alt.Scale(type="log")))
st.altair_chart(alt.layer(a, b).resolve_scale(y="independent"))
"""
_DRAWN_BY = {"plotly": ".js-plotly-plot .scatterlayer .trace",
             "vega-lite": '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks'}


def compare_charts(tmp: Path, runs: int) -> dict[str, list[float]]:
    """Seconds from navigation to the chart drawn, for the bare plotly and Vega-Lite pages, loaded alternately."""
    import subprocess

    from playwright.sync_api import sync_playwright

    from tests.servers import free_port, wait_http

    servers = {}
    try:
        for name, source in (("plotly", _PLOTLY_PAGE), ("vega-lite", _VEGA_PAGE)):
            script = tmp / f"{name}.py"
            script.write_text(source)
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.headless",
                                     "true", "--server.address", "127.0.0.1", "--server.port", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            servers[name] = (proc, f"http://127.0.0.1:{port}")
            wait_http(f"{servers[name][1]}/_stcore/health", timeout=90, process=proc)
        seconds: dict[str, list[float]] = {name: [] for name in servers}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            for attempt in range(runs + 1):  # the first round warms both servers up and is not counted
                for name, (_, url) in servers.items():
                    page = browser.new_page()
                    start = time.perf_counter()
                    page.goto(url)
                    page.wait_for_selector(_DRAWN_BY[name], timeout=120_000)
                    if attempt:
                        seconds[name].append(time.perf_counter() - start)
                    page.close()
            browser.close()
        return seconds
    finally:
        for proc, _ in servers.values():
            stop(proc, timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary WORKBENCH_HOME and print its path")
    parser.add_argument("--compare-charts", action="store_true",
                        help="also time a bare plotly page against a bare Vega-Lite page with the same chart")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from core.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-ui-"))
    home = tmp / "home"
    alerts = seed_history(Settings(home=home).resolved_labels_url, weeks=args.weeks)
    print(f"history: {args.weeks} batches, {len(alerts)} alerts", flush=True)
    server, url = monitor_server(home, tmp / "streamlit.log")
    timings: list[dict[str, float]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)

            def load() -> dict[str, float]:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                start = time.perf_counter()
                page.goto(f"{url}/monitor")
                page.wait_for_selector('[data-testid="stApp"]')
                shell = time.perf_counter() - start
                page.wait_for_function(DRAWN)
                drawn = time.perf_counter() - start
                page.get_by_text(f"Alerts ({len(alerts)})").wait_for()
                listed = time.perf_counter() - start
                page.locator('[data-testid="stDataFrame"]').first.wait_for()
                complete = time.perf_counter() - start
                page.close()
                print(f"  shell {shell:.2f} s, timeline drawn {drawn:.2f} s, alerts listed {listed:.2f} s, "
                      f"table {complete:.2f} s", flush=True)
                return {"app_shell_s": shell, "timeline_drawn_s": drawn, "alerts_listed_s": listed,
                        "page_complete_s": complete}

            first = load()
            for _ in range(args.runs):
                timings.append(load())
            browser.close()
    finally:
        stop(server, timeout=30)

    drawn = [t["timeline_drawn_s"] for t in timings]
    complete = [t["page_complete_s"] for t in timings]
    result = {
        "batches": args.weeks, "alerts": len(alerts), "runs": len(timings),
        "first_load_timeline_drawn_s": round(first["timeline_drawn_s"], 2),
        "timeline_drawn_median_s": round(statistics.median(drawn), 2),
        "timeline_drawn_max_s": round(max(drawn), 2),
        "page_complete_median_s": round(statistics.median(complete), 2),
        "target_s": TARGET_S, "meets_target": statistics.median(drawn) <= TARGET_S,
        "machine": f"{os.cpu_count()} CPU cores, no GPU, headless Chromium (Debian); "
                   f"load average {os.getloadavg()[0]:.1f}",
    }
    if args.compare_charts:
        charts = compare_charts(tmp, args.runs)
        result["bare_chart_median_s"] = {name: round(statistics.median(v), 2) for name, v in charts.items()}
        result["bare_chart_plotly_over_vega"] = round(statistics.median(charts["plotly"])
                                                      / statistics.median(charts["vega-lite"]), 2)
    print("\n| metric | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    out = REPO / "bench" / "results" / "monitor_ui.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "timings": timings, "first_load": first}, indent=2) + "\n")
    print(f"\nwritten to {out}")
    if args.keep:
        print(f"kept {tmp} (WORKBENCH_HOME={home})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
