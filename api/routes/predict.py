"""POST /predict and /predict/batch: score reviews with the served champion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import ApiKeyDep, BatcherDep, ServedDep, SettingsDep, WorkspaceDep
from api.schemas import BatchIn, BatchOut, ErrorOut, PredictionOut, ReviewIn
from api.serving import to_predictions
from core.errors import ParameterError
from core.serving import canonical_request

router = APIRouter(tags=["predict"], dependencies=[ApiKeyDep])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "X-API-Key missing or wrong (when keys are configured)"},
    413: {"model": ErrorOut, "description": "Request body too large"},
    422: {"model": ErrorOut, "description": "Invalid review; the message names the field"},
    503: {"model": ErrorOut, "description": "No model is served; the detail says why"},
}


@router.post("/predict", response_model=PredictionOut, responses=ERRORS)
async def predict(review: ReviewIn, batcher: BatcherDep) -> Response:
    """Score one review: every detector's and signal's calibrated score, headline score, flag, reasons."""
    # Concurrent single requests share one embedding pass (micro-batching); each is still scored on its own.
    (prediction,) = await batcher.score([review.record()])
    return _json(prediction)


@router.post("/predict/batch", response_model=BatchOut, responses=ERRORS)
async def predict_batch(body: BatchIn, batcher: BatcherDep, settings: SettingsDep, served: ServedDep,
                        workspace: WorkspaceDep) -> Response:
    """Score several reviews as one batch (near-duplicates among them are detected); with `batch`, record it in the
    run history under that name."""
    if len(body.reviews) > settings.api_max_batch:
        raise ParameterError(f"reviews: at most {settings.api_max_batch} reviews per request, got {len(body.reviews)}")
    if body.batch is None:
        predictions = await batcher.score([r.record() for r in body.reviews])
        return _json(BatchOut(model=predictions[0].model, predictions=predictions))
    loaded = served.get()
    frame = canonical_request([r.record() for r in body.reviews])
    name = body.batch

    def run() -> list[PredictionOut]:
        # Alone, not micro-batched with other requests: a named batch gets its own excess tests, as it is recorded.
        scores = loaded.bundle.score(frame, loaded.embedder)
        workspace.record_score(name, scores, loaded.version.version, frame)
        return to_predictions(scores, loaded.ref)

    predictions = await batcher.run_in_worker(run)
    return _json(BatchOut(model=loaded.ref, predictions=predictions))


def _json(body: PredictionOut | BatchOut) -> Response:
    # The body is already a validated response model: serialised once here, FastAPI does not dump and
    # re-validate it against `response_model` (about a millisecond per prediction); the schema stays documented.
    return Response(body.model_dump_json(), media_type="application/json")
