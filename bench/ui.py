"""How fast the Explore page draws 20k reviews in a real browser once the model and scores are cached.

Builds a temporary WORKBENCH_HOME (a 2k-review reference, a 20k-review current batch from ../shared/data,
the pre-warmed embedding cache copied in so nothing is re-embedded), trains a model, starts
``streamlit run workbench/app.py`` headless and drives Debian Chromium with Playwright: one warm-up load
(model load, scoring, UMAP transform: cached afterwards), then timed loads from navigation to the WebGL
scatter drawn. Prints a markdown table and writes bench/results/ui.json. Target: <= 5 s.

    .venv/bin/python bench/ui.py [--runs 3] [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WORKBENCH_TEST_DATA", REPO.parent / "shared" / "data"))
WARM_CACHE = Path(os.environ.get("WORKBENCH_BENCH_CACHE", "/work/bench-home/cache/embeddings.sqlite"))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TARGET_S = 5.0


def build_batches(folder: Path, rows: int) -> tuple[Path, Path]:
    from core.io.load import load_path

    frames = [load_path(p).frame for p in sorted((DATA / "amazon2018_5core").glob("*_5.json.gz"))]
    frames += [load_path(p).frame for p in sorted((DATA / "amazon2023_subscription_videogames").glob("*.csv.gz"))]
    pool = pd.concat(frames, ignore_index=True)
    reference = frames[0].head(2000)  # one category is "normal"; the others arrive as shift/outliers
    current = pool.sample(n=min(rows, len(pool)), random_state=0)
    ref_path, cur_path = folder / "reference.parquet", folder / "current.parquet"
    reference.to_parquet(ref_path, index=False)
    current.to_parquet(cur_path, index=False)
    return ref_path, cur_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary WORKBENCH_HOME and print its path")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    home = tmp / "home"
    os.environ["WORKBENCH_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if WARM_CACHE.exists():
        (home / "cache").mkdir(parents=True)
        with sqlite3.connect(WARM_CACHE) as src, sqlite3.connect(home / "cache" / "embeddings.sqlite") as dst:
            src.backup(dst)
    from core.pipeline import Workspace

    t0 = time.perf_counter()
    ws = Workspace.open()
    ref_path, cur_path = build_batches(tmp, args.rows)
    ws.ingest_path(ref_path, name="reference")
    info, _ = ws.ingest_path(cur_path, name="current")
    ws.update_state(reference="reference", current="current")
    ws.train("reference", detectors=("knn", "lof", "iforest"), project=True)
    setup_s = time.perf_counter() - t0
    print(f"setup (ingest + train): {setup_s:.0f} s; current batch {info.rows} reviews", flush=True)

    port = free_port()
    log = (tmp / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "workbench" / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=REPO, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/explore"
    timings: list[dict[str, float]] = []
    try:
        import httpx
        from playwright.sync_api import sync_playwright

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)

            def load(timeout_ms: int) -> dict[str, float]:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(timeout_ms)
                start = time.perf_counter()
                page.goto(url)
                page.wait_for_selector('[data-testid="stApp"]')
                shell = time.perf_counter() - start
                page.wait_for_selector(".js-plotly-plot canvas", state="attached")
                canvas = time.perf_counter() - start
                # Drawn = plotly finished laying out the traces with every point.
                page.wait_for_function(
                    "n => { const g = document.querySelector('.js-plotly-plot');"
                    " return g && g._fullData && g._fullData.reduce((s, t) => s + (t.x ? t.x.length : 0), 0) >= n; }",
                    arg=n_points,
                )
                drawn = time.perf_counter() - start
                page.get_by_text("Nearest reference reviews").wait_for()
                settled = time.perf_counter() - start
                page.screenshot(path=str(tmp / "explore.png"))
                page.close()
                print(f"  shell {shell:.2f} s, canvas {canvas:.2f} s, drawn {drawn:.2f} s, complete {settled:.2f} s",
                      flush=True)
                return {"app_shell_s": shell, "canvas_attached_s": canvas, "scatter_drawn_s": drawn,
                        "page_complete_s": settled}

            n_points = info.rows + 2000
            warm = load(900_000)
            print(f"first load (model load + scoring + map): {warm['scatter_drawn_s']:.1f} s", flush=True)
            for _ in range(args.runs):
                timings.append(load(120_000))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    drawn = [t["scatter_drawn_s"] for t in timings]
    complete = [t["page_complete_s"] for t in timings]
    result = {
        "points": n_points, "runs": len(timings), "first_load_s": round(warm["scatter_drawn_s"], 2),
        "scatter_drawn_median_s": round(statistics.median(drawn), 2), "scatter_drawn_max_s": round(max(drawn), 2),
        "page_complete_median_s": round(statistics.median(complete), 2), "target_s": TARGET_S,
        "meets_target": statistics.median(drawn) <= TARGET_S, "setup_s": round(setup_s, 1),
        "machine": f"{os.cpu_count()} CPU cores, no GPU, headless Chromium (Debian)",
    }
    print("\n| metric | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    out = REPO / "bench" / "results" / "ui.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")
    if args.keep:
        print(f"kept {tmp} (WORKBENCH_HOME={home})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
