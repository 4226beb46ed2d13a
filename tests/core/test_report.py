"""Rendering a shift report: the JSON contract, a self-contained HTML page that opens offline, the CSV."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import ParameterError
from core.report import report_to_csv, report_to_html, report_to_json, write_report
from core.shift import ShiftReport, compare


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def report() -> ShiftReport:
    rng = np.random.default_rng(0)
    n = 200

    def frame(words: list[str], ratings: list[float]) -> pd.DataFrame:
        return pd.DataFrame({
            "review_id": [f"id-{i}" for i in range(n)],
            "text": [" ".join(rng.choice(words, 7)) for _ in range(n)],
            "rating": rng.choice(ratings, n),
            "helpful_vote": rng.poisson(1.0, n),
            "verified_purchase": rng.random(n) < 0.7,
            "category": "beauty",
        })

    ref = frame(["soap", "lotion", "skin", "smell", "nice"], [1.0, 3.0, 4.0, 5.0, 5.0])
    cur = frame(["soap", "lotion", "gift", "card", "code"], [4.0, 5.0])
    e_ref = _unit(rng.normal(size=(n, 24)) + np.eye(24)[0] * 3)
    e_cur = _unit(rng.normal(size=(n, 24)) + np.eye(24)[0] * 3 + np.eye(24)[1] * 1.5)
    return compare(reference=ref, current=cur, reference_embeddings=e_ref, current_embeddings=e_cur,
                   n_permutations=199)


def test_json_has_the_contract_keys(report: ShiftReport) -> None:
    data = json.loads(report_to_json(report))
    for key in ("drift", "p_value", "tests", "clusters", "n_reference", "n_current", "sample_sizes",
                "explanation", "alpha", "created"):
        assert key in data, key
    assert data["drift"] is True and 0 <= data["p_value"] < 0.05
    assert data["n_reference"] == 200 and data["n_current"] == 200
    for test in data["tests"]:
        assert {"name", "feature", "statistic", "p_value", "effect_size", "drift"} <= set(test)
        assert isinstance(test["drift"], bool)
    assert {t["name"] for t in data["tests"]} >= {"mmd", "classifier", "novelty", "ks", "chi_square"}
    cluster = data["clusters"][0]
    assert {"id", "share_reference", "share_current", "change", "top_terms", "examples"} <= set(cluster)
    assert "scores" not in data
    assert len(json.loads(report_to_json(report, include_scores=True))["scores"]) == 200


def test_html_is_self_contained_and_printable(report: ShiftReport) -> None:
    html = report_to_html(report)
    # plotly.js is inlined, and nothing is fetched from the network.
    assert "Plotly" in html and len(html) > 1_000_000
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=[\"']https?:", html)
    assert "@media print" in html
    assert "Shift detected" in html
    assert html.count('class="plotly-graph-div"') >= 4  # distributions, p-values, clusters, per-review


def test_csv_lists_every_current_review_most_novel_first(report: ShiftReport) -> None:
    frame = pd.read_csv(io.StringIO(report_to_csv(report)))
    assert list(frame.columns) == ["review_id", "shift_p_value", "novelty", "classifier_probability", "cluster"]
    assert len(frame) == 200 and frame["review_id"].str.startswith("id-").all()
    assert frame["shift_p_value"].is_monotonic_increasing


def test_write_report_chooses_the_format_by_suffix(report: ShiftReport, tmp_path: Path) -> None:
    assert json.loads(write_report(report, tmp_path / "out" / "r.json").read_text())["drift"] is True
    assert write_report(report, tmp_path / "r.html").read_text().lstrip().startswith("<!DOCTYPE html>")
    assert write_report(report, tmp_path / "r.csv").read_text().startswith("review_id,")
    with pytest.raises(ParameterError, match=".html, .json or .csv"):
        write_report(report, tmp_path / "r.pdf")


@pytest.mark.slow
@pytest.mark.browser
def test_html_renders_its_figures_offline_in_chromium(report: ShiftReport, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian chromium is not installed")
    path = write_report(report, tmp_path / "report.html")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(offline=True)
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_selector(".plotly-graph-div .main-svg", timeout=20_000)
        assert page.evaluate("typeof window.Plotly") == "object"
        assert page.locator(".plotly-graph-div .main-svg").count() >= 4
        browser.close()
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests
