"""GET /health (liveness), /ready (model loaded and storage reachable), /model (what is served)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from api.deps import ApiKeyDep, ServedDep, WorkspaceDep
from api.schemas import ErrorOut, HealthOut, ModelOut, ReadyOut
from core.defaults import CHAMPION
from core.pipeline import STATE_KEY

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
async def health() -> HealthOut:
    """Liveness: the process answers."""
    return HealthOut(status="ok")


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut, "description": "Not ready"}})
async def ready(served: ServedDep, workspace: WorkspaceDep) -> ReadyOut | JSONResponse:
    """Readiness: a model is loaded and the storage answers; 503 with the reason otherwise."""
    storage = workspace.describe_storage()
    loaded = served.peek()
    reason = None if loaded is not None else (served.reason or "no model loaded")
    try:
        await asyncio.to_thread(workspace.storage.exists, STATE_KEY)
    except Exception as err:
        reason = f"storage {storage} is unreachable: {err}"
    body = ReadyOut(ready=reason is None, model_version=loaded.ref.version if loaded else None,
                    storage=storage, reason=reason)
    if reason is not None:
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return body


@router.get("/model", response_model=ModelOut, dependencies=[ApiKeyDep],
            responses={503: {"model": ErrorOut, "description": "No model is served"}})
async def model(served: ServedDep) -> ModelOut:
    """The served model: name, version, aliases, when it was trained, detectors, reference size, embedding runtime."""
    loaded = served.get()
    meta = loaded.bundle.meta
    return ModelOut(
        name=loaded.ref.name, version=loaded.ref.version, alias=CHAMPION, aliases=list(loaded.version.aliases),
        trained_at=meta.get("trained_at"), registered_at=loaded.version.created, run_id=loaded.version.run_id,
        detectors=list(meta.get("detectors", [])), signals=list(meta.get("signals", [])),
        embedding_model=meta.get("embedding_model"), embedding_backend=getattr(loaded.embedder, "backend", "custom"),
        reference_batch=meta.get("reference_batch"),
        reference_size=int(meta.get("n_reference", len(loaded.bundle.reference))),
        contamination=meta.get("contamination"),
    )
