"""The gateway's client of the hub's results: the released-results feed and a result's
detail (``/api/v1/results``), and the result instances over WADO-RS (PS3.18 §10.4).

Transport and OAuth2 failures are translated by :func:`aifi.gateway.hub_connection.hub_request`;
answers here: :class:`~aifi.errors.UpstreamError` (5xx, 408 or 429: ask again later) and
:class:`HubRefused` (any other 4xx: asking again will not help).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.errors import InvalidRequest, UpstreamError
from aifi.gateway.hub_connection import RETRY_STATUS, hub_request

WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
"""Instances as the hub stores them (PS3.18 §8.7.3.5.2: ``*`` = no transcoding)."""


class HubRefused(UpstreamError):
    """The hub answered with a 4xx other than 408/429: asking again will not help."""


@dataclass(frozen=True, slots=True)
class ResultsPage:
    """One page of the feed: released results, oldest release first, and the cursor to
    ask after them next time."""

    results: list[dict[str, Any]]
    next_cursor: str


class HubResults:
    """The results side of the hub, on the gateway's one ``httpx.Client`` (its base URL is
    the hub's root, see :func:`aifi.gateway.hub_connection.hub_client`)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _get(
        self, path: str, *, params: dict[str, Any] | None = None, accept: str
    ) -> httpx.Response:
        response = hub_request(self.client, "GET", path, params=params, headers={"Accept": accept})
        if response.status_code < 400:
            return response
        said = response.text[:200].strip()
        warning = response.headers.get("warning")
        what = f"GET {path}: HTTP {response.status_code}" + (f" ({warning})" if warning else "")
        what += f" {said}" if said else ""
        if response.status_code >= 500 or response.status_code in RETRY_STATUS:
            raise UpstreamError(f"the hub answered {what}")
        raise HubRefused(f"the hub refused {what}")

    def _json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._get(path, params=params, accept="application/json")
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError(f"GET {path}: the hub's answer is not JSON") from exc
        if not isinstance(body, dict):
            raise UpstreamError(f"GET {path}: the hub's answer is not a JSON object")
        return body

    def page(self, cursor: str, limit: int) -> ResultsPage:
        """``GET /api/v1/results?released_after=CURSOR&limit=N`` (the empty cursor: from the
        beginning). HubRefused when the hub does not offer the feed."""
        body = self._json("/api/v1/results", params={"released_after": cursor, "limit": limit})
        results, next_cursor = body.get("results"), body.get("next_cursor")
        if not isinstance(next_cursor, str) or not isinstance(results, list):
            raise HubRefused(
                "the hub does not offer the released-results feed (no next_cursor in its"
                " answer to GET /api/v1/results?released_after=)"
            )
        return ResultsPage([r for r in results if isinstance(r, dict)], next_cursor)

    def detail(self, workitem_uid: str) -> dict[str, Any]:
        """``GET /api/v1/results/{workitem_uid}``: the result and its ``instances``."""
        return self._json(f"/api/v1/results/{workitem_uid}")

    def instance(self, study: str, series: str, sop: str) -> bytes:
        """One instance's Part 10 bytes (WADO-RS Retrieve Instance, PS3.18 §10.4.1.1.3)."""
        path = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        response = self._get(path, accept=WADO_ACCEPT)
        try:
            media = parse_media_type(response.headers.get("content-type", ""))
            boundary = media.params.get("boundary")
            if media.mime != "multipart/related" or not boundary:
                raise InvalidRequest(f"not multipart/related: {media.mime or 'no type'}")
            parts = read_parts(response.content, boundary)
        except InvalidRequest as exc:
            raise UpstreamError(f"GET {path}: unreadable answer ({exc.reason})") from exc
        if len(parts) != 1:
            raise UpstreamError(f"GET {path}: expected one instance, got {len(parts)}")
        return parts[0][1]
