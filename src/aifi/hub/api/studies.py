"""The hub's own HTTP API (``/api/v1``), for what the standards leave to the hub.

``POST /api/v1/studies/{StudyInstanceUID}/complete`` — the explicit completion signal of
IHE AIW-I's Task Manager: the sender says the study is complete, so it is routed on the
Task Manager's next round (within ``task_manager_poll_seconds``) instead of after the
quiet period. 202 Accepted; 404 when the tenant has no such study.

``GET /api/v1/studies/{StudyInstanceUID}/routing`` — why the study was or was not sent
to each AI product (the same text as ``aifi rules explain``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from aifi.clock import utc_now
from aifi.errors import NotFound
from aifi.hub.api.deps import DatabaseDep, RouterDep
from aifi.hub.orchestration.task_manager import signal_complete
from aifi.principal import PrincipalDep

router = APIRouter(tags=["aifi-hub"])


@router.post("/studies/{StudyInstanceUID}/complete", status_code=202)
async def complete_study(
    StudyInstanceUID: str, principal: PrincipalDep, db: DatabaseDep, routing: RouterDep
) -> Response:
    """Mark a study complete: route it now instead of after its quiet period."""
    found = await run_in_threadpool(
        routing.store.find_instances, principal.tenant, StudyInstanceUID
    )
    if not found:
        raise NotFound(f"No study {StudyInstanceUID}")
    await run_in_threadpool(signal_complete, db, principal.tenant, StudyInstanceUID, utc_now())
    return JSONResponse(
        {"study": StudyInstanceUID, "status": "completion recorded; routing on the next round"},
        status_code=202,
    )


@router.get("/studies/{StudyInstanceUID}/routing", response_class=PlainTextResponse)
async def explain_routing(
    StudyInstanceUID: str, principal: PrincipalDep, routing: RouterDep
) -> str:
    """Per AI product: matched, or which condition failed and the values seen."""
    return await run_in_threadpool(routing.explain, principal.tenant, StudyInstanceUID)
