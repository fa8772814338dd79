"""A small DIMSE PACS for tests that refuses some SOP Classes: a pynetdicom AE in a thread on a
free loopback port, holding what it stores in memory.

- C-STORE (PS3.4 Annex B) of every Storage SOP Class pynetdicom knows; an instance whose SOP
  Class is in ``refuse`` is answered with the status given there (e.g. Segmentation Storage
  → 0xA900 "Data Set does not match SOP Class") and not kept;
- C-FIND on the Study Root model (PS3.4 C.4.1, C.6.2) at STUDY, SERIES and IMAGE level:
  the UIDs in the identifier match exactly, an empty one matches all; each return key is
  filled from the first stored instance of the match; one match per study/series/instance;
- no C-GET and no C-MOVE: a kit asking for them gets its contexts refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

AE_TITLE = "REFUSING"
_LEVEL_KEY = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_MATCH_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass
class RefusingPacs:
    port: int
    refuse: dict[str, int]
    stored: dict[str, Dataset] = field(default_factory=dict)
    """SOP Instance UID -> the data set as received."""
    refused: list[str] = field(default_factory=list)
    """SOP Instance UIDs answered with a refusal."""

    @property
    def address(self) -> str:
        return f"{AE_TITLE}@127.0.0.1:{self.port}"

    def on_store(self, event: Any) -> int:
        ds = event.dataset
        status = self.refuse.get(str(ds.SOPClassUID))
        if status is not None:
            self.refused.append(str(ds.SOPInstanceUID))
            return status
        self.stored[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        level = str(query.QueryRetrieveLevel)
        unique = _LEVEL_KEY.get(level)
        if unique is None:
            yield 0xC000, None
            return
        seen: set[str] = set()
        for ds in list(self.stored.values()):
            wanted = [k for k in _MATCH_KEYS if query.get(k)]
            if any(str(ds.get(k, "")) != str(query.get(k)) for k in wanted):
                continue
            key = str(ds.get(unique, ""))
            if key in seen:
                continue
            seen.add(key)
            yield 0xFF00, self._answer(query, ds, level)
        yield 0x0000, None

    @staticmethod
    def _answer(query: Dataset, ds: Dataset, level: str) -> Dataset:
        answer = Dataset()
        answer.QueryRetrieveLevel = level
        for element in query:
            if element.keyword == "QueryRetrieveLevel":
                continue
            if element.tag in ds:
                answer.add(ds[element.tag])
            else:
                answer.add_new(element.tag, element.VR, None)
        return answer


@contextmanager
def refusing_pacs(port: int, refuse: Mapping[str, int]) -> Iterator[RefusingPacs]:
    """The PACS listening on ``127.0.0.1:port`` for the ``with`` block."""
    pacs = RefusingPacs(port=port, refuse=dict(refuse))
    ae = AE(ae_title=AE_TITLE)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, pacs.on_store), (evt.EVT_C_FIND, pacs.on_find)],
    )
    assert server is not None
    try:
        yield pacs
    finally:
        server.shutdown()
        ae.shutdown()
