"""The kit's HTTP side toward an EPD, configured as the project's own senders are, and a
record of every answer as evidence for the report.

* Toward the FHIR base (the push): authentication as the gateway's EPD client does it — SMART
  Backend Services (``client_credentials`` grant with ``private_key_jwt`` or a secret,
  :class:`aifi.oauth_client.ClientCredentials`) with the push's scopes
  (:data:`PUSH_SCOPES`), or a bearer token the EPD's owner hands over, or none — and the
  gateway's timeouts (:data:`PUSH_TIMEOUT`). The kit's own searches (checking that nothing
  was duplicated) ask for read scopes (:data:`READ_SCOPES`) with a client of their own, so a
  client that may only create still gets its push tested.
* Toward the rest-hook endpoint: no authentication but the headers a Subscription's
  ``channel.header`` would carry, and the hub's notification timeout
  (:data:`HOOK_TIMEOUT_SECONDS`).

Each client records the answers it gets (:class:`Exchanges`, an httpx ``response`` event
hook); a case reads the last one for its evidence (status, time, what the body was), also
when :func:`aifi.fhir.epd_client.post_bundle` raised on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aifi.oauth_client import ClientCredentials, Credentials

PUSH_SCOPES = ("system/DiagnosticReport.c", "system/Observation.c")
"""The scopes the gateway's EPD client asks for (``aifi.gateway.config.FhirConfig.epd_scopes``
default; SMART App Launch v2 scopes, SMART Backend Services)."""
READ_SCOPES = ("system/DiagnosticReport.rs", "system/Observation.rs")
"""The kit's own searches by identifier (not part of the push)."""
PUSH_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""The gateway's EPD client (``aifi.gateway.fhir.subscription_relay.relay_workers``)."""
HOOK_TIMEOUT_SECONDS = 10.0
"""How long the hub and the gateway wait for a rest-hook endpoint's answer (the
``timeout_seconds`` of :class:`aifi.hub.fhir.notify.FhirNotifier` and of the gateway's
``SubscriptionRelay``); a Subscription's ``backport-timeout`` may only shorten it."""
_BODY_CHARS = 500


@dataclass(frozen=True, slots=True)
class Exchange:
    """One answer: the request line, the status, how long it took and what the body was."""

    method: str
    url: str
    status: int
    seconds: float
    content_type: str
    body: Any
    """The parsed JSON, or the start of the text."""

    @property
    def resource_type(self) -> str | None:
        return str(self.body.get("resourceType")) if isinstance(self.body, dict) else None

    def evidence(self) -> dict[str, Any]:
        """A short description for the report (no whole bodies)."""
        seen: dict[str, Any] = {
            "request": f"{self.method} {self.url}",
            "status": self.status,
            "seconds": self.seconds,
        }
        if self.resource_type is not None:
            seen["resourceType"] = self.resource_type
            if self.resource_type == "OperationOutcome":
                seen["issues"] = outcome_issues(self.body)
        elif self.body:
            seen["body"] = str(self.body)[:_BODY_CHARS]
        return seen


def outcome_issues(outcome: dict[str, Any]) -> list[str]:
    """An OperationOutcome's issues as ``severity code: diagnostics`` lines."""
    lines = []
    for issue in outcome.get("issue") or []:
        if isinstance(issue, dict):
            words = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
            lines.append(f"{issue.get('severity')} {issue.get('code')}: {words}"[:_BODY_CHARS])
    return lines


@dataclass
class Exchanges:
    """The answers one client got, in order (an httpx ``response`` event hook)."""

    seen: list[Exchange] = field(default_factory=list)

    def __call__(self, response: httpx.Response) -> None:
        started = time.perf_counter()
        response.read()
        try:
            seconds = response.elapsed.total_seconds()
        except RuntimeError:  # elapsed is set when the stream closes; read() closes it
            seconds = time.perf_counter() - started
        content_type = response.headers.get("Content-Type", "")
        body: Any
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text[:_BODY_CHARS]
        request = response.request
        self.seen.append(
            Exchange(
                request.method,
                str(request.url),
                response.status_code,
                round(seconds, 3),
                content_type,
                body,
            )
        )

    def last(self) -> Exchange | None:
        return self.seen[-1] if self.seen else None

    def mark(self) -> int:
        """Where the record stands now; :meth:`since` gives what came after."""
        return len(self.seen)

    def since(self, mark: int) -> list[Exchange]:
        return self.seen[mark:]


@dataclass(frozen=True, slots=True)
class Access:
    """How the kit authenticates at the EPD's FHIR base (module docstring)."""

    credentials: Credentials | None = None
    token: str | None = None

    @classmethod
    def of(cls, credentials_file: Path | None, token: str | None) -> Access:
        if credentials_file is not None and token:
            raise ValueError("give --credentials or --token, not both")
        credentials = Credentials.from_file(credentials_file) if credentials_file else None
        return cls(credentials=credentials, token=token or None)

    def describe(self) -> str:
        """For the report's target (never the secret or the token itself)."""
        if self.credentials is not None:
            return (
                f"SMART Backend Services client {self.credentials.client_id} at "
                f"{self.credentials.token_url}"
            )
        return "bearer token (given)" if self.token else "none"

    def auth(self, scopes: Iterable[str]) -> ClientCredentials | None:
        return ClientCredentials(self.credentials, scopes) if self.credentials else None

    def client(self, scopes: Iterable[str], exchanges: Exchanges) -> httpx.Client:
        """A client of the FHIR base with these scopes, recording into ``exchanges``."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(
            auth=self.auth(scopes),
            headers=headers,
            timeout=PUSH_TIMEOUT,
            event_hooks={"response": [exchanges]},
        )


def hook_client(exchanges: Exchanges) -> httpx.Client:
    """A client of the rest-hook endpoint as the hub's notifier builds it
    (:class:`aifi.hub.fhir.messages.Clients`: the notification timeout, no redirects)."""
    return httpx.Client(
        timeout=httpx.Timeout(HOOK_TIMEOUT_SECONDS),
        follow_redirects=False,
        event_hooks={"response": [exchanges]},
    )


__all__ = [
    "HOOK_TIMEOUT_SECONDS",
    "PUSH_SCOPES",
    "PUSH_TIMEOUT",
    "READ_SCOPES",
    "Access",
    "Exchange",
    "Exchanges",
    "hook_client",
    "outcome_issues",
]
