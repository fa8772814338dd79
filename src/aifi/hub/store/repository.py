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

The parts: the folder and its staging area (:mod:`aifi.hub.store.files`), the statements
compiled once per dialect (:mod:`aifi.hub.store.statements`), the index rows of a batch
(:mod:`aifi.hub.store.index`) and QIDO-RS over the index (:mod:`aifi.hub.store.qido`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlmodel import col, select

from aifi import dicom_json
from aifi.clock import utc_now
from aifi.dicom_json import DicomJson
from aifi.dicomweb.qido_query import QidoQuery, QueryResult
from aifi.dicomweb.store import (
    IncomingInstance,
    StoredInstance,
    StoreOutcome,
    StoreStatus,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import Instance, Tenant
from aifi.hub.store.files import FileArea, Placed
from aifi.hub.store.index import insert_new
from aifi.hub.store.qido import run_query
from aifi.hub.store.statements import INSTANCE, SERIES, Statements

log = logging.getLogger(__name__)

_ATTEMPTS = 3
_LOCATION = (
    SERIES.c.series_instance_uid,
    INSTANCE.c.sop_instance_uid,
    INSTANCE.c.sop_class_uid,
    INSTANCE.c.transfer_syntax_uid,
    INSTANCE.c.path,
    INSTANCE.c.size,
    INSTANCE.c.number_of_frames,
)
"""What :meth:`SqlDicomStore.find_instances` reads of each instance."""


class SqlDicomStore:
    """DICOM files under ``root`` (one folder per tenant), index rows in ``db``."""

    def __init__(self, db: Database, root: Path, *, fsync: bool = True) -> None:
        self.db = db
        self.root = root
        self.fsync = fsync
        self.files = FileArea(root, fsync=fsync)
        self._sql = Statements(db.writer.dialect)

    def close(self) -> None:
        self.files.close()

    # -- start-up ---------------------------------------------------------------------

    def sweep_staging(self) -> int:
        """Remove staging files a crash or an aborted upload left behind (of processes no
        longer alive). Returns the number of files removed."""
        return self.files.sweep_staging()

    def ensure_tenant(self, tenant: str, name: str = "") -> None:
        with self.db.write() as session:
            if session.get(Tenant, tenant) is None:
                session.add(Tenant(id=tenant, name=name or tenant))

    # -- DicomStore -------------------------------------------------------------------

    def staging_dir(self) -> Path:
        return self.files.staging

    def put(self, tenant: str, instances: Sequence[IncomingInstance]) -> list[StoreOutcome]:
        placed = [Placed.of(tenant, item) for item in instances]
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

    def _store(self, tenant: str, placed: list[Placed]) -> list[StoreOutcome]:
        """One transaction: which instances are new, their files into place, their rows."""
        now = utc_now()
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
            new: list[Placed] = []
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
                self.files.move(new)  # durable on disk before the rows can commit
                insert_new(conn, sql, tenant, new, now)
        # A file moved by an earlier attempt whose SOP Instance UID another request has
        # since stored with other content is referenced by no row: remove it.
        for p, outcome in zip(placed, outcomes, strict=True):
            if p.moved and outcome.status is StoreStatus.CONFLICT:
                self.files.remove(p)
        return outcomes

    def _discard_unindexed(self, tenant: str, placed: list[Placed]) -> None:
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
                self.files.remove(p)

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
            (INSTANCE.c.attributes,),
        )
        return [dicom_json.unpack(attributes) for (attributes,) in rows]

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        return run_query(self.db, tenant, query)
