"""Real servers on loopback for integration tests: an S3-protocol server (moto) and `mlflow server`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Ask a server to stop, and kill it when it does not within `timeout`."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextmanager
def s3_server():
    """moto's S3 server mode; yields its ``host:port`` endpoint."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def mlflow_server(workdir: Path, s3_endpoint: str, bucket: str):
    """`mlflow server --workers 1` with a sqlite backend and artifacts proxied to the S3 server."""
    port = free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": f"http://{s3_endpoint}",
    }
    log = open(workdir / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{workdir / 'mlflow-server.db'}",
         "--artifacts-destination", f"s3://{bucket}/mlflow"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()
