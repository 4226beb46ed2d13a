"""Faults survived: servers killed with signals in the middle of work, a full disk, two trainings at once.

Every test ends with a clear one-line message and nothing lost or half-written. The kills are made
deterministic by a TCP relay that watches the client's bytes: it sends SIGKILL the moment a chosen request
starts (the model's files being uploaded to MLflow, the second object of a batch being put to S3).

moto keeps objects in memory, so its own process cannot be killed without losing the bucket a restarted MinIO
would still have on disk. For S3 the killed process is therefore the relay in front of moto: from the client's
side the endpoint dies mid-upload and comes back on the same address with its objects, as MinIO does.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path

import httpx
import pandas as pd
import pytest

from core.errors import StorageError
from core.pipeline import Workspace, share_embedder
from core.settings import Settings
from core.storage import MinioStorage
from tests.homes import copy_home
from tests.servers import free_port, s3_server, stop, wait_http

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MODEL_UPLOAD = rb"^PUT [^ ]*/MLmodel "  # the registered model's own files going up to MLflow
SECOND_OBJECT = rb"^PUT [^ ]*/quarantine\.parquet"  # a batch's second object going up to S3


# A relay with a trigger ---------------------------------------------------------------------------------------
class Relay:
    """Forwards TCP connections from `port` to `target`; when a client sends bytes matching `trigger`, runs
    `on_trigger` (a kill) and drops them instead of forwarding."""

    def __init__(self, target: int, port: int = 0, trigger: bytes | None = None,
                 on_trigger: Callable[[], None] | None = None) -> None:
        self.target = target
        self.trigger = re.compile(trigger, re.MULTILINE) if trigger else None
        self.on_trigger = on_trigger
        self.fired = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]

    def arm(self, trigger: bytes, on_trigger: Callable[[], None]) -> None:
        self.on_trigger = on_trigger
        self.fired.clear()
        self.trigger = re.compile(trigger, re.MULTILINE)

    def start(self) -> Relay:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def serve_forever(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:  # the server behind is down: the client sees its connection dropped
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, watch: bool) -> None:
        try:
            while data := source.recv(65536):
                if watch and self.trigger is not None and not self.fired.is_set() and self.trigger.search(data):
                    self.fired.set()
                    assert self.on_trigger is not None
                    self.on_trigger()
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _relay_process_main() -> None:  # pragma: no cover - runs in a subprocess
    """``python -c``: a relay process that SIGKILLs itself on its trigger, as a server dying mid-request."""
    target, port, trigger = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode() or None
    relay = Relay(target, port, trigger, lambda: os.kill(os.getpid(), signal.SIGKILL))
    print("ready", flush=True)
    relay.serve_forever()


def start_relay_process(target: int, port: int, trigger: bytes | None = None) -> subprocess.Popen:
    code = "from tests.integration.test_faults import _relay_process_main; _relay_process_main()"
    process = subprocess.Popen([sys.executable, "-c", code, str(target), str(port), (trigger or b"").decode()],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


# Real servers that can be killed and restarted on the same address -------------------------------------------
class MlflowProcess:
    """`mlflow server --workers 1` on a fixed port and backend store, killable with SIGKILL and restartable."""

    def __init__(self, workdir: Path, s3_endpoint: str, bucket: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": f"http://{self.s3_endpoint}"}
        log = open(self.workdir / "mlflow-server.log", "a")  # noqa: SIM115 - the child keeps it
        # Its own process group: `mlflow server` runs uvicorn and a job runner as children, killed together.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port",
             str(self.port), "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow-server.db'}",
             "--artifacts-destination", f"s3://{self.bucket}/mlflow"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        log.close()
        wait_http(f"http://127.0.0.1:{self.port}/health", timeout=120, process=self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a CLI or API process: this workspace and `settings`, none of the caller's others."""
    keep = ("WORKBENCH_TEST_DATA", "WORKBENCH_ONNX_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_") or k in keep}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", **settings}


def cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def copy_cache(embedder, home: Path) -> None:
    """The session's embedding cache into `home`, so CLI processes find the reviews already embedded."""
    target = home / "cache" / "embeddings.sqlite"
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(embedder.cache.path)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.fixture(scope="module")
def reviews(subscription_path: Path) -> pd.DataFrame:
    return pd.read_csv(subscription_path).head(240)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, reviews: pd.DataFrame, embedder) -> Iterator[dict]:
    """moto S3, a killable `mlflow server` behind a relay, and a workspace whose champion (version 1) is there."""
    work = tmp_path_factory.mktemp("faults-mlflow")
    with s3_server() as endpoint:
        MinioStorage(endpoint, "testing", "testing", bucket="faults-artifacts")  # creates the bucket
        server = MlflowProcess(work, endpoint, "faults-artifacts")
        server.start()
        relay = Relay(server.port).start()
        uri = f"http://127.0.0.1:{relay.port}"
        home = work / "home"
        settings = Settings(home=home, tracking_uri=uri)
        ws = Workspace.open(settings)
        reviews.to_csv(work / "reference.csv", index=False)
        ws.ingest_path(work / "reference.csv", name="reference")
        undo = share_embedder(settings, embedder)
        try:
            first = ws.train("reference", detectors=("knn",), project=False)
        finally:
            undo()
        assert first.record.version == "1" and "champion" in first.record.aliases
        copy_cache(embedder, home)
        try:
            yield {"server": server, "relay": relay, "uri": uri, "home": home, "settings": settings}
        finally:
            relay.close()
            server.kill()  # a backend store that survives SIGKILL is what the tests show; no need to wait for more


class ApiProcess:
    """`workbench api` as its own process, against the workspace's tracking URI."""

    def __init__(self, home: Path, uri: str, reload_seconds: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(home.parent / f"api-{self.port}.log", "w")  # noqa: SIM115 - closed in stop
        env = _env(home, MLFLOW_TRACKING_URI=uri, WORKBENCH_API_RELOAD_SECONDS=str(reload_seconds))
        self.process = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(self.port)], env=env,
                                        cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def predict(self) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json={"text": "Great box, my kid loved the surprise toys"},
                          timeout=60)

    def stop(self) -> None:
        stop(self.process)
        self.log.close()


