"""The gateway's client of the hub's prior-request API (issue 17, contract C -> D), on the
gateway's one ``httpx.Client`` (:func:`aifi.gateway.hub_connection.hub_client`, scope
``worklist.requester``):

- ``GET /api/v1/prior-requests?limit=N`` -> ``{"items": [...]}``: the open requests of the
  hospital, oldest first;
- ``POST /api/v1/prior-requests/{id}/studies`` ``{"study_instance_uids": [...]}`` -> 204:
  registers the priors BEFORE they are forwarded (the hub never routes them as new
  studies);
- ``POST /api/v1/prior-requests/{id}/answer`` ``{"outcome", "reason",
  "study_instance_uids"}`` -> 204.

Transport failures are translated by :func:`aifi.gateway.hub_connection.hub_request`
(no connection, a timeout, no token); answers here: :class:`aifi.errors.UpstreamError`
(5xx, 408, 429: ask again later), :class:`aifi.errors.Conflict` (409: the
request is closed, its deadline passed), :class:`aifi.errors.NotFound` (404),
:class:`aifi.errors.Unprocessable` (422: a named study has no instance at the hub),
:class:`~aifi.gateway.results.hub_api.HubRefused` (any other 4xx).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from aifi.errors import Conflict, NotFound, Unprocessable, UpstreamError
from aifi.gateway.hub_connection import RETRY_STATUS, hub_request
from aifi.gateway.results.hub_api import HubRefused

PATH = "/api/v1/prior-requests"


class HubPriors:
    """The prior-request API of the hub (module docstring)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = hub_request(self.client, method, path, **kwargs)
        code = response.status_code
        if code < 400:
            return response
        what = f"{method} {path}: HTTP {code} {response.text[:300].strip()}".strip()
        if code >= 500 or code in RETRY_STATUS:
            raise UpstreamError(f"the hub answered {what}")
        if code == 409:
            raise Conflict(f"the hub closed the request ({what})")
        if code == 404:
            raise NotFound(f"the hub does not know it ({what})")
        if code == 422:
            raise Unprocessable(f"the hub refused the answer ({what})")
        raise HubRefused(f"the hub refused {what}")

    def open_requests(self, limit: int = 50) -> list[dict[str, Any]]:
        """The open prior requests, oldest first."""
        response = self._call("GET", PATH, params={"limit": limit})
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError(f"GET {PATH}: the hub's answer is not JSON") from exc
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise UpstreamError(f"GET {PATH}: no items in the hub's answer")
        return [i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]

    def register(self, request_id: str, study_instance_uids: Sequence[str]) -> None:
        """Register the (pseudonymous) prior studies before they are forwarded."""
        self._call(
            "POST",
            f"{PATH}/{request_id}/studies",
            json={"study_instance_uids": list(study_instance_uids)},
        )

    def answer(
        self,
        request_id: str,
        outcome: str,
        *,
        reason: str = "",
        study_instance_uids: Sequence[str] = (),
    ) -> None:
        """Answer the request: ``found`` (with the pseudonymous study UIDs), ``none`` or
        ``failed`` (with the reason)."""
        self._call(
            "POST",
            f"{PATH}/{request_id}/answer",
            json={
                "outcome": outcome,
                "reason": reason,
                "study_instance_uids": list(study_instance_uids),
            },
        )
