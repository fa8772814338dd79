"""``GET /metrics``: the hub's metrics in the Prometheus text exposition format (0.0.4).

The route needs the ``admin`` scope (:mod:`aifi.hub.auth.policy`) of a client of the
operator's tenant (the hub's default tenant, which the audit trail also treats as the
operator's): the series name every hospital, so an administrator of one hospital gets 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest

from aifi.errors import Forbidden
from aifi.hub.metrics.collector import HubCollector
from aifi.hub.metrics.database import QueryTimer
from aifi.hub.metrics.http import RequestMetrics
from aifi.hub.persistence.database import Database
from aifi.principal import PrincipalDep

METRICS_PATH = "/metrics"


class HubMetrics:
    """One app's metrics: its own registry with the request metrics, the query timer (give
    :attr:`queries` ``.listen_to`` to the :class:`~aifi.hub.persistence.database.Database` as
    an engine watcher when it is built) and, once the database exists, the collector of what
    it holds (:meth:`read_from`)."""

    def __init__(self, *, operator_tenant: str) -> None:
        self.operator_tenant = operator_tenant
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.registry)
        self.queries = QueryTimer(self.registry)

    def read_from(self, db: Database) -> None:
        """Register the collector of what ``db`` holds (read at every scrape)."""
        self.registry.register(HubCollector(db))

    def render(self) -> bytes:
        """The exposition of every series, read now."""
        return generate_latest(self.registry)


def build_router(metrics: HubMetrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(METRICS_PATH, response_class=Response)
    def prometheus_metrics(principal: PrincipalDep) -> Response:
        """Prometheus metrics (text exposition format 0.0.4) of this hub process and of
        what its database holds."""
        if principal.tenant != metrics.operator_tenant:
            raise Forbidden("the metrics cover every hospital: an operator's client only")
        return Response(metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
