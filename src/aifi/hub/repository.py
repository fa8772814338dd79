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

Speed: one ``put`` is one transaction whatever the batch size — one look-up of the batch's
SOP Instance UIDs, one of its studies and series (locked ``FOR UPDATE`` on PostgreSQL),
bulk inserts, and one counter update per touched study and series. The files' fsyncs run
in parallel (the file system merges them into few journal commits).

Staging: each process has its own folder under ``.staging/``, held with an exclusive
``flock`` for the life of the process; the start-up sweep removes only folders no live
process holds, so several workers can share one data folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import uuid
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, insert, update
from sqlalchemy import exc as sa_exc
from sqlalchemy import select as sa_select
from sqlmodel import col, select

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
_FSYNC_THREADS = 8
_STUDY: Table = Study.__table__  # type: ignore[attr-defined]
_SERIES: Table = Series.__table__  # type: ignore[attr-defined]
_INSTANCE: Table = Instance.__table__  # type: ignore[attr-defined]


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


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fit(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """Clip text to its column's length: PostgreSQL refuses longer values, and one odd
    header value must not fail a whole batch. The stored file keeps the full value."""
    for name, value in values.items():
        if isinstance(value, str):
            length = getattr(table.c[name].type, "length", None)
            if length is not None and len(value) > length:
                log.info("clipping %s.%s to %d characters", table.name, name, length)
                values[name] = value[:length]
    return values


@dataclass(slots=True)
class _Placed:
    incoming: IncomingInstance
    relpath: str
    sop: str
    moved: bool = False


class SqlDicomStore:
    """DICOM files under ``root`` (one folder per tenant), index rows in ``db``."""

    def __init__(self, db: Database, root: Path, *, fsync: bool = True) -> None:
        self.db = db
        self.root = root
        self.fsync = fsync
        self._staging_root = root / ".staging"
        self._staging_root.mkdir(parents=True, exist_ok=True)
        self._staging = self._staging_root / f"p{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._staging.mkdir()
        self._staging_lock = os.open(self._staging, os.O_RDONLY)
        fcntl.flock(self._staging_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fsync_pool = ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="aifi-fsync")

    def close(self) -> None:
        self._fsync_pool.shutdown(wait=True)
        for path in self._staging.iterdir():
            path.unlink(missing_ok=True)
        os.close(self._staging_lock)
        self._staging.rmdir()

    # -- start-up ---------------------------------------------------------------------

    def sweep_staging(self) -> int:
        """Remove staging folders (and files) that no live process holds: what a crash or
        an aborted upload left behind. Returns the number of files removed."""
        removed = 0
        for folder in self._staging_root.iterdir():
            if folder == self._staging:
                continue
            if not folder.is_dir():
                folder.unlink(missing_ok=True)
                removed += 1
                continue
            fd = os.open(folder, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another live process's staging folder
                for path in folder.iterdir():
                    path.unlink(missing_ok=True)
                    removed += 1
                folder.rmdir()
            finally:
                os.close(fd)
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
            sop = _safe_uid(str(ds.SOPInstanceUID))
            rel = "/".join(
                (
                    tenant,
                    _safe_uid(str(ds.StudyInstanceUID)),
                    _safe_uid(str(ds.SeriesInstanceUID)),
                    f"{sop}.{item.sha256[:16]}.dcm",
                )
            )
            placed.append(_Placed(item, rel, sop))
        try:
            for attempt in range(_ATTEMPTS):
                try:
                    return self._store(tenant, placed)
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

    def _store(self, tenant: str, placed: list[_Placed]) -> list[StoreOutcome]:
        """One transaction: which instances are new, their files into place, their rows."""
        now = datetime.now(UTC)
        outcomes: list[StoreOutcome] = []
        with self.db.write() as session:
            conn = session.connection()
            stored: dict[str, str] = {
                str(uid): str(sha)
                for uid, sha in conn.execute(
                    sa_select(_INSTANCE.c.sop_instance_uid, _INSTANCE.c.sha256).where(
                        _INSTANCE.c.tenant == tenant,
                        _INSTANCE.c.sop_instance_uid.in_([p.sop for p in placed]),
                    )
                ).all()
            }
            new: list[_Placed] = []
            for p in placed:
                known = stored.get(p.sop)
                if known is None:
                    stored[p.sop] = p.incoming.sha256
                    new.append(p)
                    outcomes.append(StoreOutcome(StoreStatus.STORED))
                elif known == p.incoming.sha256:
                    outcomes.append(StoreOutcome(StoreStatus.ALREADY_STORED))
                else:
                    outcomes.append(
                        StoreOutcome(
                            StoreStatus.CONFLICT,
                            "A different instance with this SOP Instance UID is already "
                            "stored; it was kept",
                        )
                    )
            if new:
                self._move(new)  # durable on disk before the rows can commit
                self._insert(conn, tenant, new, now)
        # A file moved by an earlier attempt whose SOP Instance UID another request has
        # since stored with other content is referenced by no row: remove it.
        for p, outcome in zip(placed, outcomes, strict=True):
            if p.moved and outcome.status is StoreStatus.CONFLICT:
                (self.root / p.relpath).unlink(missing_ok=True)
                p.moved = False
        return outcomes

    def _move(self, todo: list[_Placed]) -> None:
        """fsync (in parallel) and rename the staged files into place, then fsync their
        folders; a file moved by an earlier attempt is already there."""
        todo = [p for p in todo if not p.moved]
        if self.fsync:
            list(self._fsync_pool.map(lambda p: _fsync_path(p.incoming.staged_path), todo))
        folders: set[Path] = set()
        for p in todo:
            target = self.root / p.relpath
            if target.parent not in folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                folders.add(target.parent)
            os.replace(p.incoming.staged_path, target)
            p.moved = True
        if self.fsync and folders:
            list(self._fsync_pool.map(_fsync_path, folders))

    def _insert(self, conn: Connection, tenant: str, new: list[_Placed], now: datetime) -> None:
        # Studies: lock the known ones, create the others.
        first_of_study: dict[str, IncomingInstance] = {}
        for p in new:
            first_of_study.setdefault(str(p.incoming.header.StudyInstanceUID), p.incoming)
        study_columns = (
            _STUDY.c.pk,
            _STUDY.c.study_instance_uid,
            _STUDY.c.modalities_in_study,
            _STUDY.c.sop_classes_in_study,
        )
        studies = {
            str(r.study_instance_uid): r
            for r in conn.execute(
                sa_select(*study_columns)
                .where(
                    _STUDY.c.tenant == tenant,
                    _STUDY.c.study_instance_uid.in_(list(first_of_study)),
                )
                .with_for_update()
            ).all()
        }
        missing = [
            _fit(_STUDY, _study_row(tenant, item, now))
            for uid, item in first_of_study.items()
            if uid not in studies
        ]
        if missing:
            conn.execute(insert(_STUDY), missing)
            studies.update(
                (str(r.study_instance_uid), r)
                for r in conn.execute(
                    sa_select(*study_columns).where(
                        _STUDY.c.tenant == tenant,
                        _STUDY.c.study_instance_uid.in_([r["study_instance_uid"] for r in missing]),
                    )
                ).all()
            )

        # Series: the same.
        first_of_series: dict[str, IncomingInstance] = {}
        for p in new:
            first_of_series.setdefault(str(p.incoming.header.SeriesInstanceUID), p.incoming)
        series_columns = (_SERIES.c.pk, _SERIES.c.series_instance_uid)
        series = {
            str(r.series_instance_uid): r
            for r in conn.execute(
                sa_select(*series_columns)
                .where(
                    _SERIES.c.tenant == tenant,
                    _SERIES.c.series_instance_uid.in_(list(first_of_series)),
                )
                .with_for_update()
            ).all()
        }
        new_series = [
            _fit(
                _SERIES,
                _series_row(tenant, studies[str(item.header.StudyInstanceUID)].pk, item, now),
            )
            for uid, item in first_of_series.items()
            if uid not in series
        ]
        if new_series:
            conn.execute(insert(_SERIES), new_series)
            series.update(
                (str(r.series_instance_uid), r)
                for r in conn.execute(
                    sa_select(*series_columns).where(
                        _SERIES.c.tenant == tenant,
                        _SERIES.c.series_instance_uid.in_(
                            [r["series_instance_uid"] for r in new_series]
                        ),
                    )
                ).all()
            )

        # Instances, in one executemany.
        rows = []
        per_series: dict[int, int] = {}
        per_study: dict[int, tuple[list[int], set[str], set[str]]] = {}
        for p in new:
            ds = p.incoming.header
            study_pk = studies[str(ds.StudyInstanceUID)].pk
            series_pk = series[str(ds.SeriesInstanceUID)].pk
            rows.append(_fit(_INSTANCE, _instance_row(tenant, study_pk, series_pk, p, now)))
            per_series[series_pk] = per_series.get(series_pk, 0) + 1
            counts = per_study.setdefault(study_pk, ([0, 0], set(), set()))
            counts[0][0] += 1
            counts[1].add(str(ds.SOPClassUID))
        conn.execute(insert(_INSTANCE), rows)

        # Counters and computed attributes (PS3.18 §10.6.3: ModalitiesInStudy, ...).
        for row in new_series:
            counts = per_study[row["study_pk"]]
            counts[0][1] += 1
            if row["modality"]:
                counts[2].add(row["modality"])
        for pk, added in per_series.items():
            conn.execute(
                update(_SERIES)
                .where(_SERIES.c.pk == pk)
                .values(number_of_instances=_SERIES.c.number_of_instances + added)
            )
        by_pk = {r.pk: r for r in studies.values()}
        for pk, ((instances, series_added), sop_classes, modalities) in per_study.items():
            current = by_pk[pk]
            conn.execute(
                update(_STUDY)
                .where(_STUDY.c.pk == pk)
                .values(
                    number_of_instances=_STUDY.c.number_of_instances + instances,
                    number_of_series=_STUDY.c.number_of_series + series_added,
                    modalities_in_study=_merge(current.modalities_in_study, modalities),
                    sop_classes_in_study=_merge(current.sop_classes_in_study, sop_classes),
                    updated_at=now,
                )
            )

    def _discard_unindexed(self, tenant: str, placed: list[_Placed]) -> None:
        """Remove moved files no index row points at (a failed transaction, or a refused
        re-send); a file an identical concurrent store indexed is referenced and kept."""
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
                p.moved = False

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


def _merge(delimited: str, values: set[str]) -> str:
    """Add ``values`` to a ``|A|B|`` set string (kept sorted)."""
    members = {m for m in delimited.split("|") if m} | values
    return "|" + "|".join(sorted(members)) + "|" if members else ""


def _study_row(tenant: str, item: IncomingInstance, now: datetime) -> dict[str, Any]:
    rec = study_record(item.header)
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
        "attributes": pack_json(level_subset(item.metadata, STUDY_LEVEL_TAGS)),
        "created_at": now,
        "updated_at": now,
    }


def _series_row(
    tenant: str, study_pk: int, item: IncomingInstance, now: datetime
) -> dict[str, Any]:
    rec = series_record(item.header)
    return {
        "tenant": tenant,
        "study_pk": study_pk,
        "series_instance_uid": rec.SeriesInstanceUID,
        "modality": rec.Modality,
        "series_number": rec.SeriesNumber,
        "pps_start_date": rec.PerformedProcedureStepStartDate,
        "pps_start_time": rec.PerformedProcedureStepStartTime,
        "number_of_instances": 0,
        "attributes": pack_json(level_subset(item.metadata, SERIES_LEVEL_TAGS)),
        "created_at": now,
    }


def _instance_row(
    tenant: str, study_pk: int, series_pk: int, p: _Placed, now: datetime
) -> dict[str, Any]:
    item = p.incoming
    rec = instance_record(item.header)
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
        "bits_allocated": _qido_int(item.header.get("BitsAllocated")),
        "transfer_syntax_uid": item.transfer_syntax_uid,
        "path": p.relpath,
        "size": item.size,
        "sha256": item.sha256,
        "attributes": pack_json(item.metadata),
        "created_at": now,
    }


def _qido_int(value: object) -> int | None:
    """An integer index column from a header value (QIDO-RS defaults), None otherwise."""
    return value if isinstance(value, int) else None
