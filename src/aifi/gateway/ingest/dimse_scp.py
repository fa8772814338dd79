"""The gateway's DIMSE SCP (pynetdicom): Verification (C-ECHO, PS3.4 Annex A) and the
Storage Service Class (C-STORE, PS3.4 Annex B) for every storage SOP class pynetdicom knows,
with every transfer syntax a Part 10 file can have (implicit/explicit VR little endian,
deflated, big endian (retired), the JPEG family with JPEG-LS, JPEG 2000 and HTJ2K, RLE, the
MPEG/HEVC video syntaxes): the gateway stores data sets as they come and never decodes them.

Association acceptance (PS3.8 §9.3.4 A-ASSOCIATE-RJ): when the configuration lists calling
AE titles, any other is rejected with result 1 (rejected-permanent), source 1 (DICOM UL
service-user), reason 3 (calling-AE-title-not-recognized); when it lists addresses, a peer
from any other address is rejected with result 1, source 1, reason 1 (no-reason-given —
PS3.8 has no reason for addresses); when the configuration requires it, an association
addressed to another AE title is rejected by pynetdicom with result 1, source 1, reason 7
(called-AE-title-not-recognized).

C-STORE responses (PS3.4 B.2.3): 0x0000 only once the instance is on disk and committed
(:mod:`aifi.gateway.ingest.pipeline`); otherwise the failure status with an Error Comment
(0000,0902): 0xC210 cannot understand (unparseable or truncated data set), 0xA900 the data
set does not match the request or lacks its UIDs, 0x0111 a different instance with this
SOP Instance UID was received before, 0xA700 out of storage space, 0x0110 anything else.

The end of an association (A-RELEASE, A-ABORT, or the connection dropped) makes the
studies it brought complete (:meth:`Ingest.association_ended`).

pynetdicom runs the server in its own thread and each association in another;
:meth:`DimseScp.start` and :meth:`DimseScp.stop` are called by the gateway's lifespan.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from aifi.dicomweb.instance_checks import transfer_syntax_supported
from aifi.gateway.ingest.allowed import Network, address_allowed
from aifi.gateway.ingest.part10 import encode_file_meta
from aifi.gateway.ingest.pipeline import Ingest, IngestOutcome, Origin

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [uid for uid in AllTransferSyntaxes if transfer_syntax_supported(uid)]
"""Every transfer syntax of a PS3.10 file (not the network-only or MIME encodings)."""

_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
_NO_REASON = 0x01
_CALLING_AE_NOT_RECOGNIZED = 0x03
_ERROR_COMMENT_MAX = 64  # LO (PS3.5 Table 6.2-1)


def receive_c_store(
    ingest: Ingest, event: evt.Event, calling: str, origin: Origin
) -> IngestOutcome:
    """A C-STORE request's data set into the ingest as received (PS3.7 §9.1.1): the File
    Meta Information built from the command (``calling`` as Source Application Entity
    Title), the data set handed over as a view of pynetdicom's buffer, not a copy of it,
    released before returning (a BytesIO with a view on it cannot be closed or resized).
    Used by the SCP and by the C-GET SCU (:mod:`aifi.gateway.pacs_query.dimse`)."""
    request = cast(C_STORE, event.request)
    sop_class = str(request.AffectedSOPClassUID or "")
    sop_instance = str(request.AffectedSOPInstanceUID or "")
    transfer_syntax = str(event.context.transfer_syntax)
    meta = encode_file_meta(sop_class, sop_instance, transfer_syntax, calling)
    received = cast(BytesIO, request.DataSet)
    with received.getbuffer() as dataset:
        return ingest.receive_dataset(
            meta,
            dataset,
            origin,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            transfer_syntax_uid=transfer_syntax,
        )


def c_store_status(outcome: IngestOutcome) -> Dataset:
    """The C-STORE response's Status (and Error Comment, LO) for an ingest outcome."""
    status = Dataset()
    status.Status = outcome.failure
    if outcome.reason:
        status.ErrorComment = outcome.reason[:_ERROR_COMMENT_MAX]
    return status


