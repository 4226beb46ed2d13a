"""MLflow tracking and registry through a real `mlflow server` whose backend store is PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.pipeline import Workspace
from core.settings import Settings
from tests.postgres import PASSWORD, USER, PostgresCluster
from tests.servers import free_port, wait_http

pytestmark = pytest.mark.slow


@pytest.fixture()
def mlflow_on_postgres(postgres: PostgresCluster, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`mlflow server --workers 1` with ``--backend-store-uri postgresql+psycopg://...`` and local artifacts;
    yields the tracking URI and the name of the backend database."""
    backend = postgres.create_database()
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend, "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=180, process=process)
        yield f"http://127.0.0.1:{port}", backend.rsplit("/", 1)[1]
    finally:
        # `mlflow server` runs uvicorn as a child: stop the whole group, so that no worker outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        log.close()


def test_train_register_alias_and_load_back_through_a_postgres_backed_server(
    mlflow_on_postgres: tuple[str, str], postgres: PostgresCluster, subscription_path: Path, tmp_path: Path, hashing_embedder
) -> None:
    import psycopg

    from core import pipeline

    uri, database = mlflow_on_postgres
    settings = Settings(home=tmp_path / "home", tracking_uri=uri)
    undo = pipeline.share_embedder(settings, hashing_embedder)  # the model's meaning does not matter here
    try:
        ws = Workspace.open(settings)
        source = tmp_path / "reference.csv"
        pd.read_csv(subscription_path).head(200).to_csv(source, index=False)
        ws.ingest_path(source, name="reference")
        first = ws.train("reference", detectors=("knn", "lof"), project=False)
        second = ws.train("reference", detectors=("knn",), project=False)
        registry = ws.registry()
        assert registry.champion_version() == first.record.version == "1"  # the first version serves at once
        assert second.record.aliases == ["challenger"]
        assert registry.promote() == second.record.version == "2"
        assert registry.champion_version() == "2"
        assert [v.aliases for v in registry.versions()] == [["challenger", "champion"], []]

        bundle, version = ws.model("champion")
        assert version.version == "2" and version.tags["workbench.detectors"] == "knn"
        frame = ws.batches.frame("reference").head(20)
        loaded = bundle.score(frame, hashing_embedder).frame["score"].to_numpy()
        trained = second.bundle.score(frame, hashing_embedder).frame["score"].to_numpy()
        assert np.allclose(loaded, trained)
        assert registry.rollback() == "1" and registry.champion_version() == "1"
    finally:
        undo()

    # The registry really lives in Postgres, and the artifacts behind the server.
    with psycopg.connect(host=postgres.host, port=postgres.port, user=USER, password=PASSWORD, dbname=database) as conn:
        aliases = dict(conn.execute("SELECT alias, version FROM registered_model_aliases").fetchall())
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert aliases == {"champion": 1, "challenger": 2} and runs == 2
    assert any(p.name == "bundle.json" for p in (tmp_path / "artifacts").rglob("bundle.json"))

