"""`workbench campaigns` and GET /campaigns on a stored batch with a planted campaign (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from tests.cli.test_cli import run_cli
from tests.core.campaigns.planted import planted_campaign, steady_reviews


def _batch_file(tmp_path: Path) -> Path:
    frame = pd.concat([steady_reviews(n_products=3, days=120, seed=11),
                       planted_campaign("p1", accounts=8, at_day=90)], ignore_index=True)
    frame.loc[frame.index[-1], "user_id"] = "=cmd|' /C calc'!A0"
    frame.loc[frame.index[-2], "product_id"] = None
    path = tmp_path / "week.csv"
    frame.assign(timestamp=frame["timestamp"].astype(str)).to_csv(path, index=False)
    return path


def test_campaigns_command_json_and_text(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("ingest", str(_batch_file(tmp_path)), "--name", "week", home=home).returncode == 0
    result = run_cli("campaigns", "week", "--json", home=home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["windows"] and data["windows"][0]["product_id"] == "p1"
    assert "=cmd|' /C calc'!A0" in data["windows"][0]["user_ids"]  # ids verbatim for machines
    assert data["coverage"]["with_product_time"] == data["coverage"]["reviews"] - 1
    text = run_cli("campaigns", "week", home=home)
    assert text.returncode == 0, text.stderr
    assert "1 of" in text.stdout and "have no product id or date" in text.stdout
    assert "window: " in text.stdout
    missing = run_cli("campaigns", "nope", home=home)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_campaigns_endpoint(tmp_path: Path, monkeypatch) -> None:
    from api.main import create_app
    from core.pipeline import Workspace
    from core.settings import Settings

    home = tmp_path / "home"
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    Workspace.open(settings).ingest_path(_batch_file(tmp_path), name="week")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/campaigns", params={"batch": "week"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["windows"][0]["product_id"] == "p1" and body["windows"][0]["p_value"] < 1e-3
        assert client.get("/campaigns", params={"batch": "nope"}).status_code == 404
        assert client.get("/campaigns", params={"batch": "week", "level": 2}).status_code == 422
