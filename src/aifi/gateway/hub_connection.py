"""The gateway's one connection to the central hub: an ``httpx.Client`` on the hub's base
URL with SMART Backend Services tokens (:class:`aifi.oauth_client.ClientCredentials`) and
explicit timeouts. The gateway opens every connection itself (hospital firewalls allow
outbound HTTPS only); the hub never calls into the hospital.

Paths under the base URL: ``/dicomweb`` (STOW-RS, WADO-RS), ``/api/v1`` (completion
signal, results), ``/fhir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from aifi.errors import UpstreamError, UpstreamTimeout
from aifi.oauth_client import ClientCredentials, Credentials, TokenError

RETRY_STATUS = frozenset({408, 429})
"""4xx answers of the hub that mean "ask again later", as 5xx do."""

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


def hub_request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the hub on ``client``, its transport failures translated once:
    :class:`~aifi.errors.UpstreamTimeout` (no answer in time), :class:`~aifi.errors.UpstreamError`
    (no connection, no token). Any HTTP answer is returned as it is; :data:`RETRY_STATUS`
    and 5xx are the ones to retry."""
    try:
        return client.request(method, path, **kwargs)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"the hub did not answer {method} {path} in time: {exc}") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the hub cannot be reached ({method} {path}): {exc!r}") from exc
    except TokenError as exc:
        raise UpstreamError(f"no token for the hub: {exc}") from exc
