"""The gateway's one connection to the central hub: an ``httpx.Client`` on the hub's base
URL with SMART Backend Services tokens (:class:`aifi.oauth_client.ClientCredentials`) and
explicit timeouts. The gateway opens every connection itself (hospital firewalls allow
outbound HTTPS only); the hub never calls into the hospital.

Paths under the base URL: ``/dicomweb`` (STOW-RS, WADO-RS), ``/api/v1`` (completion
signal, results), ``/fhir``.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from aifi.oauth_client import ClientCredentials, Credentials

GATEWAY_SCOPES = ("dicomweb.read", "dicomweb.write", "results.read", "worklist.requester")
"""What a hospital's gateway asks for: STOW-RS and WADO-RS, the results API, the
completion signal (see ``aifi clients add --role hospital``)."""


def hub_client(
    base_url: str,
    credentials: Path | None,
    *,
    timeout_seconds: float = 60.0,
    scopes: tuple[str, ...] = GATEWAY_SCOPES,
) -> httpx.Client:
    """A client for the hub at ``base_url`` (no trailing ``/dicomweb``). Without
    ``credentials`` requests go unauthenticated: only a hub in development mode with
    authentication off answers them."""
    auth = None
    if credentials is not None:
        auth = ClientCredentials(Credentials.from_file(credentials), scopes)
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        auth=auth,
        timeout=httpx.Timeout(timeout_seconds, connect=10.0),
        follow_redirects=False,
    )
