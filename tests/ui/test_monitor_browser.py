"""The Monitor page with a year of weekly batches, in a real browser (`streamlit run` headless, Debian Chromium).

The history is written straight into the run history (no model needed). How fast the page draws is measured by
``bench/monitor_ui.py``, not asserted here: this test checks that every batch and every alert reaches the chart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.monitor import SCORE, SHIFT, Alert, MonitorStore, RunRecord
from tests.servers import free_port, stop, wait_http

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = REPO / "test-output" / "ui"
WEEKS = 52
KINDS = ("duplicate", "novelty", "rating_mismatch", "text_form")
T0 = datetime(2025, 12, 1, tzinfo=UTC)  # a Monday
#: Planted evidence: (week, member, p-value); everything else is drawn from U(0.05, 1).
PLANTED = ((20, "novelty", 1e-7), (33, "duplicate", 1e-6), (47, "shift", 1e-5))
MODEL_CHANGE = 26  # from this week on the batches are scored by model version 2

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def seed_history(url: str, weeks: int = WEEKS, level: float = 0.01) -> list[Alert]:
    """`weeks` weekly batches, each scored and shift-checked, with the planted evidence; returns the alerts
    the product's rules raised on them (stored, as after each real record)."""
    store = MonitorStore(url)
    rng = np.random.default_rng(52)
    planted = {(w, m): p for w, m, p in PLANTED}
    for week in range(weeks):
        start = T0 + timedelta(weeks=week)
        end = start + timedelta(days=6, hours=22)
        batch, version = f"week-{week + 1:02d}", "2" if week >= MODEL_CHANGE else "1"
        rows = int(rng.integers(150, 400))
        kinds = {k: {"flagged_share": float(rng.uniform(0.0, 0.03)),
                     "p_value": planted.get((week, k), float(rng.uniform(0.05, 1.0)))} for k in KINDS}
        shift_p = planted.get((week, "shift"), float(rng.uniform(0.05, 1.0)))
        store.record(RunRecord(batch=batch, record=SCORE, start=start, end=end, time_source="reviews", rows=rows,
                               model_version=version, kinds=kinds,
                               flagged_share=sum(v["flagged_share"] for v in kinds.values())))
        store.record(RunRecord(batch=batch, record=SHIFT, start=start, end=end, time_source="reviews", rows=rows,
                               model_version=version, shift_p_value=shift_p, drift=shift_p < 0.05,
                               drifted_features=("rating",) if shift_p < 0.05 else (),
                               grown_clusters=({"status": "new", "change": 0.12, "terms": ["refund", "scam"]},)
                               if shift_p < 0.05 else ()))
        store.evaluate(level)
    return store.alerts()


