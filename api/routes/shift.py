"""POST /shift: is this batch distributed like the served model's reference?"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ApiKeyDep, BatcherDep, ServedDep, SettingsDep, WorkspaceDep
from api.routes.predict import ERRORS
from api.schemas import ShiftIn, ShiftOut
from core.errors import ParameterError
from core.serving import canonical_request

router = APIRouter(tags=["shift"], dependencies=[ApiKeyDep])


@router.post("/shift", response_model=ShiftOut, responses=ERRORS)
async def shift(body: ShiftIn, workspace: WorkspaceDep, served: ServedDep, batcher: BatcherDep,
                settings: SettingsDep) -> dict[str, Any]:
    """Shift tests of the posted reviews against the reference the served model was trained on."""
    if len(body.reviews) > settings.api_max_batch:
        raise ParameterError(f"reviews: at most {settings.api_max_batch} reviews per request, got {len(body.reviews)}")
    loaded = served.get()
    frame = canonical_request([r.record() for r in body.reviews])

    def run() -> dict[str, Any]:
        from core.report import report_to_dict

        report = workspace.compare(reference=loaded.bundle.reference, current=frame, alpha=body.alpha,
                                   n_permutations=body.n_permutations, record_state=False, batch=body.batch,
                                   model_version=loaded.version.version,
                                   names=(f"model v{loaded.version.version}", body.batch) if body.batch else None)
        return report_to_dict(report)

    # On the scoring thread: permutation tests would otherwise compete with scoring for the 2 cores.
    result = await batcher.run_in_worker(run)
    return {**result, "model": loaded.ref}
