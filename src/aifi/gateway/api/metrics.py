"""The gateway's ``GET /metrics`` (issue 19 point 4) in the Prometheus text exposition
format (0.0.4), written by prometheus-client from its own ``CollectorRegistry``.

Read from the gateway's database at scrape time, with three grouped queries:

================================== ============================================================
``aifi_gateway_instances``          received instances by state: received (waiting to be
                                    forwarded), forwarding, forwarded, quarantined, failed
``aifi_gateway_forward_queue_depth`` instances waiting for the hub (received + forwarding)
``aifi_gateway_results``            results pulled back from the hub, by state (pending,
                                    stored, refused, failed)
``aifi_gateway_result_deliveries``  deliveries of results into the PACS, by state (pending,
                                    delivering, delivered, failed)
================================== ============================================================

Gauges, not counters: retention may delete forwarded instances' rows. Labels are states
only — never a UID. Readable from the addresses that may read the status page
(``status.allowed_addresses``, :mod:`aifi.gateway.api.routes`): the same readers, no token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from aifi.errors import Forbidden
from aifi.gateway.ingest.allowed import Network, address_allowed
from aifi.gateway.persistence.result_tables import DeliveryState, ResultState
from aifi.gateway.persistence.tables import InstanceState
from aifi.hub.persistence.database import Database

_QUERIES = {
    "instances": text("SELECT state, COUNT(*) FROM gw_instance GROUP BY state"),
    "results": text("SELECT state, COUNT(*) FROM gw_result GROUP BY state"),
    "deliveries": text("SELECT state, COUNT(*) FROM gw_result_delivery GROUP BY state"),
}
WAITING = (InstanceState.RECEIVED.value, InstanceState.FORWARDING.value)


class GatewayCollector(Collector):
    """The series of the module docstring, read from ``db`` at every scrape; every state
    of the enumerations is reported, 0 when no row is in it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        with self.db.reader.connect() as conn:
            counts = {
                name: {str(state): int(n) for state, n in conn.execute(query)}
                for name, query in _QUERIES.items()
            }
        instances = self._by_state(
            "aifi_gateway_instances",
            "Received instances by forwarding state.",
            [s.value for s in InstanceState],
            counts["instances"],
        )
        depth = GaugeMetricFamily(
            "aifi_gateway_forward_queue_depth",
            "Received instances waiting to be forwarded to the hub.",
            value=float(sum(counts["instances"].get(s, 0) for s in WAITING)),
        )
        results = self._by_state(
            "aifi_gateway_results",
            "Results pulled back from the hub, by state.",
            [s.value for s in ResultState],
            counts["results"],
        )
        deliveries = self._by_state(
            "aifi_gateway_result_deliveries",
            "Deliveries of results into the PACS, by state.",
            [s.value for s in DeliveryState],
            counts["deliveries"],
        )
        yield from (instances, depth, results, deliveries)

    @staticmethod
    def _by_state(
        name: str, documentation: str, states: list[str], counts: dict[str, int]
    ) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=("state",))
        for state in dict.fromkeys([*states, *counts]):
            family.add_metric((state,), float(counts.get(state, 0)))
        return family


def build_metrics_router(db: Database, allowed_addresses: tuple[Network, ...]) -> APIRouter:
    """``GET /metrics`` over a registry of its own holding a :class:`GatewayCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(db))
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", response_class=Response)
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics of the gateway's queues (text exposition format 0.0.4)."""
        address = request.client.host if request.client else ""
        if not address_allowed(address, allowed_addresses):
            raise Forbidden(f"the metrics are not readable from {address or 'this address'}")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
