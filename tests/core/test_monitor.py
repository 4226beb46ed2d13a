"""Run history: what a score or shift check of a stored batch records, replaced not duplicated, in time order;
alerts stored once and delivered; the same history through the CLI, the API and the Monitor page."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.monitor import SCORE, SHIFT, MonitorStore, RunRecord, deliver, time_range
from tests.core.test_alerts import Receiver

WEEK = timedelta(days=7)
T0 = datetime(2026, 1, 5, tzinfo=UTC)
KINDS = ("duplicates", "novelty", "rating_mismatch", "text_form")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.db'}"
    return request.getfixturevalue("postgres_url")


def _score(batch: str, week: int, version: str = "1", flagged: float = 0.05,
           p: dict[str, float] | None = None) -> RunRecord:
    p = p or {}
    kinds = {k: {"flagged_share": flagged / len(KINDS), "p_value": p.get(k, 0.5)} for k in KINDS}
    return RunRecord(batch=batch, record=SCORE, start=T0 + week * WEEK, end=T0 + week * WEEK + timedelta(days=6),
                     time_source="reviews", rows=200, model_version=version, flagged_share=flagged, kinds=kinds)


def _shift(batch: str, week: int, p: float = 0.4, version: str = "1", reference: str = "") -> RunRecord:
    return RunRecord(batch=batch, record=SHIFT, start=T0 + week * WEEK, end=T0 + week * WEEK + timedelta(days=6),
                     time_source="reviews", rows=200, model_version=version, reference=reference, shift_p_value=p,
                     drift=p < 0.05, drifted_features=("rating",) if p < 0.05 else (),
                     grown_clusters=({"status": "new", "change": 0.1, "terms": ["<b>cable</b>", "hdmi"]},))


def seed(url: str, weeks: int = 6) -> MonitorStore:
    """A history of `weeks` batches, recorded out of time order, the last one far off the reference."""
    store = MonitorStore(url)
    for week in reversed(range(weeks)):
        last = week == weeks - 1
        store.record(_score(f"w{week:02d}", week, flagged=0.3 if last else 0.05,
                            p={"novelty": 1e-6} if last else None))
        store.record(_shift(f"w{week:02d}", week, p=0.001 if last else 0.4))
    return store


def test_same_batch_and_model_replaces_its_row(store_url: str) -> None:
    store = MonitorStore(store_url)
    store.record(_score("w01", 1, flagged=0.10))
    store.record(_score("w01", 1, flagged=0.20))  # scored again with the same model: replaced
    assert [(r.batch, r.flagged_share) for r in store.runs()] == [("w01", 0.20)]
    store.record(_score("w01", 1, version="2", flagged=0.15))  # another model: another row
    store.record(_shift("w01", 1, p=0.03, reference="w00"))
    store.record(_shift("w01", 1, p=0.02, reference="w00"))
    assert len(store.runs()) == 3
    points = MonitorStore(store_url).timeline()  # a second process sees the same
    assert [(p.model_version, p.flagged_share, p.shift_p_value) for p in points] == [("1", 0.20, 0.02),
                                                                                     ("2", 0.15, 0.02)]
    assert points[0].drifted_features == ("rating",) and points[0].grown_clusters[0]["terms"] == ["<b>cable</b>", "hdmi"]


def test_history_json_is_in_time_order_with_the_promised_shape(store_url: str) -> None:
    store = seed(store_url)
    store.record(RunRecord(batch="undated", record=SCORE, rows=10, model_version="1", flagged_share=0.0, kinds={},
                           **dict(zip(("start", "end", "time_source"),
                                      time_range(None, None, "2027-01-01T00:00:00+00:00"), strict=True))))
    store.evaluate(0.01)
    body = json.loads(json.dumps(store.history(0.01).as_json()))
    names = [b["batch"] for b in body["batches"]]
    assert names == [f"w{w:02d}" for w in range(6)] + ["undated"]
    first = body["batches"][0]
    assert {"batch", "start", "end", "rows", "model_version", "flagged_share", "kinds", "shift_p_value",
            "drift"} <= set(first)
    assert set(first["kinds"]) == set(KINDS) and set(first["kinds"]["novelty"]) == {"flagged_share", "p_value"}
    assert body["batches"][-1]["start"].startswith("2027-01-01") and body["batches"][-1]["time_source"] == "ingest"
    alerts = body["alerts"]
    assert {(a["batch"], a["kind"]) for a in alerts} == {("w05", "novelty"), ("w05", "shift")}
    assert all({"batch", "kind", "p_value", "level", "created", "delivered"} <= set(a) for a in alerts)
    assert all(a["p_value"] <= a["level"] and a["delivered"] is False for a in alerts)


def test_champion_changes_are_stored_and_marked_at_the_first_batch_their_version_scored(store_url: str) -> None:
    store = seed(store_url)
    store.record_champion("2", "promoted")
    for week in (6, 7):  # scored by the new champion after its promotion
        store.record(_score(f"w{week:02d}", week, version="2"))
    history = MonitorStore(store_url).history(0.01)
    assert [(c.version, c.event) for c in history.champions] == [("2", "promoted")]
    ((point, change),) = history.version_changes()
    assert point.batch == "w06" and change is not None and change.version == "2"
    body = json.loads(json.dumps(history.as_json()))
    assert body["champion_changes"][0]["version"] == "2" and body["champion_changes"][0]["event"] == "promoted"
    store.record_champion("1", "rolled back")
    store.record(_score("w08", 8, version="1"))
    changes = MonitorStore(store_url).history(0.01).version_changes()
    assert [(p.batch, c.event if c else None) for p, c in changes] == [("w06", "promoted"), ("w08", "rolled back")]


def test_alerts_are_stored_once_and_their_delivery_is_recorded(tmp_path: Path) -> None:
    store = seed(f"sqlite:///{tmp_path / 'labels.db'}")
    assert len(store.evaluate(0.01)) == 2
    assert store.evaluate(0.01) == []  # the same evidence raises nothing new
    with Receiver([500, 200, 200]) as receiver:  # fails once, then accepts
        outcomes = deliver(store, receiver.url, retries=3, backoff=0.01)
    assert [(o.delivered, o.attempts) for o in outcomes] == [(True, 2), (True, 1)]
    body = receiver.bodies[-1]
    assert body["source"] == "review-workbench" and body["alert"]["batch"] == "w05"
    assert {"kind", "rule", "p_value", "level", "model_version", "created"} <= set(body["alert"])
    stored = store.alerts()
    assert all(a.delivered for a in stored) and sorted(a.attempts for a in stored) == [1, 2]
    assert deliver(store, receiver.url) == []  # nothing pending


def test_a_webhook_that_stays_down_leaves_the_alert_pending(tmp_path: Path) -> None:
    store = seed(f"sqlite:///{tmp_path / 'labels.db'}")
    store.evaluate(0.01)
    with Receiver([503]) as receiver:
        deliver(store, receiver.url, retries=1, backoff=0.0)
    pending = store.alerts(undelivered=True)
    assert len(pending) == 2 and all(a.attempts == 2 and a.last_error == "HTTP 503" for a in pending)


# -- the Workspace hooks -------------------------------------------------------------------------------------
@pytest.fixture()
def workspace(tmp_path: Path, hashing_embedder, subscription_path: Path, vgames_path: Path):
    from core import pipeline
    from core.pipeline import Workspace
    from core.settings import Settings

    home = tmp_path / "home"
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    undo = pipeline.share_embedder(settings, hashing_embedder)
    ws = Workspace.open(settings)
    for name, path, rows in (("reference", subscription_path, 250), ("current", vgames_path, 150)):
        pd.read_csv(path).head(rows).to_csv(tmp_path / f"{name}.csv", index=False)
        ws.ingest_path(tmp_path / f"{name}.csv", name=name)
    yield ws
    undo()


def test_workspace_records_scores_and_shift_checks_of_stored_batches(workspace, hashing_embedder) -> None:
    from core.bundle import ModelBundle

    ws = workspace
    bundle = ModelBundle.fit(ws.batches.frame("reference"), hashing_embedder, detectors=("knn",), project=False,
                             reference_batch="reference")
    current = ws.batches.frame("current")
    with Receiver([200]) as receiver:
        ws.settings = ws.settings.model_copy(update={"alert_webhook_url": receiver.url})
        ws.score_with(bundle, "7", current)  # a frame that names no batch: not recorded
        assert ws.monitor().runs() == []
        scores = ws.score_with(bundle, "7", current, batch="current")
        ws.score_with(bundle, "7", current, batch="current")  # again: replaced
        ws.compare("reference", "current", n_permutations=100)  # batch names: recorded
        ws.compare(ws.batches.frame("reference"), current, n_permutations=100, record_state=False)  # frames: not
    runs = ws.monitor().runs()
    assert [(r.batch, r.record, r.model_version, r.reference) for r in runs] == [
        ("current", SCORE, "7", ""), ("current", SHIFT, "", "reference")]
    score = runs[0]
    info = ws.batches.info("current")
    assert score.rows == 150 and score.time_source == "reviews"
    assert score.start == datetime.fromisoformat(info.date_min).astimezone(UTC)
    assert score.flagged_share == pytest.approx(float(scores.result.scores["is_outlier"].mean()))
    assert sum(k["flagged_share"] for k in score.kinds.values()) == pytest.approx(score.flagged_share)
    assert {k: v["p_value"] for k, v in score.kinds.items() if k in scores.result.group_evidence} == pytest.approx(
        scores.result.group_evidence)
    point = ws.monitor_history().batches[0]
    assert point.shift_p_value is not None and point.drift is not None
    # Video games against a subscription-box reference: alerts raised, each delivered once.
    alerts = ws.monitor().alerts()
    assert alerts and all(a.delivered and a.attempts == 1 for a in alerts)
    assert len(receiver.bodies) == len(alerts)


def test_a_named_batch_that_is_not_stored_is_placed_by_its_reviews_dates(workspace, hashing_embedder) -> None:
    from core.bundle import ModelBundle

    ws = workspace
    bundle = ModelBundle.fit(ws.batches.frame("reference"), hashing_embedder, detectors=("knn",), project=False,
                             reference_batch="reference")
    current = ws.batches.frame("current").head(120).copy()
    current["timestamp"] = pd.date_range("2026-03-02", periods=len(current), freq="h", tz="UTC")
    ws.score_with(bundle, "7", current, batch="api-week-10")  # a name from an API caller: no stored batch
    undated = current.drop(columns=["timestamp"])
    before = datetime.now(UTC)
    ws.score_with(bundle, "7", undated, batch="api-undated")
    runs = {r.batch: r for r in ws.monitor().runs()}
    dated = runs["api-week-10"]
    assert (dated.start, dated.end, dated.time_source) == (current["timestamp"].min(), current["timestamp"].max(),
                                                           "reviews")
    assert runs["api-undated"].time_source == "ingest" and runs["api-undated"].start >= before
    assert dated.rows == 120 and set(dated.kinds) >= {"novelty"}


def test_a_broken_history_database_does_not_fail_the_score(workspace, hashing_embedder, caplog, monkeypatch) -> None:
    import core.database
    from core.bundle import ModelBundle

    ws = workspace
    bundle = ModelBundle.fit(ws.batches.frame("reference"), hashing_embedder, detectors=("knn",), project=False)
    ws.settings = ws.settings.model_copy(update={"labels_url": "postgresql+psycopg://u:secret@127.0.0.1:1/none"})
    ws._monitor = None
    monkeypatch.setattr(core.database, "CONNECT_RETRIES", (None,))  # fail at once
    scores = ws.score_with(bundle, "1", ws.batches.frame("current"), batch="current")
    assert len(scores.result.scores) == 150
    assert "run history was not updated" in caplog.text and "secret" not in caplog.text


# -- faces ---------------------------------------------------------------------------------------------------
def test_cli_monitor_prints_the_history_and_alerts(home: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core.settings import get_settings

    store = seed(get_settings().resolved_labels_url)
    store.evaluate(get_settings().alert_level)
    runner = CliRunner()
    result = runner.invoke(app, ["monitor", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [b["batch"] for b in body["batches"]] == [f"w{w:02d}" for w in range(6)] and len(body["alerts"]) == 2
    text = runner.invoke(app, ["monitor"])
    assert text.exit_code == 0 and "ALERT w05: novelty" in text.stdout and "6 batches; 2 alerts" in text.stdout
    assert "set WORKBENCH_ALERT_WEBHOOK_URL" in text.stdout, "without a webhook the CLI says how to get alerts sent"


def test_api_monitor_needs_the_key_and_answers_the_history(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import Settings

    settings = Settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
                        api_keys=["k-123"])
    seed(settings.resolved_labels_url).evaluate(settings.alert_level)
    with TestClient(create_app(settings)) as client:
        assert client.get("/monitor").status_code == 401
        response = client.get("/monitor", headers={"X-API-Key": "k-123"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [b["batch"] for b in body["batches"]] == [f"w{w:02d}" for w in range(6)]
    assert body["batches"][-1]["kinds"]["novelty"]["p_value"] == pytest.approx(1e-6)
    assert {a["kind"] for a in body["alerts"]} == {"novelty", "shift"} and body["level"] == 0.01


def test_monitor_page_shows_the_timeline_table_and_downloads(home: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from core.settings import get_settings

    store = seed(get_settings().resolved_labels_url)
    store.evaluate(0.01)
    store.record_champion("2", "promoted")
    store.record(_score("w06", 6, version="2"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "monitor.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join(str(m.value) for m in at.markdown)
    # through `plain`: Markdown punctuation escaped, so Streamlit shows exactly these characters
    assert "w05\\: novelty \\(batch rule\\)" in shown and "w05\\: shift" in shown
    assert len(at.get("download_button")) == 2
    table = next(d.value for d in at.dataframe if "batch" in d.value.columns)
    assert list(table["batch"]) == [f"w{w:02d}" for w in range(7)]
    assert [e.label for e in at.expander] == ["Champion changes (1)"]
    assert len(at.get("vega_lite_chart")) == 1  # the timeline
    assert "<b>cable</b>, hdmi" in set(table["grown_cluster_terms"])  # as text, in the table
    assert "Alerts promise at most 0.01 false alarms per batch" in "\n".join(str(c.value) for c in at.caption)


def test_cli_score_and_the_dag_task_record_the_batch_and_deliver_alerts(
    home: Path, tmp_path: Path, hashing_embedder, subscription_path: Path, vgames_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core import orchestration, pipeline
    from core.pipeline import Workspace
    from core.settings import get_settings

    with Receiver([500, 200]) as receiver:  # the first delivery fails once, then the receiver accepts
        monkeypatch.setenv("WORKBENCH_ALERT_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("WORKBENCH_ALERT_WEBHOOK_BACKOFF", "0.01")
        get_settings.cache_clear()
        settings = get_settings()
        undo = pipeline.share_embedder(settings, hashing_embedder)
        try:
            ws = Workspace.open(settings)
            for name, path, rows in (("reference", subscription_path, 250), ("current", vgames_path, 150)):
                pd.read_csv(path).head(rows).to_csv(tmp_path / f"{name}.csv", index=False)
                ws.ingest_path(tmp_path / f"{name}.csv", name=name)
            ws.train("reference", detectors=("knn",), project=False, use_labels=False)
            result = CliRunner().invoke(app, ["score", "current", "--out", str(tmp_path / "scored.csv")])
            assert result.exit_code == 0, result.output
            assert "ALERT on current: novelty" in result.stdout
            again = CliRunner().invoke(app, ["score", "current", "--out", str(tmp_path / "scored.csv")])
            assert again.exit_code == 0, again.output
            # The same batch scored again with the same model raises nothing new: its alerts are counted, not repeated.
            assert "ALERT on" not in again.stdout and "earlier alerts on current" in again.stdout
            outcome = orchestration.shift_against_champion("current", "1", n_permutations=100, settings=settings)
        finally:
            undo()
    runs = ws.monitor().runs()
    assert {(r.record, r.model_version) for r in runs if r.batch == "current"} == {(SCORE, "1"), (SHIFT, "1")}
    assert [(c.version, c.event) for c in ws.monitor().champion_changes()] == [("1", "promoted")]  # first model
    assert outcome["alerts"] == len(ws.monitor().alerts()) > 0
    assert all(a.delivered for a in ws.monitor().alerts())
    assert len(receiver.bodies) == len(ws.monitor().alerts()) + 1  # one retried


def test_the_demo_scores_its_current_batch_once_so_monitor_has_a_first_point(
    home: Path, tmp_path: Path, hashing_embedder, subscription_path: Path, vgames_path: Path,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core import pipeline
    from core.demo import DEMO_FILES
    from core.pipeline import Workspace
    from core.settings import get_settings

    data = tmp_path / "data"
    for (_, rel, _), path, rows in zip(DEMO_FILES, (subscription_path, vgames_path), (250, 150), strict=True):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        pd.read_csv(path).head(rows).to_csv(data / rel, index=False)
    settings = get_settings()
    undo = pipeline.share_embedder(settings, hashing_embedder)
    try:
        first = CliRunner().invoke(app, ["demo", "--data", str(data), "--no-serve"])
        again = CliRunner().invoke(app, ["demo", "--data", str(data), "--no-serve"])
    finally:
        undo()
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert "video-games scored with version 1" in first.stdout and "first point on Monitor" in first.stdout
    assert "scored with version" not in again.stdout, "a second demo run leaves the recorded score alone"
    runs = Workspace.open(settings).monitor().runs()
    assert [(r.batch, r.record, r.model_version) for r in runs] == [("video-games", SCORE, "1")]
