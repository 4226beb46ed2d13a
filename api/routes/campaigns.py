"""GET /campaigns: product bursts, groups of accounts and the products they target, for one stored batch."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import ApiKeyDep, WorkspaceDep
from api.routes.predict import ERRORS
from api.schemas import CampaignsOut, ErrorOut

router = APIRouter(tags=["campaigns"], dependencies=[ApiKeyDep])


@router.get("/campaigns", response_model=CampaignsOut,
            responses={401: ERRORS[401], 404: {"model": ErrorOut, "description": "No such stored batch"},
                       422: ERRORS[422], 503: ERRORS[503]})
async def campaigns(
    workspace: WorkspaceDep,
    batch: Annotated[str | None, Query(max_length=200, description="Stored batch; default: the current one.")] = None,
    level: Annotated[float, Query(gt=0, lt=1, description="False-alarm level of the burst test per product.")] = 0.01,
) -> dict[str, Any]:
    """Campaign evidence of a stored batch, read against the review history of every stored batch."""
    from core.errors import NotFoundError

    name = batch or workspace.state().current
    if not name or not workspace.batches.exists(name):
        raise NotFoundError(f"no stored batch named {name!r}" if name else "no batch named and no current batch")
    report = await run_in_threadpool(workspace.campaigns, name, level)
    return report.as_json()
