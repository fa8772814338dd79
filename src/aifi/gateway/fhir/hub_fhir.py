"""The gateway's FHIR client of the hub (FHIR R4 http.html: read, search, create, update)
over its own ``httpx.Client`` with the hospital client's FHIR scopes (SMART v2
``system/*.cruds``), built like :func:`aifi.gateway.hub_connection.hub_client`: the gateway
opens the connection itself (hospital firewalls allow outbound HTTPS only).

Errors are translated once, here (CONVENTIONS.md, "Errors"): the hub unreachable, a timeout
or a 5xx is :class:`~aifi.errors.UpstreamUnavailable` (the facade answers 503 with an
OperationOutcome of issue type ``transient``); a 4xx is :class:`~aifi.errors.UpstreamRefused`
carrying the hub's status and OperationOutcome (still pseudonymous: the facade
re-identifies it before the EPD sees it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from aifi.errors import UpstreamRefused, UpstreamUnavailable
from aifi.gateway.hub_connection import hub_client
from aifi.oauth_client import TokenError

Resource = dict[str, Any]

FHIR_SCOPES = ("system/*.cruds", "system/*.rs")
"""SMART v2 system scopes asked of the hub for the hospital client (its ``hospital`` role
allows them; ``aifi clients add --role hospital`` grants ``system/*.cruds`` by default):
everything the facade relays. A client registered for reading only (``--scope
system/*.rs``) still gets a token, and the hub's 403 to a create reaches the EPD as it is."""

FHIR_JSON = "application/fhir+json"


class HubFhir:
    """Read, search, create and update at ``{hub}/fhir`` (see the module docstring)."""

    def __init__(self, client: httpx.Client, *, prefix: str = "/fhir") -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")

    @classmethod
    def connect(
        cls, base_url: str, credentials: Path | None, *, timeout_seconds: float = 30.0
    ) -> HubFhir:
        """A client of the hub at ``base_url`` with its own connection pool and tokens."""
        client = hub_client(
            base_url, credentials, timeout_seconds=timeout_seconds, scopes=FHIR_SCOPES
        )
        return cls(client)

    def close(self) -> None:
        self.client.close()

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> Resource:
        """A searchset Bundle (one page; ``next`` links are not followed)."""
        return self._json(self._send("GET", f"/{resource_type}", params=params))[1]

    def read(self, resource_type: str, resource_id: str) -> Resource:
        return self._json(self._send("GET", f"/{resource_type}/{resource_id}"))[1]

    def create(
        self, resource: Resource, *, if_none_exist: str | None = None
    ) -> tuple[int, Resource]:
        """(status, resource): 201 created, 200 when ``If-None-Exist`` found it."""
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = self._send(
            "POST", f"/{resource['resourceType']}", json=resource, headers=headers
        )
        return self._json(response)

    def update(self, resource: Resource, *, if_match: str | None = None) -> tuple[int, Resource]:
        """(status, resource) of ``PUT {type}/{id}``."""
        headers = {"Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = if_match
        path = f"/{resource['resourceType']}/{resource['id']}"
        return self._json(self._send("PUT", path, json=resource, headers=headers))

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json: Resource | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        if json is not None:
            all_headers["Content-Type"] = FHIR_JSON
        try:
            response = self.client.request(
                method,
                self.prefix + path,
                params=tuple(params or ()),
                json=json,
                headers=all_headers,
            )
        except httpx.TimeoutException as exc:
            raise UpstreamUnavailable(f"The hub did not answer in time ({exc})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"The hub cannot be reached ({exc})") from exc
        except TokenError as exc:  # the OAuth2 token request to the hub failed
            raise UpstreamUnavailable(f"No token from the hub ({exc})") from exc
        if response.status_code >= 500:
            raise UpstreamUnavailable(
                f"The hub answered {response.status_code} {response.reason_phrase}"
            )
        if response.status_code >= 400:
            body = _body(response)
            reason = _diagnostics(body) or f"The hub answered {response.status_code}"
            raise UpstreamRefused(reason, status_code=response.status_code, body=body)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> tuple[int, Resource]:
        body = _body(response)
        if body is None:
            raise UpstreamUnavailable(
                f"The hub answered {response.status_code} without a FHIR resource"
            )
        return response.status_code, body


def _body(response: httpx.Response) -> Resource | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) and "resourceType" in data else None


def _diagnostics(body: Resource | None) -> str:
    if not body or body.get("resourceType") != "OperationOutcome":
        return ""
    return "; ".join(
        str(issue.get("diagnostics") or issue.get("code") or "")
        for issue in body.get("issue") or []
    )


__all__ = ["FHIR_SCOPES", "HubFhir"]
