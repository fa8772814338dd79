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
import functools
import json
import logging
import os
import re
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ClauseElement, Connection, Dialect, Table, bindparam, insert, update
from sqlalchemy import exc as sa_exc
from sqlalchemy import select as sa_select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine
from sqlmodel import col, select

from aifi.dicomweb.attributes import (
    SERIES_LEVEL_TAGS,
    STUDY_LEVEL_TAGS,
    instance_record,
    json_text,
    level_subset,
    series_record,
    study_record,
)
from aifi.dicomweb.matching import QidoQuery, QueryResult
from aifi.dicomweb.store import (
    DicomJson,
    IncomingInstance,
    StoredInstance,
    StoreOutcome,
    StoreStatus,
)
from aifi.dicomweb.vr_values import combine_date_time, pn_ci
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import Instance, Series, Study, Tenant

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_ATTEMPTS = 3
_FSYNC_THREADS = 8
_STUDY: Table = Study.__table__  # type: ignore[attr-defined]
_SERIES: Table = Series.__table__  # type: ignore[attr-defined]
_INSTANCE: Table = Instance.__table__  # type: ignore[attr-defined]
_INSTANCE_ORDER = (
    _SERIES.c.series_number.is_(None),
    _SERIES.c.series_number,
    _SERIES.c.pk,
    _INSTANCE.c.instance_number.is_(None),
    _INSTANCE.c.instance_number,
    _INSTANCE.c.pk,
)
"""The order instances are listed in (WADO-RS, metadata): by series, then instance number."""
_LOCATION = (
    _SERIES.c.series_instance_uid,
    _INSTANCE.c.sop_instance_uid,
    _INSTANCE.c.sop_class_uid,
    _INSTANCE.c.transfer_syntax_uid,
    _INSTANCE.c.path,
    _INSTANCE.c.size,
    _INSTANCE.c.number_of_frames,
)
"""What :meth:`SqlDicomStore.find_instances` reads of each instance."""


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


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; the folders whose entries changed (to fsync:
    a new folder's name is durable once the folder holding it is)."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return [path.parent for path in missing]


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of this type before the driver gets it (e.g. the
    text form of a datetime on SQLite)."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


class _Compiled:
    """A Core statement compiled once for a dialect, run with ``exec_driver_sql``."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )

    def params(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters (positional or named) from values by bind name."""
        return values if self.order is None else tuple(values[name] for name in self.order)


class _Insert(_Compiled):
    """An INSERT of all columns but the primary key, with the columns' bind processors."""

    def __init__(self, table: Table, dialect: Dialect, returning: bool) -> None:
        self.table = table.name
        self.columns = [c.name for c in table.c if not c.primary_key]
        self.processors = [_bind_processor(table.c[name].type, dialect) for name in self.columns]
        self.lengths = [getattr(table.c[name].type, "length", None) for name in self.columns]
        statement = insert(table).values({name: bindparam(name) for name in self.columns})
        # inline(): no implicit RETURNING of the primary key (PostgreSQL) when not asked
        super().__init__(
            statement.returning(table.c.pk) if returning else statement.inline(), dialect
        )

    def row(self, row: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The row's parameters, bound as SQLAlchemy would bind them. Text is clipped to
        its column's length: PostgreSQL refuses longer values, and one odd header value
        must not fail a whole batch (the stored file keeps the full value)."""
        values = {}
        for name, process, length in zip(self.columns, self.processors, self.lengths, strict=True):
            value = row[name]
            if length is not None and isinstance(value, str) and len(value) > length:
                log.info("clipping %s.%s to %d characters", self.table, name, length)
                value = value[:length]
            values[name] = value if process is None or value is None else process(value)
        return self.params(values)


class _Statements:
    """The store path's statements for one dialect, compiled once and run with
    ``exec_driver_sql``: building a Core statement, computing its cache key and looking it
    up costs more (~2 ms per transaction) than SQLite takes to run it. Values go through
    the column types' bind processors, so rows are stored as the ORM stores them. Study and
    series rows are read ``FOR UPDATE`` (PostgreSQL locks them; SQLite renders nothing, its
    write transaction being exclusive already)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.study = _Insert(_STUDY, dialect, returning=True)
        self.series = _Insert(_SERIES, dialect, returning=True)
        self.instance = _Insert(_INSTANCE, dialect, returning=False)
        self.update_series = _Compiled(
            update(_SERIES)
            .where(_SERIES.c.pk == bindparam("b_pk"))
            .values(number_of_instances=_SERIES.c.number_of_instances + bindparam("b_added")),
            dialect,
        )
        self.update_study = _Compiled(
            update(_STUDY)
            .where(_STUDY.c.pk == bindparam("b_pk"))
            .values(
                number_of_instances=_STUDY.c.number_of_instances + bindparam("b_instances"),
                number_of_series=_STUDY.c.number_of_series + bindparam("b_series"),
                modalities_in_study=bindparam("b_modalities"),
                sop_classes_in_study=bindparam("b_sop_classes"),
                updated_at=bindparam("b_updated_at", type_=_STUDY.c.updated_at.type),
            ),
            dialect,
        )
        self._updated_at = _bind_processor(_STUDY.c.updated_at.type, dialect)

    def updated_at(self, now: datetime) -> Any:
        return now if self._updated_at is None else self._updated_at(now)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one instance per store, kept for its life
    def select_instances(self, count: int) -> _Compiled:
        columns = (_INSTANCE.c.sop_instance_uid, _INSTANCE.c.sha256)
        return self._select_in(_INSTANCE, columns, columns[0], count)

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def select_studies(self, count: int) -> _Compiled:
        columns = (
            _STUDY.c.pk,
            _STUDY.c.study_instance_uid,
            _STUDY.c.modalities_in_study,
            _STUDY.c.sop_classes_in_study,
        )
        return self._select_in(_STUDY, columns, columns[1], count, lock=True)

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def select_series(self, count: int) -> _Compiled:
        columns = (_SERIES.c.pk, _SERIES.c.series_instance_uid)
        return self._select_in(_SERIES, columns, columns[1], count, lock=True)

    def _select_in(
        self, table: Table, columns: tuple[Any, ...], uid: Any, count: int, lock: bool = False
    ) -> _Compiled:
        """``columns`` of the tenant's rows whose ``uid`` is one of ``count`` values (bind
        names ``b_tenant``, ``b_0``, ``b_1``, …: see :meth:`uids`)."""
        statement = sa_select(*columns).where(
            table.c.tenant == bindparam("b_tenant"),
            uid.in_([bindparam(f"b_{i}") for i in range(count)]),
        )
        return _Compiled(statement.with_for_update() if lock else statement, self.dialect)

    @functools.lru_cache(maxsize=16)  # noqa: B019
    def instance_rows(self, columns: tuple[Any, ...], series: bool, sop: bool) -> _Compiled:
        """``columns`` of the instances of a study (or of one of its series, or one
        instance), in series then instance order (bind names ``b_tenant``, ``b_study``,
        ``b_series``, ``b_sop``)."""
        statement = (
            sa_select(*columns)
            .join(_SERIES, _SERIES.c.pk == _INSTANCE.c.series_pk)
            .join(_STUDY, _STUDY.c.pk == _INSTANCE.c.study_pk)
            .where(
                _INSTANCE.c.tenant == bindparam("b_tenant"),
                _STUDY.c.study_instance_uid == bindparam("b_study"),
            )
        )
        if series:
            statement = statement.where(_SERIES.c.series_instance_uid == bindparam("b_series"))
        if sop:
            statement = statement.where(_INSTANCE.c.sop_instance_uid == bindparam("b_sop"))
        return _Compiled(statement.order_by(*_INSTANCE_ORDER), self.dialect)

    @staticmethod
    def uids(tenant: str, uids: Sequence[str]) -> dict[str, Any]:
        return {"b_tenant": tenant, **{f"b_{i}": uid for i, uid in enumerate(uids)}}


@dataclass(slots=True)
class _Placed:
    incoming: IncomingInstance
    relpath: str
    sop: str
    study: str
    series: str
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
        self._sql = _Statements(db.writer.dialect)

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
            study, series, sop = (
                json_text(item.metadata, keyword) or ""
                for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
            )
            sop = _safe_uid(sop)
            rel = "/".join(
                (tenant, _safe_uid(study), _safe_uid(series), f"{sop}.{item.sha256[:16]}.dcm")
            )
            placed.append(_Placed(item, rel, sop, study, series))
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
        with self.db.transaction() as conn:
            sql = self._sql
            select = sql.select_instances(len(placed))
            stored: dict[str, str] = {
                str(uid): str(sha)
                for uid, sha in conn.exec_driver_sql(
                    select.sql, select.params(sql.uids(tenant, [p.sop for p in placed]))
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
                self._insert(conn, sql, tenant, new, now)
        # A file moved by an earlier attempt whose SOP Instance UID another request has
        # since stored with other content is referenced by no row: remove it.
        for p, outcome in zip(placed, outcomes, strict=True):
            if p.moved and outcome.status is StoreStatus.CONFLICT:
                (self.root / p.relpath).unlink(missing_ok=True)
                p.moved = False
        return outcomes

    def _move(self, todo: list[_Placed]) -> None:
        """fsync (in parallel) and rename the staged files into place, then fsync their
        folders (and, for folders just created, the folders holding them); a file moved
        by an earlier attempt is already there."""
        todo = [p for p in todo if not p.moved]
        if self.fsync:
            self._fsync_all([p.incoming.staged_path for p in todo])
        folders: set[Path] = set()
        for p in todo:
            target = self.root / p.relpath
            if target.parent not in folders:
                folders.add(target.parent)
                folders.update(_make_folders(target.parent))
            os.replace(p.incoming.staged_path, target)
            p.moved = True
        if self.fsync:
            self._fsync_all(list(folders))

    def _fsync_all(self, paths: list[Path]) -> None:
        """fsync in parallel; one path right here (a thread hop costs more than that)."""
        if len(paths) == 1:
            _fsync_path(paths[0])
        elif paths:
            list(self._fsync_pool.map(_fsync_path, paths))

    def _insert(
        self, conn: Connection, sql: _Statements, tenant: str, new: list[_Placed], now: datetime
    ) -> None:
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
        first_of_series: dict[str, _Placed] = {}
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
        # A statement compiled once: the ORM's per-call statement building, cache-key
        # look-up and row objects took as long again as SQLite's query (WADO-RS asks this
        # for every request).
        select = self._sql.instance_rows(columns, series_uid is not None, sop_uid is not None)
        values = {
            "b_tenant": tenant,
            "b_study": study_uid,
            "b_series": series_uid,
            "b_sop": sop_uid,
        }
        with self.db.reader.connect() as conn:
            return list(conn.exec_driver_sql(select.sql, select.params(values)).all())

    def find_instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        rows = self._instance_rows(
            tenant, study_instance_uid, series_instance_uid, sop_instance_uid, _LOCATION
        )
        root = f"{self.root}/"
        return [
            StoredInstance(
                study_instance_uid=study_instance_uid,
                series_instance_uid=series,
                sop_instance_uid=sop,
                sop_class_uid=sop_class,
                transfer_syntax_uid=syntax,
                file=root + relpath,
                size=size,
                number_of_frames=frames,
            )
            for series, sop, sop_class, syntax, relpath, size, frames in rows
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
            (_INSTANCE.c.attributes,),
        )
        return [unpack_json(attributes) for (attributes,) in rows]

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        from aifi.hub.store.qido import run_query

        return run_query(self.db, tenant, query)


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
        "attributes": pack_json(level_subset(item.metadata, STUDY_LEVEL_TAGS)),
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
        "attributes": pack_json(level_subset(item.metadata, SERIES_LEVEL_TAGS)),
        "created_at": now,
    }


def _instance_row(
    tenant: str, study_pk: int, series_pk: int, p: _Placed, now: datetime
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
        "attributes": pack_json(item.metadata),
        "created_at": now,
    }
