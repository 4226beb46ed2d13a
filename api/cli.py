"""`workbench api`: run the API with uvicorn (the lead wires `serve` into core.cli)."""

from __future__ import annotations


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve `api.main:create_app` on `host`:`port` (defaults from settings: 127.0.0.1:3000)."""
    import uvicorn

    from core.settings import get_settings

    settings = get_settings()
    # One worker process: the model and the embedder are loaded once; micro-batching uses both cores.
    uvicorn.run("api.main:create_app", factory=True, host=host or settings.api_host, port=port or settings.api_port,
                log_level="info", proxy_headers=False)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve the prediction API with uvicorn.")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    serve(args.host, args.port)
