"""The gateway's background workers — forwarding to the hub (with completion signals and
purge), the results feed, PACS delivery — built in one place for both places they run: the
gateway's own child process (:mod:`aifi.gateway.worker_process`, the default) or the
gateway process itself (``worker_process`` off: tests, a single-core box).

Each is an :class:`aifi.hub.persistence.outbox.OutboxWorker` run by
:func:`~aifi.hub.persistence.outbox.run_outbox_loop`; a new one is one more entry in
:func:`background_workers`. The forwarder listens on the ``doorbell`` the ingest side rings
after each commit (in the child, the bell arrives over a socket).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from aifi.dicomweb.worklist import Doorbell
from aifi.gateway.config import GatewayConfig
from aifi.gateway.deid import Pseudonymiser, Reidentifier
from aifi.gateway.fhir.subscription_relay import relay_workers
from aifi.gateway.forward import Forwarder
from aifi.gateway.forward.pseudonym_map import SqlPseudonymLookup
from aifi.gateway.priors.build import priors_worker
from aifi.gateway.results import PacsDeliverer, ResultsWorker
from aifi.gateway.settings import GatewaySettings
from aifi.hub.delivery.destinations import Destination
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import OutboxWorker, run_outbox_loop


@dataclass(frozen=True, slots=True)
class BackgroundWorker:
    """One outbox worker and how often its loop looks for due work."""

    name: str
    worker: OutboxWorker
    poll_seconds: float
    close: Callable[[], None] | None = None
    """Releases what the worker alone holds (its own HTTP clients), once its loop ended."""


def background_workers(
    settings: GatewaySettings,
    config: GatewayConfig,
    db: Database,
    key: bytes,
    hub: httpx.Client,
    destinations: list[Destination],
    doorbell: Doorbell,
    clock: Callable[[], datetime],
) -> list[BackgroundWorker]:
    """The gateway's outbox workers: forwarding (and completion signals, purge), the
    results feed, PACS delivery, and priors from the PACS when ``priors:`` names one; the
    FHIR relay to the EPD (subscriptions; the push when ``fhir.epd_url`` is set)."""
    poll = settings.worker_poll_seconds
    forwarder = Forwarder(
        db,
        settings.data_dir,
        Pseudonymiser(config.profile(), key),
        hub,
        clock=clock,
        doorbell=doorbell,
        quiet_seconds=config.stow.quiet_seconds,
        retention_seconds=config.retention.forwarded_hours * 3600,
        unsent_retention_seconds=config.retention.quarantined_days * 86400,
        backoff_seconds=settings.retry_backoff_seconds,
        max_backoff_seconds=settings.retry_max_backoff_seconds,
    )
    lookup = SqlPseudonymLookup(db)
    first, longest = settings.retry_backoff_seconds, settings.retry_max_backoff_seconds
    deliverer = PacsDeliverer(
        db,
        settings.data_dir,
        destinations,
        clock=clock,
        doorbell=Doorbell(),
        backoff_seconds=first,
        max_backoff_seconds=longest,
        results_retention_seconds=config.retention.delivered_results_days * 86400,
    )
    results = ResultsWorker(
        db,
        settings.data_dir,
        Reidentifier(lookup, key=key),
        lookup,
        hub,
        clock=clock,
        doorbell=Doorbell(),
        deliverer=deliverer,
        backoff_seconds=first,
        max_backoff_seconds=longest,
    )
    priors = priors_worker(settings, config, db, key, hub, destinations, doorbell, clock)
    return [
        BackgroundWorker("forwarding", forwarder, poll),
        BackgroundWorker("results", results, settings.results_poll_seconds),
        BackgroundWorker("pacs-delivery", deliverer, poll),
        *(
            [BackgroundWorker("priors", priors, config.priors.poll_seconds, priors.close)]
            if priors
            else []
        ),
        *(
            BackgroundWorker(name, relay, every, relay.close)
            for name, relay, every in relay_workers(settings, config, db, key, clock)
        ),
    ]


def start_loops(workers: list[BackgroundWorker]) -> list[asyncio.Task[None]]:
    """Each worker's loop as a task on the running event loop; its ``close`` (if any) runs
    when the loop has ended."""
    return [asyncio.create_task(_loop(w)) for w in workers]


async def _loop(worker: BackgroundWorker) -> None:
    try:
        await run_outbox_loop(worker.worker, worker.poll_seconds, worker.name)
    finally:
        if worker.close is not None:
            worker.close()


async def stop_loops(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the loops and wait until they have ended (a round under way in its thread
    finishes first)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
