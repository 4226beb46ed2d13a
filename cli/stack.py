"""The full stack on one machine without Docker: an S3-protocol server, ``mlflow server``, the API, the workbench.

The same services as ``docker-compose.yml``, started as child processes with the same wiring: batches and
reports in a bucket, MLflow artifacts proxied by the MLflow server into the ``mlflow`` bucket, the API and the
workbench reading ``WORKBENCH_STORAGE_BACKEND=minio`` and ``MLFLOW_TRACKING_URI``. Differences: no gateway,
no Postgres (MLflow and the labels use SQLite under ``WORKBENCH_HOME/stack``), and the S3 server is the MinIO
binary when one is on ``PATH``, else moto's server mode, which keeps objects in memory only (fine for trying
the stack out; use MinIO to keep data across restarts).

Use `run_stack` from a terminal (``workbench stack``; Ctrl+C stops everything) or `NativeStack` as a context
manager in tests. Each service runs in its own process group, so stopping one also stops its workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pydantic import SecretStr

from core.errors import ParameterError, WorkbenchError
from core.settings import Settings, get_settings

SERVICES = ("s3", "mlflow", "api", "ui")
MLFLOW_BUCKET = "mlflow"
DEFAULT_ACCESS_KEY = "workbench"
DEFAULT_SECRET_KEY = "workbench-secret"  # local loopback development only; MinIO wants >= 8 characters
REPO = Path(__file__).resolve().parents[1]


class StackError(WorkbenchError, RuntimeError):
    """A service of the native stack could not start or stopped on its own."""


@dataclass
class Service:
    """One child process of the stack."""

    name: str
    command: list[str]
    health_url: str
    url: str
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # A new session = a new process group: Ctrl+C reaches only us, and we stop the whole group later.
        self.process = subprocess.Popen(self.command, env=self.env, cwd=REPO, stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.process.returncode if self.process else None
                raise StackError(f"{self.name} exited with {code} before it was ready; "
                                 f"last lines of {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=3) as response:  # noqa: S310 - loopback
                    if response.status < 500:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise StackError(f"{self.name} did not answer {self.health_url} within {timeout:.0f} s; "
                         f"last lines of {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.process is not None:
            # Workers left behind by a leader that exited first (uvicorn/gunicorn children) go too.
            _signal_group(self.process.pid, signal.SIGKILL)
        if self.log is not None:
            self.log.close()
            self.log = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port(host: str, port: int, option: str) -> int:
    if port == 0:
        return _free_port(host)
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise ParameterError(f"port {port} on {host} is in use; choose another with {option}") from None
    return port


class NativeStack:
    """The stack's processes; `start` brings them up in order and waits for each health endpoint.

    Parameters
    ----------
    home
        State folder (``WORKBENCH_HOME``); the stack keeps its databases, S3 data and logs in ``home/stack``.
    host
        Address every service listens on (loopback by default).
    s3_port, mlflow_port, api_port, ui_port
        Ports; 0 picks a free one (tests).
    bucket, access_key, secret_key
        Bucket of the workbench and the S3 credentials (defaults from settings, else local development keys).
    services
        Which services to run, a subset of ``("s3", "mlflow", "api", "ui")`` (s3 and mlflow always run).
    s3_server
        ``"auto"`` (MinIO when on PATH, else moto), ``"minio"`` or ``"moto"``.
    startup_timeout
        Seconds each service may take to answer its health endpoint.
    """

    def __init__(
        self,
        home: str | Path | None = None,
        host: str = "127.0.0.1",
        s3_port: int = 9000,
        mlflow_port: int = 5050,
        api_port: int = 3000,
        ui_port: int = 8501,
        bucket: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        services: Iterable[str] = SERVICES,
        s3_server: str = "auto",
        startup_timeout: float = 180.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        settings = get_settings()
        self.home = Path(home).expanduser().resolve() if home else settings.home
        self.host = host
        self.ports = {"s3": s3_port, "mlflow": mlflow_port, "api": api_port, "ui": ui_port}
        self.bucket = bucket or settings.minio_bucket
        self.access_key = access_key or settings.minio_access_key or DEFAULT_ACCESS_KEY
        self.secret_key = secret_key or settings.minio_secret_key.get_secret_value() or DEFAULT_SECRET_KEY
        self.services = {"s3", "mlflow", *services}
        unknown = self.services - set(SERVICES)
        if unknown:
            raise ParameterError(f"unknown services {sorted(unknown)}; expected some of {', '.join(SERVICES)}")
        if s3_server not in ("auto", "minio", "moto"):
            raise ParameterError(f"s3_server must be auto, minio or moto, got {s3_server!r}")
        self.s3_kind = ("minio" if shutil.which("minio") else "moto") if s3_server == "auto" else s3_server
        if self.s3_kind == "minio" and not shutil.which("minio"):
            raise ParameterError("s3_server='minio' but no `minio` binary is on PATH")
        self.startup_timeout = startup_timeout
        self.log = log or (lambda message: None)
        self.started: list[Service] = []

    # Wiring ----------------------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.home / "stack"

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.ports[service]}"

    @property
    def urls(self) -> dict[str, str]:
        """Base URL of every running service."""
        return {s.name: s.url for s in self.started}

    @property
    def s3_endpoint(self) -> str:
        return f"{self.host}:{self.ports['s3']}"

    def client_env(self) -> dict[str, str]:
        """Variables that point a workbench process (CLI, API, UI, Airflow task) at this stack."""
        return {
            "WORKBENCH_HOME": str(self.home),
            "WORKBENCH_STORAGE_BACKEND": "minio",
            "WORKBENCH_MINIO_ENDPOINT": self.s3_endpoint,
            "WORKBENCH_MINIO_ACCESS_KEY": self.access_key,
            "WORKBENCH_MINIO_SECRET_KEY": self.secret_key,
            "WORKBENCH_MINIO_BUCKET": self.bucket,
            "WORKBENCH_MINIO_SECURE": "false",
            "MLFLOW_TRACKING_URI": self.url("mlflow"),
            "MLFLOW_S3_ENDPOINT_URL": f"http://{self.s3_endpoint}",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def settings(self) -> Settings:
        """Settings for an in-process `core.pipeline.Workspace` against this stack."""
        return Settings(home=self.home, storage_backend="minio", minio_endpoint=self.s3_endpoint,
                        minio_access_key=self.access_key, minio_secret_key=SecretStr(self.secret_key),
                        minio_bucket=self.bucket, minio_secure=False, tracking_uri=self.url("mlflow"))

    def _service(self, name: str, command: list[str], health_path: str, env: Mapping[str, str]) -> Service:
        return Service(name=name, command=command, health_url=self.url(name) + health_path, url=self.url(name),
                       log_path=self.state_dir / "logs" / f"{name}.log", env={**os.environ, **env})

    def _s3(self) -> Service:
        port = str(self.ports["s3"])
        if self.s3_kind == "minio":
            data = self.state_dir / "minio"
            data.mkdir(parents=True, exist_ok=True)
            command = [str(shutil.which("minio")), "server", str(data), "--address", f"{self.host}:{port}",
                       "--console-address", f"{self.host}:{_free_port(self.host)}"]
            env = {"MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key}
            return self._service("s3", command, "/minio/health/live", env)
        command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", port]
        return self._service("s3", command, "/moto-api/", {})

    def _mlflow(self) -> Service:
        command = [sys.executable, "-m", "mlflow", "server", "--workers", "1",
                   "--host", self.host, "--port", str(self.ports["mlflow"]),
                   "--backend-store-uri", f"sqlite:///{self.state_dir / 'mlflow.db'}",
                   "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts"]
        return self._service("mlflow", command, "/health", self.client_env())

    def _api(self) -> Service:
        command = [sys.executable, "-m", "cli", "api", "--host", self.host, "--port", str(self.ports["api"])]
        return self._service("api", command, "/health", self.client_env())

    def _ui(self) -> Service:
        command = [sys.executable, "-m", "cli", "ui", "--host", self.host, "--port", str(self.ports["ui"])]
        return self._service("ui", command, "/_stcore/health", self.client_env())

    # Lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> NativeStack:
        """Start the services (S3 and MLflow together, then the API and the workbench) and wait for each."""
        from core.storage import MinioStorage

        options = {"s3": "--s3-port", "mlflow": "--mlflow-port", "api": "--api-port", "ui": "--ui-port"}
        for name in SERVICES:
            if name in self.services:
                self.ports[name] = _check_port(self.host, self.ports[name], options[name])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._launch([self._s3(), self._mlflow()])
            for name in (self.bucket, MLFLOW_BUCKET):  # created here: the MLflow server only proxies into it
                MinioStorage(self.s3_endpoint, self.access_key, self.secret_key, name)
            self._launch([builder() for name, builder in (("api", self._api), ("ui", self._ui))
                          if name in self.services])
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, services: list[Service]) -> None:
        for service in services:
            self.log(f"starting {service.name}: {' '.join(service.command[:6])} ... (log: {service.log_path})")
            service.start()
            self.started.append(service)
        for service in services:
            start = time.monotonic()
            service.wait_healthy(self.startup_timeout)
            self.log(f"{service.name} ready at {service.url} ({time.monotonic() - start:.1f} s)")

    def stopped_service(self) -> Service | None:
        """The first service that is no longer running, if any."""
        return next((s for s in self.started if not s.alive()), None)

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.started if s.process is not None]

    def stop(self) -> None:
        """Stop every service, last started first; safe to call twice."""
        for service in reversed(self.started):
            self.log(f"stopping {service.name}")
            service.stop()
        self.started.clear()

    def __enter__(self) -> NativeStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe(stack: NativeStack) -> list[str]:
    """What a person needs after start-up: the URLs and how to point other commands at the stack."""
    names = {"s3": f"S3 ({stack.s3_kind})", "mlflow": "MLflow", "api": "API", "ui": "workbench"}
    lines = ["services:", *(f"  {names[name]:<14} {url}" for name, url in stack.urls.items())]
    if "api" in stack.urls:
        lines.append(f"  {'API docs':<14} {stack.urls['api']}/docs")
    if stack.s3_kind == "moto":
        lines.append("note: moto keeps objects in memory; they are gone when the stack stops (install MinIO to keep them)")
    lines.append("point other commands at this stack with:")
    for key, value in stack.client_env().items():
        if key in ("WORKBENCH_MINIO_SECRET_KEY", "AWS_SECRET_ACCESS_KEY") and value != DEFAULT_SECRET_KEY:
            value = "<your secret key>"  # never echo a real secret into terminal logs
        lines.append(f"  export {key}={value}")
    return lines


class _Stop(Exception):
    pass


def run_stack(stack: NativeStack) -> int:
    """Start `stack`, print its URLs through its log, and keep it running until Ctrl+C or SIGTERM.

    Returns the exit code for the command: 0 after a requested stop, 1 when a service stopped on its own
    (its last log lines are printed). Everything started is stopped before returning, in every case.
    """

    def on_signal(signum: int, frame: FrameType | None) -> Any:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    log = stack.log
    try:
        stack.start()
        for line in describe(stack):
            log(line)
        log("the native stack is running; press Ctrl+C to stop it")
        while True:
            failed = stack.stopped_service()
            if failed is not None:
                log(f"{failed.name} stopped on its own (exit {failed.process.returncode if failed.process else '?'}); "
                    f"last lines of {failed.log_path}:\n{failed.log_tail()}")
                return 1
            time.sleep(1.0)
    except (_Stop, KeyboardInterrupt) as reason:
        log(f"stopping the stack ({reason or 'interrupted'})")
        return 0
    finally:
        # Signals during shutdown must not interrupt it half-way.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
