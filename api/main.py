"""The FastAPI app: lifespan (champion loaded once, followed in the registry), one error mapping, routers.

Run with ``workbench api`` (see `api.cli.serve`) or ``uvicorn --factory api.main:create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from threadpoolctl import threadpool_limits

from api.routes import campaigns, health, monitor, predict, shift
from api.serving import MicroBatcher, ServedModel
from core.errors import (
    InputFileError,
    ModelUnavailableError,
    NotFoundError,
    ParameterError,
    SchemaError,
    StorageError,
    WorkbenchError,
)
from core.io.schema import CANONICAL_COLUMNS, canonical_name
from core.pipeline import Workspace
from core.settings import Settings, get_settings

log = logging.getLogger("api")
#: Seconds between checks of the registry's champion alias (`WORKBENCH_API_RELOAD_SECONDS` once Settings has it).

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodySizeLimit:
    """Refuse request bodies above `max_bytes` with 413, by Content-Length or while streaming (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            {"detail": too_large_detail(self.max_bytes)}, status_code=status.HTTP_413_CONTENT_TOO_LARGE
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await too_large(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the app's body reading, so the app answers 413 before any route runs.
                    raise StarletteHTTPException(status.HTTP_413_CONTENT_TOO_LARGE, too_large_detail(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)


def too_large_detail(max_bytes: int) -> str:
    return f"request body exceeds {max_bytes} bytes"


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one place where errors become HTTP answers; never a stack trace in the body."""
    if isinstance(exc, RequestValidationError):
        errors = []
        for e in exc.errors():
            field = _field(e.get("loc", ()))
            msg = f"{field}: {e.get('msg')}"
            if e.get("type") == "json_invalid":  # loc is ("body", character offset): the field is the body itself
                field = "body"
                msg = f"body: invalid JSON at character {e['loc'][-1]}: {e.get('ctx', {}).get('error', e.get('msg'))}"
            if e.get("type") == "extra_forbidden":  # a file's column name sent as is, e.g. "stars" or "reviewText"
                meant = canonical_name(str(e.get("loc", ("",))[-1]))
                msg += (f"; this API takes the canonical field names: send it as '{meant}'" if meant else
                        f"; fields a review may have: {', '.join(c for c in CANONICAL_COLUMNS)}")
            errors.append({"field": field, "loc": list(e.get("loc", ())), "type": e.get("type"), "msg": msg})
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    if isinstance(exc, ModelUnavailableError):
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif isinstance(exc, NotFoundError):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, InputFileError | SchemaError | ParameterError):
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    elif isinstance(exc, StorageError):
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif isinstance(exc, WorkbenchError):
        code = status.HTTP_500_INTERNAL_SERVER_ERROR
    else:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if code >= 500:
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    headers = {"Retry-After": "5"} if code == status.HTTP_503_SERVICE_UNAVAILABLE else None
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)


async def _follow_champion(app: FastAPI) -> None:
    """Re-check the champion alias in the background, so a promotion is served without a restart."""
    served: ServedModel = app.state.served
    while True:
        await asyncio.sleep(served.check_every)
        try:
            await asyncio.to_thread(served.refresh)
        except Exception as err:  # keep following even when one check fails
            log.warning("champion check failed: %s", err)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    served: ServedModel = app.state.served
    # Load the champion and the embedding model that gives its vectors once, before the first request.
    await asyncio.to_thread(served.refresh)
    batcher = MicroBatcher(served)
    batcher.start()
    app.state.batcher = batcher
    follower = asyncio.get_running_loop().create_task(_follow_champion(app), name="follow-champion")
    # BLAS on one thread while serving: OpenBLAS workers keep spinning after each small matrix product and
    # slowed the next embedding pass (ONNX Runtime, its own threads) by ~40 % (16 reviews: 116 -> 163 ms).
    blas = threadpool_limits(limits=1, user_api="blas")
    try:
        yield
    finally:
        blas.restore_original_limits()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await batcher.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for one workspace (`settings`, default: the environment's)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Review Outlier & Shift Workbench API",
        version="0.1.0",
        summary="Scores product reviews with the champion model: outlier scores, reasons and shift p-values.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.workspace = Workspace.open(settings)
    check_every = float(settings.api_reload_seconds)
    app.state.served = ServedModel(app.state.workspace, check_every=check_every)
    for exc_type in (RequestValidationError, WorkbenchError, Exception):
        app.add_exception_handler(exc_type, handle_error)
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(shift.router)
    app.include_router(monitor.router)
    app.include_router(campaigns.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    return app
