"""The pipeline steps the DAG calls, without Airflow: pick-up, validation gate, promotion rule, archive, and one
whole run against an S3-protocol server (moto) with the real embedding model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core import orchestration as orch
from core.errors import InputFileError, NotFoundError, ParameterError, SchemaError
from core.orchestration import PromotionRule, decide_promotion
from core.pipeline import Workspace
from core.settings import Settings
from tests.servers import s3_server


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Settings(home=tmp_path / "home", tracking_uri=None)


@pytest.fixture()
def games_csv(tmp_path: Path, vgames_path: Path) -> bytes:
    path = tmp_path / "games.csv"
    pd.read_csv(vgames_path).head(60).to_csv(path, index=False)
    return path.read_bytes()


# -- pick up -------------------------------------------------------------------------------------------
def test_pick_new_batch_takes_the_first_review_file_by_name(settings: Settings) -> None:
    assert orch.pick_new_batch(settings=settings) is None
    storage = Workspace.open(settings).storage
    storage.put_bytes("incoming/README.txt", b"not reviews")
    storage.put_bytes("incoming/2026-11-28.csv", b"text\nfine\n")
    storage.put_bytes("incoming/2026-11-27.jsonl.gz", b"")
    storage.put_bytes("elsewhere/2026-01-01.csv", b"text\nfine\n")
    assert orch.pick_new_batch(settings=settings) == "incoming/2026-11-27.jsonl.gz"
    assert orch.pick_new_batch("elsewhere", settings=settings) == "elsewhere/2026-01-01.csv"


def test_batch_name_comes_from_the_file_name() -> None:
    assert orch.batch_name_for("incoming/week 48.csv.gz") == "week-48"


# -- validate + store ---------------------------------------------------------------------------------------
def test_ingest_stores_a_valid_file_as_a_batch(settings: Settings, games_csv: bytes) -> None:
    ws = Workspace.open(settings)
    ws.storage.put_bytes("incoming/games.csv", games_csv)
    assert orch.ingest_batch("incoming/games.csv", settings=settings) == "games"
    assert ws.batches.info("games").rows == 60
    assert ws.storage.exists("incoming/games.csv")  # archived only once the whole run succeeded


def test_unreadable_file_is_set_aside_with_its_reason(settings: Settings) -> None:
    ws = Workspace.open(settings)
    ws.storage.put_bytes("incoming/broken.csv", b"rating,title\n5,no text column here\n")
    with pytest.raises(InputFileError, match="no review text column") as first:
        orch.ingest_batch("incoming/broken.csv", settings=settings)
    assert not ws.storage.exists("incoming/broken.csv")
    assert ws.storage.exists("rejected/broken.csv")
    assert ws.storage.get_bytes("rejected/broken.csv.reason.txt").decode() == str(first.value)
    assert orch.pick_new_batch(settings=settings) is None  # the next run moves on
    with pytest.raises(SchemaError, match="rejected earlier"):  # a retry of the same task says why
        orch.ingest_batch("incoming/broken.csv", settings=settings)
    assert not ws.batches.exists("broken")


def test_too_many_quarantined_rows_reject_the_file(settings: Settings, games_csv: bytes) -> None:
    lines = games_csv.decode().splitlines()
    header = lines[0].split(",")
    empty_text = ",".join("" if h == "text" else "4" for h in header)  # rows without text are quarantined
    data = "\n".join([*lines[:11], *[empty_text] * 10]).encode()
    ws = Workspace.open(settings)
    ws.storage.put_bytes("incoming/half.csv", data)
    with pytest.raises(SchemaError, match="quarantined"):
        orch.ingest_batch("incoming/half.csv", max_quarantine_share=0.2, settings=settings)
    assert not ws.batches.exists("half")
    assert ws.storage.exists("rejected/half.csv")


def test_missing_object_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="incoming/none.csv"):
        orch.ingest_batch("incoming/none.csv", settings=settings)


# -- promotion rule ------------------------------------------------------------------------------------------
def _evaluation(old: float, new: float, n: float = 20) -> dict[str, dict[str, float]]:
    return {"champion": {"average_precision": old, "n_labelled": n},
            "challenger": {"average_precision": new, "n_labelled": n}}


def test_rule_promotes_without_regression_and_refuses_a_drop() -> None:
    rule = PromotionRule()
    assert decide_promotion(_evaluation(0.5, 0.6), {}, rule).promote
    assert decide_promotion(_evaluation(0.5, 0.5), {}, rule).promote
    refused = decide_promotion(_evaluation(0.6, 0.5), {}, rule)
    assert not refused.promote and "0.600 -> 0.500" in refused.reason
    assert decide_promotion(_evaluation(0.6, 0.55), {}, PromotionRule(max_drop=0.1)).promote


def test_rule_with_too_few_labels_follows_without_labels() -> None:
    few = _evaluation(0.9, 0.1, n=3)
    assert decide_promotion(few, {}, PromotionRule(min_labels=10)).promote
    assert not decide_promotion(few, {}, PromotionRule(min_labels=10, without_labels=False)).promote
    assert decide_promotion({"champion": {}, "challenger": {}}, {}, PromotionRule()).promote


def test_rule_can_block_on_drift() -> None:
    shift = {"drift": True, "p_value": 0.001}
    assert decide_promotion(_evaluation(0.5, 0.6), shift, PromotionRule()).promote
    blocked = decide_promotion(_evaluation(0.5, 0.6), shift, PromotionRule(block_on_drift=True))
    assert not blocked.promote and "drifted" in blocked.reason


@pytest.mark.parametrize("bad", [{"metric": "accuracy"}, {"max_drop": -0.1}])
def test_rule_rejects_bad_settings(bad: dict) -> None:
    with pytest.raises(ParameterError):
        PromotionRule(**bad)


# -- archive ------------------------------------------------------------------------------------------------
def test_archive_moves_the_file_and_is_safe_to_retry(settings: Settings) -> None:
    ws = Workspace.open(settings)
    ws.storage.put_bytes("incoming/a.csv", b"text\nx\n")
    assert orch.archive_batch("incoming/a.csv", {"promoted": True}, settings=settings) == "processed/a.csv"
    assert orch.archive_batch("incoming/a.csv", settings=settings) == "processed/a.csv"  # a retry
    assert ws.storage.list("incoming/") == []
    assert ws.storage.get_bytes("processed/a.csv") == b"text\nx\n"
    assert json.loads(ws.storage.get_bytes("processed/a.csv.run.json"))["promoted"] is True
    with pytest.raises(NotFoundError):
        orch.archive_batch("incoming/never.csv", settings=settings)


# -- one whole run against an S3-protocol server ----------------------------------------------------------
@pytest.mark.slow
def test_whole_run_against_s3_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, subscription_path: Path,
    vgames_path: Path, embedder,
) -> None:
    from core import pipeline
    from tests.seeding import seed_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with s3_server() as endpoint:
        settings = Settings(home=tmp_path / "home", tracking_uri=None, storage_backend="minio",
                            minio_endpoint=endpoint, minio_access_key="testing", minio_secret_key="testing",
                            minio_bucket="workbench")
        request.addfinalizer(pipeline.share_embedder(settings, embedder))
        ws = Workspace.open(settings)
        # A games batch with 6 box reviews planted in it: labelled outliers, 10 games reviews labelled normal.
        seed_pipeline(ws, tmp_path, subscription_path, vgames_path, reference_rows=120, games_rows=94,
                      planted_from=500, incoming_name="games.csv")

        picked = orch.pick_new_batch(settings=settings)
        assert picked == "incoming/games.csv"
        batch = orch.ingest_batch(picked, settings=settings)
        assert orch.embed_batch(batch, settings=settings) == 100
        trained = orch.train_challenger(batch, detectors="knn,lof", project=False, settings=settings)
        assert trained["champion"] == "1" and trained["version"] == "2"
        evaluation = orch.evaluate_on_labels(trained["version"], trained["champion"], settings=settings)
        assert evaluation["challenger"]["n_labelled"] == 16 and "average_precision" in evaluation["champion"]
        shift = orch.shift_against_champion(batch, trained["champion"], n_permutations=200, settings=settings)
        assert shift["drift"] is True  # video games against a subscription-box reference
        assert ws.storage.exists("reports/games/shift.html") and ws.storage.exists("reports/games/shift.json")
        decision = orch.promote_if_rule_passes(trained["version"], trained["champion"], evaluation, shift,
                                               {"min_labels": 10}, settings=settings)
        assert decision["champion"] == ("2" if decision["promoted"] else "1")
        assert orch.archive_batch(picked, decision, settings=settings) == "processed/games.csv"
        assert orch.pick_new_batch(settings=settings) is None
        # The first run on an empty registry: the model is champion at once, nothing to compare with.
        assert orch.shift_against_champion(batch, None, settings=settings) == {
            "skipped": "no earlier champion: this batch trained the first model"}
