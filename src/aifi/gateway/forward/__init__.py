"""Store and forward to the central hub (issue 15): the gateway's durable outbox of
received instances, pseudonymised at egress (PS3.15 Annex E) and sent with STOW-RS
(PS3.18 §10.5), the hub's completion signal per study (IHE AIW-I), and the purge of the
local originals once the hub holds them and retention allows. What the pseudonymiser
produced is recorded as it is forwarded (:mod:`~aifi.gateway.forward.pseudonym_map`, the only
place an identity and its pseudonym meet); the results' re-identification looks it up there.

:class:`Forwarder` is an :class:`aifi.hub.persistence.outbox.OutboxWorker`; the gateway's
composition root runs it with :func:`aifi.hub.persistence.outbox.run_outbox_loop` and hands its
:attr:`Forwarder.doorbell` to the ingest side.

May import: :mod:`aifi.gateway.persistence` (tables), :mod:`aifi.gateway.deid`,
the hub's outbox and delivery plumbing (:mod:`aifi.hub.persistence`,
:mod:`aifi.hub.delivery.dicomweb_client`), :mod:`aifi.dicomweb`, :mod:`aifi.oauth_client`,
:mod:`aifi.errors`. Never :mod:`aifi.gateway.ingest` (it only rings the doorbell) or
:mod:`aifi.gateway.results`.
"""

from aifi.gateway.forward.completion import CompletionSignals
from aifi.gateway.forward.forwarder import Forwarder
from aifi.gateway.forward.prepare import FilePseudonymiser
from aifi.gateway.forward.stow_client import HubClient, Part, SignalOutcome

__all__ = [
    "CompletionSignals",
    "FilePseudonymiser",
    "Forwarder",
    "HubClient",
    "Part",
    "SignalOutcome",
]
