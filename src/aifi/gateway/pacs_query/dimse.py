"""Query/retrieve over classic DICOM (pynetdicom), for PACS without DICOMweb: the
Query/Retrieve Service Class, Study Root Information Model (PS3.4 Annex C).

- **C-FIND** (PS3.4 C.4.1, PS3.7 §9.1.2) at STUDY level (Patient ID, Study Date range,
  Modalities in Study when one is asked; return keys Study Instance UID, Date, Time,
  Modalities in Study, Issuer of Patient ID) and at SERIES level (Body Part Examined).
  Pending responses 0xFF00/0xFF01 carry the matches; 0x0000 ends them; anything else is a
  failure (e.g. 0xA700 out of resources, 0xA900 identifier does not match the SOP class,
  0xCxxx unable to process).
- **C-MOVE** (PS3.4 C.4.2) of one study to ``move_destination`` (default: the gateway's own
  AE title): the PACS opens its own association to the gateway's Storage SCP
  (:mod:`aifi.gateway.ingest.dimse_scp`) and C-STOREs the instances there; the PACS must
  know that AE title (its host and port) and the gateway must allow the PACS's calling AE
  title (``dimse.allowed_calling_ae_titles``). The final response's Number of Completed /
  Failed Sub-operations is the outcome; 0xB000 (some sub-operations failed) is a warning.
- **C-GET** (PS3.4 C.4.3): the PACS sends the instances back as C-STORE requests on the
  same association; the gateway, the association requestor, offers the SCP role for each
  storage SOP class with SCP/SCU Role Selection (PS3.7 D.3.3.4), and each data set goes
  into :meth:`aifi.gateway.ingest.pipeline.Ingest.receive_dataset` like one received by the
  SCP (acknowledged only once on disk and committed).

A failure status of C-MOVE or C-GET becomes :class:`aifi.errors.PacsRefused` with the status
and its meaning (PS3.4 Table C.4-2/C.4-3: 0xA701/0xA702 out of resources, 0xA801 move
destination unknown, 0xA900 identifier does not match SOP class, 0xC000-0xCFFF unable to
process), e.g. ``PACS refused C-MOVE: status 0xA801 (Move destination unknown)``; a
rejected, aborted or timed-out association becomes :class:`aifi.errors.PacsQueryError`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, build_role, evt, status
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from aifi.errors import PacsQueryError, PacsRefused
from aifi.gateway.ingest.dimse_scp import c_store_status, receive_c_store
from aifi.gateway.ingest.pipeline import Ingest, Origin
from aifi.gateway.pacs_query.models import PriorQuery, Retrieved, StudyMatch
from aifi.hub.delivery.destinations import DimseDestination

PENDING = frozenset({0xFF00, 0xFF01})
WARNING_SUBOPERATIONS_FAILED = 0xB000
GET_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
"""What a C-GET's storage contexts accept: the data sets are stored as they come."""
MAX_STORAGE_CONTEXTS = 127
"""PS3.8 §9.3.2.2: at most 128 presentation contexts, one of them the C-GET's own."""

_MEANINGS: dict[str, dict[int, tuple[str, str]]] = {
    "C-FIND": status.QR_FIND_SERVICE_CLASS_STATUS,
    "C-MOVE": status.QR_MOVE_SERVICE_CLASS_STATUS,
    "C-GET": status.QR_GET_SERVICE_CLASS_STATUS,
}


def status_meaning(service: str, code: int) -> str:
    """What a Query/Retrieve status means (PS3.4 Annex C tables, PS3.7 Annex C)."""
    found = _MEANINGS.get(service, {}).get(code) or status.GENERAL_STATUS.get(code)
    if found and found[1]:
        return found[1]
    if 0xC000 <= code <= 0xCFFF:
        return "Unable to process"
    if 0xA700 <= code <= 0xA7FF:
        return "Refused: out of resources"
    return found[0] if found else "unknown status"


