"""GET /monitor: the run history of stored batches and the alerts raised on them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import ApiKeyDep, WorkspaceDep
from api.routes.predict import ERRORS
from api.schemas import MonitorOut

router = APIRouter(tags=["monitor"], dependencies=[ApiKeyDep])


@router.get("/monitor", response_model=MonitorOut, responses={401: ERRORS[401], 503: ERRORS[503]})
async def monitor(workspace: WorkspaceDep) -> dict[str, Any]:
    """Every scored or compared stored batch in time order, with flagged shares, excess and shift p-values,
    and the alerts (docs/monitoring.md)."""
    history = await run_in_threadpool(workspace.monitor_history)
    return history.as_json()
