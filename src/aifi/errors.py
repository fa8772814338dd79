"""One exception tree for aifi-hub: every exception aifi raises on purpose, and every one
that crosses a module boundary, derives from :class:`AifiError`.

::

    AifiError
    ├── HubError                500  an error with an HTTP answer (headers: added to it)
    │   ├── InvalidRequest          400  the request cannot be understood (bad parameter, body)
    │   │   └── UnsupportedMediaType 415  the request body's media type is not accepted
    │   ├── NotAcceptable           406  no representation the client accepts can be produced
    │   ├── NotFound                404  the addressed resource does not exist (for this tenant)
    │   │   └── Unidentifiable      404  a hub answer the gateway cannot re-identify
    │   ├── Conflict                409  the request conflicts with the stored state
    │   ├── PreconditionFailed      412  a condition of the request (If-Match) does not hold
    │   ├── Unprocessable           422  well-formed but breaks a rule (e.g. an unknown reference)
    │   ├── PayloadTooLarge         413  the request or the result set is too large
    │   ├── Unauthorized            401  no valid credentials (WWW-Authenticate says why)
    │   ├── Forbidden               403  the principal may not do this
    │   ├── TooManyRequests         429  the client's rate limit is spent (Retry-After)
    │   ├── UpstreamError           502  a peer (PACS, EPD, AI product) failed
    │   │   ├── UpstreamTimeout     504  a peer did not answer in time
    │   │   └── UpstreamUnavailable 503  a relayed-to peer is down or answered 5xx
    │   └── UpstreamRefused         4xx  a relayed-to peer refused (its status passed on)
    ├── ConfigurationError      a process cannot start as configured (the message says what
    │                           to change): the gateway's ConfigError (also a ValueError) and
    │                           GatewayNotStartable, the hub's AuthNotConfigured (also a
    │                           RuntimeError)
    ├── AuthError               OAuth2 machinery: InvalidToken (a token that must not be
    │                           accepted), OAuthError (an RFC 6749 §5.2 error response),
    │                           ClientError (a client registration that cannot be made; also a
    │                           ValueError), TokenError (a token endpoint refused us; also a
    │                           RuntimeError)
    └── (directly)              DeliveryFailed (a FHIR EPD POST failed), UpsRefused (a UPS
                                state change Table CC.1.1-2 does not allow), the gateway's
                                Unreadable (received bytes that cannot be stored), Quarantine
                                and NotReidentifiable (pseudonymisation refuses), and the
                                modules' private control-flow exceptions

Those classes live with the code that raises them; this module holds the roots and the
HTTP-mapped ones. Where a class also derived from a built-in (``ValueError``,
``RuntimeError``) before it joined the tree, it keeps that base, so every ``except`` clause
written for it still catches it.

Third-party exceptions are translated once, where they are met (``raise X(...) from exc``).
The HTTP mapping lives with each API surface: DICOMweb answers with the status and a
``Warning: 299`` header (PS3.18 §8.7.2), FHIR with an OperationOutcome; every surface adds
:attr:`HubError.headers` to its response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class AifiError(Exception):
    """The root of every exception aifi-hub defines."""


class HubError(AifiError):
    """Base of every error with an HTTP answer: :attr:`status_code`, the :attr:`reason` told to
    the client, and :attr:`headers` added to whichever error response the API surface builds
    (e.g. ``WWW-Authenticate``, ``Retry-After``)."""

    status_code: int = 500
    issue_code: str | None = None
    """The FHIR OperationOutcome issue type, where the status's default does not fit."""
    expressions: Sequence[str] = ()
    """Where in the request the problem is (FHIRPath locations in an OperationOutcome)."""

    def __init__(self, reason: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})


class InvalidRequest(HubError):
    status_code = 400


class UnsupportedMediaType(InvalidRequest):
    status_code = 415


class NotAcceptable(HubError):
    status_code = 406


class NotFound(HubError):
    status_code = 404


class Unidentifiable(NotFound):
    """A hub answer names a pseudonym the gateway's map cannot re-identify: it is never
    passed on to the EPD (404 on read, dropped from a searchset)."""


class Conflict(HubError):
    status_code = 409


class PreconditionFailed(HubError):
    status_code = 412


class Unprocessable(HubError):
    status_code = 422


class PayloadTooLarge(HubError):
    status_code = 413


class Forbidden(HubError):
    status_code = 403


class Unauthorized(HubError):
    """401 with the ``WWW-Authenticate`` challenge of RFC 6750 §3 (Bearer) or RFC 7617
    (Basic) in :attr:`headers`."""

    status_code = 401

    def __init__(self, reason: str, *, challenge: str) -> None:
        super().__init__(reason, headers={"WWW-Authenticate": challenge})


class TooManyRequests(HubError):
    """429 (RFC 6585 §4) with ``Retry-After`` in seconds."""

    status_code = 429

    def __init__(self, reason: str, *, retry_after: int) -> None:
        super().__init__(reason, headers={"Retry-After": str(retry_after)})


class UpstreamError(HubError):
    status_code = 502


class UpstreamTimeout(UpstreamError):
    status_code = 504


class UpstreamUnavailable(UpstreamError):
    """A peer relayed to (the hub behind the gateway's FHIR facade) cannot be reached, timed
    out or answered 5xx: 503, OperationOutcome issue type ``transient`` (try again later)."""

    status_code = 503
    issue_code = "transient"


class UpstreamRefused(HubError):
    """A peer refused a relayed request with a 4xx: its status is passed on, and
    :attr:`body` (its answer, e.g. an OperationOutcome already re-identified) when it sent
    one."""

    def __init__(self, reason: str, *, status_code: int, body: dict[str, object] | None = None):
        super().__init__(reason)
        self.status_code = status_code
        self.body = body


class PacsQueryError(UpstreamError):
    """The PACS could not be queried or retrieved from (no connection, association rejected
    or aborted, an unreadable answer): trying again later may help. :attr:`reason` names no
    patient or study (it may leave the hospital); :attr:`detail` is what the PACS said, for
    the hospital's own records only."""

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail


class PacsRefused(PacsQueryError):
    """The PACS answered a query or retrieve with a failure status (e.g. C-MOVE A801 move
    destination unknown, HTTP 4xx): :attr:`status` and the message say which and what it
    means; asking again will not help."""

    def __init__(self, reason: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(reason, detail=detail)
        self.status = status


class ConfigurationError(AifiError):
    """A process cannot start as configured; the message says what to change."""


class AuthError(AifiError):
    """The OAuth2 machinery refused: a token, a client registration, a token request."""
