"""What a QIDO-RS result returns (PS3.18 §10.6.3), built from the SQL index.

The defaults of PS3.18 Tables 10.6.3-3 (study), -4 (series) and -5 (instance) — a required
key without a value is returned empty — plus match keys and ``includefield`` values of the
same or a higher level (§10.6.3.3); series results carry the study defaults unless the
study is in the path, instance results the series and study defaults likewise.
``includefield=all`` returns every attribute kept at the level (the whole instance at the
instance level). Each page is built with one query per table, never one per result
(:class:`ResultBuilder`); a level's record is its stored DICOM JSON plus the attributes the
index computes (:func:`level_record`), which :mod:`aifi.hub.store.qido` also matches keys
the index cannot answer against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifi import dicom_json
from aifi.dicom_json import DicomJson
from aifi.dicomweb.qido_query import QidoQuery
from aifi.dicomweb.query_attributes import (
    ANY_LEVEL,
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    SERIES_INSTANCE_UID,
    SOP_CLASSES_IN_STUDY,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    QueryLevel,
    attribute_level,
    dictionary_vr,
)
from aifi.hub.store.statements import INSTANCE, SERIES, STUDY

# -- default return attributes (PS3.18 Tables 10.6.3-3/4/5) --------------------------------

# (tag, required): a required attribute is returned empty when it has no value.
STUDY_DEFAULTS: tuple[tuple[str, bool], ...] = (
    ("00080005", False),  # SpecificCharacterSet
    ("00080020", True),  # StudyDate
    ("00080030", True),  # StudyTime
    ("00080050", True),  # AccessionNumber
    (INSTANCE_AVAILABILITY, True),
    (MODALITIES_IN_STUDY, True),
    ("00080090", True),  # ReferringPhysicianName
    ("00080201", False),  # TimezoneOffsetFromUTC
    ("00100010", True),  # PatientName
    ("00100020", True),  # PatientID
    ("00100030", False),  # PatientBirthDate
    ("00100040", False),  # PatientSex
    (STUDY_INSTANCE_UID, True),
    ("00200010", True),  # StudyID
    (NUMBER_OF_STUDY_RELATED_SERIES, True),
    (NUMBER_OF_STUDY_RELATED_INSTANCES, True),
)
SERIES_DEFAULTS: tuple[tuple[str, bool], ...] = (
    ("00080005", False),  # SpecificCharacterSet (kept with the study)
    ("00080060", True),  # Modality
    ("00080201", False),  # TimezoneOffsetFromUTC (kept with the study)
    ("0008103E", False),  # SeriesDescription
    (INSTANCE_AVAILABILITY, True),
    (SERIES_INSTANCE_UID, True),
    ("00200011", True),  # SeriesNumber
    (NUMBER_OF_SERIES_RELATED_INSTANCES, True),
    ("00400244", False),  # PerformedProcedureStepStartDate
    ("00400245", False),  # PerformedProcedureStepStartTime
    ("00400275", False),  # RequestAttributesSequence
)
INSTANCE_DEFAULTS: tuple[tuple[str, bool], ...] = (
    ("00080005", False),  # SpecificCharacterSet (kept with the study)
    ("00080016", True),  # SOPClassUID
    (SOP_INSTANCE_UID, True),
    (INSTANCE_AVAILABILITY, True),
    ("00080201", False),  # TimezoneOffsetFromUTC (kept with the study)
    ("00200013", True),  # InstanceNumber
    ("00280008", False),  # NumberOfFrames
    ("00280010", False),  # Rows
    ("00280011", False),  # Columns
    ("00280100", False),  # BitsAllocated
)
_INSTANCE_COLUMNS = {
    "00080016": ("sop_class_uid", "UI"),
    SOP_INSTANCE_UID: ("sop_instance_uid", "UI"),
    "00200013": ("instance_number", "IS"),
    "00280008": ("number_of_frames", "IS"),
    "00280010": ("rows", "US"),
    "00280011": ("columns", "US"),
    "00280100": ("bits_allocated", "US"),
}
"""Instance attributes answered from index columns, without reading the stored JSON."""
_FROM_STUDY_JSON = ("00080005", "00080201")
"""Attributes kept with the study but returned at every level."""

# -- a level's record --------------------------------------------------------------------


def record_source(table: sa.Table) -> list[Any]:
    if table is STUDY:
        return [
            table.c.attributes,
            table.c.modalities_in_study,
            table.c.sop_classes_in_study,
            table.c.number_of_series,
            table.c.number_of_instances,
        ]
    if table is SERIES:
        return [table.c.attributes, table.c.number_of_instances]
    return [table.c.attributes]


def level_record(level: QueryLevel, values: Iterable[Any]) -> DicomJson:
    """The stored JSON of one level plus its computed attributes."""
    values = list(values)
    record = dicom_json.unpack(values[0])
    if level is QueryLevel.STUDY:
        record.update(_study_computed(*values[1:]))
    elif level is QueryLevel.SERIES:
        record[NUMBER_OF_SERIES_RELATED_INSTANCES] = _number(values[1])
    record[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
    return record


def _members(delimited: str | None, vr: str) -> dict[str, Any]:
    values = [m for m in (delimited or "").split("|") if m]
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _number(value: int | None) -> dict[str, Any]:
    return {"vr": "IS", "Value": [int(value)]} if value is not None else {"vr": "IS"}


def _study_computed(modalities: str, sop_classes: str, series: int, instances: int) -> DicomJson:
    """Computed study attributes (PS3.4 C.6.1.1.3.1 and Table C.6-5)."""
    return {
        MODALITIES_IN_STUDY: _members(modalities, "CS"),
        SOP_CLASSES_IN_STUDY: _members(sop_classes, "UI"),
        NUMBER_OF_STUDY_RELATED_SERIES: _number(series),
        NUMBER_OF_STUDY_RELATED_INSTANCES: _number(instances),
    }


# -- building the results -----------------------------------------------------------------


def _select(
    record: Mapping[str, Any],
    defaults: Iterable[tuple[str, bool]],
    wanted: Iterable[str],
    out: DicomJson,
) -> None:
    """Copy defaults and wanted attributes from ``record`` into ``out``; required defaults
    and wanted attributes without a value are returned empty (PS3.4 C.2.2.1)."""
    for tag, required in defaults:
        element = record.get(tag)
        if element is not None:
            out[tag] = element
        elif required:
            out[tag] = {"vr": dictionary_vr(tag)}
    for tag in wanted:
        element = record.get(tag)
        out[tag] = element if element is not None else {"vr": dictionary_vr(tag)}


class ResultBuilder:
    """Builds the DICOM JSON of one page of results with one query per table."""

    def __init__(self, conn: Connection, query: QidoQuery) -> None:
        self.conn = conn
        self.query = query
        wanted: dict[QueryLevel, list[str]] = {level: [] for level in QueryLevel}
        for tag in query.include:
            level = query.level if tag in ANY_LEVEL else attribute_level(tag)
            if level.depth <= query.level.depth:  # deeper levels are never returned
                wanted[level].append(tag)
        self.wanted = wanted

    def build(self, pks: list[int]) -> list[DicomJson]:
        if not pks:
            return []
        if self.query.level is QueryLevel.STUDY:
            return self._studies(pks)
        if self.query.level is QueryLevel.SERIES:
            return self._series(pks)
        return self._instances(pks)

    # Rows ------------------------------------------------------------------------------

    def _study_records(self, pks: Iterable[int]) -> dict[int, DicomJson]:
        rows = self.conn.execute(
            sa.select(STUDY.c.pk, *record_source(STUDY)).where(STUDY.c.pk.in_(set(pks)))
        )
        return {int(r[0]): level_record(QueryLevel.STUDY, r[1:]) for r in rows}

    def _series_records(self, pks: Iterable[int]) -> dict[int, tuple[int, DicomJson]]:
        rows = self.conn.execute(
            sa.select(SERIES.c.pk, SERIES.c.study_pk, *record_source(SERIES)).where(
                SERIES.c.pk.in_(set(pks))
            )
        )
        return {int(r[0]): (int(r[1]), level_record(QueryLevel.SERIES, r[2:])) for r in rows}

    # Per level -------------------------------------------------------------------------

    def _study_part(self, record: Mapping[str, Any], out: DicomJson, *, full: bool) -> None:
        """Study attributes of a result: all defaults when ``full``, else the unique key
        and the character set/timezone that apply to the whole result."""
        if self.query.level is QueryLevel.STUDY and self.query.include_all:
            out.update(record)
        if full:
            _select(record, STUDY_DEFAULTS, self.wanted[QueryLevel.STUDY], out)
        else:
            _select(
                record,
                [(STUDY_INSTANCE_UID, True), *((t, False) for t in _FROM_STUDY_JSON)],
                self.wanted[QueryLevel.STUDY],
                out,
            )

    def _series_part(self, record: Mapping[str, Any], out: DicomJson, *, full: bool) -> None:
        if self.query.level is QueryLevel.SERIES and self.query.include_all:
            out.update(record)
        defaults = SERIES_DEFAULTS if full else ((SERIES_INSTANCE_UID, True),)
        _select(record, defaults, self.wanted[QueryLevel.SERIES], out)

    def _studies(self, pks: list[int]) -> list[DicomJson]:
        records = self._study_records(pks)
        results = []
        for pk in pks:
            out: DicomJson = {}
            self._study_part(records[pk], out, full=True)
            results.append(_sorted(out))
        return results

    def _series(self, pks: list[int]) -> list[DicomJson]:
        series = self._series_records(pks)
        studies = self._study_records(study_pk for study_pk, _ in series.values())
        with_study = self.query.study_instance_uid is None
        results = []
        for pk in pks:
            study_pk, record = series[pk]
            out: DicomJson = {}
            self._study_part(studies[study_pk], out, full=with_study)
            self._series_part(record, out, full=True)
            results.append(_sorted(out))
        return results

    def _instances(self, pks: list[int]) -> list[DicomJson]:
        columns = [INSTANCE.c.pk, INSTANCE.c.study_pk, INSTANCE.c.series_pk]
        columns += [INSTANCE.c[name] for name, _vr in _INSTANCE_COLUMNS.values()]
        wanted_here = self.wanted[QueryLevel.IMAGE]
        need_json = self.query.include_all or any(t not in _INSTANCE_COLUMNS for t in wanted_here)
        if need_json:
            columns.append(INSTANCE.c.attributes)
        rows = {
            int(r[0]): r
            for r in self.conn.execute(sa.select(*columns).where(INSTANCE.c.pk.in_(pks)))
        }
        series = self._series_records(int(r[2]) for r in rows.values())
        studies = self._study_records(int(r[1]) for r in rows.values())
        with_study = self.query.study_instance_uid is None
        with_series = self.query.series_instance_uid is None
        results = []
        for pk in pks:
            row = rows[pk]
            record: DicomJson = dicom_json.unpack(row[-1]) if need_json else {}
            for (tag, (_name, vr)), value in zip(_INSTANCE_COLUMNS.items(), row[3:], strict=False):
                if value is not None:
                    record[tag] = {"vr": vr, "Value": [value]}
            record[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
            out: DicomJson = dict(record) if self.query.include_all else {}
            self._study_part(studies[int(row[1])], out, full=with_study)
            self._series_part(series[int(row[2])][1], out, full=with_series)
            _select(record, INSTANCE_DEFAULTS, wanted_here, out)
            results.append(_sorted(out))
        return results


def _sorted(dataset: DicomJson) -> DicomJson:
    return {tag: dataset[tag] for tag in sorted(dataset)}
