"""`workbench api`: run the API with uvicorn (the `workbench api` command calls `serve`)."""

from __future__ import annotations

import ipaddress
import sys

from core.settings import Settings


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name or "" (every interface): reachable from elsewhere
        return False


def anonymous_refusal(settings: Settings, host: str) -> str | None:
    """Why serving on `host` with `settings` is refused, or None when it is allowed.

    Without API keys anybody who reaches the port may score reviews and read what the model is, so only loopback
    serves anonymously unless ``WORKBENCH_API_ALLOW_ANONYMOUS=true`` says that is meant.
    """
    if settings.api_keys or settings.api_allow_anonymous or is_loopback(host):
        return None
    return (f"refusing to serve the API on {host or '(all interfaces)'} without API keys: set WORKBENCH_API_KEYS "
            "(a JSON list of keys), or WORKBENCH_API_ALLOW_ANONYMOUS=true to serve it without authentication")


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve `api.main:create_app` on `host`:`port` (defaults from settings: 127.0.0.1:3000).

    Exits with code 2 and one line on stderr when the address is not loopback and no API key is configured
    (see `anonymous_refusal`).
    """
    import uvicorn

    from core.settings import get_settings

    settings = get_settings()
    host = host or settings.api_host
    refusal = anonymous_refusal(settings, host)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        raise SystemExit(2)
    # One worker process: the model and the embedder are loaded once; micro-batching uses both cores.
    uvicorn.run("api.main:create_app", factory=True, host=host, port=port or settings.api_port,
                log_level="info", proxy_headers=False)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve the prediction API with uvicorn.")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    serve(args.host, args.port)
