"""What the gateway's WADO-RS serves (PS3.18 §10.4): the re-identified AI results it keeps
under ``results/`` (``gw_result_instance`` rows, written by
:mod:`aifi.gateway.results.feed`) and the originals still in its instance store
(``gw_instance`` rows with a file), by their original (hospital) UIDs — the ImagingStudy the
EPD reads through the gateway points its Endpoint here.

:class:`HeldInstances` is a read-only :class:`~aifi.dicomweb.store.DicomStore` for the
routers of :mod:`aifi.dicomweb.wado`. The gateway has one hospital: the tenant argument is
not a filter. A file the gateway no longer holds (purged once every PACS had it and the
retention passed) is not found; when everything addressed was purged, :class:`Purged`
says so (404, the ``Warning`` header tells the client to ask the PACS).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlmodel import col, select

from aifi.dicom_json import DicomJson
from aifi.dicomweb.dicomjson import configure_pydicom, dataset_to_metadata
from aifi.dicomweb.store import IncomingInstance, StoredInstance, StoreOutcome
from aifi.errors import HubError, InvalidRequest, NotFound
from aifi.gateway.persistence.result_tables import ResultFile
from aifi.gateway.persistence.tables import ReceivedInstance
from aifi.hub.persistence.database import Database

if TYPE_CHECKING:
    from aifi.dicomweb.qido_query import QidoQuery, QueryResult


class Purged(NotFound):
    """What was asked for was here once and has been purged (delivered, retention over)."""


class HeldInstances:
    """The re-identified results and kept originals, as WADO-RS reads them."""

    def __init__(self, db: Database, data_dir: Path, *, originals: bool = True) -> None:
        self.db = db
        self.data_dir = data_dir.resolve()
        self.originals = originals
        configure_pydicom()

    # -- what WADO-RS asks ----------------------------------------------------------------

    def find_instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        """Held instances under the study/series/instance, by series then SOP Instance UID
        (a result re-made under the same UID: the newest file). :class:`Purged` when the
        gateway had some but holds none any more; empty when it never had any."""
        held: dict[str, StoredInstance] = {}
        purged = 0
        with self.db.read() as session:
            results = select(ResultFile).where(
                col(ResultFile.study_instance_uid) == study_instance_uid
            )
            if series_instance_uid is not None:
                results = results.where(col(ResultFile.series_instance_uid) == series_instance_uid)
            if sop_instance_uid is not None:
                results = results.where(col(ResultFile.sop_instance_uid) == sop_instance_uid)
            for row in session.exec(results.order_by(col(ResultFile.pk))).all():
                if row.purged_at is not None:
                    purged += 1
                    continue
                held[row.sop_instance_uid] = self._stored(
                    row.study_instance_uid,
                    row.series_instance_uid,
                    row.sop_instance_uid,
                    row.sop_class_uid,
                    row.transfer_syntax_uid,
                    row.file,
                    row.size,
                )
            if self.originals:
                originals = select(ReceivedInstance).where(
                    col(ReceivedInstance.study_instance_uid) == study_instance_uid
                )
                if series_instance_uid is not None:
                    originals = originals.where(
                        col(ReceivedInstance.series_instance_uid) == series_instance_uid
                    )
                if sop_instance_uid is not None:
                    originals = originals.where(
                        col(ReceivedInstance.sop_instance_uid) == sop_instance_uid
                    )
                for orig in session.exec(originals).all():
                    if orig.file is None:
                        purged += 1
                        continue
                    held.setdefault(
                        orig.sop_instance_uid,
                        self._stored(
                            orig.study_instance_uid,
                            orig.series_instance_uid,
                            orig.sop_instance_uid,
                            orig.sop_class_uid,
                            orig.transfer_syntax_uid,
                            orig.file,
                            orig.size,
                        ),
                    )
        if not held and purged:
            raise Purged(
                "The gateway no longer holds it: purged after delivery to the PACS "
                "(retrieve it from the PACS)"
            )
        return sorted(held.values(), key=lambda i: (i.series_instance_uid, i.sop_instance_uid))

    def _stored(
        self,
        study: str,
        series: str,
        sop: str,
        sop_class: str,
        syntax: str,
        relative: str,
        size: int,
    ) -> StoredInstance:
        return StoredInstance(
            study_instance_uid=study,
            series_instance_uid=series,
            sop_instance_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax_uid=syntax,
            file=str(self.data_dir / relative),
            size=size,
        )

    def instance_metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[DicomJson]:
        """DICOM JSON (PS3.18 Annex F) of each held instance, read from its file's header
        (large values deferred, Pixel Data never loaded); relative BulkDataURIs."""
        found = self.find_instances(
            tenant, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        items = []
        for instance in found:
            try:
                ds = dcmread(instance.file, defer_size=1024)
            except (OSError, InvalidDicomError) as exc:
                raise HubError(
                    f"Stored file of instance {instance.sop_instance_uid} cannot be read"
                ) from exc
            items.append(dataset_to_metadata(ds))
        return items

    # -- what it does not do --------------------------------------------------------------

    def staging_dir(self) -> Path:
        raise NotFound("WADO-RS at the gateway stores nothing (STOW-RS goes to its ingest)")

    def put(self, tenant: str, instances: Sequence[IncomingInstance]) -> list[StoreOutcome]:
        raise NotFound("WADO-RS at the gateway stores nothing (STOW-RS goes to its ingest)")

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        raise InvalidRequest("The gateway answers no QIDO-RS searches")
