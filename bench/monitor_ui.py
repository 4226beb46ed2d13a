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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary WORKBENCH_HOME and print its path")
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
