"""The hub's :class:`~aifi.dicomweb.store.DicomStore`: DICOM files in a folder, indexed in SQL.

Atomicity (ARCHITECTURE.md, data rules): a received instance is first written to a staging
file in the same file system; :meth:`SqlDicomStore.put` fsyncs it, renames it to its final
name and fsyncs the folder, and only then commits its index row. A crash at any point
leaves at worst an unindexed file (never an indexed instance without its file), and
staging files are swept at start-up.

File names carry a prefix of the content's SHA-256 (``<sop>.<sha256[:16]>.dcm``), so a
rename can never replace the stored bytes of a *different* instance with the same SOP
Instance UID. Policy for such a re-send: the stored instance is kept and the new one is
refused (:attr:`StoreStatus.CONFLICT`, STOW-RS failure reason 0111); an identical re-send
succeeds without change (:attr:`StoreStatus.ALREADY_STORED`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlmodel import Session, col, select

from aifi.dicomweb.attributes import (
    SERIES_LEVEL_TAGS,
    STUDY_LEVEL_TAGS,
    instance_record,
    level_subset,
    series_record,
    study_record,
)
from aifi.dicomweb.matching import QidoQuery, QueryResult, combine_date_time, pn_ci
from aifi.dicomweb.store import (
    DicomJson,
    IncomingInstance,
    StoredInstance,
    StoreOutcome,
    StoreStatus,
)
from aifi.hub.db import Database
from aifi.hub.models import Instance, Series, Study, Tenant

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_ATTEMPTS = 3


def pack_json(value: DicomJson) -> bytes:
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 1)


def unpack_json(value: bytes) -> DicomJson:
    result: DicomJson = json.loads(zlib.decompress(value))
    return result


def _safe_uid(uid: str) -> str:
    """UIDs become path segments: refuse anything but digits and dots (no traversal)."""
    if not (0 < len(uid) <= 64 and _UID.fullmatch(uid)):
        raise ValueError(f"not a valid UID: {uid!r}")
    return uid


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Placed:
    incoming: IncomingInstance
    relpath: str
    moved: bool = False


class SqlDicomStore:
    """DICOM files under ``root`` (one folder per tenant), index rows in ``db``."""

    def __init__(self, db: Database, root: Path, *, fsync: bool = True) -> None:
        self.db = db
        self.root = root
        self.fsync = fsync
        self._staging = root / ".staging"
        self._staging.mkdir(parents=True, exist_ok=True)

    # -- start-up ---------------------------------------------------------------------

    def sweep_staging(self) -> int:
        """Remove staging files a crash or an aborted upload left behind."""
        removed = 0
        for path in self._staging.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def ensure_tenant(self, tenant: str, name: str = "") -> None:
        with self.db.write() as session:
            if session.get(Tenant, tenant) is None:
                session.add(Tenant(id=tenant, name=name or tenant))

    # -- DicomStore -------------------------------------------------------------------

    def staging_dir(self) -> Path:
        return self._staging

    def put(self, tenant: str, instances: Sequence[IncomingInstance]) -> list[StoreOutcome]:
        placed: list[_Placed] = []
        for item in instances:
            ds = item.header
            rel = "/".join(
                (
                    tenant,
                    _safe_uid(str(ds.StudyInstanceUID)),
                    _safe_uid(str(ds.SeriesInstanceUID)),
                    f"{_safe_uid(str(ds.SOPInstanceUID))}.{item.sha256[:16]}.dcm",
                )
            )
            placed.append(_Placed(item, rel))
        try:
            for attempt in range(_ATTEMPTS):
                existing = self._existing(tenant, [p.incoming for p in placed])
                self._move_new(placed, existing)
                try:
                    return self._index(tenant, placed)
                except sa_exc.IntegrityError:
                    # A concurrent request indexed the same study/series/instance first:
                    # look again (its rows are now visible) and retry.
                    if attempt == _ATTEMPTS - 1:
                        raise
                    log.info("index race on attempt %d; retrying", attempt + 1)
            raise AssertionError("unreachable")
        except BaseException:
            self._discard_unindexed(tenant, placed)
            raise
        finally:
            for p in placed:
                p.incoming.staged_path.unlink(missing_ok=True)

    def _existing(self, tenant: str, items: Sequence[IncomingInstance]) -> dict[str, str]:
        uids = [str(i.header.SOPInstanceUID) for i in items]
        with self.db.read() as session:
            rows = session.exec(
                select(Instance.sop_instance_uid, Instance.sha256).where(
                    col(Instance.tenant) == tenant, col(Instance.sop_instance_uid).in_(uids)
                )
            ).all()
        return {str(uid): str(sha) for uid, sha in rows}

    def _move_new(self, placed: list[_Placed], existing: dict[str, str]) -> None:
        folders: set[Path] = set()
        for p in placed:
            if p.moved or str(p.incoming.header.SOPInstanceUID) in existing:
                continue
            target = self.root / p.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                fd = os.open(p.incoming.staged_path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(p.incoming.staged_path, target)
            p.moved = True
            folders.add(target.parent)
        if self.fsync:
            for folder in folders:
                _fsync_dir(folder)

    def _index(self, tenant: str, placed: list[_Placed]) -> list[StoreOutcome]:
        outcomes: list[StoreOutcome] = []
        now = datetime.now(UTC)
        with self.db.write() as session:
            seen: dict[str, str] = {}
            for p in placed:
                item = p.incoming
                ds = item.header
                sop_uid = str(ds.SOPInstanceUID)
                stored_sha = (
                    seen.get(sop_uid)
                    or session.exec(
                        select(Instance.sha256).where(
                            col(Instance.tenant) == tenant,
                            col(Instance.sop_instance_uid) == sop_uid,
                        )
                    ).first()
                )
                if stored_sha is not None:
                    if stored_sha == item.sha256:
                        outcomes.append(StoreOutcome(StoreStatus.ALREADY_STORED))
                    else:
                        outcomes.append(
                            StoreOutcome(
                                StoreStatus.CONFLICT,
                                "A different instance with this SOP Instance UID is "
                                "already stored; it was kept",
                            )
                        )
                    continue
                study = self._study_for_update(session, tenant, item, now)
                series = self._series_for_update(session, tenant, study, item)
                rec = instance_record(ds)
                session.add(
                    Instance(
                        tenant=tenant,
                        study_pk=study.pk or 0,
                        series_pk=series.pk or 0,
                        sop_instance_uid=sop_uid,
                        sop_class_uid=rec.SOPClassUID,
                        instance_number=rec.InstanceNumber,
                        number_of_frames=rec.NumberOfFrames,
                        rows=rec.Rows,
                        columns=rec.Columns,
                        bits_allocated=_qido_int(ds.get("BitsAllocated")),
                        transfer_syntax_uid=item.transfer_syntax_uid,
                        path=p.relpath,
                        size=item.size,
                        sha256=item.sha256,
                        attributes=pack_json(item.metadata),
                        created_at=now,
                    )
                )
                series.number_of_instances += 1
                study.number_of_instances += 1
                study.sop_classes_in_study = _add_member(
                    study.sop_classes_in_study, rec.SOPClassUID
                )
                study.updated_at = now
                seen[sop_uid] = item.sha256
                outcomes.append(StoreOutcome(StoreStatus.STORED))
            session.flush()
        return outcomes

    def _study_for_update(
        self, session: Session, tenant: str, item: IncomingInstance, now: datetime
    ) -> Study:
        uid = str(item.header.StudyInstanceUID)
        study = session.exec(
            select(Study)
            .where(col(Study.tenant) == tenant, col(Study.study_instance_uid) == uid)
            .with_for_update()
        ).first()
        if study is not None:
            return study
        rec = study_record(item.header)
        study = Study(
            tenant=tenant,
            study_instance_uid=uid,
            study_date=rec.StudyDate,
            study_time=rec.StudyTime,
            accession_number=rec.AccessionNumber,
            patient_name=rec.PatientName,
            patient_name_fuzzy=rec.patient_name_fuzzy,
            patient_name_ci=pn_ci(rec.PatientName) if rec.PatientName else None,
            patient_id=rec.PatientID,
            study_id=rec.StudyID,
            referring_physician_name=rec.ReferringPhysicianName,
            referring_physician_name_fuzzy=rec.referring_physician_name_fuzzy,
            referring_physician_name_ci=(
                pn_ci(rec.ReferringPhysicianName) if rec.ReferringPhysicianName else None
            ),
            study_datetime=combine_date_time(rec.StudyDate, rec.StudyTime),
            study_description=rec.StudyDescription,
            attributes=pack_json(level_subset(item.metadata, STUDY_LEVEL_TAGS)),
            created_at=now,
            updated_at=now,
        )
        session.add(study)
        session.flush()
        return study

    def _series_for_update(
        self, session: Session, tenant: str, study: Study, item: IncomingInstance
    ) -> Series:
        uid = str(item.header.SeriesInstanceUID)
        series = session.exec(
            select(Series)
            .where(col(Series.tenant) == tenant, col(Series.series_instance_uid) == uid)
            .with_for_update()
        ).first()
        if series is not None:
            return series
        rec = series_record(item.header)
        series = Series(
            tenant=tenant,
            study_pk=study.pk or 0,
            series_instance_uid=uid,
            modality=rec.Modality,
            series_number=rec.SeriesNumber,
            pps_start_date=rec.PerformedProcedureStepStartDate,
            pps_start_time=rec.PerformedProcedureStepStartTime,
            attributes=pack_json(level_subset(item.metadata, SERIES_LEVEL_TAGS)),
        )
        session.add(series)
        session.flush()
        study.number_of_series += 1
        if rec.Modality:
            study.modalities_in_study = _add_member(study.modalities_in_study, rec.Modality)
        return series

    def _discard_unindexed(self, tenant: str, placed: list[_Placed]) -> None:
        """After a failed index transaction: remove moved files no row points at."""
        moved = [p for p in placed if p.moved]
        if not moved:
            return
        try:
            with self.db.read() as session:
                referenced = set(
                    session.exec(
                        select(Instance.path).where(
                            col(Instance.tenant) == tenant,
                            col(Instance.path).in_([p.relpath for p in moved]),
                        )
                    ).all()
                )
        except sa_exc.SQLAlchemyError:
            log.exception("cannot check which files are indexed; leaving them in place")
            return
        for p in moved:
            if p.relpath not in referenced:
                (self.root / p.relpath).unlink(missing_ok=True)

    # -- retrieval --------------------------------------------------------------------

    def _instance_rows(
        self,
        tenant: str,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
        columns: tuple[Any, ...],
    ) -> list[Any]:
        stmt = (
            select(*columns)
            .join(Series, col(Series.pk) == col(Instance.series_pk))
            .join(Study, col(Study.pk) == col(Instance.study_pk))
            .where(col(Instance.tenant) == tenant, col(Study.study_instance_uid) == study_uid)
        )
        if series_uid is not None:
            stmt = stmt.where(col(Series.series_instance_uid) == series_uid)
        if sop_uid is not None:
            stmt = stmt.where(col(Instance.sop_instance_uid) == sop_uid)
        stmt = stmt.order_by(
            col(Series.series_number).is_(None),
            col(Series.series_number),
            col(Series.pk),
            col(Instance.instance_number).is_(None),
            col(Instance.instance_number),
            col(Instance.pk),
        )
        with self.db.read() as session:
            return list(session.exec(stmt).all())

    def find_instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        rows = self._instance_rows(
            tenant,
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
            (
                Series.series_instance_uid,
                Instance.sop_instance_uid,
                Instance.sop_class_uid,
                Instance.transfer_syntax_uid,
                Instance.path,
                Instance.size,
                Instance.number_of_frames,
            ),
        )
        return [
            StoredInstance(
                study_instance_uid=study_instance_uid,
                series_instance_uid=r[0],
                sop_instance_uid=r[1],
                sop_class_uid=r[2],
                transfer_syntax_uid=r[3],
                path=self.root / r[4],
                size=r[5],
                number_of_frames=r[6],
            )
            for r in rows
        ]

    def instance_metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[DicomJson]:
        rows = self._instance_rows(
            tenant,
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
            (Instance.attributes,),
        )
        return [unpack_json(r) for r in rows]  # one selected column: rows are scalars

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        from aifi.hub.qido_sql import run_query

        return run_query(self.db, tenant, query)


def _add_member(delimited: str, value: str) -> str:
    """Add ``value`` to a ``|A|B|`` set string (kept sorted)."""
    members = {m for m in delimited.split("|") if m}
    members.add(value)
    return "|" + "|".join(sorted(members)) + "|"


def _qido_int(value: object) -> int | None:
    """An integer index column from a header value (QIDO-RS defaults), None otherwise."""
    return value if isinstance(value, int) else None
