"""The gateway's authorization server and token check, built from the hub's auth building
blocks (:mod:`aifi.hub.auth`) over the gateway's own database: the EPD's OAuth2 client is a
client of the gateway (SMART Backend Services, SMART App Launch 2.x "Backend Services"),
never of the hub (the hub never sees the hospital's identities).

- :class:`~aifi.hub.auth.clients.ClientRegistry` — the EPD clients (``oauth_client``), all of
  the gateway's one hospital (:attr:`GatewaySettings.tenant`);
- :class:`~aifi.hub.auth.tokens.KeyRing` / :class:`~aifi.hub.auth.tokens.TokenService` — the
  gateway's own signing keys and access tokens (issuer ``aifi-gateway``);
- :class:`~aifi.hub.auth.server.AuthorizationServer` — ``POST /oauth/token`` (RFC 6749 §4.4
  with ``private_key_jwt``, RFC 7523 §2.2, or ``client_secret_basic``);
- :class:`~aifi.hub.auth.resolver.BuiltinResolver` — a bearer token → a
  :class:`~aifi.principal.Principal`; with ``auth=off`` (development mode only) the
  :class:`~aifi.hub.auth.resolver.DevResolver` gives everyone every right.

Scopes an EPD client may hold (:data:`EPD_SCOPES`): SMART v2 system scopes for what the
FHIR facade serves, and ``dicomweb.read`` for the gateway's WADO-RS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request

from aifi.clock import Clock, utc_now
from aifi.gateway.auth import tables as _tables  # noqa: F401  (the tables on GatewayModel)
from aifi.gateway.settings import GatewaySettings
from aifi.hub.auth.clients import ClientRegistry
from aifi.hub.auth.policy import DICOMWEB_READ
from aifi.hub.auth.resolver import BuiltinResolver, DevResolver
from aifi.hub.auth.server import AuthorizationServer
from aifi.hub.auth.tokens import KeyRing, TokenService
from aifi.hub.persistence.database import Database
from aifi.principal import PrincipalResolver

ISSUER = "aifi-gateway"
"""The ``iss`` of the gateway's access tokens (the hub's are ``aifi-hub`` or its URL)."""

EPD_ROLE = "hospital"
"""The role an EPD client is registered with in the hub's client model (a hospital's
system); at the gateway, whose only clients are EPDs, the CLI calls it ``epd``."""

FHIR_READ_TYPES = (
    "Task",
    "DiagnosticReport",
    "Observation",
    "ImagingStudy",
    "Patient",
    "Device",
    "Provenance",
    "ServiceRequest",
)
"""What the gateway's FHIR facade reads and searches (issue 17 point 1)."""

EPD_SCOPES: tuple[str, ...] = (
    "system/Task.crs",
    "system/ServiceRequest.crs",
    "system/Subscription.cruds",
    "system/DiagnosticReport.rs",
    "system/Observation.rs",
    "system/ImagingStudy.rs",
    "system/Patient.rs",
    "system/Device.rs",
    "system/Provenance.rs",
    DICOMWEB_READ,
)
"""``system/*.cruds`` limited to what the facade serves: read and search of
:data:`FHIR_READ_TYPES`, create of Task and ServiceRequest (AI requests), Subscriptions
(held at the gateway, which relays the hub's changes to the EPD), and WADO-RS of the
re-identified results."""


@dataclass
class GatewayAuth:
    """Everything :func:`build_auth` built: ``server`` and ``tokens`` are None with
    ``auth=off``."""

    settings: GatewaySettings
    registry: ClientRegistry
    resolver: PrincipalResolver
    tokens: TokenService | None
    server: AuthorizationServer | None

    @property
    def enabled(self) -> bool:
        return self.tokens is not None


def public_base(request: Request) -> str:
    """The gateway's base URL as this request reached it (a client assertion's ``aud`` is
    the token endpoint's URL, SMART Backend Services)."""
    return str(request.base_url).rstrip("/")


def build_auth(settings: GatewaySettings, db: Database, *, clock: Clock = utc_now) -> GatewayAuth:
    """The gateway's OAuth2 parts over ``db`` (migrated: ``0004_auth``)."""
    registry = ClientRegistry(db, clock=clock)
    if settings.auth == "off":
        return GatewayAuth(settings, registry, DevResolver(settings.tenant), None, None)
    lifetime = timedelta(seconds=settings.access_token_seconds)
    keys = KeyRing(
        db,
        rotate_after=timedelta(days=settings.signing_key_days),
        keep_after_retired=lifetime + timedelta(minutes=5),
        clock=clock,
    )
    tokens = TokenService(keys, issuer=ISSUER, lifetime=lifetime, clock=clock)
    server = AuthorizationServer(registry, tokens, public_url=public_base, clock=clock)
    return GatewayAuth(settings, registry, BuiltinResolver(tokens, registry), tokens, server)
