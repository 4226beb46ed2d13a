"""The review history follows the stored batches: added at ingest, replaced, removed, synced after a repair."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.campaigns.behaviour import PREFIX
from core.pipeline import Workspace
from tests.core.campaigns.planted import planted_campaign, steady_reviews

HOSTILE = ["<script>alert(1)</script>", "=HYPERLINK(\"http://x\")", "x" * 10_000, "[red]markup[/red]"]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.assign(timestamp=frame["timestamp"].astype(str)).to_csv(path, index=False)
    return path


@pytest.fixture()
def ws(home: Path) -> Workspace:
    return Workspace.open()


def test_ingest_adds_replaces_and_delete_removes(ws: Workspace, tmp_path: Path) -> None:
    first = steady_reviews(n_products=2, days=60, seed=5)
    ws.ingest_path(_write(first, tmp_path / "a.csv"), name="week-a")
    assert ws.history().count() == len(first)
    second = planted_campaign("p1", accounts=6, at_day=30)
    ws.ingest_path(_write(second, tmp_path / "b.csv"), name="week-b")
    assert ws.history().count() == len(first) + len(second)
    ws.ingest_path(_write(second.head(3), tmp_path / "b2.csv"), name="week-b")  # a new version replaces the old
    assert ws.history().count() == len(first) + 3
    ws.delete_batch("week-b")
    assert ws.history().count() == len(first)
    assert set(ws.history().batches()) == {"week-a"}


def test_a_new_process_syncs_the_history_with_the_stored_batches(ws: Workspace, tmp_path: Path) -> None:
    frame = steady_reviews(n_products=2, days=30, seed=6)
    ws.ingest_path(_write(frame, tmp_path / "a.csv"), name="kept")
    ws.ingest_path(_write(frame.head(20), tmp_path / "b.csv"), name="gone")
    ws.batches.delete("gone")  # removed behind the workspace's back (by hand, a restore)
    fresh = Workspace.open(ws.settings)
    assert set(fresh.history().batches()) == {"kept"}
    assert fresh.history().count() == len(frame)


def test_scoring_sees_earlier_batches_of_the_same_reviewers(ws: Workspace, tmp_path: Path) -> None:
    earlier = pd.DataFrame({"review_id": ["e1", "e2"], "user_id": ["alice", "alice"], "product_id": ["p9", "p8"],
                            "rating": [4.0, 2.0], "text": ["ok", "meh"],
                            "timestamp": pd.to_datetime(["2023-05-01", "2023-06-01"], utc=True)})
    ws.ingest_path(_write(earlier, tmp_path / "e.csv"), name="earlier")
    now = pd.DataFrame({"review_id": ["n1", "n2"], "user_id": ["alice", None], "product_id": ["p9", "p9"],
                        "rating": [5.0, 5.0], "text": ["great", "great too"],
                        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True)})
    out = ws.with_behaviour(now)
    assert out[PREFIX + "reviewer_reviews"].iloc[0] == 3
    assert pd.isna(out[PREFIX + "reviewer_reviews"].iloc[1])  # no reviewer id: absent, not guessed
    assert out[PREFIX + "product_rank"].tolist() == [2, 3]


def test_campaign_report_finds_the_window_and_keeps_hostile_ids_verbatim(ws: Workspace, tmp_path: Path) -> None:
    steady = steady_reviews(n_products=3, days=150, seed=7)
    plant = planted_campaign("p2", accounts=8, at_day=100)
    plant["user_id"] = [HOSTILE[i % len(HOSTILE)] + str(i) for i in range(len(plant))]
    ws.ingest_path(_write(pd.concat([steady, plant], ignore_index=True), tmp_path / "c.csv"), name="current")
    report = ws.campaigns("current")
    assert report.coverage.with_reviewer == len(steady) + len(plant)
    assert report.windows and report.windows[0].product_id == "p2"
    assert set(plant["review_id"]) <= set(report.windows[0].review_ids)
    data = report.as_json()
    assert HOSTILE[2] + "2" in data["windows"][0]["user_ids"]  # a 10 kB id comes back whole
    assert data["coverage"]["summary"].startswith("all ")
