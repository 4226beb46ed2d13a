"""deploy/nginx.conf run by a real nginx, in front of stand-ins for the workbench and the API on loopback.

The compose file names its upstreams `workbench:8501` and `api:3000` and listens on 80 and 3000; a temporary copy
points them at local ports. The htpasswd file is made by the very command compose's gateway-auth runs.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")  # sbin is not on every PATH
USER, PASSWORD = "analyst", "correct horse battery staple"

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")


class Upstream(ThreadingHTTPServer):
    """An HTTP server on loopback that answers with what it received, and remembers every request."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[dict] = []
        super().__init__(("127.0.0.1", 0), _Echo)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def do_GET(self) -> None:
        seen = {"upstream": self.server.name, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        self.server.seen.append(seen)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            # Enough of a websocket handshake to show the upgrade got through the gateway.
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.close_connection = True
            return
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _gateway_conf(workbench_port: int, api_port: int, http_port: int, api_listen_port: int, htpasswd: Path) -> str:
    text = (REPO / "deploy" / "nginx.conf").read_text()
    for old, new in (("server workbench:8501;", f"server 127.0.0.1:{workbench_port};"),
                     ("server api:3000;", f"server 127.0.0.1:{api_port};"),
                     ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                     ("listen 3000;", f"listen 127.0.0.1:{api_listen_port};"),
                     ("/etc/nginx/auth/htpasswd", str(htpasswd))):
        assert text.count(old) == 1, f"deploy/nginx.conf should hold {old!r} exactly once"
        text = text.replace(old, new)
    return text


def _main_conf(tmp: Path, site: Path) -> Path:
    """A minimal main nginx.conf that includes the site file, with every path nginx writes under `tmp`."""
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / "temp" / name).mkdir(parents=True, exist_ok=True)
    temp = "\n".join(f"    {name}_temp_path {tmp / 'temp' / name};"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp / "nginx.conf"
    # `user` only matters when the master runs as root (here: the workers then run as the same user and can read
    # the temporary files); as any other user nginx ignores it.
    conf.write_text(f"""user {getpass.getuser()};
worker_processes 1;
pid {tmp / 'nginx.pid'};
error_log {tmp / 'error.log'} info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp / 'access.log'};
{temp}
    include {site};
}}
""")
    return conf


def _make_htpasswd(path: Path) -> None:
    """Run gateway-auth's own command from docker-compose.yml, writing to `path` instead of /auth/htpasswd."""
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd is not installed (apt-get install apache2-utils)")
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["gateway-auth"]
    script = service["entrypoint"][-1].replace("$$", "$").replace("/auth/htpasswd", str(path))
    env = {**os.environ, "WORKBENCH_GATEWAY_USER": USER, "WORKBENCH_GATEWAY_PASSWORD": PASSWORD}
    subprocess.run(["/bin/sh", "-c", script], env=env, check=True, capture_output=True)
    assert PASSWORD not in path.read_text()


def _nginx(*args: str | Path, tmp: Path) -> list[str]:
    # -p and -e keep nginx away from /var/log/nginx and /usr/share/nginx (not writable for every user).
    return [str(NGINX), "-p", str(tmp), "-e", str(tmp / "error.log"), *map(str, args)]


def _wait_port(port: int, process: subprocess.Popen, tmp: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}: {(tmp / 'error.log').read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nginx did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("gateway")
    workbench, api = Upstream("workbench"), Upstream("api")
    ports = {"http": free_port(), "api": free_port()}
    htpasswd = tmp / "htpasswd"
    _make_htpasswd(htpasswd)
    site = tmp / "gateway.conf"
    site.write_text(_gateway_conf(workbench.port, api.port, ports["http"], ports["api"], htpasswd))
    conf = _main_conf(tmp, site)
    process = subprocess.Popen(_nginx("-c", conf, "-g", "daemon off;", tmp=tmp),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(ports["http"], process, tmp)
        _wait_port(ports["api"], process, tmp)
        yield {"ports": ports, "workbench": workbench, "api": api, "conf": conf, "tmp": tmp}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        workbench.shutdown()
        api.shutdown()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def test_deploy_config_passes_nginx_t(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    site = tmp_path / "gateway.conf"
    site.write_text(_gateway_conf(free_port(), free_port(), free_port(), free_port(), htpasswd))
    result = subprocess.run(_nginx("-t", "-c", _main_conf(tmp_path, site), tmp=tmp_path),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_workbench_asks_for_basic_auth(gateway: dict) -> None:
    port, before = gateway["ports"]["http"], len(gateway["workbench"].seen)
    status, headers, _ = _get(port, "/")
    assert status == 401 and headers["www-authenticate"].startswith("Basic ")
    status, _, _ = _get(port, "/", _basic(USER, "wrong password"))
    assert status == 401
    assert len(gateway["workbench"].seen) == before  # nothing reached the workbench


def test_workbench_with_the_right_credentials(gateway: dict) -> None:
    status, _, body = _get(gateway["ports"]["http"], "/some/page?x=1", _basic(USER, PASSWORD))
    assert status == 200
    seen = json.loads(body)
    assert seen["upstream"] == "workbench" and seen["path"] == "/some/page?x=1"
    assert "authorization" not in seen["headers"]  # the gateway password stays at the gateway


def test_workbench_websocket_upgrade_passes(gateway: dict) -> None:
    request = (
        "GET /_stcore/stream HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Authorization: {_basic(USER, PASSWORD)['Authorization']}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway["ports"]["http"]), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 101"), status_line
    upstream = gateway["workbench"].seen[-1]
    assert upstream["path"] == "/_stcore/stream"
    assert upstream["headers"]["upgrade"] == "websocket" and upstream["headers"]["connection"].lower() == "upgrade"


def test_api_under_prefix_keeps_its_own_key(gateway: dict) -> None:
    port = gateway["ports"]["http"]
    status, _, body = _get(port, "/api/health")
    assert status == 200 and json.loads(body)["path"] == "/health"  # no basic auth, prefix stripped
    status, _, body = _get(port, "/api/model", {"X-API-Key": "k-123", **_basic(USER, PASSWORD)})
    seen = json.loads(body)
    assert status == 200 and seen["upstream"] == "api" and seen["path"] == "/model"
    assert seen["headers"]["x-api-key"] == "k-123" and "authorization" not in seen["headers"]


def test_health_is_open(gateway: dict) -> None:
    status, _, body = _get(gateway["ports"]["http"], "/health")
    assert status == 200
    assert json.loads(body) == {**json.loads(body), "upstream": "api", "path": "/health"}


def test_api_port_of_old_clients_still_answers(gateway: dict) -> None:
    status, _, body = _get(gateway["ports"]["api"], "/predict/batch", {"X-API-Key": "k-123"})
    seen = json.loads(body)
    assert status == 200 and seen["upstream"] == "api" and seen["path"] == "/predict/batch"
    assert seen["headers"]["x-api-key"] == "k-123"
