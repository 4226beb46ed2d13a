"""The API as users run it: a real uvicorn process (started through `api.cli.serve`) on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
SEED = {"text": "Sample review text", "rating": 5, "verified_purchase": True}


@pytest.fixture(scope="module")
def server(trained_workspace, tmp_path_factory):
    port = free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(trained_workspace.settings.home), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path_factory.mktemp("uvicorn") / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"uvicorn exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("uvicorn did not become ready in 180 s")
            time.sleep(0.5)
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.mark.slow
def test_real_server_scores_the_seed_body(server):
    url, _, _ = server
    r = httpx.post(f"{url}/predict", json=SEED, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 <= body["score"] <= 1 and set(body["detector_scores"]) == {"knn", "lof", "iforest"}
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/docs").status_code == 200


@pytest.mark.slow
def test_real_server_concurrent_requests(server):
    url, _, _ = server

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            bodies = [{"text": f"Review {i}: the box came with {i} snacks and a nice note."} for i in range(16)]
            return await asyncio.gather(*(client.post("/predict", json=b) for b in bodies))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 16
    assert len({r.json()["review_id"] for r in responses}) == 16


@pytest.mark.slow
def test_real_server_errors_have_no_stack_trace(server):
    url, _, _ = server
    r = httpx.post(f"{url}/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    r = httpx.post(f"{url}/predict", content=b"x" * 6_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.slow
def test_real_server_shuts_down_cleanly(server):
    url, proc, log = server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    log.seek(0)
    text = log.read()
    assert "Application shutdown complete" in text
    assert "Traceback" not in text
