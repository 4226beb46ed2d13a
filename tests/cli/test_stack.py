"""`workbench stack`: the native stack starts, trains on a small real batch, serves a prediction through the API
and stops without leaving a process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from cli.stack import NativeStack

pytestmark = pytest.mark.slow


def _group_members(pgids: set[int]) -> set[int]:
    """Live processes (not zombies) in the given process groups, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in pgids and state != "Z":
            found.add(int(entry.name))
    return found


def _wait_ready(url: str, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    response = httpx.get(url, timeout=5)
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(1)
        response = httpx.get(url, timeout=5)
    return response


def test_native_stack_trains_serves_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, subscription_path: Path,
    embedder,
) -> None:
    from core import pipeline
    from core.pipeline import Workspace

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WORKBENCH_API_KEYS", raising=False)
    stack = NativeStack(home=tmp_path / "home", s3_port=0, mlflow_port=0, api_port=0, ui_port=0, s3_server="moto")
    with stack:
        pgids = set(stack.pids())
        assert set(stack.urls) == {"s3", "mlflow", "api", "ui"}
        assert _group_members(pgids) >= pgids
        assert httpx.get(stack.urls["ui"] + "/_stcore/health", timeout=5).status_code == 200
        # Nothing trained yet: the API is alive but not ready, and says why.
        assert httpx.get(stack.urls["api"] + "/health", timeout=5).status_code == 200
        assert httpx.get(stack.urls["api"] + "/ready", timeout=5).status_code == 503

        # Train on a small real batch through the stack: batches in S3, run + model in the MLflow server.
        settings = stack.settings()
        request.addfinalizer(pipeline.share_embedder(settings, embedder))
        ws = Workspace.open(settings)
        pd.read_csv(subscription_path).head(150).to_csv(tmp_path / "reference.csv", index=False)
        ws.ingest_path(tmp_path / "reference.csv", name="reference")
        outcome = ws.train("reference", detectors=("knn", "lof"), project=False, use_labels=False)
        assert outcome.record.tracking_uri == stack.urls["mlflow"]
        assert "champion" in outcome.record.aliases
        assert any(k.startswith("batches/reference/") for k in ws.storage.list("batches/"))

        # The API picks the champion up from the registry (it polls the alias) and serves it.
        ready = _wait_ready(stack.urls["api"] + "/ready", timeout=90)
        assert ready.status_code == 200, ready.text
        response = httpx.post(stack.urls["api"] + "/predict", timeout=60,
                              json={"text": "Sample review text", "rating": 5, "verified_purchase": True})
        assert response.status_code == 200, response.text
        body = response.json()
        assert 0.0 <= body["score"] <= 1.0 and isinstance(body["is_outlier"], bool)
        assert body["model"]["version"] == outcome.record.version
        members = _group_members(pgids)
    assert stack.urls == {}
    leftover = _group_members(pgids | members)
    assert not leftover, f"processes left behind: {sorted(leftover)}"


def test_run_stack_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """`run_stack` (what `workbench stack` calls) in its own process: SIGTERM stops it and its children."""
    script = (
        "import sys; from cli.stack import NativeStack, run_stack; "
        f"sys.exit(run_stack(NativeStack(home={str(tmp_path / 'home')!r}, s3_port=0, mlflow_port=0, api_port=0, "
        "ui_port=0, services=('s3', 'mlflow'), s3_server='moto', log=lambda m: print(m, flush=True))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WORKBENCH_"))}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "press Ctrl+C to stop" in line:
                break
        else:
            pytest.fail("run_stack exited before it was running:\n" + "".join(lines))
        children = {int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()}
        assert len(children) == 2  # the S3 server and the MLflow server
        pgids = children  # each service leads its own process group
        members = _group_members(pgids)
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
        lines.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines)
    assert process.returncode == 0, output
    assert "stopping the stack (SIGTERM)" in output
    assert "MLflow" in output and "export MLFLOW_TRACKING_URI=http://127.0.0.1:" in output
    assert not _group_members(pgids | members), output
