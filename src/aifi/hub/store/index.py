"""The index writes of one ``put``: the rows of a batch of new instances, in the caller's
transaction.

Studies and series the batch touches are looked up once (locked ``FOR UPDATE`` on
PostgreSQL) and created when new; the instances go in one ``executemany``; then one counter
update per touched study and series, with the computed study attributes (PS3.18 §10.6.3:
ModalitiesInStudy, SOPClassesInStudy). Each row keeps the QIDO-RS matching keys in columns
and the level's attributes as packed DICOM JSON (:func:`aifi.dicom_json.pack`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from aifi import dicom_json
from aifi.dicomweb.attributes import (
    SERIES_LEVEL_TAGS,
    STUDY_LEVEL_TAGS,
    instance_record,
    level_subset,
    series_record,
    study_record,
)
from aifi.dicomweb.store import IncomingInstance
from aifi.dicomweb.vr_values import combine_date_time, pn_ci
from aifi.hub.store.files import Placed
from aifi.hub.store.statements import Statements


def insert_new(
    conn: Connection, sql: Statements, tenant: str, new: list[Placed], now: datetime
) -> None:
    """Index the new instances ``new`` of ``tenant`` (see the module docstring)."""
    # Studies: lock the known ones, create the others.
    first_of_study: dict[str, IncomingInstance] = {}
    for p in new:
        first_of_study.setdefault(p.study, p.incoming)
    select = sql.select_studies(len(first_of_study))
    studies: dict[str, tuple[int, str, str]] = {
        str(uid): (int(pk), str(modalities), str(sop_classes))
        for pk, uid, modalities, sop_classes in conn.exec_driver_sql(
            select.sql, select.params(sql.uids(tenant, list(first_of_study)))
        ).all()
    }
    for uid, item in first_of_study.items():
        if uid not in studies:
            row = sql.study.row(_study_row(tenant, item, now))
            studies[uid] = (int(conn.exec_driver_sql(sql.study.sql, row).scalar_one()), "", "")

    # Series: the same.
    first_of_series: dict[str, Placed] = {}
    for p in new:
        first_of_series.setdefault(p.series, p)
    select = sql.select_series(len(first_of_series))
    series: dict[str, int] = {
        str(uid): int(pk)
        for pk, uid in conn.exec_driver_sql(
            select.sql, select.params(sql.uids(tenant, list(first_of_series)))
        ).all()
    }
    per_study: dict[int, tuple[list[int], set[str], set[str]]] = {}
    for uid, first in first_of_series.items():
        if uid not in series:
            study_pk = studies[first.study][0]
            values = _series_row(tenant, study_pk, first.incoming, now)
            row = sql.series.row(values)
            series[uid] = int(conn.exec_driver_sql(sql.series.sql, row).scalar_one())
            counts = per_study.setdefault(study_pk, ([0, 0], set(), set()))
            counts[0][1] += 1
            if values["modality"]:
                counts[2].add(values["modality"])

    # Instances, in one executemany.
    rows = []
    per_series: dict[int, int] = {}
    for p in new:
        study_pk = studies[p.study][0]
        series_pk = series[p.series]
        row = _instance_row(tenant, study_pk, series_pk, p, now)
        rows.append(sql.instance.row(row))
        per_series[series_pk] = per_series.get(series_pk, 0) + 1
        counts = per_study.setdefault(study_pk, ([0, 0], set(), set()))
        counts[0][0] += 1
        counts[1].add(row["sop_class_uid"])
    conn.exec_driver_sql(sql.instance.sql, rows if len(rows) > 1 else rows[0])

    # Counters and computed attributes (PS3.18 §10.6.3: ModalitiesInStudy, ...).
    update_series = sql.update_series
    conn.exec_driver_sql(
        update_series.sql,
        [update_series.params({"b_pk": pk, "b_added": n}) for pk, n in per_series.items()],
    )
    by_pk = {pk: (modalities, sop_classes) for pk, modalities, sop_classes in studies.values()}
    updated_at = sql.updated_at(now)
    for pk, ((instances, series_added), sop_classes, modalities) in per_study.items():
        current_modalities, current_sop_classes = by_pk[pk]
        params = {
            "b_pk": pk,
            "b_instances": instances,
            "b_series": series_added,
            "b_modalities": _merge(current_modalities, modalities),
            "b_sop_classes": _merge(current_sop_classes, sop_classes),
            "b_updated_at": updated_at,
        }
        conn.exec_driver_sql(sql.update_study.sql, sql.update_study.params(params))


def _merge(delimited: str, values: set[str]) -> str:
    """Add ``values`` to a ``|A|B|`` set string (kept sorted)."""
    members = {m for m in delimited.split("|") if m} | values
    return "|" + "|".join(sorted(members)) + "|" if members else ""


def _study_row(tenant: str, item: IncomingInstance, now: datetime) -> dict[str, Any]:
    rec = study_record(item.metadata)
    return {
        "tenant": tenant,
        "study_instance_uid": rec.StudyInstanceUID,
        "study_date": rec.StudyDate,
        "study_time": rec.StudyTime,
        "accession_number": rec.AccessionNumber,
        "patient_name": rec.PatientName,
        "patient_name_fuzzy": rec.patient_name_fuzzy,
        "patient_name_ci": pn_ci(rec.PatientName) if rec.PatientName else None,
        "patient_id": rec.PatientID,
        "study_id": rec.StudyID,
        "referring_physician_name": rec.ReferringPhysicianName,
        "referring_physician_name_fuzzy": rec.referring_physician_name_fuzzy,
        "referring_physician_name_ci": (
            pn_ci(rec.ReferringPhysicianName) if rec.ReferringPhysicianName else None
        ),
        "study_datetime": combine_date_time(rec.StudyDate, rec.StudyTime),
        "study_description": rec.StudyDescription,
        "modalities_in_study": "",
        "sop_classes_in_study": "",
        "number_of_series": 0,
        "number_of_instances": 0,
        "attributes": dicom_json.pack(level_subset(item.metadata, STUDY_LEVEL_TAGS)),
        "created_at": now,
        "updated_at": now,
    }


def _series_row(
    tenant: str, study_pk: int, item: IncomingInstance, now: datetime
) -> dict[str, Any]:
    rec = series_record(item.metadata)
    return {
        "tenant": tenant,
        "study_pk": study_pk,
        "series_instance_uid": rec.SeriesInstanceUID,
        "modality": rec.Modality,
        "series_number": rec.SeriesNumber,
        "pps_start_date": rec.PerformedProcedureStepStartDate,
        "pps_start_time": rec.PerformedProcedureStepStartTime,
        "number_of_instances": 0,
        "attributes": dicom_json.pack(level_subset(item.metadata, SERIES_LEVEL_TAGS)),
        "created_at": now,
    }


def _instance_row(
    tenant: str, study_pk: int, series_pk: int, p: Placed, now: datetime
) -> dict[str, Any]:
    item = p.incoming
    rec = instance_record(item.metadata)
    return {
        "tenant": tenant,
        "study_pk": study_pk,
        "series_pk": series_pk,
        "sop_instance_uid": p.sop,
        "sop_class_uid": rec.SOPClassUID,
        "instance_number": rec.InstanceNumber,
        "number_of_frames": rec.NumberOfFrames,
        "rows": rec.Rows,
        "columns": rec.Columns,
        "bits_allocated": rec.BitsAllocated,
        "transfer_syntax_uid": item.transfer_syntax_uid,
        "path": p.relpath,
        "size": item.size,
        "sha256": item.sha256,
        "attributes": dicom_json.pack(item.metadata),
        "created_at": now,
    }
