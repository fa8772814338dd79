"""The pseudonym map in the gateway's database: what the pseudonymiser produced, recorded
before anything pseudonymised leaves; and the look-ups re-identification needs.

Every fact is deterministic (keyed HMAC of the original), so recording the same instance
twice writes nothing new: rows are inserted only when absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel

from aifi.gateway.deid.types import PatientIdentity, Pseudonymised, StudyIdentity
from aifi.gateway.persistence.tables import PatientMap, StudyMap, UidMap
from aifi.hub.persistence.database import Database


def record(session: Session, facts: Iterable[Pseudonymised]) -> None:
    """Add the mapping facts of pseudonymised instances (in the caller's transaction,
    which must commit before the instances are sent).

    ``INSERT … ON CONFLICT DO NOTHING``: two forwarders recording the same new pseudonyms
    at once (another thread, another process) both succeed, and a row once written is never
    changed (the facts are deterministic, so the first writer's row is every writer's)."""
    uids: dict[str, str] = {}
    patients: dict[str, PatientIdentity] = {}
    studies: dict[str, StudyIdentity] = {}
    for fact in facts:
        uids.update(fact.uids)
        patients[fact.patient.pseudo_id] = fact.patient
        studies[fact.study.pseudo_study_uid] = fact.study
    _insert_absent(session, UidMap, [{"pseudo": p, "original": o} for p, o in uids.items()])
    _insert_absent(
        session,
        PatientMap,
        [
            {
                "pseudo_id": pseudo_id,
                "original_id": patient.original_id,
                "issuer": patient.issuer,
                "date_offset_days": patient.date_offset_days,
                "identity_json": json.dumps(patient.identity),
            }
            for pseudo_id, patient in patients.items()
        ],
    )
    _insert_absent(
        session,
        StudyMap,
        [
            {
                "pseudo_study_uid": pseudo_uid,
                "original_study_uid": study.original_study_uid,
                "patient_pseudo_id": study.patient_pseudo_id,
                "accession_pseudo": study.accession_pseudo,
                "identity_json": json.dumps(study.identity),
            }
            for pseudo_uid, study in studies.items()
        ],
    )


def _insert_absent(session: Session, table: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    now = datetime.now(UTC)
    values = [{**row, "created_at": now} for row in rows]
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(table).values(values).on_conflict_do_nothing()
    session.execute(statement)


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
