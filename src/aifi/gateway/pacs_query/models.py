"""What the gateway asks a PACS about a patient's earlier studies, what it gets back, and the
one interface both query/retrieve clients offer (:class:`PacsQueryRetrieve`).

Pure: no I/O here. :func:`find_priors` turns a :class:`PriorQuery` into the studies to
retrieve with any client — the study-level query (QIDO-RS ``/studies``, PS3.18 §10.6, or
C-FIND Study Root at STUDY level, PS3.4 C.6.2), the series-level look at the body part
(QIDO-RS ``/studies/{uid}/series`` or C-FIND at SERIES level) when asked, the window of
days before the current study, the current study excluded, newest first, ``count``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PriorQuery:
    """One patient's earlier studies, as a prior request asks for them (original
    identities: this stays in the hospital)."""

    patient_id: str
    issuer: str
    current_study_uid: str
    """Excluded from the answer."""
    current_date: date | None
    """The current study's date; ``None`` (no Study Date): no upper bound."""
    within_days: int = 1825
    modalities: tuple[str, ...] = ()
    """Same modality: one of these must be in Modalities in Study; empty: any."""
    body_parts: tuple[str, ...] = ()
    """Same body part: a series with one of these Body Part Examined; empty: any."""
    count: int = 1

    def __post_init__(self) -> None:
        if not self.patient_id.strip():
            raise ValueError("a prior query needs the patient's ID")
        if self.count < 1 or self.within_days < 0:
            raise ValueError("count must be >= 1 and within_days >= 0")

    @property
    def date_range(self) -> str:
        """The Study Date range matching key (PS3.4 C.2.2.2.5): ``from-to``, or ``from-``
        without a current date."""
        if self.current_date is None:
            return ""
        start = self.current_date - timedelta(days=self.within_days)
        return f"{start:%Y%m%d}-{self.current_date:%Y%m%d}"

    @property
    def single_modality(self) -> str | None:
        """The modality to send as a matching key (only one value can be matched)."""
        return self.modalities[0] if len(self.modalities) == 1 else None


@dataclass(frozen=True, slots=True)
class StudyMatch:
    """One study the PACS answered with."""

    study_instance_uid: str
    study_date: str = ""
    study_time: str = ""
    modalities: tuple[str, ...] = ()
    issuer: str = ""
    body_parts: frozenset[str] = field(default_factory=frozenset)
    """Filled by the series-level look (:meth:`PacsQueryRetrieve.series_body_parts`)."""
    patient_id: str = ""
    """The Patient ID the PACS answered with (a return key of the study-level query):
    :func:`select_priors` keeps only the queried patient's studies, never trusting the
    PACS's matching."""

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.study_date, self.study_time.split(".")[0].ljust(6, "0"))


@dataclass(frozen=True, slots=True)
class Retrieved:
    """The outcome of retrieving one study into the gateway's ingest."""

    study_instance_uid: str
    completed: int
    """Instances the gateway received (stored, or stored before)."""
    failed: int = 0
    """Instances that did not arrive (sub-operations failed, parts refused)."""
    seconds: float = 0.0
    """The raw retrieve's own time (WADO-RS request, or C-MOVE/C-GET association)."""


class PacsQueryRetrieve(Protocol):
    """A PACS the gateway queries and retrieves from: DICOMweb
    (:class:`~aifi.gateway.pacs_query.dicomweb.DicomwebQueryRetrieve`) or DIMSE
    (:class:`~aifi.gateway.pacs_query.dimse.DimseQueryRetrieve`). Errors:
    :class:`aifi.errors.PacsRefused` (a failure status: asking again will not help) and
    :class:`aifi.errors.PacsQueryError` (no connection, aborted: try again later)."""

    name: str

    def find_studies(self, query: PriorQuery) -> list[StudyMatch]:
        """Study-level matches for the patient within the date window (the single
        modality, when there is one, sent as a matching key); unfiltered otherwise."""
        ...

    def series_body_parts(self, study_instance_uid: str) -> frozenset[str]:
        """The Body Part Examined values of the study's series (upper case)."""
        ...

    def retrieve_study(self, study_instance_uid: str) -> Retrieved:
        """Bring every instance of the study into the gateway's ingest (returns once the
        PACS says it is done)."""
        ...

    def close(self) -> None: ...


def _upper(values: Iterable[str]) -> set[str]:
    return {v.strip().upper() for v in values if v and v.strip()}


def select_priors(query: PriorQuery, candidates: Iterable[StudyMatch]) -> list[StudyMatch]:
    """The study-level filter, tolerant of a PACS that ignored a matching key: the queried
    Patient ID (a study answered without it, or with another, is dropped), not the current
    study, another issuer only when both are known, within the window (a study without a
    Study Date only when the current study has none either), one of the
    modalities; newest first (Study Date, Study Time), the current study's date counting
    (an earlier study the same day)."""
    wanted = _upper(query.modalities)
    low = high = ""
    if query.current_date is not None:
        low, high = query.date_range.split("-")
    seen: set[str] = set()
    out: list[StudyMatch] = []
    for study in candidates:
        uid = study.study_instance_uid
        if not uid or uid == query.current_study_uid or uid in seen:
            continue
        if study.patient_id.strip() != query.patient_id.strip():
            continue
        if query.issuer and study.issuer and study.issuer != query.issuer:
            continue
        if low and not (study.study_date and low <= study.study_date[:8] <= high):
            continue  # without a Study Date it cannot be known to be earlier
        if wanted and study.modalities and not wanted & _upper(study.modalities):
            continue
        seen.add(uid)
        out.append(study)
    out.sort(key=lambda s: s.sort_key, reverse=True)
    return out


def find_priors(pacs: PacsQueryRetrieve, query: PriorQuery) -> list[StudyMatch]:
    """The patient's earlier studies to retrieve, newest first, at most ``count``: the
    study-level query, filtered (:func:`select_priors`), then — same body part asked — the
    series-level look, study by study from the newest, until ``count`` match."""
    candidates = select_priors(query, pacs.find_studies(query))
    if not query.body_parts:
        return candidates[: query.count]
    wanted = _upper(query.body_parts)
    out: list[StudyMatch] = []
    for study in candidates:
        parts = pacs.series_body_parts(study.study_instance_uid)
        if wanted & parts:
            out.append(replace(study, body_parts=frozenset(parts)))
            if len(out) == query.count:
                break
    return out


def parse_da(value: str) -> date | None:
    """A DA value (``YYYYMMDD``, PS3.5 Table 6.2-1) as a date; ``None`` when empty or
    malformed."""
    text = value.strip()[:8]
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
