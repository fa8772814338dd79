"""The two calls the forwarder makes to the central hub, over the gateway's one connection
(:func:`aifi.gateway.hub_connection.hub_client`: base URL, OAuth2 tokens, timeouts).

* **STOW-RS** (PS3.18 §10.5): ``POST {hub}/dicomweb/studies`` with a
  ``multipart/related; type="application/dicom"`` body, one pseudonymised Part 10 instance
  per part (§10.5.1.2), ``Accept: application/dicom+json``. The answer is read per instance
  by the hub's own STOW-RS reading (:func:`aifi.hub.delivery.dicomweb_client.response_outcomes`: the
  Store Instances Response Module, PS3.18 Table 10.5.3-2; Failure Reasons 0xA7xx and HTTP
  408/429/503/504 are transient, other refusals are for good).
* **The completion signal** (IHE AIW-I Task Manager, the hub's ``/api/v1``):
  ``POST {hub}/api/v1/studies/{StudyInstanceUID}/complete`` — 202 when recorded, 404 when
  the hub has no such study for this hospital's tenant.

Neither call raises for the hub's behaviour: httpx's exceptions (connection refused,
timeouts) and the token endpoint's refusal (:class:`aifi.oauth_client.TokenError`) are
translated here into outcomes with a reason an operator can act on. 500 and 502 (the hub
or its proxy failed) are retried like 503; 401 and 403 are
retried (the credentials or the client's scopes can be fixed at the hub without touching
the queue), with a reason that says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.hub.delivery.dicomweb_client import (
    TRANSIENT_HTTP_STATUSES,
    SendOutcome,
    fail_all,
    response_outcomes,
)
from aifi.oauth_client import TokenError

SERVER_FAILURES = frozenset({500, 502})
"""The hub (or a proxy in front of it) failed, rather than refused: not the instance's
fault, so retried with backoff like 503 — a proxy answering 502 while the hub restarts
must not fail a hospital's instances for good."""

STOW_PATH = "/dicomweb/studies"
COMPLETE_PATH = "/api/v1/studies/{uid}/complete"


def _server_failure(name: str, what: str, response: httpx.Response) -> str:
    detail = _warnings(response)
    suffix = f", {detail}" if detail else ""
    return f"{name} failed on {what} (HTTP {response.status_code}{suffix}); retried"


@dataclass(frozen=True, slots=True)
class Part:
    """One pseudonymised instance to store: its SOP Instance UID (the pseudonym the hub
    knows it by) and its Part 10 bytes."""

    sop_instance_uid: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    """What the hub answered to a completion signal: ``done``, else ``retryable`` or
    refused for good, with the reason."""

    done: bool
    retryable: bool
    reason: str


def _auth_reason(status: int, what: str, detail: str) -> str | None:
    """The reason for a 401/403 (credentials or scopes), else ``None``."""
    suffix = f" ({detail})" if detail else ""
    if status == 401:
        return (
            f"the hub refused the gateway's credentials for {what} (HTTP 401): check the "
            f"hospital client's credentials file (--credentials) and that the hub knows the "
            f"client{suffix}"
        )
    if status == 403:
        return (
            f"the hub does not allow {what} to the gateway's client (HTTP 403): the hospital "
            f"client needs the scopes dicomweb.write and worklist.requester{suffix}"
        )
    return None


def _warnings(response: httpx.Response) -> str:
    details = [f"Warning: {value}" for value in response.headers.get_list("warning")]
    if response.is_error and response.text.strip():
        details.append(f"answer {' '.join(response.text.split())[:200]!r}")
    return "; ".join(details)


class HubClient:
    """STOW-RS and the completion signal to the hub behind ``hub`` (an ``httpx.Client``
    with the hub's base URL, as :func:`~aifi.gateway.hub_connection.hub_client` makes it).
    Safe to share between threads as far as ``httpx.Client`` is."""

    def __init__(self, hub: httpx.Client) -> None:
        self.hub = hub

    @property
    def name(self) -> str:
        return f"the hub at {self.hub.base_url}"

    def _transport_failure(self, exc: Exception, what: str) -> str:
        if isinstance(exc, TokenError):
            return (
                f"the hub's token endpoint refused the gateway's credentials ({exc}): check "
                f"the hospital client's credentials file (--credentials)"
            )
        if isinstance(exc, httpx.TimeoutException):
            return f"{self.name} did not answer {what} in time ({type(exc).__name__})"
        return f"cannot reach {self.name} for {what}: {type(exc).__name__}: {exc}"

    def store(self, parts: Sequence[Part]) -> list[SendOutcome]:
        """Store ``parts`` in one STOW-RS request; one outcome per part, in order.

        The body is built in memory (the caller bounds its size): an ``httpx.Auth`` that
        renews its token on a 401 sends the request again, which a streamed body cannot."""
        if not parts:
            return []
        boundary = new_boundary()
        body = encode([("application/dicom", part.data) for part in parts], boundary)
        headers = {
            "Content-Type": content_type("application/dicom", boundary),
            "Accept": "application/dicom+json",
        }
        try:
            response = self.hub.post(STOW_PATH, content=body, headers=headers)
        except (httpx.RequestError, TokenError) as exc:
            return fail_all(parts, self._transport_failure(exc, "STOW-RS"), retryable=True)
        auth = _auth_reason(response.status_code, "STOW-RS", _warnings(response))
        if auth is not None:
            return fail_all(parts, auth, retryable=True)
        if response.status_code in SERVER_FAILURES:
            reason = _server_failure(self.name, "STOW-RS", response)
            return fail_all(parts, reason, retryable=True)
        return response_outcomes(parts, response, pacs=f"{self.name} (STOW-RS)")

    def complete(self, study_instance_uid: str) -> SignalOutcome:
        """Send the completion signal of one (pseudonymous) study."""
        path = COMPLETE_PATH.format(uid=study_instance_uid)
        what = "the completion signal"
        try:
            response = self.hub.post(path)
        except (httpx.RequestError, TokenError) as exc:
            return SignalOutcome(False, True, self._transport_failure(exc, what))
        status = response.status_code
        if response.is_success:
            return SignalOutcome(True, False, f"{self.name} recorded it (HTTP {status})")
        detail = _warnings(response)
        auth = _auth_reason(status, what, detail)
        if auth is not None:
            return SignalOutcome(False, True, auth)
        suffix = f", {detail}" if detail else ""
        if status in SERVER_FAILURES:
            return SignalOutcome(False, True, _server_failure(self.name, what, response))
        if status in TRANSIENT_HTTP_STATUSES:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                suffix += f", Retry-After: {retry_after}"
            return SignalOutcome(
                False, True, f"{self.name} is unavailable for now (HTTP {status}{suffix})"
            )
        if status == 404:
            reason = f"{self.name} holds no such study for this hospital (HTTP 404{suffix})"
            return SignalOutcome(False, False, reason)
        return SignalOutcome(
            False, False, f"{self.name} refused the completion signal (HTTP {status}{suffix})"
        )
