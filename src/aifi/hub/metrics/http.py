"""Request metrics: ``aifi_http_requests_total`` by method, route template and status code,
and ``aifi_http_request_duration_seconds`` by method and route template (Prometheus naming:
base unit seconds, ``_total`` for a counter).

The route is the matched route's path template with its router prefixes
(``/dicomweb/studies/{study}``), taken from the application's route table
(:func:`aifi.hub.auth.policy.iter_routes`), never the raw path: a UID in a label would make
one series per study. A request that matched no route counts as ``unmatched``.

Per process: each hub process counts the requests it served (sum them in PromQL).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifi.hub.auth.policy import iter_routes

UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404 or 405 of the router)."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Server time, 5 ms to 30 s (STOW-RS of a large study takes seconds)."""

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """The request counter and duration histogram, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "aifi_http_requests",
            "HTTP requests served by this process, by method, route template and status code.",
            ("method", "route", "code"),
            registry=registry,
        )
        self.duration = Histogram(
            "aifi_http_request_duration_seconds",
            "Server time of HTTP requests served by this process, by method and route template.",
            ("method", "route"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(method, route, str(code)).inc()
        self.duration.labels(method, route).observe(seconds)


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no ``BaseHTTPMiddleware``: streamed responses pass untouched)
    that times every HTTP request until its handler returned and counts it under its route
    template."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: dict[int, str] | None = None

    def _route(self, scope: Scope) -> str:
        route: Any = scope.get("route")
        if route is None:
            return UNMATCHED
        if self._templates is None:
            self._templates = {id(r): path for path, r in iter_routes(scope["app"])}
        return self._templates.get(id(route), UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(
                scope["method"], self._route(scope), status, time.perf_counter() - started
            )
