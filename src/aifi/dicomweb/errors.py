"""DICOMweb error responses: the status from :mod:`aifi.errors` and the ``Warning: 299``
header PS3.18 §8.7.3 (Warning Header Field) uses to say why::

    Warning: 299 http://host/dicomweb: The fuzzymatching parameter is not supported.

The body repeats the reason as plain text, for people reading it in a browser or a log.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

from aifi.errors import HubError


def warning_header(service: str, text: str) -> str:
    """A ``Warning`` header value (RFC 7234 §5.5, warn-code 299), safe for HTTP/1.1 headers."""
    clean = " ".join(text.replace('"', "'").split())
    clean = clean.encode("latin-1", "replace").decode("latin-1")
    return f"299 {service}: {clean}"


def service_from_request(request: Request) -> str:
    config = getattr(request.app.state, "dicomweb_config", None)
    if config is not None:
        return str(config.service_url(request))
    return str(request.base_url).rstrip("/")


def dicomweb_error_response(request: Request, error: HubError) -> Response:
    return PlainTextResponse(
        error.reason + "\n",
        status_code=error.status_code,
        headers={"Warning": warning_header(service_from_request(request), error.reason)},
    )
