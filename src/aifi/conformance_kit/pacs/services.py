"""The PACS services the kit drives beyond storing, as small protocols with one
implementation per protocol family: :class:`Finder` (QIDO-RS, PS3.18 §10.6, or C-FIND,
PS3.4 C.4.1, Study Root) and :class:`Retriever` (WADO-RS, PS3.18 §10.4, or C-GET / C-MOVE,
PS3.4 C.4.3 / C.4.2). Storing goes through the hub's own delivery clients
(:class:`~aifi.hub.delivery.dicomweb_client.PacsClient`).

A PACS that answers badly raises :class:`~aifi.errors.UpstreamError` with a message that
names the request and the PACS's answer; the kit turns it into a failed case.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pydicom import Dataset

from aifi.conformance_kit.pacs.compare import Retrieved


class Level(StrEnum):
    """Query/Retrieve levels of the Study Root information model (PS3.4 C.6.2)."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@dataclass(frozen=True)
class Uids:
    """Which study, series and instance a query or retrieval is about."""

    study: str
    series: str | None = None
    instance: str | None = None

    @property
    def level(self) -> Level:
        if self.instance is not None:
            return Level.IMAGE
        return Level.SERIES if self.series is not None else Level.STUDY


STUDY_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "AccessionNumber",
    "StudyDate",
    "StudyDescription",
)
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription")
INSTANCE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate", "ContentTime")
KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: STUDY_KEYS,
    Level.SERIES: SERIES_KEYS,
    Level.IMAGE: INSTANCE_KEYS,
}
"""The key attributes compared at each level: what a radiologist's worklist and viewer show
and how the PACS files the object."""


class Finder(Protocol):
    name: str
    """``QIDO-RS`` or ``C-FIND``."""
    cites: list[str]

    def find(self, uids: Uids, keys: tuple[str, ...]) -> list[Dataset]:
        """The matches at ``uids.level`` (the UIDs are the matching keys; ``keys`` are
        asked for as return keys / ``includefield``)."""
        ...


class Retriever(Protocol):
    name: str
    """``WADO-RS``, ``C-GET`` or ``C-MOVE``."""
    cites: list[str]

    def open(self) -> str | None:
        """Get ready (an association, a Storage SCP); ``None`` when the PACS offers the
        service, else why not (then :meth:`retrieve` is not called)."""
        ...

    def retrieve(self, uids: Uids) -> Retrieved:
        """One instance, as the PACS sends it."""
        ...

    def close(self) -> None: ...
