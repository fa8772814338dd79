"""Prometheus metrics of the hub (issue 19 point 4): ``GET /metrics`` in the Prometheus
text exposition format (version 0.0.4), written by prometheus-client.

- :mod:`.http`: requests by method, route template and status code, and their duration
  (a pure ASGI middleware). Per process: each hub process counts its own requests.
- :mod:`.database`: the time of each SQL statement on the hub's engines (SQLAlchemy
  ``before_cursor_execute`` / ``after_cursor_execute`` events). Per process.
- :mod:`.collector`: what the database holds, read at scrape time with a few grouped
  queries (studies and instances received, workitems by state, results by outcome, the
  turnaround histogram, deliveries, outbox and queue depths). The same answer from every
  process, and nothing to update anywhere else in the hub.
- :mod:`.router`: the route, over one :class:`HubMetrics` (a ``CollectorRegistry`` per
  app, never prometheus-client's global one: tests build many apps in one process).

Label values are bounded: tenants, products, states, outcomes, destinations, route
templates, status codes — never a UID, a raw path or anything about a patient.

May import the hub's persistence tables and :mod:`aifi.errors`; nothing imports it but the
composition root (:mod:`aifi.hub.wiring`, :mod:`aifi.hub.app`) and the benchmark.
"""

from aifi.hub.metrics.collector import HubCollector
from aifi.hub.metrics.database import QueryTimer
from aifi.hub.metrics.http import RequestMetrics, RequestMetricsMiddleware
from aifi.hub.metrics.router import HubMetrics, build_router

__all__ = [
    "HubCollector",
    "HubMetrics",
    "QueryTimer",
    "RequestMetrics",
    "RequestMetricsMiddleware",
    "build_router",
]
