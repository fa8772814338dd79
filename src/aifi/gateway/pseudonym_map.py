"""The pseudonym map in the gateway's database: what the pseudonymiser produced, recorded
before anything pseudonymised leaves; and the look-ups re-identification needs.

Every fact is deterministic (keyed HMAC of the original), so recording the same instance
twice writes nothing new: rows are inserted only when absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlmodel import Session, col, select

from aifi.gateway.deid.types import PatientIdentity, Pseudonymised, StudyIdentity
from aifi.gateway.models import PatientMap, StudyMap, UidMap
from aifi.hub.db import Database


def record(session: Session, facts: Iterable[Pseudonymised]) -> None:
    """Add the mapping facts of pseudonymised instances (in the caller's transaction,
    which must commit before the instances are sent)."""
    uids: dict[str, str] = {}
    patients: dict[str, PatientIdentity] = {}
    studies: dict[str, StudyIdentity] = {}
    for fact in facts:
        uids.update(fact.uids)
        patients[fact.patient.pseudo_id] = fact.patient
        studies[fact.study.pseudo_study_uid] = fact.study
    if uids:
        known = set(session.exec(select(UidMap.pseudo).where(col(UidMap.pseudo).in_(uids))).all())
        for pseudo, original in uids.items():
            if pseudo not in known:
                session.add(UidMap(pseudo=pseudo, original=original))
    for pseudo_id, patient in patients.items():
        if session.get(PatientMap, pseudo_id) is None:
            session.add(
                PatientMap(
                    pseudo_id=pseudo_id,
                    original_id=patient.original_id,
                    issuer=patient.issuer,
                    date_offset_days=patient.date_offset_days,
                    identity_json=json.dumps(patient.identity),
                )
            )
    for pseudo_uid, study in studies.items():
        if session.get(StudyMap, pseudo_uid) is None:
            session.add(
                StudyMap(
                    pseudo_study_uid=pseudo_uid,
                    original_study_uid=study.original_study_uid,
                    patient_pseudo_id=study.patient_pseudo_id,
                    accession_pseudo=study.accession_pseudo,
                    identity_json=json.dumps(study.identity),
                )
            )
    session.flush()


class SqlPseudonymLookup:
    """:class:`~aifi.gateway.deid.types.PseudonymLookup` over the gateway's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def original_uid(self, pseudo: str) -> str | None:
        with self.db.read() as session:
            row = session.get(UidMap, pseudo)
            return row.original if row else None

    def patient(self, pseudo_id: str) -> PatientIdentity | None:
        with self.db.read() as session:
            row = session.get(PatientMap, pseudo_id)
        if row is None:
            return None
        return PatientIdentity(
            pseudo_id=row.pseudo_id,
            original_id=row.original_id,
            issuer=row.issuer,
            date_offset_days=row.date_offset_days,
            identity=json.loads(row.identity_json),
        )

    def study(self, pseudo_study_uid: str) -> StudyIdentity | None:
        with self.db.read() as session:
            row = session.get(StudyMap, pseudo_study_uid)
        if row is None:
            return None
        return StudyIdentity(
            pseudo_study_uid=row.pseudo_study_uid,
            original_study_uid=row.original_study_uid,
            patient_pseudo_id=row.patient_pseudo_id,
            accession_pseudo=row.accession_pseudo,
            identity=json.loads(row.identity_json),
        )
