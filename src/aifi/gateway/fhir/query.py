"""Search parameters and dates between the EPD's and the hub's form, for the gateway's FHIR
facade (FHIR R4 search.html): a parsed criterion written back as a query parameter, the
exact date text of a parsed range (its precision, search.html#date), whole-day shifts of
dates (PS3.15 E.3.6: modified dates move by the patient's offset, times stay), and the
date filter applied to re-identified studies when the hub could only be asked a wider range.

And :class:`SearchPseudonymiser`, which writes a parsed search (criteria and result
parameters) as the hub must see it, for :class:`aifi.gateway.fhir.translate.FhirTranslator`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Protocol

from aifi.fhir.codes import DICOM_UID_SYSTEM, PATIENT_ID_SYSTEM
from aifi.fhir.mapping.imaging import patient_id
from aifi.fhir.search import INDEX_FORMAT, date_range
from aifi.fhir.types import Criterion, SearchQuery
from aifi.fhir.views import PatientView
from aifi.gateway.deid.types import PatientIdentity

_PATIENT_PARAMS = frozenset({"patient", "subject"})


class Pseudonyms(Protocol):
    """The keyed pseudonyms of originals (:class:`~aifi.gateway.deid.keyed.Keyed`)."""

    def pseudo_uid(self, original: str) -> str: ...

    def pseudo_accession(self, original: str) -> str: ...

    def pseudo_patient(self, original_id: str, issuer: str) -> str: ...


class PatientLookup(Protocol):
    """The patients of the gateway's pseudonym map."""

    def patient(self, pseudo_id: str) -> PatientIdentity | None: ...

    def patients_by_original(self, original_id: str) -> list[PatientIdentity]: ...

    def patient_by_fhir_id(self, fhir_id: str, *, at_hub: bool) -> PatientIdentity | None: ...


def hub_patient_id(pseudo_id: str) -> str:
    """The hub's Patient resource id of a patient pseudonym (the hub never sees the
    issuer: Issuer of Patient ID is removed, PS3.15 Table E.1-1 action X)."""
    return patient_id(PatientView(patient_id=pseudo_id))


@dataclass(frozen=True, slots=True)
class HubSearch:
    """A search as the hub must see it."""

    params: list[tuple[str, str]]
    post_filter: tuple[Criterion, ...] | None = None
    """The ImagingStudy ``started`` criteria (original dates) the re-identified matches must
    all still meet (a repeated parameter is ANDed, search.html#combining): the hub was asked
    a wider range; the backend pages itself."""


def shift_fhir_datetime(text: str, days: int) -> str:
    """A FHIR date or dateTime moved by whole days, in the same form (the time of day and
    zone stay: PS3.15 E.3.6 shifts dates, not times)."""
    if len(text) == 10:
        return (date.fromisoformat(text) + timedelta(days=days)).isoformat()
    if len(text) < 10:
        return text  # year or month precision: a day shift cannot be written in that form
    moved = (date.fromisoformat(text[:10]) + timedelta(days=days)).isoformat()
    return moved + text[10:]


def shift_bounds(bounds: tuple[str, str], days: int) -> tuple[str, str]:
    delta = timedelta(days=days)
    low, high = (datetime.strptime(b, INDEX_FORMAT) + delta for b in bounds)
    return low.strftime(INDEX_FORMAT), high.strftime(INDEX_FORMAT)


def precision_text(low: str, high: str) -> str | None:
    """The FHIR date text whose range (:func:`aifi.fhir.search.date_range`) is exactly
    ``[low, high]`` (UTC index form), or None."""
    candidates = (low[:4], low[:7], low[:10], low[:16] + "Z", low + "Z")
    for text in candidates:
        start, end = date_range(text)
        if start.strftime(INDEX_FORMAT) == low and end.strftime(INDEX_FORMAT) == high:
            return text
    return None


def _escape(text: str) -> str:
    return re.sub(r"([\\,|$])", r"\\\1", text)


def serialise(criterion: Criterion) -> tuple[str, str]:
    """A parsed criterion back as ``(name[:modifier], value)`` (search.html syntax)."""
    name = criterion.param + (f":{criterion.modifier}" if criterion.modifier else "")
    if criterion.modifier == "missing":
        return name, criterion.values[0][1]
    parts: list[str] = []
    if criterion.kind == "token" or criterion.modifier == "identifier":
        for system, code in criterion.values:
            parts.append(_escape(code) if system is None else f"{_escape(system)}|{_escape(code)}")
    elif criterion.kind == "date":
        for (prefix, _low), (low, high) in zip(criterion.values, criterion.bounds, strict=True):
            text = precision_text(low, high) or f"{low}Z"
            parts.append(f"{prefix}{text}")
    else:
        parts.extend(_escape(value) for _system, value in criterion.values)
    return name, ",".join(parts)


