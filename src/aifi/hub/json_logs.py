"""JSON log lines and request ids (issue 19 point 4): with ``AIFI_LOG_FORMAT=json`` the hub
and the gateway write one JSON object per line (RFC 8259), for log collectors that need no
parsing rules.

Every line has ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and
``message``, and ``request_id`` when it was written while a request was handled. An access
line (logger ``aifi.access``, written by :class:`RequestLog` once the response is sent, in
place of uvicorn's access log) adds ``method``, ``route`` (the route TEMPLATE, e.g.
``/dicomweb/studies/{study}``, or null when no route matched: never the request's own path,
which carries UIDs, nor its query string), ``status`` and ``duration_ms``.

Request ids: an incoming ``X-Request-ID`` (set by a reverse proxy: nginx's
``$request_id``, a UUID) is kept when it is a UUID or 16 to 64 hexadecimal digits, so that
nothing a client chooses (a patient id, a DICOM UID) can reach the logs through it; any
other value is replaced by a new random id. The id is echoed in the response's
``X-Request-ID`` header in both log formats.

Nothing here adds a token or an identifier: the formatter writes the message as the text
format would (URLs in ``uvicorn.access`` and ``httpx`` records are redacted by
:mod:`aifi.hub.log_hygiene` first), and the access line holds only the fields above.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifi.hub.auth.policy import iter_routes

REQUEST_ID_HEADER = "x-request-id"
ACCESS_LOGGER = "aifi.access"

request_id_var: ContextVar[str | None] = ContextVar("aifi_request_id", default=None)
"""The id of the request being handled (threads of ``run_in_threadpool`` inherit it)."""

_SAFE_REQUEST_ID = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|[0-9A-Fa-f]{16,64}"
)

ACCESS_FIELDS = ("method", "route", "status", "duration_ms")
"""Attributes of an access record that become fields of its JSON line."""

_access_log = logging.getLogger(ACCESS_LOGGER)


def safe_request_id(value: str | None) -> str | None:
    """``value`` when it is a UUID or 16-64 hexadecimal digits, else None (module
    docstring)."""
    if value is None or not _SAFE_REQUEST_ID.fullmatch(value):
        return None
    return value


def new_request_id() -> str:
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class RequestLog:
    """Pure ASGI middleware (outermost): gives each HTTP request its id (kept from a safe
    incoming ``X-Request-ID``, else new), echoes it in the response, and with
    ``access_lines`` writes the access line to ``aifi.access`` when the response is done.

    The route template is the matched route's full path, from the app's routes
    (:func:`aifi.hub.auth.policy.iter_routes`, as the audit trail finds it)."""

    def __init__(self, app: ASGIApp, *, access_lines: bool) -> None:
        self.app = app
        self.access_lines = access_lines
        self._templates: dict[int, str] | None = None

    def _template(self, scope: Scope) -> str | None:
        route = scope.get("route")
        if route is None:
            return None
        if self._templates is None:
            self._templates = {id(r): path for path, r in iter_routes(scope["app"])}
        return self._templates.get(id(route))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None
        )
        request_id = safe_request_id(incoming) or new_request_id()
        header = (b"x-request-id", request_id.encode("ascii"))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # when the app fails before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_lines:
                self._log(scope, status, started)
            request_id_var.reset(token)

    def _log(self, scope: Scope, status: int, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        route = self._template(scope)
        method = str(scope["method"])
        _access_log.info(
            "%s %s %d %.2f ms",
            method,
            route or "-",
            status,
            duration_ms,
            extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms},
        )


def json_handler(stream: Any = None) -> logging.Handler:
    """A stream handler (standard error by default) writing JSON lines."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler


__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "RequestLog",
    "json_handler",
    "new_request_id",
    "request_id_var",
    "safe_request_id",
]
