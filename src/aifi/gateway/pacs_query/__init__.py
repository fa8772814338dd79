"""The gateway's query/retrieve clients of the hospital's PACS, for prior studies
(issue 17): one interface (:class:`PacsQueryRetrieve`), two implementations —

- :class:`~aifi.gateway.pacs_query.dicomweb.DicomwebQueryRetrieve`: QIDO-RS (PS3.18 §10.6)
  and WADO-RS (PS3.18 §10.4), streamed part by part into the ingest;
- :class:`~aifi.gateway.pacs_query.dimse.DimseQueryRetrieve`: C-FIND Study Root at STUDY and
  SERIES level, C-MOVE to the gateway's own AE or C-GET (PS3.4 Annex C).

Which one is chosen by the ``pacs`` entry the ``priors:`` section names
(:func:`pacs_query_for`). Retrieved instances go through
:class:`aifi.gateway.ingest.pipeline.Ingest` like any received instance, so the normal
forwarder pseudonymises them with the hospital's key.

May import: :mod:`aifi.gateway.ingest`, :mod:`aifi.hub.delivery.destinations` (the PACS
entries), :mod:`aifi.dicomweb` codecs, pynetdicom, httpx.
"""

from __future__ import annotations

from aifi.gateway.ingest.pipeline import Ingest
from aifi.gateway.pacs_query.dicomweb import DicomwebQueryRetrieve
from aifi.gateway.pacs_query.dimse import DimseQueryRetrieve, status_meaning
from aifi.gateway.pacs_query.models import (
    PacsQueryRetrieve,
    PriorQuery,
    Retrieved,
    StudyMatch,
    find_priors,
    parse_da,
    select_priors,
)
from aifi.hub.delivery.destinations import Destination, DicomwebDestination

__all__ = [
    "DicomwebQueryRetrieve",
    "DimseQueryRetrieve",
    "PacsQueryRetrieve",
    "PriorQuery",
    "Retrieved",
    "StudyMatch",
    "find_priors",
    "pacs_query_for",
    "parse_da",
    "select_priors",
    "status_meaning",
]


def pacs_query_for(
    destination: Destination,
    ingest: Ingest,
    *,
    retrieve: str = "move",
    move_destination: str,
    retrieve_timeout_seconds: float = 600.0,
) -> PacsQueryRetrieve:
    """The client for a ``pacs`` entry: DICOMweb (QIDO-RS/WADO-RS) or DIMSE (C-FIND with
    C-MOVE to ``move_destination`` or C-GET, ``retrieve``)."""
    if isinstance(destination, DicomwebDestination):
        return DicomwebQueryRetrieve(
            destination, ingest, retrieve_timeout_seconds=retrieve_timeout_seconds
        )
    return DimseQueryRetrieve(
        destination,
        ingest,
        retrieve=retrieve,
        move_destination=move_destination,
        retrieve_timeout_seconds=retrieve_timeout_seconds,
    )
