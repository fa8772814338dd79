"""The kit's DIMSE requests beyond C-STORE (which the hub's own
:class:`~aifi.hub.delivery.dimse_client.DimsePacs` sends), with pynetdicom, all on the Study
Root Query/Retrieve Information Model (PS3.4 C.6.2):

* :class:`CFindFinder` — C-FIND (PS3.4 C.4.1; PS3.7 §9.1.2) at STUDY, SERIES or IMAGE level,
  the UIDs of the levels above as unique keys (hierarchical query, C.4.1.3.1), the key
  attributes as empty return keys; one association per query;
* :class:`CGetRetriever` — C-GET (PS3.4 C.4.3; PS3.7 §9.1.3): the instances come back on the
  same association as C-STORE sub-operations, so the kit proposes each Storage SOP Class
  with SCP/SCU Role Selection (PS3.7 D.3.3.4), one presentation context per Transfer Syntax
  (as stored, Explicit and Implicit VR Little Endian) so the PACS can send what it holds;
* :class:`CMoveRetriever` — C-MOVE (PS3.4 C.4.2; PS3.7 §9.1.4): the PACS opens its own
  association to the Move Destination, an AE title it must know (its configuration maps
  the title to a host and port); the kit runs that Storage SCP on the given port.

An association the PACS rejects, or a Q/R SOP Class it does not accept, is the reason the
service is not offered (:meth:`CGetRetriever.open`); a query that fails raises
:class:`~aifi.errors.UpstreamError` naming the status (PS3.4 Tables C.4-1, C.4-2, C.4-3).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import (
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    QR_MOVE_SERVICE_CLASS_STATUS,
)

from aifi.conformance_kit.pacs.compare import Retrieved
from aifi.conformance_kit.pacs.services import Uids
from aifi.errors import UpstreamError
from aifi.hub.delivery.destinations import validate_ae_title

PENDING = frozenset({0xFF00, 0xFF01})
_ADDRESS = re.compile(r"^(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class DimseAddress:
    """A PACS's DICOM address, written ``AE@HOST:PORT``."""

    ae: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DimseAddress:
        """``AE@HOST:PORT``; :class:`ValueError` saying what is wrong."""
        match = _ADDRESS.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not AE@HOST:PORT (e.g. PACS@10.1.2.3:104)")
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not 1-65535")
        return cls(validate_ae_title(match["ae"]), match["host"].strip("[]"), port)

    def __str__(self) -> str:
        return f"{self.ae}@{self.host}:{self.port}"


def new_ae(title: str, timeout_seconds: float) -> AE:
    """A pynetdicom AE with every timeout (connect, ACSE, DIMSE, network) set."""
    ae = AE(ae_title=title)
    ae.acse_timeout = timeout_seconds
    ae.dimse_timeout = timeout_seconds
    ae.network_timeout = timeout_seconds
    ae.connection_timeout = timeout_seconds
    return ae


def refusal(assoc: Any, address: DimseAddress) -> str:
    """Why an association was not established, in a sentence."""
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        return (
            f"{address} rejected the association: {answer.result_str}, {answer.source_str}:"
            f" {answer.reason_str}"
        )
    if answer is not None and answer.result == 0x00:
        return f"{address} accepted none of the presentation contexts proposed"
    if assoc.is_aborted:
        return f"{address} aborted the association during negotiation"
    return f"cannot connect to {address} (connection refused, or no answer in time)"


def _associate(ae: AE, address: DimseAddress, **kwargs: Any) -> Any:
    """``ae.associate`` to the PACS; a host name that does not resolve becomes an
    :class:`~aifi.errors.UpstreamError`."""
    try:
        return ae.associate(address.host, address.port, ae_title=address.ae, **kwargs)
    except OSError as exc:
        raise UpstreamError(f"cannot connect to {address}: {exc.strerror or exc}") from exc


def _status(code: int, table: Mapping[int, tuple[str, str]]) -> str:
    known = table.get(code)
    return f"0x{code:04X} ({known[1] if known else 'unknown status'})"