def refused(service: str, code: int, comment: str = "") -> PacsRefused:
    """The error for a failure status; the PACS's Error Comment (0000,0902), which may name
    the study, goes into ``detail`` only."""
    text = f"PACS refused {service}: status 0x{code:04X} ({status_meaning(service, code)})"
    return PacsRefused(text, status=code, detail=comment)


class DimseQueryRetrieve:
    """C-FIND + C-MOVE or C-GET against one PACS (its ``pacs`` entry: host, port, called
    AE title, calling AE title, timeout)."""

    def __init__(
        self,
        destination: DimseDestination,
        ingest: Ingest,
        *,
        retrieve: str = "move",
        move_destination: str = "AIFI-GW",
        retrieve_timeout_seconds: float = 600.0,
    ) -> None:
        if retrieve not in ("move", "get"):
            raise ValueError(f"retrieve must be 'move' or 'get', not {retrieve!r}")
        self.name = destination.name
        self.destination = destination
        self.ingest = ingest
        self.retrieve = retrieve
        self.move_destination = move_destination
        self.retrieve_timeout_seconds = retrieve_timeout_seconds

    def close(self) -> None:
        """Nothing is held between calls (one association per operation)."""

    # -- associations -----------------------------------------------------------------------

    def _ae(self, timeout: float) -> AE:
        ae = AE(ae_title=self.destination.calling_ae)
        ae.acse_timeout = self.destination.timeout_seconds
        ae.network_timeout = timeout
        ae.dimse_timeout = timeout
        return ae

    @contextmanager
    def _association(
        self, ae: AE, *, ext_neg: list[Any] | None = None, handlers: list[Any] | None = None
    ) -> Iterator[Association]:
        d = self.destination
        assoc = ae.associate(
            d.host, d.port, ae_title=d.called_ae, ext_neg=ext_neg, evt_handlers=handlers
        )
        if not assoc.is_established:
            if assoc.is_rejected:
                why = "rejected the association"
            elif assoc.is_aborted:
                why = "aborted the association"
            else:
                why = "cannot be reached"
            raise PacsQueryError(
                f"PACS {self.name} ({d.called_ae}@{d.host}:{d.port}) {why}"
                f" (calling AE title {d.calling_ae})"
            )
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _responses(
        self, service: str, responses: Iterator[tuple[Dataset, Dataset | None]]
    ) -> Iterator[tuple[int, Dataset, Dataset | None]]:
        """(status code, status, identifier) per response; an empty status (no answer in
        time, aborted) -> PacsQueryError."""
        for response, identifier in responses:
            if "Status" not in response:
                raise PacsQueryError(
                    f"PACS {self.name}: {service} got no answer (timed out, or the PACS aborted"
                    f" the association: does it know the calling AE title"
                    f" {self.destination.calling_ae}?)"
                )
            yield int(response.Status), response, identifier

    # -- C-FIND -----------------------------------------------------------------------------

    def _find(self, identifier: Dataset) -> list[Dataset]:
        ae = self._ae(self.destination.timeout_seconds)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        found: list[Dataset] = []
        with self._association(ae) as assoc:
            answers = assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
            for code, response, match in self._responses("C-FIND", answers):
                if code in PENDING:
                    if match is not None:
                        found.append(match)
                elif code != 0x0000:
                    raise refused("C-FIND", code, str(response.get("ErrorComment", "")))
        return found

    def find_studies(self, query: PriorQuery) -> list[StudyMatch]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = query.patient_id
        ds.IssuerOfPatientID = ""
        ds.StudyInstanceUID = ""
        ds.StudyDate = query.date_range
        ds.StudyTime = ""
        ds.ModalitiesInStudy = query.single_modality or ""
        out = []
        for match in self._find(ds):
            modalities = match.get("ModalitiesInStudy", "")
            if isinstance(modalities, str):
                modalities = [modalities] if modalities else []
            out.append(
                StudyMatch(
                    study_instance_uid=str(match.get("StudyInstanceUID", "")),
                    study_date=str(match.get("StudyDate", "")),
                    study_time=str(match.get("StudyTime", "")),
                    modalities=tuple(str(m) for m in modalities),
                    issuer=str(match.get("IssuerOfPatientID", "") or ""),
                    patient_id=str(match.get("PatientID", "") or ""),
                )
            )
        return out

    def series_body_parts(self, study_instance_uid: str) -> frozenset[str]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_instance_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.BodyPartExamined = ""
        return frozenset(
            str(m.get("BodyPartExamined", "")).strip().upper()
            for m in self._find(ds)
            if str(m.get("BodyPartExamined", "")).strip()
        )

    # -- C-MOVE / C-GET -----------------------------------------------------------------------

    def retrieve_study(self, study_instance_uid: str) -> Retrieved:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_instance_uid
        if self.retrieve == "get":
            return self._get(ds, study_instance_uid)
        return self._move(ds, study_instance_uid)

    def _final(
        self, service: str, responses: Iterator[tuple[int, Dataset, Dataset | None]]
    ) -> Dataset:
        last: Dataset | None = None
        for code, response, _identifier in responses:
            if code in PENDING:
                continue
            if code not in (0x0000, WARNING_SUBOPERATIONS_FAILED):
                raise refused(service, code, str(response.get("ErrorComment", "")))
            last = response
        if last is None:
            raise PacsQueryError(f"PACS {self.name}: {service} ended without a final response")
        return last

    def _move(self, ds: Dataset, study: str) -> Retrieved:
        ae = self._ae(self.retrieve_timeout_seconds)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        started = time.perf_counter()
        with self._association(ae) as assoc:
            answers = assoc.send_c_move(
                ds, self.move_destination, StudyRootQueryRetrieveInformationModelMove
            )
            final = self._final("C-MOVE", self._responses("C-MOVE", answers))
        return Retrieved(
            study,
            completed=int(final.get("NumberOfCompletedSuboperations", 0) or 0)
            + int(final.get("NumberOfWarningSuboperations", 0) or 0),
            failed=int(final.get("NumberOfFailedSuboperations", 0) or 0),
            seconds=time.perf_counter() - started,
        )

    def _get(self, ds: Dataset, study: str) -> Retrieved:
        ae = self._ae(self.retrieve_timeout_seconds)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles = []
        for context in StoragePresentationContexts[:MAX_STORAGE_CONTEXTS]:
            assert context.abstract_syntax is not None
            ae.add_requested_context(context.abstract_syntax, GET_TRANSFER_SYNTAXES)
            roles.append(build_role(context.abstract_syntax, scp_role=True))
        association = uuid.uuid4().hex
        on_store = _StoreHandler(self.ingest, association, self.name)
        started = time.perf_counter()
        try:
            with self._association(
                ae, ext_neg=roles, handlers=[(evt.EVT_C_STORE, on_store)]
            ) as assoc:
                answers = assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet)
                final = self._final("C-GET", self._responses("C-GET", answers))
        finally:
            self.ingest.association_ended(association)
        return Retrieved(
            study,
            completed=on_store.stored,
            failed=int(final.get("NumberOfFailedSuboperations", 0) or 0),
            seconds=time.perf_counter() - started,
        )


class _StoreHandler:
    """EVT_C_STORE on a C-GET association: each data set into the ingest, as the SCP does
    (:func:`aifi.gateway.ingest.dimse_scp.receive_c_store`)."""

    def __init__(self, ingest: Ingest, association: str, pacs: str) -> None:
        self.ingest = ingest
        self.association = association
        self.pacs = pacs
        self.stored = 0
        self._lock = threading.Lock()

    def __call__(self, event: evt.Event) -> Dataset:
        calling = str(event.assoc.acceptor.ae_title or "").strip()
        origin = Origin(source=f"pacs-get:{self.pacs}"[:200], association=self.association)
        outcome = receive_c_store(self.ingest, event, calling, origin)
        if outcome.status.acknowledged:
            with self._lock:
                self.stored += 1
        return c_store_status(outcome)
