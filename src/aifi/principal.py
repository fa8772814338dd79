"""Who is asking, and for which tenant (hospital).

Every request resolves to a :class:`Principal` through the single FastAPI dependency
:func:`get_principal`. The app factory installs the resolver: in development mode one that
maps every request to the configured default tenant with every right; otherwise one that
validates an OAuth2 bearer token (SMART Backend Services, ``aifi.hub.auth``) and checks
the scope the route declared (``aifi.hub.auth.policy``). Routers never look at tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from aifi.errors import Forbidden

Role = Literal["hospital", "performer", "admin", "dev"]
"""What kind of client is asking (issue 6, "who is who"):

- ``hospital``: a hospital's gateway, PACS or EPD; sees its own hospital's data;
- ``performer``: an AI product's Task Performer; sees only the workitems of its own
  products, their input instances and its own products' results (:attr:`Principal.products`);
- ``admin``: an administrator (audit trail, delivery retries) of its tenant;
- ``dev``: development mode without authentication; every right on the default tenant.
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the tenant whose data it may see, and what it may do."""

    tenant: str
    subject: str
    """The OAuth2 client id (``sub`` of the access token); ``anonymous`` in dev mode."""
    scopes: frozenset[str] = field(default_factory=frozenset)
    role: Role = "dev"
    products: frozenset[str] | None = None
    """For a performer, the AI products whose workitems, inputs and results it may see;
    ``None`` for every other role (not restricted by product)."""
    token_id: str | None = None
    """The access token's ``jti`` (never logged; for revocation and the audit trail)."""

    @property
    def restricted(self) -> bool:
        """True when the principal sees only its products' workitems, inputs and results."""
        return self.products is not None


PrincipalResolver = Callable[[Request], Principal]


def get_principal(request: Request) -> Principal:
    """Resolve the caller with the resolver the app factory installed (once per request:
    the result is kept on ``request.state`` for the audit trail)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    resolver: PrincipalResolver | None = getattr(request.app.state, "principal_resolver", None)
    if resolver is None:
        raise Forbidden("No principal resolver is configured")
    principal = resolver(request)
    request.state.principal = principal
    return principal


async def _principal(request: Request) -> Principal:
    """:func:`get_principal` as a dependency: on the event loop when the app-wide
    authorization has resolved the caller already (the usual case), else in a worker
    thread (resolving may look up tokens and clients)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    return await run_in_threadpool(get_principal, request)


PrincipalDep = Annotated[Principal, Depends(_principal)]