def wait_ready(api: ApiProcess, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert api.process.poll() is None, Path(api.log.name).read_text()[-3000:]
        try:
            if httpx.get(f"{api.url}/ready", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{api.url}/ready not 200 within {timeout} s: {Path(api.log.name).read_text()[-3000:]}")


# 3. The API started while MLflow is unreachable -----------------------------------------------------------------
API_RELOAD_SECONDS = 2.0


@pytest.fixture(scope="module")
def api(tracked: dict) -> Iterator[ApiProcess]:
    """`workbench api` started while the MLflow server is down (test 3 brings it back; test 1 then uses it)."""
    tracked["server"].kill()
    process = ApiProcess(tracked["home"], tracked["uri"], reload_seconds=API_RELOAD_SECONDS)
    try:
        yield process
    finally:
        process.stop()


def test_api_started_without_mlflow_is_live_not_ready_and_recovers_by_itself(tracked: dict, api: ApiProcess) -> None:
    server, uri = tracked["server"], tracked["uri"]
    wait_http(f"{api.url}/health", timeout=120, process=api.process)
    assert httpx.get(f"{api.url}/health", timeout=5).status_code == 200
    ready = httpx.get(f"{api.url}/ready", timeout=10)
    assert ready.status_code == 503
    reason = ready.json()["reason"]
    assert uri in reason and "unreachable" in reason, reason
    assert api.predict().status_code == 503

    server.start()
    back = time.monotonic()
    wait_ready(api, timeout=120)
    # Noticed at the next check (every API_RELOAD_SECONDS; a failed check takes ~3 s of MLflow's retries), then
    # the model loads: its files from S3 through MLflow, the embedder.
    waited = time.monotonic() - back
    assert waited < API_RELOAD_SECONDS + 60, waited
    assert api.process.poll() is None  # no restart
    assert api.predict().json()["model"]["version"] == "1"


# 1. MLflow killed in the middle of `workbench train` -----------------------------------------------------------
def test_mlflow_killed_during_train_fails_in_one_line_and_registers_nothing_half_done(
    tracked: dict, api: ApiProcess, embedder
) -> None:
    server, relay, uri, home = tracked["server"], tracked["relay"], tracked["uri"], tracked["home"]
    if not server.running():  # test 3 did not run first
        server.start()
    wait_ready(api, timeout=180)
    assert api.predict().json()["model"]["version"] == "1"

    relay.arm(MODEL_UPLOAD, server.kill)  # SIGKILL the moment the model's files start going up
    start = time.monotonic()
    result = cli("train", "--reference", "reference", "--detectors", "knn", "--no-projection",
                 env=_env(home, MLFLOW_TRACKING_URI=uri))
    seconds = time.monotonic() - start
    assert relay.fired.is_set(), result.stderr
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert uri in lines[0] and "unreachable" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert seconds < 120, f"a dead server took {seconds:.0f} s to report"

    # While MLflow is down the running API keeps serving the champion it has.
    time.sleep(API_RELOAD_SECONDS + 1)  # more than one reload check
    answer = api.predict()
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"

    server.start()  # same port, same backend store
    from core.tracking import Registry

    registry = Registry(tracked["settings"])
    versions = registry.versions()
    assert [v.version for v in versions] == ["1"], "the killed training registered a version"
    import mlflow.artifacts

    for version in versions:  # every registered version has its files (the API loaded version 1 from them)
        files = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(
            artifact_uri=f"models:/{registry.name}/{version.version}", tracking_uri=uri)}
        assert {"MLmodel", "artifacts"} <= files, files
    assert registry.champion_version() == "1"
    answer = api.predict()
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"

    # Training works again (in this process, with the session's loaded model: the CLI path ran above).
    undo = share_embedder(tracked["settings"], embedder)
    try:
        again = Workspace.open(tracked["settings"]).train("reference", detectors=("knn",), project=False)
    finally:
        undo()
    assert again.record.version == "2"
    assert registry.version("challenger").version == "2" and registry.champion_version() == "1"


# 4. Two trainings at once on one workspace ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_home(tmp_path_factory: pytest.TempPathFactory, reviews: pd.DataFrame, embedder) -> Path:
    """A workspace with an embedded (sqlite) registry whose champion is version 1; its reviews are in its cache."""
    home = tmp_path_factory.mktemp("faults-local") / "home"
    settings = Settings(home=home)
    ws = Workspace.open(settings)
    reviews.to_csv(home.parent / "reference.csv", index=False)
    ws.ingest_path(home.parent / "reference.csv", name="reference")
    undo = share_embedder(settings, embedder)
    try:
        ws.train("reference", detectors=("knn",), project=False)
    finally:
        undo()
    copy_cache(embedder, home)
    return home


def test_two_trainings_at_once_run_one_after_the_other(tmp_path: Path, local_home: Path) -> None:
    home = copy_home(local_home, tmp_path / "home")
    env = _env(home)
    args = [sys.executable, "-m", "cli", "train", "--reference", "reference", "--detectors", "knn",
            "--no-projection", "--json"]
    first = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = home / "locks" / "training.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out1, err1 = first.communicate(timeout=240)
    out2, err2 = second.communicate(timeout=240)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert f"waiting for another training (pid {first.pid})" in err2
    assert (json.loads(out1)["version"], json.loads(out2)["version"]) == ("2", "3")
    registry = Workspace.open(Settings(home=home)).registry()
    assert [v.version for v in registry.versions()] == ["3", "2", "1"]
    assert registry.champion_version() == "1"  # untouched: new versions wait for a promotion
    assert registry.version("challenger").version == "3"  # the last registered
    assert lock.read_text().strip() == ""  # released


# 2. The S3 server gone in the middle of an upload ----------------------------------------------------------------
@pytest.fixture()
def s3_behind_relay(tmp_path: Path) -> Iterator[dict]:
    with s3_server() as endpoint:
        target = int(endpoint.rsplit(":", 1)[1])
        port = free_port()
        bucket = f"faults-{tmp_path.name.lower().replace('_', '-')[-40:]}".rstrip("-")
        settings = Settings(home=tmp_path / "home", storage_backend="minio", minio_endpoint=f"127.0.0.1:{port}",
                            minio_access_key="testing", minio_secret_key="testing", minio_bucket=bucket)
        relay = start_relay_process(target, port)
        processes = [relay]
        try:
            yield {"settings": settings, "port": port, "target": target, "processes": processes,
                   "endpoint": f"127.0.0.1:{port}"}
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=10)


