"""Store and forward to the central hub (issue 15): the gateway's durable outbox of
received instances, pseudonymised at egress (PS3.15 Annex E) and sent with STOW-RS
(PS3.18 §10.5), the hub's completion signal per study (IHE AIW-I), and the purge of the
local originals once the hub holds them and retention allows.

:class:`Forwarder` is an :class:`aifi.hub.persistence.outbox.OutboxWorker`; the gateway's
composition root runs it with :func:`aifi.hub.persistence.outbox.run_outbox_loop` and hands its
:attr:`Forwarder.doorbell` to the ingest side.
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
