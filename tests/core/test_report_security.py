"""A shift report built from hostile reviews: nothing in them runs, loads or links when a colleague opens it."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.report import report_to_csv, report_to_html, write_report
from core.shift import ShiftReport, compare

#: Reviews written to attack whoever reads them: script, event handler, a closing tag, Markdown link and image.
HOSTILE = (
    "<script>document.title='pwned'</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
    "</script><script>alert(1)</script>",
    "[click](javascript:alert(1))",
    "![x](http://127.0.0.1:9/beacon.png)",
)
TITLE = "Shift report"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def report() -> ShiftReport:
    """Every current review, id and category carries a hostile string; the current batch has shifted."""
    rng = np.random.default_rng(0)
    n = 200

    def frame(hostile: bool) -> pd.DataFrame:
        words = ["soap", "lotion", "gift", "card", "code"] if hostile else ["soap", "lotion", "skin", "smell", "nice"]
        texts = [" ".join(rng.choice(words, 4)) for _ in range(n)]
        return pd.DataFrame({
            "review_id": [f"{HOSTILE[i % 5]} #{i}" if hostile else f"id-{i}" for i in range(n)],
            "text": [f"{HOSTILE[i % 5]} {t}" if hostile else t for i, t in enumerate(texts)],
            "rating": rng.choice([1.0, 5.0] if hostile else [3.0, 4.0], n),
            "helpful_vote": rng.poisson(1.0, n),
            "verified_purchase": rng.random(n) < 0.7,
            "category": [HOSTILE[i % 3] for i in range(n)] if hostile else "beauty",
        })

    e_ref = _unit(rng.normal(size=(n, 24)) + np.eye(24)[0] * 3)
    e_cur = _unit(rng.normal(size=(n, 24)) + np.eye(24)[0] * 3 + np.eye(24)[1] * 1.5)
    return compare(reference=frame(False), current=frame(True), reference_embeddings=e_ref,
                   current_embeddings=e_cur, n_permutations=99)


def test_the_report_carries_the_hostile_strings(report: ShiftReport) -> None:
    """Guard for the tests below: the strings reach the page through ids, cluster examples and categories."""
    examples = " ".join(e for c in report.clusters for e in c.examples)
    assert any(h in examples for h in HOSTILE)
    assert any(h in b for d in report.distributions for b in d.bins for h in HOSTILE)


def test_html_escapes_review_text_and_no_string_ends_a_script(report: ShiftReport) -> None:
    html = report_to_html(report, title=TITLE)
    for raw in ("<img src=x", "<script>document.title", "<script>alert(1)"):
        assert raw not in html, raw
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    # One <script> for plotly.js and one per figure, each closed once: no review closed or opened one.
    figures = html.count('class="plotly-graph-div"')
    assert figures >= 4
    assert len(re.findall(r"<script\b", html)) == len(re.findall(r"</script", html)) == figures + 1


def test_csv_of_scores_is_spreadsheet_safe(report: ShiftReport) -> None:
    csv = report_to_csv(report)
    frame = pd.read_csv(io.StringIO(csv))
    assert pd.api.types.is_float_dtype(frame["shift_p_value"])
    first_cells = [line.split(",")[0].lstrip('"') for line in csv.splitlines()[1:]]
    assert not [c for c in first_cells if c[:1] in ("=", "+", "-", "@")]


@pytest.mark.slow
@pytest.mark.browser
def test_opened_in_chromium_nothing_runs_loads_or_links(report: ShiftReport, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian chromium is not installed")
    path = write_report(report, tmp_path / "report.html")
    requests: list[str] = []
    dialogs: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_selector(".plotly-graph-div .main-svg", timeout=20_000)
            page.wait_for_timeout(500)  # a late onerror or timer would have fired by now
            title = page.title()
            shown = page.locator("body").inner_text()
            injected = page.evaluate(
                """() => ({
                    images: document.querySelectorAll('img, iframe, object, embed').length,
                    handlers: [...document.querySelectorAll('*')].filter(
                        e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
                    links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
                        .filter(h => !h.startsWith('#')),
                })"""
            )
        finally:
            browser.close()
    assert title == TITLE
    assert dialogs == []
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests
    assert injected == {"images": 0, "handlers": 0, "links": []}, injected
    for hostile in HOSTILE:
        assert hostile in shown, hostile