def _rearm(s3: dict, trigger: bytes | None) -> subprocess.Popen:
    for process in s3["processes"]:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
    process = start_relay_process(s3["target"], s3["port"], trigger)
    s3["processes"].append(process)
    return process


def _first_and_second(reviews: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    first, second = folder / "week.csv", folder / "week-again.csv"
    reviews.head(120).to_csv(first, index=False)
    reviews.tail(100).to_csv(second, index=False)
    return first, second


def _assert_earlier_batch_intact(ws: Workspace, name: str, version: str, rows: int) -> None:
    info = ws.batches.info(name)
    assert info.version == version and info.rows == rows
    assert len(ws.batches.frame(name)) == rows
    assert ws.batches.report(name).batch == name


def test_s3_killed_during_cli_ingest_keeps_the_earlier_batch_and_doctor_repairs(
    s3_behind_relay: dict, reviews: pd.DataFrame, tmp_path: Path
) -> None:
    s3 = s3_behind_relay
    first, second = _first_and_second(reviews, tmp_path)
    ws = Workspace.open(s3["settings"])
    before = ws.ingest_path(first, name="week")[0]
    env = _env(s3["settings"].home, WORKBENCH_STORAGE_BACKEND="minio", WORKBENCH_MINIO_ENDPOINT=s3["endpoint"],
               WORKBENCH_MINIO_ACCESS_KEY="testing", WORKBENCH_MINIO_SECRET_KEY="testing",
               WORKBENCH_MINIO_BUCKET=s3["settings"].minio_bucket)

    relay = _rearm(s3, SECOND_OBJECT)
    result = cli("ingest", str(second), "--name", "week", env=env, timeout=120)
    assert relay.wait(timeout=10) == -signal.SIGKILL  # the endpoint died mid-upload
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and s3["endpoint"] in lines[0] and "quarantine.parquet" in lines[0], result.stderr

    _rearm(s3, None)  # the server is back, with what it had stored
    ws = Workspace.open(s3["settings"])
    _assert_earlier_batch_intact(ws, "week", before.version, 120)

    # The first object of the cut upload is left behind: reported, young ones only with --min-age 0, then removed.
    checked = cli("doctor", "--json", env=env)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["broken"] == [] and report["orphans"] == [] and len(report["recent"]) == 1
    checked = cli("doctor", "--json", "--min-age", "0", env=env)
    assert checked.returncode == 1
    orphans = json.loads(checked.stdout)["orphans"]
    assert len(orphans) == 1 and orphans[0].startswith("batches/week/") and orphans[0].endswith("reviews.parquet")
    assert before.version not in orphans[0]
    repaired = cli("doctor", "--repair", "--min-age", "0", "--json", env=env)
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["removed"] == orphans
    assert cli("doctor", env=env).returncode == 0
    _assert_earlier_batch_intact(ws, "week", before.version, 120)


def test_s3_killed_during_a_data_page_upload_keeps_the_earlier_batch(
    s3_behind_relay: dict, reviews: pd.DataFrame, tmp_path: Path
) -> None:
    from workbench.ui import ingest_upload

    s3 = s3_behind_relay
    first, second = _first_and_second(reviews, tmp_path)
    ws = Workspace.open(s3["settings"])
    before = ws.ingest_path(first, name="week")[0]
    relay = _rearm(s3, SECOND_OBJECT)
    outcome = ingest_upload(ws, second.read_bytes(), second.name, "week")  # what the Data page calls
    assert relay.wait(timeout=10) == -signal.SIGKILL
    assert not outcome.ok
    assert "\n" not in outcome.message and s3["endpoint"] in outcome.message, outcome.message

    _rearm(s3, None)
    ws = Workspace.open(s3["settings"])
    _assert_earlier_batch_intact(ws, "week", before.version, 120)
    report = ws.check_store(min_age=0)
    assert report.broken == () and len(report.orphans) == 1  # never a manifest pointing at missing objects
    assert ws.check_store(repair=True, min_age=0).removed == report.orphans
    assert ws.check_store(min_age=0).consistent


# The consistency check on its own ------------------------------------------------------------------------------
def test_doctor_finds_and_removes_broken_batches_and_orphans(tmp_path: Path, reviews: pd.DataFrame) -> None:
    home = tmp_path / "home"
    ws = Workspace.open(Settings(home=home))
    first, second = _first_and_second(reviews, tmp_path)
    kept = ws.ingest_path(first, name="kept")[0]
    broken = ws.ingest_path(second, name="broken")[0]
    ws.storage.delete(f"batches/broken/{broken.version}/reviews.parquet")  # e.g. a bucket restored from a backup
    ws.storage.put_bytes("batches/kept/20200101T000000000000Z/reviews.parquet", b"left over")
    env = _env(home)

    checked = cli("doctor", "--json", env=env, timeout=60)
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    assert report["batches"] == ["kept"] and report["orphans"] == ["batches/kept/20200101T000000000000Z/reviews.parquet"]
    assert [b["name"] for b in report["broken"]] == ["broken"]
    assert report["broken"][0]["missing"] == [f"batches/broken/{broken.version}/reviews.parquet"]
    text = cli("doctor", env=env, timeout=60)
    assert "broken batch broken: its manifest points at missing objects" in text.stdout
    assert "workbench doctor --repair" in text.stdout

    repaired = cli("doctor", "--repair", "--json", env=env, timeout=60)
    assert repaired.returncode == 0
    assert "batches/broken/manifest.json" in json.loads(repaired.stdout)["removed"]
    assert [i.name for i in ws.batches.list()] == ["kept"]
    assert ws.storage.list("batches/broken/") == []
    assert ws.check_store(min_age=0).consistent and ws.batches.info("kept").version == kept.version


def test_reingest_removes_the_replaced_version(tmp_path: Path, reviews: pd.DataFrame) -> None:
    ws = Workspace.open(Settings(home=tmp_path / "home"))
    first, second = _first_and_second(reviews, tmp_path)
    old = ws.ingest_path(first, name="week")[0]
    new = ws.ingest_path(second, name="week")[0]
    assert not any(old.version in key for key in ws.storage.list("batches/week/"))
    assert ws.batches.info("week").version == new.version and ws.check_store(min_age=0).consistent


# 5. A full disk while a batch is written ------------------------------------------------------------------------
def test_disk_full_while_writing_a_batch_is_one_line_and_keeps_the_earlier_batch(
    tmp_path: Path, reviews: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.storage

    ws = Workspace.open(Settings(home=tmp_path / "home"))
    first, second = _first_and_second(reviews, tmp_path)
    before = ws.ingest_path(first, name="week")[0]
    calls = {"n": 0}
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the batch's second object
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(core.storage.os, "fsync", full_disk)
    with pytest.raises(StorageError) as info:
        ws.ingest_path(second, name="week")
    monkeypatch.setattr(core.storage.os, "fsync", real_fsync)
    message = str(info.value)
    assert message.startswith("no space left on device writing ") and "quarantine.parquet" in message, message
    assert "\n" not in message
    _assert_earlier_batch_intact(ws, "week", before.version, 120)
    store = tmp_path / "home" / "store"
    assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")]  # no temporary file left
    assert ws.check_store(min_age=0).consistent  # the first object of the failed write was removed again
    assert [k for k in ws.storage.list("batches/week/")] == sorted(
        [f"batches/week/{before.version}/{f}" for f in ("quarantine.parquet", "report.json", "reviews.parquet")]
        + ["batches/week/manifest.json"])


def test_disk_full_in_the_cli_is_one_line(tmp_path: Path, reviews: pd.DataFrame) -> None:
    """The CLI maps the storage error to one line and exit 2; the patch runs inside the CLI's own process."""
    home = tmp_path / "home"
    first, second = _first_and_second(reviews, tmp_path)
    Workspace.open(Settings(home=home)).ingest_path(first, name="week")
    code = (
        "import errno, os, sys\n"
        "import core.storage\n"
        "def full(fd):\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "core.storage.os.fsync = full\n"
        "from cli.main import app\n"
        "sys.argv = ['workbench', 'ingest', sys.argv[1], '--name', 'week']\n"
        "app()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(second)], capture_output=True, text=True,
                            env=_env(home), cwd=REPO, timeout=120)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device writing "), result.stderr
    assert Workspace.open(Settings(home=home)).batches.info("week").rows == 120