def identifier(uids: Uids, keys: Iterable[str] = ()) -> Dataset:
    """A Study Root identifier at ``uids.level`` with the UIDs and empty return ``keys``."""
    ds = Dataset()
    ds.QueryRetrieveLevel = uids.level.value
    ds.StudyInstanceUID = uids.study
    if uids.series is not None:
        ds.SeriesInstanceUID = uids.series
    if uids.instance is not None:
        ds.SOPInstanceUID = uids.instance
    for keyword in keys:
        tag = tag_for_keyword(keyword)
        if tag is not None and tag not in ds:
            ds.add_new(tag, dictionary_VR(tag), None)
    return ds


class CFindFinder:
    """C-FIND SCU on the Study Root model (module docstring)."""

    name = "C-FIND"
    cites = ["DICOM PS3.4 C.4.1", "DICOM PS3.4 C.6.2"]

    def __init__(self, address: DimseAddress, *, calling_ae: str, timeout_seconds: float) -> None:
        self.address = address
        self.calling_ae = calling_ae
        self.timeout_seconds = timeout_seconds

    def find(self, uids: Uids, keys: tuple[str, ...]) -> list[Dataset]:
        ae = new_ae(self.calling_ae, self.timeout_seconds)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        try:
            assoc = _associate(ae, self.address)
            if not assoc.is_established:
                raise UpstreamError(f"C-FIND: {refusal(assoc, self.address)}")
            try:
                answers = list(
                    assoc.send_c_find(
                        identifier(uids, keys), StudyRootQueryRetrieveInformationModelFind
                    )
                )
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            ae.shutdown()
        return _matches(answers, self.address)


def _matches(answers: list[tuple[Dataset, Dataset | None]], address: DimseAddress) -> list[Dataset]:
    found: list[Dataset] = []
    for status, match in answers:
        if "Status" not in status:
            raise UpstreamError(f"C-FIND: {address} gave no response in time or aborted")
        code = int(status.Status)
        if code in PENDING:
            if match is not None:
                found.append(match)
        elif code != 0x0000:
            raise UpstreamError(
                f"C-FIND: {address} answered {_status(code, QR_FIND_SERVICE_CLASS_STATUS)}"
            )
    return found


def _syntaxes(stored: str) -> list[str]:
    return list(dict.fromkeys([stored, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))


class _Received:
    """The C-STORE sub-operations that arrived, by SOP Instance UID (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Retrieved] = {}

    def on_store(self, event: Any) -> int:
        data = event.request.DataSet.getvalue()
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self._items[uid] = Retrieved(data, str(event.context.transfer_syntax))
        return 0x0000

    def pop(self, uid: str) -> Retrieved | None:
        with self._lock:
            return self._items.pop(uid, None)


def _final(
    answers: Iterator[tuple[Dataset, Dataset | None]],
    service: str,
    table: Mapping[int, tuple[str, str]],
    address: DimseAddress,
) -> None:
    """Consume a C-GET/C-MOVE's responses; raise unless the last one is Success."""
    last: Dataset | None = None
    for status, _identifier in answers:
        last = status
    if last is None or "Status" not in last:
        raise UpstreamError(f"{service}: {address} gave no final response in time or aborted")
    code = int(last.Status)
    if code != 0x0000:
        failed = last.get("NumberOfFailedSuboperations")
        detail = f", {failed} failed sub-operation(s)" if failed else ""
        raise UpstreamError(f"{service}: {address} answered {_status(code, table)}{detail}")


class CGetRetriever:
    """C-GET SCU with the Storage SCP role on the same association (module docstring)."""

    name = "C-GET"
    cites = ["DICOM PS3.4 C.4.3", "DICOM PS3.7 D.3.3.4"]

    def __init__(
        self,
        address: DimseAddress,
        storage: Mapping[str, str],
        *,
        calling_ae: str,
        timeout_seconds: float,
    ) -> None:
        """``storage``: SOP Class UID -> Transfer Syntax UID it was sent in."""
        self.address = address
        self.storage = dict(storage)
        self.calling_ae = calling_ae
        self.timeout_seconds = timeout_seconds
        self._ae = new_ae(calling_ae, timeout_seconds)
        self._received = _Received()
        self._assoc: Any = None

    def _contexts(self) -> list[PresentationContext]:
        contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)]
        for sop_class, stored in self.storage.items():
            contexts += [build_context(sop_class, syntax) for syntax in _syntaxes(stored)]
        return contexts

    def open(self) -> str | None:
        roles: list[Any] = [build_role(sop_class, scp_role=True) for sop_class in self.storage]
        try:
            assoc = _associate(
                self._ae,
                self.address,
                contexts=self._contexts(),
                ext_neg=roles,
                evt_handlers=[(evt.EVT_C_STORE, self._received.on_store)],
            )
        except UpstreamError as exc:
            return str(exc)
        if not assoc.is_established:
            return refusal(assoc, self.address)
        self._assoc = assoc
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        if StudyRootQueryRetrieveInformationModelGet not in accepted:
            return f"{self.address} does not accept the Study Root C-GET SOP Class"
        return None

    def retrieve(self, uids: Uids) -> Retrieved:
        answers = self._assoc.send_c_get(
            identifier(uids), StudyRootQueryRetrieveInformationModelGet
        )
        _final(answers, "C-GET", QR_GET_SERVICE_CLASS_STATUS, self.address)
        got = self._received.pop(str(uids.instance))
        if got is None:
            raise UpstreamError(f"C-GET: {self.address} reported success but sent no instance")
        return got

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._ae.shutdown()


