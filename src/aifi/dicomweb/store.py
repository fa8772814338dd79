"""What the DICOMweb routers need from storage, as a :class:`typing.Protocol`.

The hub implements it over SQL + a folder (``aifi.hub.store.repository``); tests may use any
other implementation. All methods are synchronous (routers call them in a worker thread)
and every one takes the tenant: an implementation must never return another tenant's data.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aifi.dicom_json import DicomJson

if TYPE_CHECKING:
    from pydicom import Dataset

    from aifi.dicomweb.qido_query import QidoQuery, QueryResult


@dataclass(slots=True)
class IncomingInstance:
    """One received, parsed and checked instance, staged as a complete Part 10 file.

    ``header`` is the data set read up to (not including) Pixel Data; ``metadata`` its
    DICOM JSON with bulk data as *relative* BulkDataURIs (see :mod:`aifi.dicomweb.dicomjson`).
    """

    staged_path: Path
    size: int
    sha256: str
    transfer_syntax_uid: str
    header: Dataset
    metadata: DicomJson


class StoreStatus(enum.Enum):
    STORED = "stored"
    """Newly stored."""
    ALREADY_STORED = "already-stored"
    """An identical instance (same bytes) was stored before; nothing changed."""
    CONFLICT = "conflict"
    """A different instance with this SOP Instance UID is stored; it was kept, this one refused."""
    REFUSED = "refused"
    """A check of the store refused the instance (e.g. the hub's AI result gate, IHE AIR):
    not stored; ``reason`` says why and ``failure`` is the STOW-RS Failure Reason
    (0008,1197) to answer with (PS3.18 §10.5.3)."""


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    status: StoreStatus
    reason: str = ""
    failure: int | None = None
    """For :attr:`StoreStatus.REFUSED`: the Failure Reason code (default C000)."""


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """Where a stored instance lives, and what WADO-RS needs to know to serve it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file: str
    """The stored file's absolute path (a string: WADO-RS opens a hundred of these per
    study request, and building a :class:`~pathlib.Path` costs more than the look-up)."""
    size: int
    number_of_frames: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.file)


class DicomStore(Protocol):
    def staging_dir(self) -> Path:
        """A folder on the same file system as the stored files, for atomic renames."""
        ...

    def put(self, tenant: str, instances: Sequence[IncomingInstance]) -> list[StoreOutcome]:
        """Store each instance atomically (file fsync'd and renamed, then its index row
        committed), one outcome per instance, in order. Staged files are consumed."""
        ...

    def find_instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        """The stored instances under a study/series/instance, in a stable order (series
        number, instance number, UID). Empty when nothing matches."""
        ...

    def instance_metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[DicomJson]:
        """The stored DICOM JSON (relative BulkDataURIs) of each instance, same order."""
        ...

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        """Run a QIDO-RS query (PS3.18 §10.6) for the tenant."""
        ...


class StoreInFront:
    """A :class:`DicomStore` in front of another one, ``inner``: every method goes to it
    unless a subclass checks or narrows it (the hub's IHE AIR result gate, a performer's
    restricted view). ``fsync`` is the inner store's (the STOW-RS writer reads it)."""

    def __init__(self, inner: DicomStore) -> None:
        self.inner = inner
        self.fsync = bool(getattr(inner, "fsync", True))

    def staging_dir(self) -> Path:
        return self.inner.staging_dir()

    def put(self, tenant: str, instances: Sequence[IncomingInstance]) -> list[StoreOutcome]:
        return self.inner.put(tenant, instances)

    def find_instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        return self.inner.find_instances(
            tenant, study_instance_uid, series_instance_uid, sop_instance_uid
        )

    def instance_metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[DicomJson]:
        return self.inner.instance_metadata(
            tenant, study_instance_uid, series_instance_uid, sop_instance_uid
        )

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        return self.inner.query(tenant, query)
