"""The gateway's HTTP routes besides ``/healthz``: STOW-RS in (PS3.18 §10.5, under
:data:`~aifi.gateway.ingest.stow.PREFIX`) and the status page (under ``/api/v1``).

What they do is elsewhere (:mod:`aifi.gateway.ingest.stow`, :mod:`aifi.gateway.api.status`);
what they receive comes from :mod:`aifi.gateway.api.deps`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from aifi.dicomweb.stow import store_instances
from aifi.errors import Forbidden
from aifi.gateway.api.deps import StatusServiceDep, StowServiceDep
from aifi.gateway.api.status import StatusService, gateway_status
from aifi.gateway.ingest.allowed import address_allowed
from aifi.gateway.ingest.stow import TENANT

stow_router = APIRouter(tags=["STOW-RS"])


@stow_router.post(
    "/studies",
    summary="STOW-RS Store Instances into the gateway (PS3.18 §10.5)",
    response_class=Response,
)
async def stow_studies(request: Request, service: StowServiceDep) -> Response:
    sink = service.sink(request)
    return await store_instances(request, sink, service.config.service_url(request), TENANT, None)


@stow_router.post(
    "/studies/{study}",
    summary="STOW-RS Store Instances of one study into the gateway (PS3.18 §10.5)",
    response_class=Response,
)
async def stow_study(study: str, request: Request, service: StowServiceDep) -> Response:
    sink = service.sink(request)
    return await store_instances(request, sink, service.config.service_url(request), TENANT, study)


status_router = APIRouter(tags=["operations"])


async def _readable(request: Request, service: StatusServiceDep) -> StatusService:
    address = request.client.host if request.client else ""
    if not address_allowed(address, service.allowed_addresses):
        # it names original study UIDs: only the configured readers (status.allowed_addresses)
        raise Forbidden(f"the status page is not readable from {address or 'this address'}")
    return service


@status_router.get("/gateway/status", summary="The gateway's queues, errors and per-study progress")
def status(
    service: Annotated[StatusService, Depends(_readable)],
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> dict[str, Any]:
    return gateway_status(service.db, limit=limit or service.limit, results=service.results)
