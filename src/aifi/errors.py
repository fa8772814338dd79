"""One exception tree for aifi-hub.

::

    HubError
    ├── InvalidRequest          400  the request cannot be understood (bad parameter, bad body)
    │   └── UnsupportedMediaType 415  the request body's media type is not accepted
    ├── NotAcceptable           406  no representation the client accepts can be produced
    ├── NotFound                404  the addressed resource does not exist (for this tenant)
    ├── Conflict                409  the request conflicts with the stored state
    ├── PreconditionFailed      412  a condition of the request (If-Match) does not hold
    ├── Unprocessable           422  well-formed but breaks a rule (e.g. an unknown reference)
    ├── PayloadTooLarge         413  the request or the result set is too large
    ├── Unauthorized            401  no valid credentials (WWW-Authenticate says why)
    ├── Forbidden               403  the principal may not do this
    ├── TooManyRequests         429  the client's rate limit is spent (Retry-After)
    └── UpstreamError           502  a peer (PACS, EPD, AI product) failed
        └── UpstreamTimeout     504  a peer did not answer in time

Third-party exceptions are translated once, where they are met (``raise X(...) from exc``).
The HTTP mapping lives with each API surface: DICOMweb answers with the status and a
``Warning: 299`` header (PS3.18 §8.7.2), FHIR with an OperationOutcome.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every error aifi-hub raises on purpose."""

    status_code: int = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRequest(HubError):
    status_code = 400


class UnsupportedMediaType(InvalidRequest):
    status_code = 415


class NotAcceptable(HubError):
    status_code = 406


class NotFound(HubError):
    status_code = 404


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
    (Basic); ``headers`` are added to whichever error response the API surface builds."""

    status_code = 401

    def __init__(self, reason: str, *, challenge: str) -> None:
        super().__init__(reason)
        self.headers = {"WWW-Authenticate": challenge}


class TooManyRequests(HubError):
    """429 (RFC 6585 §4) with ``Retry-After`` in seconds."""

    status_code = 429

    def __init__(self, reason: str, *, retry_after: int) -> None:
        super().__init__(reason)
        self.headers = {"Retry-After": str(retry_after)}


class UpstreamError(HubError):
    status_code = 502


class UpstreamTimeout(UpstreamError):
    status_code = 504