def monitor_server(home: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run` of the workbench on a free loopback port, with `home` as WORKBENCH_HOME."""
    port = free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    for name in ("MLFLOW_TRACKING_URI", "WORKBENCH_LABELS_URL", "WORKBENCH_ALERT_WEBHOOK_URL"):
        env.pop(name, None)
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "workbench" / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()  # the child holds its own handle
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_stcore/health", timeout=90, process=proc)
    except Exception:
        stop(proc)
        raise
    return proc, url


#: True once the timeline is drawn: Vega rendered the chart into a canvas (or an SVG) of non-zero size.
DRAWN = ("() => { const c = document.querySelector('[data-testid=\"stVegaLiteChart\"] canvas, '"
         " + '[data-testid=\"stVegaLiteChart\"] svg.marks');"
         " return !!c && c.getBoundingClientRect().width > 0 && c.getBoundingClientRect().height > 0; }")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Alert], str]]:
    """The page's URL, the alerts the seeded history raised, and the history's database URL."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium missing: apt-get install -y chromium fonts-noto-color-emoji")
    pytest.importorskip("playwright.sync_api")
    from core.settings import Settings

    home = tmp_path_factory.mktemp("monitor-home") / "home"
    store_url = Settings(home=home).resolved_labels_url
    alerts = seed_history(store_url)
    proc, url = monitor_server(home, tmp_path_factory.mktemp("streamlit-log") / "streamlit.log")
    try:
        yield url, alerts, store_url
    finally:
        stop(proc, timeout=15)


def test_monitor_page_draws_a_year_of_batches_and_their_alerts(seeded: tuple[str, list[Alert], str]) -> None:
    from playwright.sync_api import sync_playwright

    url, alerts, _ = seeded
    # The planted evidence raised its alerts (and the uniform weeks around it, if any, are shown too).
    assert {(a.batch, a.kind) for a in alerts} >= {("week-21", "novelty"), ("week-34", "duplicate"),
                                                   ("week-48", "shift")}
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/monitor")
            page.wait_for_selector('[data-testid="stApp"]')
            page.wait_for_function(DRAWN)
            page.get_by_text(f"Alerts ({len(alerts)})").wait_for()
            page.screenshot(path=str(SHOTS / "monitor-52.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stVegaLiteChart"]').count() == 1
            listed = page.locator('[data-testid="stMarkdownContainer"]').all_inner_texts()
            assert any("week-48: shift (batch rule)" in t for t in listed)
            page.close()
        finally:
            browser.close()


def test_the_timeline_holds_every_batch_alert_level_and_model_change(seeded: tuple[str, list[Alert], str]) -> None:
    """What the chart draws (`workbench.charts.timeline_frames`, the tables behind its marks) for the same history."""
    from workbench.charts import ALL, SHIFT, timeline_frames

    _, alerts, store_url = seeded
    history = MonitorStore(store_url).history(0.01)
    frames = timeline_frames(history, KINDS, batch_level=0.005, family=len(KINDS) + 1)
    counts = frames["shares"].groupby("series")["time"].count().to_dict()
    assert counts == {ALL: WEEKS, **{f"flagged: {k}": WEEKS for k in KINDS}}
    assert len(frames["p_values"]) == WEEKS and set(frames["p_values"]["series"]) == {SHIFT}
    # Every stored alert is a marker on the timeline, named by its batch, kind and rule.
    assert sorted(frames["alerts"]["alert"]) == sorted(f"{a.batch}: {a.kind} ({a.rule} rule)" for a in alerts)
    assert sorted(frames["levels"]["p"]) == pytest.approx([0.001, 0.005])
    assert list(frames["changes"]["label"]) == ["v2"]  # one model change, no promotion recorded in this history


def test_the_timeline_is_valid_vega_lite_holding_those_tables(seeded: tuple[str, list[Alert], str]) -> None:
    """The spec the page hands to Streamlit passes Vega-Lite's own schema (Altair's validator, the version
    Streamlit draws), and its marks carry the tables above with times as ISO strings."""
    import altair as alt

    from workbench.charts import VEGA_LITE_SCHEMA, timeline_chart, timeline_frames

    _, _, store_url = seeded
    history = MonitorStore(store_url).history(0.01)
    spec = timeline_chart(history, KINDS, batch_level=0.005, family=len(KINDS) + 1)
    assert VEGA_LITE_SCHEMA == alt.SCHEMA_URL
    alt.LayerChart.from_dict(spec, validate=True)  # raises on any property Vega-Lite does not know
    json.dumps(spec)  # plain JSON: nothing left for Streamlit to convert
    left, right = spec["layer"]
    shares, alerts = left["layer"][0]["data"]["values"], right["layer"][-1]["data"]["values"]
    frames = timeline_frames(history, KINDS, batch_level=0.005, family=len(KINDS) + 1)
    assert len(shares) == len(frames["shares"]) and len(alerts) == len(frames["alerts"])
    assert shares[0]["time"] == frames["shares"]["time"].iloc[0].isoformat()


def test_a_history_within_one_day_gets_a_timeline_some_days_wide(tmp_path: Path) -> None:
    """One recorded batch: the time axis spans days either side of it (not the few seconds Vega would pick,
    ticked in seconds), and the spec still passes Vega-Lite's schema."""
    import altair as alt

    from workbench.charts import timeline_chart

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    seed_history(url, weeks=1)
    spec = timeline_chart(MonitorStore(url).history(0.01), KINDS, batch_level=0.005, family=len(KINDS) + 1)
    alt.LayerChart.from_dict(spec, validate=True)
    lo, hi = (datetime.fromisoformat(t) for t in spec["layer"][0]["layer"][0]["encoding"]["x"]["scale"]["domain"])
    assert lo < T0 < hi and hi - lo == timedelta(days=6)
    seed_history(url, weeks=3)
    wide = timeline_chart(MonitorStore(url).history(0.01), KINDS, batch_level=0.005, family=len(KINDS) + 1)
    assert "scale" not in wide["layer"][0]["layer"][0]["encoding"]["x"], "weeks of batches keep Vega's own axis"