class CMoveRetriever:
    """C-MOVE SCU and the Storage SCP it moves to (module docstring)."""

    name = "C-MOVE"
    cites = ["DICOM PS3.4 C.4.2"]

    def __init__(
        self,
        address: DimseAddress,
        storage: Mapping[str, str],
        *,
        calling_ae: str,
        move_ae: str,
        move_port: int,
        timeout_seconds: float,
    ) -> None:
        self.address = address
        self.storage = dict(storage)
        self.move_ae = move_ae
        self.move_port = move_port
        self.timeout_seconds = timeout_seconds
        self._ae = new_ae(calling_ae, timeout_seconds)
        self._scp = new_ae(move_ae, timeout_seconds)
        self._received = _Received()
        self._server: Any = None
        self._assoc: Any = None

    def open(self) -> str | None:
        for sop_class, stored in self.storage.items():
            self._scp.add_supported_context(sop_class, _syntaxes(stored))
        try:
            self._server = self._scp.start_server(
                ("", self.move_port),  # every interface: the PACS connects from its own host
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._received.on_store)],
            )
        except OSError as exc:
            return f"the kit cannot listen as {self.move_ae} on port {self.move_port}: {exc}"
        self._ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        try:
            assoc = _associate(self._ae, self.address)
        except UpstreamError as exc:
            return str(exc)
        if not assoc.is_established:
            return refusal(assoc, self.address)
        self._assoc = assoc
        return None

    def retrieve(self, uids: Uids) -> Retrieved:
        answers = self._assoc.send_c_move(
            identifier(uids), self.move_ae, StudyRootQueryRetrieveInformationModelMove
        )
        _final(answers, "C-MOVE", QR_MOVE_SERVICE_CLASS_STATUS, self.address)
        deadline = time.monotonic() + self.timeout_seconds
        while (got := self._received.pop(str(uids.instance))) is None:
            if time.monotonic() > deadline:
                raise UpstreamError(
                    f"C-MOVE: {self.address} reported success but {self.move_ae} on port"
                    f" {self.move_port} received no instance within {self.timeout_seconds:g} s"
                )
            time.sleep(0.02)
        return got

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._ae.shutdown()
        if self._server is not None:
            self._server.shutdown()
        self._scp.shutdown()


def storage_classes(objects: Iterable[tuple[str, str]]) -> dict[str, str]:
    """SOP Class UID -> Transfer Syntax UID, from (class, syntax) pairs (first wins)."""
    classes: dict[str, str] = {}
    for sop_class, syntax in objects:
        classes.setdefault(str(UID(sop_class)), str(syntax))
    return classes