def matches_date(criterion: Criterion | tuple[Criterion, ...], value: str | None) -> bool:
    """Whether a date/dateTime ``value`` meets a parsed date criterion, as the hub's index
    compares (search.html#prefix; the value's lower bound against the criterion's range);
    of several criteria (:attr:`HubSearch.post_filter`), each one."""
    if isinstance(criterion, tuple):
        return all(matches_date(one, value) for one in criterion)
    if value is None:
        return False
    try:
        point = date_range(value)[0].strftime(INDEX_FORMAT)
    except ValueError:
        return False
    for (prefix, _), (low, high) in zip(criterion.values, criterion.bounds, strict=True):
        hit = {
            "eq": low <= point <= high,
            "ne": not low <= point <= high,
            "gt": point > high,
            "sa": point > high,
            "lt": point < low,
            "eb": point < low,
            "ge": point >= low,
            "le": point <= high,
        }.get(prefix or "eq", False)
        if hit:
            return True
    return False


class SearchPseudonymiser:
    """A parsed search (FHIR R4 search.html) with the hub's pseudonyms: patient references
    and identifiers, ImagingStudy ids and identifiers, accession numbers, ``started`` shifted
    by the patient's offset or widened by the profile's ``offset_range`` (then
    :attr:`HubSearch.post_filter`)."""

    def __init__(
        self, identities: PatientLookup, pseudonyms: Pseudonyms, offset_range: tuple[int, int]
    ) -> None:
        self.identities = identities
        self.pseudonyms = pseudonyms
        self.offset_range = offset_range

    def pseudonymise(self, query: SearchQuery) -> HubSearch | None:
        """A parsed search as the hub must see it: criteria and result parameters
        (``_count``, ``_offset``, ``_include``, ``_sort``, ``_summary``); None when a
        criterion can match nothing."""
        kind = query.resource_type
        offset = self._search_offset(query)
        params: list[tuple[str, str]] = []
        post_filter: list[Criterion] = []
        for criterion in query.criteria:
            if kind == "ImagingStudy" and criterion.param == "started":
                shifted = self._started(criterion, offset)
                if shifted is None:
                    post_filter.append(criterion)
                    params.extend(self._widened(criterion))
                    continue
                criterion = shifted
            else:
                translated = self._criterion(kind, criterion)
                if translated is None:
                    return None
                criterion = translated
            params.append(serialise(criterion))
        if not post_filter:
            params.append(("_count", str(query.count)))
            if query.offset:
                params.append(("_offset", str(query.offset)))
        params.extend(("_include", value) for value in query.include)
        if query.sort:
            params.append(("_sort", ",".join(query.sort)))
        if query.summary_count and not post_filter:
            params.append(("_summary", "count"))
        return HubSearch(params, tuple(post_filter) or None)

    def _criterion(self, kind: str, criterion: Criterion) -> Criterion | None:
        """One criterion with pseudonyms; values that name nothing known are dropped, and
        a criterion left without values is None (matches nothing). ``:missing`` and
        criteria on parameters without identities pass as they are."""
        if criterion.modifier == "missing":
            return criterion
        translate: Callable[[tuple[str | None, str]], list[tuple[str | None, str]]] | None
        translate = None
        if criterion.param == "_id" and kind in {"ImagingStudy", "Patient"}:
            translate = self._id_value(kind)
        elif criterion.kind == "reference" and criterion.modifier == "identifier":
            translate = (
                self._patient_token if criterion.param in _PATIENT_PARAMS else self._study_token
            )
        elif criterion.kind == "reference":
            translate = self._reference_value
        elif criterion.param == "identifier" and kind == "ImagingStudy":
            translate = self._study_token
        elif criterion.param == "identifier" and kind == "ServiceRequest":
            translate = self._order_token
        elif criterion.param == "identifier" and kind == "Patient":
            translate = self._patient_token
        if translate is None:
            return criterion
        values = [new for value in criterion.values for new in translate(value)]
        if not values:
            return None
        return replace(criterion, values=tuple(values))

    def _id_value(
        self, kind: str
    ) -> Callable[[tuple[str | None, str]], list[tuple[str | None, str]]]:
        def translate(value: tuple[str | None, str]) -> list[tuple[str | None, str]]:
            system, code = value
            if kind == "ImagingStudy":
                return [(system, self.pseudonyms.pseudo_uid(code))]
            patient = self.identities.patient_by_fhir_id(code, at_hub=False)
            return [(system, hub_patient_id(patient.pseudo_id))] if patient else []

        return translate

    def _reference_value(self, value: tuple[str | None, str]) -> list[tuple[str | None, str]]:
        """``Type/id``: ImagingStudy ids are original Study UIDs, Patient ids the gateway's;
        a bare id of an open reference is tried as the gateway's Patient id."""
        system, ref = value
        target, _, ident = ref.rpartition("/")
        if target == "ImagingStudy" or (not target and re.fullmatch(r"[0-9]+(\.[0-9]+)+", ident)):
            if not target:
                return [(system, self.pseudonyms.pseudo_uid(ident))]
            return [(system, f"ImagingStudy/{self.pseudonyms.pseudo_uid(ident)}")]
        if target in {"Patient", ""}:
            patient = self.identities.patient_by_fhir_id(ident, at_hub=False)
            if patient is None:
                return [] if target == "Patient" else [value]
            hub_id = hub_patient_id(patient.pseudo_id)
            return [(system, f"Patient/{hub_id}" if target else hub_id)]
        return [value]

    def _patient_token(self, value: tuple[str | None, str]) -> list[tuple[str | None, str]]:
        """A Patient ID token: ``urn:aifi:patient-id[:issuer]|id`` gives its pseudonym;
        without a system every patient of the map with that Patient ID; any other system
        names nothing this gateway knows."""
        system, code = value
        if system is None or system == "":
            known = self.identities.patients_by_original(code)
            return [(PATIENT_ID_SYSTEM, p.pseudo_id) for p in known]
        if system == PATIENT_ID_SYSTEM or system.startswith(PATIENT_ID_SYSTEM + ":"):
            issuer = system[len(PATIENT_ID_SYSTEM) + 1 :]
            return [(PATIENT_ID_SYSTEM, self.pseudonyms.pseudo_patient(code, issuer))]
        return []

    def _study_token(self, value: tuple[str | None, str]) -> list[tuple[str | None, str]]:
        """A study identifier token: a ``urn:oid:`` value (or system ``urn:dicom:uid``) is a
        Study Instance UID, anything else an accession number (their pseudonyms are
        computed: a study not yet received still finds its waiting requests)."""
        system, code = value
        if code.startswith("urn:oid:") or system == DICOM_UID_SYSTEM:
            return [
                (system, "urn:oid:" + self.pseudonyms.pseudo_uid(code.removeprefix("urn:oid:")))
            ]
        return [(system, self.pseudonyms.pseudo_accession(code))]

    def _order_token(self, value: tuple[str | None, str]) -> list[tuple[str | None, str]]:
        """A ServiceRequest identifier: without a system (or ``urn:dicom:uid``) the accession
        number (or Study UID) it carries; with another system the EPD's own order number,
        stored at the hub as given."""
        system, _code = value
        if system and system != DICOM_UID_SYSTEM:
            return [value]
        return self._study_token(value)

    def _search_offset(self, query: SearchQuery) -> int | None:
        """The date offset of the one patient a search names (``patient``/``subject``), or
        None when it names none or several."""
        offsets: set[int] = set()
        for criterion in query.criteria:
            if criterion.param not in _PATIENT_PARAMS or criterion.modifier == "missing":
                continue
            translated = self._criterion(query.resource_type, criterion)
            for _system, value in translated.values if translated else ():
                if criterion.modifier == "identifier":
                    patient = self.identities.patient(value)
                else:
                    ident = value.rpartition("/")[2]
                    patient = self.identities.patient_by_fhir_id(ident, at_hub=True)
                if patient is not None:
                    offsets.add(patient.date_offset_days)
        return offsets.pop() if len(offsets) == 1 else None

    def _started(self, criterion: Criterion, offset: int | None) -> Criterion | None:
        """A ``started`` criterion shifted by the patient's offset, or None when it cannot
        be shifted exactly (no single patient, or a month/year precision)."""
        if criterion.modifier == "missing":
            return criterion
        if offset is None:
            return None
        bounds = tuple(shift_bounds(b, offset) for b in criterion.bounds)
        if any(precision_text(low, high) is None for low, high in bounds):
            return None
        pairs = zip(criterion.values, bounds, strict=True)
        values = tuple((prefix, low) for (prefix, _), (low, _) in pairs)
        return replace(criterion, values=values, bounds=bounds)

    def _widened(self, criterion: Criterion) -> list[tuple[str, str]]:
        """What the hub is asked for a ``started`` criterion it cannot get exactly: the
        range widened by the profile's offset range (one value: ``ge``/``le`` at second
        precision), nothing for several values or ``ne`` (the post-filter decides)."""
        if len(criterion.values) != 1:
            return []
        prefix = criterion.values[0][0]
        low, high = criterion.bounds[0]
        first = shift_bounds((low, low), self.offset_range[0])[0]
        last = shift_bounds((high, high), self.offset_range[1])[0]
        out: list[tuple[str, str]] = []
        if prefix in {"eq", "ge", "gt", "sa"}:
            out.append(("started", f"ge{first}Z"))
        if prefix in {"eq", "le", "lt", "eb"}:
            out.append(("started", f"le{last}Z"))
        return out


__all__ = [
    "HubSearch",
    "PatientLookup",
    "Pseudonyms",
    "SearchPseudonymiser",
    "hub_patient_id",
    "matches_date",
    "precision_text",
    "serialise",
    "shift_bounds",
    "shift_fhir_datetime",
]
