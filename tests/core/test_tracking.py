"""MLflow tracking and registry, embedded (sqlite) and against real servers (mlflow server + S3 on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import ModelUnavailableError, NotFoundError, StorageError
from core.pipeline import Workspace
from core.settings import Settings
from core.storage import MinioStorage
from tests.homes import copy_home
from tests.servers import free_port, mlflow_server, s3_server

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_training_is_a_tracked_run_and_a_registered_champion(trained_workspace: Workspace) -> None:
    registry = trained_workspace.registry()
    versions = registry.versions()
    assert versions and "champion" in versions[-1].aliases and "challenger" in versions[0].aliases
    run = registry.client.get_run(versions[-1].run_id)
    assert run.data.params["reference_batch"] == "reference"
    assert versions[-1].tags["workbench.reference_batch"] == "reference"  # what the Models page lists
    assert versions[-1].tags["workbench.detectors"] == run.data.params["detectors"]
    assert run.data.params["data_fingerprint"]
    assert run.data.params["embedding_model"].startswith("sentence-transformers/all-MiniLM-L6-v2")
    assert run.data.metrics["n_reference"] == 300
    artifacts = {a.path for a in registry.client.list_artifacts(run.info.run_id)}
    assert {"projection.csv", "reference_statistics.csv", "validation_report.json", "bundle.json"} <= artifacts
    # artifacts live under WORKBENCH_HOME, not in the process's working folder
    assert (trained_workspace.settings.home / "mlartifacts").is_dir()
    assert not (REPO / "mlruns").exists()


def test_pyfunc_by_alias_matches_workbench_score(trained_workspace: Workspace) -> None:
    import mlflow.pyfunc

    frame = trained_workspace.batches.frame("current").head(15)
    registry = trained_workspace.registry()
    model = mlflow.pyfunc.load_model(f"models:/{registry.name}@champion")
    served = model.predict(frame[["review_id", "text", "title", "rating", "verified_purchase"]])
    scored, _ = trained_workspace.score(frame[["review_id", "text", "title", "rating", "verified_purchase"]])
    assert list(served["review_id"]) == list(frame["review_id"])
    assert np.allclose(served["score"].to_numpy(), scored.frame["score"].to_numpy())


def test_promote_and_rollback(tmp_path: Path, trained_workspace: Workspace) -> None:
    home = tmp_path / "home"
    copy_home(trained_workspace.settings.home, home)
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ws = Workspace.open(settings)
    bundle, _ = trained_workspace.model("champion")
    first = ws.registry().log_training(bundle)  # a second version: challenger only
    registry = ws.registry()
    assert registry.champion_version() == "1" and first.aliases == ["challenger"]
    assert registry.promote() == first.version and registry.champion_version() == first.version
    assert registry.rollback() == "1" and registry.champion_version() == "1"
    with pytest.raises(NotFoundError, match="no earlier champion"):
        registry.rollback()
    with pytest.raises(NotFoundError, match="no version 99"):
        registry.promote("99")


def test_models_list_json_contract(trained_workspace: Workspace) -> None:
    env = {**os.environ, "WORKBENCH_HOME": str(trained_workspace.settings.home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "cli", "models", "list", "--json"], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == {"name", "tracking_uri", "versions"}
    assert {"version", "aliases", "run_id", "created", "metrics"} <= set(payload["versions"][0])


def test_mlflow_tracking_uri_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    assert Settings(home=tmp_path).resolved_tracking_uri.endswith("other.db")


def test_no_model_is_a_clear_error(tmp_path: Path) -> None:
    ws = Workspace.open(Settings(home=tmp_path / "empty", tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}"))
    with pytest.raises(ModelUnavailableError, match="workbench train"):
        ws.model("champion")


def test_full_stack_round_trip_with_mlflow_server_and_s3(tmp_path: Path, trained_workspace: Workspace) -> None:
    """train -> register -> promote -> load by alias -> predict, with artifacts in an S3-protocol server."""
    with s3_server() as endpoint:
        storage = MinioStorage(endpoint, "testing", "testing", bucket="workbench")  # creates the bucket
        storage.put_bytes("probe/hello.txt", b"hi")
        assert storage.get_bytes("probe/hello.txt") == b"hi"
        with mlflow_server(tmp_path, endpoint, "workbench") as uri:
            settings = Settings(home=tmp_path / "home", tracking_uri=uri, storage_backend="minio",
                                minio_endpoint=endpoint, minio_access_key="testing", minio_secret_key="testing")
            ws = Workspace.open(settings)
            src = tmp_path / "ref.csv"
            trained_workspace.batches.frame("reference").head(120)[["review_id", "text", "title", "rating"]].to_csv(
                src, index=False)
            ws.ingest_path(src, name="ref")
            assert ws.batches.frame("ref").shape[0] == 120  # the batch went to the S3 server
            assert any(k.startswith("batches/ref/") for k in storage.list("batches/"))
            from core import pipeline

            pipeline.share_embedder(settings, trained_workspace.embedder())
            outcome = ws.train("ref", detectors=("knn", "lof"), project=False)
            registry = ws.registry()
            assert registry.promote(outcome.record.version) == outcome.record.version
            bundle, version = ws.model("champion")
            assert version.version == outcome.record.version
            scored = bundle.score(pd.DataFrame({"text": ["Great box, my kid loved it", "asdf qwerty zxcv"]}),
                                  ws.embedder()).frame
            assert scored["score"].between(0, 1).all()
            objects = storage.client.list_objects("workbench", prefix="mlflow/", recursive=True)
            assert any(o.object_name.endswith("bundle.json") for o in objects)  # artifacts are in S3


def test_unreachable_object_store_names_endpoint_and_bucket() -> None:
    port = free_port()  # nothing listens here
    with pytest.raises(StorageError) as info:
        MinioStorage(f"127.0.0.1:{port}", "k", "s", bucket="reviews")
    assert f"127.0.0.1:{port}" in str(info.value) and "reviews" in str(info.value)
