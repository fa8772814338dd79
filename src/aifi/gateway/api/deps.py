"""What the gateway's routers (:mod:`aifi.gateway.api.routes`) receive, as ``Annotated``
FastAPI dependencies: ``def endpoint(service: StowServiceDep, …)`` — the same pattern as
:mod:`aifi.hub.api.deps`.

The composition root (:func:`aifi.gateway.app.build_gateway`) builds each service once and
puts it on the application; these dependencies are the only place that reads it. Routers
never look at ``app.state`` themselves.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from aifi.gateway.api.status import StatusService
from aifi.gateway.ingest.stow import StowService


def _state(request: Request) -> Any:
    return request.app.state


def _stow(request: Request) -> StowService:
    service: StowService = _state(request).stow
    return service


def _status(request: Request) -> StatusService:
    service: StatusService = _state(request).status
    return service


StowServiceDep = Annotated[StowService, Depends(_stow)]
"""STOW-RS into the ingest (:class:`aifi.gateway.ingest.stow.StowService`)."""
StatusServiceDep = Annotated[StatusService, Depends(_status)]
"""The status page (:class:`aifi.gateway.api.status.StatusService`)."""