class DimseScp:
    """A pynetdicom Storage SCP feeding :class:`~aifi.gateway.ingest.pipeline.Ingest`."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        ae_title: str,
        host: str,
        port: int,
        allowed_calling_ae_titles: frozenset[str] = frozenset(),
        allowed_addresses: tuple[Network, ...] = (),
        require_called_ae_title: bool = False,
        max_associations: int = 16,
        max_pdu: int = 1_048_576,
    ) -> None:
        self.ingest = ingest
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.allowed_calling_ae_titles = frozenset(t.strip() for t in allowed_calling_ae_titles)
        self.allowed_addresses = allowed_addresses
        ae = AE(ae_title=ae_title)
        ae.maximum_associations = max_associations
        ae.require_called_aet = require_called_ae_title  # else reason 7 (PS3.8 §9.3.4)
        ae.maximum_pdu_size = max_pdu
        ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self._ae = ae
        self._server: ThreadedAssociationServer | None = None
        self._ids: weakref.WeakKeyDictionary[Association, str] = weakref.WeakKeyDictionary()
        self._ids_lock = threading.Lock()

    @property
    def bound_port(self) -> int:
        """The port listened on (the given one, or the one the system chose for 0)."""
        if self._server is None:
            return self.port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen (in pynetdicom's server thread); returns at once."""
        if self._server is not None:
            return
        # pynetdicom's standard handlers describe every PDU and DIMSE message at DEBUG and
        # log an INFO line per C-STORE; they build that text (and copy each data set to
        # see that there is one) whatever the level shown. The gateway binds them only
        # when pynetdicom's DEBUG lines are shown (``--log-level debug``): per instance
        # they cost a tenth of the C-STORE path, and an INFO line per received image is
        # not a log a hospital can read. The setting is pynetdicom's, for the process.
        debug = logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
        _config.LOG_HANDLER_LEVEL = "standard" if debug else "none"
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]
        self._server = self._ae.start_server(
            (self.host, self.port), block=False, evt_handlers=handlers
        )
        log.info("DIMSE SCP %s listening on %s:%d", self.ae_title, self.host, self.bound_port)

    def stop(self) -> None:
        """Stop listening and end the open associations (their studies become due)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    # -- handlers (run in the association's thread) ----------------------------------------

    def _association_id(self, assoc: Association) -> str:
        with self._ids_lock:
            ident = self._ids.get(assoc)
            if ident is None:
                ident = uuid.uuid4().hex
                self._ids[assoc] = ident
            return ident

    def _on_requested(self, event: evt.Event) -> None:
        """A-ASSOCIATE-RQ received: reject a peer the configuration does not allow
        (pynetdicom sends no A-ASSOCIATE-AC once the request is rejected here)."""
        assoc = event.assoc
        primitive = cast(A_ASSOCIATE, assoc.requestor.primitive)
        calling = str(primitive.calling_ae_title or "").strip()
        address = str(assoc.requestor.address)
        reason = None
        if not address_allowed(address, self.allowed_addresses):
            reason = _NO_REASON
        elif self.allowed_calling_ae_titles and calling not in self.allowed_calling_ae_titles:
            reason = _CALLING_AE_NOT_RECOGNIZED
        if reason is None:
            return
        log.warning("rejected an association from %r at %s (not allowed)", calling, address)
        assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, reason)
        assoc.is_rejected = True
        assoc.kill()

    def _on_echo(self, event: evt.Event) -> int:
        return 0x0000

    def _on_store(self, event: evt.Event) -> Dataset:
        assoc = event.assoc
        calling = str(assoc.requestor.ae_title or "").strip()
        origin = Origin(
            source=f"dimse:{calling}@{assoc.requestor.address}",
            association=self._association_id(assoc),
        )
        return c_store_status(receive_c_store(self.ingest, event, calling, origin))

    def _on_end(self, event: evt.Event) -> None:
        with self._ids_lock:
            ident = self._ids.pop(event.assoc, None)
        if ident is not None:
            self.ingest.association_ended(ident)
