"""The gateway's OAuth2 endpoints (SMART App Launch 2.x "Backend Services"): the hub's
authorization server router (:func:`aifi.hub.auth.server.build_router`: ``POST
/oauth/token``, ``/oauth/introspect``, ``/oauth/revoke``, ``GET /oauth/jwks``) over the
gateway's own clients and keys, with the gateway's own discovery document
``GET /.well-known/smart-configuration`` (also under ``/fhir``): the scopes an EPD may ask
for (:data:`~aifi.gateway.auth.service.EPD_SCOPES`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from aifi.gateway.auth.authorizer import GatewayAuthorizer
from aifi.gateway.auth.service import EPD_SCOPES, GatewayAuth, public_base
from aifi.hub.auth.server import AuthorizationServer, build_router, smart_configuration

DISCOVERY_PATHS = ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration")


def gateway_smart_configuration(request: Request) -> dict[str, Any]:
    """The SMART discovery document (SMART App Launch 2.x §Conformance) of the gateway."""
    document = smart_configuration(request, public_base(request))
    document["scopes_supported"] = list(EPD_SCOPES)
    return document


def oauth_router(server: AuthorizationServer) -> APIRouter:
    """Token, introspection, revocation and JWKS (the hub's), discovery (the gateway's)."""
    router = APIRouter(tags=["OAuth2"])

    def discovery(request: Request) -> JSONResponse:
        return JSONResponse(gateway_smart_configuration(request))

    router.add_api_route(
        DISCOVERY_PATHS[0],
        discovery,
        methods=["GET"],
        summary="SMART Backend Services discovery",
        name="smart_configuration",
    )
    router.add_api_route(
        DISCOVERY_PATHS[1],
        discovery,
        methods=["GET"],
        summary="SMART discovery relative to the FHIR base URL",
        name="fhir_smart_configuration",
    )
    hub = build_router(server)
    for route in hub.routes:
        if getattr(route, "path", None) not in DISCOVERY_PATHS:
            router.routes.append(route)
    return router


def install_auth(app: FastAPI, auth: GatewayAuth) -> None:
    """Mount the token endpoint and discovery (``auth=builtin``), install the principal
    resolver (for :data:`aifi.principal.PrincipalDep`) and the authorizer middleware."""
    app.state.principal_resolver = auth.resolver
    if auth.server is not None:
        app.include_router(oauth_router(auth.server))
        # the CapabilityStatement names it (FHIR R4 SMART security, ``oauth-uris``)
        app.state.oauth_token_path = "/oauth/token"  # noqa: S105 - a path, not a secret
    app.add_middleware(GatewayAuthorizer, resolver=auth.resolver)
