"""The gateway's way back (issue 15 points 6 and 7): released AI results pulled from the
central hub, re-identified, and delivered into the hospital's PACS; every AI request ends
with a visible answer there.

- :class:`ResultsWorker` polls the hub's released-results feed (the hub never calls into
  the hospital), fetches each result with WADO-RS (PS3.18 §10.4), re-identifies it
  (PS3.15 E.1.2) or refuses it with the reason, writes it under ``results/`` and queues
  its deliveries; a failed or cancelled request gets the "AI analysis not performed"
  Basic Text SR (:mod:`aifi.ihe_profiles.air.not_performed`) in the original study.
- :class:`PacsDeliverer` delivers those files to the configured PACS (STOW-RS or
  C-STORE) with a claim lease, backoff and idempotent SOP Instance UIDs.
- :func:`results_status` is what the status page shows of both.

Its tables are :mod:`aifi.gateway.persistence.result_tables`. May import:
:mod:`aifi.gateway.persistence`, :mod:`aifi.gateway.deid`, the hub's outbox and delivery
plumbing (:mod:`aifi.hub.persistence`, :mod:`aifi.hub.delivery`), :mod:`aifi.dicomweb`,
:mod:`aifi.ihe_profiles.air`, :mod:`aifi.oauth_client`, :mod:`aifi.errors`. Never
:mod:`aifi.gateway.ingest` or :mod:`aifi.gateway.forward`.
"""

from aifi.gateway.persistence.result_tables import (
    DeliveryState,
    GatewayResult,
    ResultDelivery,
    ResultFeed,
    ResultFile,
    ResultState,
)
from aifi.gateway.results.delivery import PacsDeliverer
from aifi.gateway.results.feed import ResultsWorker, write_atomically
from aifi.gateway.results.hub_api import HubRefused, HubResults
from aifi.gateway.results.reidentify import (
    FileReidentifier,
    ReidentifiedInstance,
    leftover_pseudonyms,
    reidentify_instance,
)
from aifi.gateway.results.status import results_status

__all__ = [
    "DeliveryState",
    "FileReidentifier",
    "GatewayResult",
    "HubRefused",
    "HubResults",
    "PacsDeliverer",
    "ReidentifiedInstance",
    "ResultDelivery",
    "ResultFeed",
    "ResultFile",
    "ResultState",
    "ResultsWorker",
    "leftover_pseudonyms",
    "reidentify_instance",
    "results_status",
    "write_atomically",
]
