"""STOW-RS into the gateway (PS3.18 §10.5), for PACS that push over DICOMweb:
``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{StudyInstanceUID}`` (the routes are
in :mod:`aifi.gateway.api.routes`; here is what they store into).

The request handling is the hub's (:func:`aifi.dicomweb.stow.store_instances`: media type
checks and 415/400, the streamed multipart reader, the per-part checks and Failure
Reasons, the Store Instances Response Module in DICOM JSON or XML, statuses 200/202/409);
only the store differs: each checked part goes through :class:`~aifi.gateway.ingest.pipeline.Ingest`
like a C-STORE data set, so an instance is listed as stored only once it is on disk and
committed. A part already received with the same data set counts as stored; a different
one with a stored SOP Instance UID fails with 0111 (see :mod:`aifi.gateway.ingest.pipeline`).

Clients: when the configuration lists STOW-RS addresses, a request from any other address
is refused with 403 before its body is read. The gateway's HTTP side has no user
authentication of its own: it listens inside the hospital (bind it to the PACS-facing
interface and list the PACS's address).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request

from aifi.dicom_json import DicomJson
from aifi.dicomweb.deps import DicomwebConfig
from aifi.dicomweb.store import IncomingInstance, StoredInstance, StoreOutcome, StoreStatus
from aifi.errors import Forbidden, NotFound
from aifi.gateway.ingest.allowed import Network, address_allowed
from aifi.gateway.ingest.pipeline import Ingest, IngestStatus, Origin

if TYPE_CHECKING:
    from aifi.dicomweb.qido_query import QidoQuery, QueryResult

PREFIX = "/dicomweb"
TENANT = "gateway"
"""The gateway has one hospital; the hub's STOW-RS code asks for a tenant."""


class IngestSink:
    """One STOW-RS request's view of the gateway as a :class:`~aifi.dicomweb.store.DicomStore`:
    ``put`` hands each checked part to :meth:`Ingest.receive_file` with the request's
    origin. Retrieval (WADO-RS of the re-identified results) is another service:
    :mod:`aifi.gateway.wado`."""

    def __init__(self, ingest: Ingest, origin: Origin, *, fsync: bool = True) -> None:
        self.ingest = ingest
        self.origin = origin
        self.fsync = fsync

    def staging_dir(self) -> Path:
        return self.ingest.store.staging_dir()

    def put(self, tenant: str, instances: Sequence[IncomingInstance]) -> list[StoreOutcome]:
        outcomes = []
        for instance in instances:
            result = self.ingest.receive_file(instance.staged_path, self.origin)
            if result.status is IngestStatus.STORED:
                outcomes.append(StoreOutcome(StoreStatus.STORED))
            elif result.status is IngestStatus.ALREADY_STORED:
                outcomes.append(StoreOutcome(StoreStatus.ALREADY_STORED))
            elif result.status is IngestStatus.CONFLICT:
                outcomes.append(StoreOutcome(StoreStatus.CONFLICT, result.reason))
            else:
                outcomes.append(StoreOutcome(StoreStatus.REFUSED, result.reason, result.failure))
        return outcomes

    def find_instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        raise NotFound("the gateway does not serve WADO-RS")

    def instance_metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[DicomJson]:
        raise NotFound("the gateway does not serve WADO-RS")

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        raise NotFound("the gateway does not serve QIDO-RS")


class StowService:
    """What the STOW-RS routes need (:data:`aifi.gateway.api.deps.StowServiceDep`): the ingest,
    the allowed client addresses, the service root (for Retrieve URLs in the response)."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        allowed_addresses: tuple[Network, ...] = (),
        fsync: bool = True,
        public_url: str | None = None,
    ) -> None:
        self.ingest = ingest
        self.allowed_addresses = allowed_addresses
        self.fsync = fsync
        self.config = DicomwebConfig(prefix=PREFIX, public_url=public_url)

    def sink(self, request: Request) -> IngestSink:
        address = request.client.host if request.client else ""
        if not address_allowed(address, self.allowed_addresses):
            raise Forbidden(f"STOW-RS from {address or 'an unknown address'} is not allowed")
        return IngestSink(self.ingest, Origin(source=f"stow:{address}"), fsync=self.fsync)
