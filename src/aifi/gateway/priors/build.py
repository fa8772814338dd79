"""Building the priors worker from the gateway's settings and configuration (called by
:func:`aifi.gateway.workers.background_workers`, in whichever process the workers run).

The ``priors:`` section (:class:`aifi.gateway.config.PriorsConfig`) names the ``pacs`` entry
to query; without it the gateway works no prior requests (the hub's workitems then go
ahead without priors at their deadline). The retrieved instances enter the gateway through
an :class:`~aifi.gateway.ingest.pipeline.Ingest` of this process on the gateway's database
and store (SQLite serialises its commits with the DIMSE SCP's and STOW-RS's), which rings
the forwarder's ``doorbell``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import httpx

from aifi.gateway.config import ConfigError, GatewayConfig
from aifi.gateway.forward.pseudonym_map import SqlPseudonymLookup
from aifi.gateway.ingest.index import ingest_database
from aifi.gateway.ingest.pipeline import Bell, Ingest
from aifi.gateway.ingest.store import InstanceStore
from aifi.gateway.pacs_query import PacsQueryRetrieve, pacs_query_for
from aifi.gateway.priors.hub_api import HubPriors
from aifi.gateway.priors.worker import PriorsWorker
from aifi.gateway.settings import GatewaySettings
from aifi.hub.delivery.destinations import Destination
from aifi.hub.persistence.database import Database


def priors_pacs(config: GatewayConfig, destinations: Sequence[Destination]) -> Destination | None:
    """The PACS the ``priors:`` section names (``None`` when it names none);
    :class:`ConfigError` when no ``pacs`` entry (nor ``--pacs``) has that name."""
    name = config.priors.pacs
    if name is None:
        return None
    for destination in destinations:
        if destination.name == name:
            return destination
    known = ", ".join(d.name for d in destinations) or "none"
    raise ConfigError(f"{config.source}: priors.pacs: no PACS named {name!r} (known: {known})")


def priors_worker(
    settings: GatewaySettings,
    config: GatewayConfig,
    db: Database,
    key: bytes,
    hub: httpx.Client,
    destinations: Sequence[Destination],
    doorbell: Bell,
    clock: Callable[[], datetime],
) -> PriorsWorker | None:
    """The priors worker, or ``None`` when no PACS is configured for priors."""
    pacs = priors_pacs(config, destinations)
    if pacs is None:
        return None
    section = config.priors
    ingest = Ingest(
        ingest_database(settings.database_url),
        InstanceStore(settings.data_dir, fsync=settings.fsync),
        doorbell,
        clock=clock,
    )

    def open_pacs() -> PacsQueryRetrieve:
        return pacs_query_for(
            pacs,
            ingest,
            retrieve=section.retrieve,
            move_destination=section.move_destination or settings.ae_title,
            retrieve_timeout_seconds=section.retrieve_timeout_seconds,
        )

    return PriorsWorker(
        db,
        HubPriors(hub),
        open_pacs,
        SqlPseudonymLookup(db),
        key,
        clock=clock,
        backoff_seconds=settings.retry_backoff_seconds,
        max_backoff_seconds=settings.retry_max_backoff_seconds,
        forward_timeout_seconds=section.forward_timeout_seconds,
        release=ingest.db.dispose,
    )
