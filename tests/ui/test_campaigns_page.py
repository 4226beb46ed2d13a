"""The Campaigns page through Streamlit's AppTest: a stored batch with a planted burst, no model needed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from tests.core.campaigns.planted import planted_campaign, steady_reviews

PAGE = Path(__file__).resolve().parents[2] / "pages" / "campaigns.py"


def test_campaigns_page_shows_the_window_and_labels_it(home: Path, tmp_path: Path) -> None:
    from core.pipeline import Workspace

    frame = pd.concat([steady_reviews(n_products=3, days=120, seed=11),
                       planted_campaign("p1", accounts=8, at_day=90)], ignore_index=True)
    path = tmp_path / "week.csv"
    frame.assign(timestamp=frame["timestamp"].astype(str)).to_csv(path, index=False)
    ws = Workspace.open()
    ws.ingest_path(path, name="week")
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Burst windows"] == "1"
    at.button[0].click().run()
    assert not at.exception
    labelled = set(ws.labels().as_series().index.astype(str))
    assert {f"c{a}-0" for a in range(8)} <= labelled
