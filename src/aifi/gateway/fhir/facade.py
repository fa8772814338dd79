"""Wiring of the gateway's FHIR R4 facade for the EPD (issue 17 points 1 and 2): the
translator over the pseudonym map, the gateway's own FHIR client of the hub, the relaying
backend under the hub's REST router at ``/fhir``, the gateway's CapabilityStatement
(FHIR R4 http.html#capabilities), and the FHIR error answer (an OperationOutcome,
operationoutcome.html) for every ``/fhir`` path.

The composition root (:mod:`aifi.gateway.app`) calls :func:`build_facade` and
:func:`mount_facade`; the subscription relay (:mod:`aifi.gateway.fhir.subscriptions`) is
handed in as the backend of ``Subscription`` and may add its own routes (``$status``).
Authentication is A2's (:func:`aifi.gateway.auth.install_auth` installs the principal
resolver and guards ``/fhir``); without it (development mode) every request is the
gateway's own hospital. The tenant is always the gateway's one hospital: the hub decides it
from the gateway's token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request, Response

import aifi
from aifi.errors import HubError, UpstreamRefused
from aifi.fhir.api import FhirResponse, build_router, outcome_response
from aifi.fhir.capability import capability_statement
from aifi.fhir.types import FhirBackend, Resource
from aifi.gateway.fhir import addresses
from aifi.gateway.fhir.addresses import DICOMWEB_PREFIX, FHIR_PREFIX
from aifi.gateway.fhir.backend import GATEWAY_TYPES, GatewayFhirBackend, SqlFhirIdentities
from aifi.gateway.fhir.hub_fhir import HubFhir
from aifi.gateway.fhir.translate import FhirTranslator
from aifi.principal import Principal

if TYPE_CHECKING:
    from aifi.gateway.config import GatewayConfig
    from aifi.gateway.settings import GatewaySettings
    from aifi.hub.persistence.database import Database


@dataclass
class FhirFacade:
    """What the facade is made of (built once per gateway process)."""

    translator: FhirTranslator
    hub: HubFhir
    public_url: str | None
    """The gateway's base URL as the EPD reaches it (None: each request's own)."""

    def close(self) -> None:
        self.hub.close()


def build_facade(
    settings: GatewaySettings,
    config: GatewayConfig,
    db: Database,
    key: bytes,
    *,
    hub: HubFhir | None = None,
) -> FhirFacade:
    """The facade's parts (the subscription relay builds its own translator the same way).
    The ImagingStudy Endpoint points at the gateway's DICOMweb (``<public base>/dicomweb``;
    without a public base, at ``http://<host>:<port>/dicomweb``)."""
    dicomweb = addresses.reachable_base(settings, config) + DICOMWEB_PREFIX
    translator = FhirTranslator(
        SqlFhirIdentities(db), key, config.profile(), dicomweb, settings.hub
    )
    hub_fhir = hub or HubFhir.connect(settings.hub, settings.credentials)
    return FhirFacade(translator, hub_fhir, addresses.public_base(settings, config))


def gateway_capability_statement(base_url: str, token_url: str | None) -> Resource:
    """The hub's CapabilityStatement (:func:`aifi.fhir.capability.capability_statement`)
    as the gateway serves it: its own software name and URL, only the types it relays."""
    statement = capability_statement(base_url, token_url)
    statement["publisher"] = "aifi gateway"
    statement["software"] = {"name": "aifi gateway", "version": aifi.__version__}
    statement["implementation"] = {
        "description": (
            "aifi gateway FHIR R4 facade: the hub's FHIR API with the hospital's own "
            "identifiers (pseudonymised towards the hub, re-identified for the EPD)"
        ),
        "url": base_url,
    }
    for rest in statement["rest"]:
        rest["resource"] = [r for r in rest["resource"] if r["type"] in GATEWAY_TYPES]
    return statement


def _metadata_router() -> APIRouter:
    router = APIRouter(tags=["fhir"])

    @router.get("/metadata", name="fhir_metadata")
    def metadata(request: Request) -> Response:
        """capabilities interaction (http.html#capabilities) of the gateway."""
        base = (
            getattr(request.app.state, "fhir_base_url", None)
            or str(request.base_url).rstrip("/") + FHIR_PREFIX
        )
        token_path = getattr(request.app.state, "oauth_token_path", None)
        token_url = base.rsplit(FHIR_PREFIX, 1)[0] + token_path if token_path else None
        return FhirResponse(gateway_capability_statement(base, token_url))

    return router


def mount_facade(
    app: FastAPI,
    facade: FhirFacade,
    *,
    subscriptions: FhirBackend | None = None,
    routers: Sequence[APIRouter] = (),
) -> None:
    """Serve the facade at ``/fhir`` on the gateway's app: the gateway's ``/metadata``,
    ``routers`` (e.g. the subscription relay's ``$status``), then the hub's REST router over
    the relaying backend (``subscriptions``: the backend of the type Subscription, B's
    relay; without it Subscription answers 404). The app's HubError handler answers
    ``/fhir`` paths with :func:`fhir_error_response`."""
    backend = GatewayFhirBackend(facade.hub, facade.translator, subscriptions=subscriptions)
    app.state.fhir_backend = backend
    app.state.fhir_facade = facade
    if facade.public_url:
        app.state.fhir_base_url = facade.public_url + FHIR_PREFIX
    if getattr(app.state, "principal_resolver", None) is None:
        # A2: install_auth sets the OAuth2 resolver; without it (development mode) every
        # request is the gateway's own hospital with every right.
        tenant = str(getattr(app.state.gateway.settings, "tenant", "default"))
        app.state.principal_resolver = lambda _request: Principal(tenant, "anonymous")
    app.include_router(_metadata_router(), prefix=FHIR_PREFIX)
    for router in routers:
        app.include_router(router, prefix=FHIR_PREFIX)
    app.include_router(build_router(), prefix=FHIR_PREFIX)


def is_fhir_path(request: Request) -> bool:
    return request.url.path == FHIR_PREFIX or request.url.path.startswith(FHIR_PREFIX + "/")


def fhir_error_response(error: HubError) -> Response:
    """The OperationOutcome for an error on a ``/fhir`` path; a hub refusal relayed with
    the hub's own (re-identified) OperationOutcome and status."""
    if isinstance(error, UpstreamRefused) and error.body is not None:
        response: Response = FhirResponse(error.body, status_code=error.status_code)
    else:
        response = outcome_response(error)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


__all__ = [
    "FHIR_PREFIX",
    "FhirFacade",
    "build_facade",
    "fhir_error_response",
    "gateway_capability_statement",
    "is_fhir_path",
    "mount_facade",
]
