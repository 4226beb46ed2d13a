"""The workbench in a real browser: `streamlit run` headless, Debian Chromium driven by Playwright."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.homes import copy_home
from tests.servers import free_port, stop, wait_http

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-output" / "ui"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(trained_workspace, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium missing: apt-get install -y chromium fonts-noto-color-emoji")
    pytest.importorskip("playwright.sync_api")
    home = tmp_path_factory.mktemp("browser-home") / "home"
    copy_home(trained_workspace.settings.home, home)  # the test labels and uploads: keep the shared one clean
    cache = session_home / "cache" / "embeddings.sqlite"
    if cache.exists():  # reviews the session already embedded are not embedded again by the server
        (home / "cache").mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(cache) as src, sqlite3.connect(home / "cache" / "embeddings.sqlite") as dst:
            src.backup(dst)
    port = free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path_factory.mktemp("streamlit-log") / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "workbench" / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=90, process=proc)
        yield f"http://127.0.0.1:{port}", home
    finally:
        stop(proc, timeout=15)
        log.close()


@pytest.fixture(scope="module")
def page(server: tuple[str, Path]):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(120_000)
        yield tab
        browser.close()


def open_page(page, server: str, path: str, text: str) -> None:
    page.goto(f"{server}/{path}")
    page.wait_for_selector('[data-testid="stApp"]')
    page.get_by_text(text, exact=False).first.wait_for()
    settle(page)


def settle(page) -> None:
    """Wait until Streamlit finished the rerun (no running indicator)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')"
    )


def assert_no_exception(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {name}"


def test_every_page_in_a_real_browser(page, server: tuple[str, Path], tmp_path: Path) -> None:
    url, home = server
    open_page(page, url, "", "Champion v1")
    assert_no_exception(page, "home")

    # Data: one real upload through the file input.
    upload = tmp_path / "browser-upload.csv"
    # A column the loader does not know by name ("Wertung") is mapped in the page.
    upload.write_text("text,Wertung\nThe card arrived on time and worked,5\n,2\nWrong product sent to me,1\n")
    open_page(page, url, "data", "Stored batches")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(upload))
    page.get_by_text("Batch name for browser-upload.csv").wait_for()
    page.get_by_role("textbox", name="Column mapping for browser-upload.csv (optional)").fill("rating=Wertung")
    page.keyboard.press("Enter")
    settle(page)
    page.get_by_role("button", name="Store uploaded files").click()
    page.get_by_text("stored as").first.wait_for()
    settle(page)
    assert page.get_by_text("browser-upload", exact=False).count() > 0
    page.get_by_text("rating <- Wertung", exact=False).first.wait_for()  # open: a row was quarantined
    assert_no_exception(page, "data")

    open_page(page, url, "train", "Champion and challenger")
    assert_no_exception(page, "train")

    # Explore: the WebGL scatter is drawn.
    open_page(page, url, "explore", "Colour by")
    page.wait_for_selector(".js-plotly-plot .gl-container canvas, .js-plotly-plot canvas", state="attached")
    page.get_by_text("Nearest reference reviews").wait_for()
    assert_no_exception(page, "explore")

    # Label: one label through the buttons.
    open_page(page, url, "label", "Labelled in this batch")
    page.get_by_role("button", name="Outlier").click()
    page.get_by_text("labelled outlier").wait_for()
    page.get_by_text("1 outlier and 0 normal labels").wait_for()  # the rerun after the click has finished
    settle(page)
    assert_no_exception(page, "label")
    from core.labels import LabelStore

    stored = LabelStore(f"sqlite:///{home / 'labels.db'}").latest()
    assert list(stored["label"]) == ["outlier"]
    # ... and a labels file through the import on the same page: one review of the batch, one unknown id.
    labels_file = tmp_path / "more-labels.csv"
    labels_file.write_text(f"review_id,label\n{stored['review_id'][0]},normal\nno-such-review,outlier\n")
    page.get_by_text("Import labels (CSV)").click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(labels_file))
    page.get_by_text("more-labels.csv").first.wait_for()
    page.get_by_role("button", name="Import labels").click()
    page.get_by_text("2 labels imported from more-labels.csv").wait_for()
    assert page.get_by_text("1 of 2 labelled reviews are in no stored batch", exact=False).count() > 0
    settle(page)
    assert_no_exception(page, "label")
    latest = LabelStore(f"sqlite:///{home / 'labels.db'}").latest().set_index("review_id")["label"]
    assert latest[stored["review_id"][0]] == "normal" and latest["no-such-review"] == "outlier"

    open_page(page, url, "shift", "Run shift check")
    assert_no_exception(page, "shift")

    open_page(page, url, "models", "Registered versions")
    assert_no_exception(page, "models")
