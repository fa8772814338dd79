"""What the hub's own routers (:mod:`aifi.hub.api`) receive, as ``Annotated`` FastAPI
dependencies: ``def endpoint(db: DatabaseDep, deliverer: DelivererDep, …)``.

The app factory (:func:`aifi.hub.app.create_app`) puts the :class:`~aifi.hub.wiring.Hub` that
:func:`~aifi.hub.wiring.build_hub` built on the application once; :func:`parts_of` is the one
place that reads it (as :class:`HubParts`, the parts these routers use, so this package does
not import the composition root that imports it), and routers never look at ``app.state``.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from aifi.clock import SettableClock
from aifi.hub.delivery.deliverer import Deliverer
from aifi.hub.delivery.destinations import DestinationsConfig
from aifi.hub.orchestration.routing import StudyRouter
from aifi.hub.persistence.database import Database


class HubParts(Protocol):
    """The parts of :class:`aifi.hub.wiring.Hub` the hub's routers use."""

    @property
    def clock(self) -> SettableClock: ...
    @property
    def db(self) -> Database: ...
    @property
    def deliverer(self) -> Deliverer: ...
    @property
    def destinations(self) -> DestinationsConfig: ...
    @property
    def router(self) -> StudyRouter: ...


def parts_of(request: Request) -> HubParts:
    """The hub the request's application was built over."""
    hub: HubParts = request.app.state.hub
    return hub


PartsDep = Annotated[HubParts, Depends(parts_of)]


def _database(hub: PartsDep) -> Database:
    return hub.db


def _deliverer(hub: PartsDep) -> Deliverer:
    return hub.deliverer


def _destinations(hub: PartsDep) -> DestinationsConfig:
    return hub.destinations


def _router(hub: PartsDep) -> StudyRouter:
    return hub.router


def _clock(hub: PartsDep) -> SettableClock:
    return hub.clock


DatabaseDep = Annotated[Database, Depends(_database)]
DelivererDep = Annotated[Deliverer, Depends(_deliverer)]
DestinationsDep = Annotated[DestinationsConfig, Depends(_destinations)]
RouterDep = Annotated[StudyRouter, Depends(_router)]
ClockDep = Annotated[SettableClock, Depends(_clock)]
