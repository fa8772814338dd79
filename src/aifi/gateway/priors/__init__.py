"""Priors at the gateway (issue 17): the hub's prior requests answered from the hospital's
PACS — the worker (:mod:`~aifi.gateway.priors.worker`), its client of the hub's
prior-request API (:mod:`~aifi.gateway.priors.hub_api`) and its table
(:mod:`~aifi.gateway.priors.tables`, migration ``0006``). The PACS side is
:mod:`aifi.gateway.pacs_query`.

May import: :mod:`aifi.gateway.pacs_query`, :mod:`aifi.gateway.persistence`,
:mod:`aifi.gateway.deid` (keyed pseudonyms, the lookup protocol), the gateway's results
client for :class:`~aifi.gateway.results.hub_api.HubRefused`.
"""

from __future__ import annotations

from aifi.gateway.priors.hub_api import HubPriors
from aifi.gateway.priors.tables import PriorOutcome, PriorState, PriorWork
from aifi.gateway.priors.worker import PriorsWorker

__all__ = ["HubPriors", "PriorOutcome", "PriorState", "PriorWork", "PriorsWorker"]
