"""The one path from "bytes received" (a C-STORE data set, a STOW-RS part) to "on disk and
committed": after :meth:`Ingest.receive_dataset` or :meth:`Ingest.receive_file` returns
:attr:`IngestStatus.STORED`, the instance survives a kill -9 and a power cut, and only then
may the caller acknowledge it (C-STORE status 0000, PS3.4 B.2.3; STOW-RS 200, PS3.18 §10.5).

Per instance:

1. the header is read from the received bytes, never decoded — only the UIDs that are
   indexed. A C-STORE data set is walked by :func:`~aifi.gateway.ingest.part10.scan_header`
   (tags and lengths, about 30 µs for a CT image); whatever it cannot vouch for, and every
   STOW-RS part, is read by pydicom (:func:`~aifi.gateway.ingest.part10.read_header`, Pixel Data
   and other long values skipped), which refuses a data set that cannot be parsed, or
   that ends before its last element does (0xC210), and one without its identifying UIDs
   (0xA900);
2. the bytes are written as they came (the File Meta Information prepended to a C-STORE
   data set) to a temporary file in the final folder and fsync'd (:mod:`aifi.gateway.ingest.store`);
   meanwhile another thread computes the data set's SHA-256 (hashlib lets go of the
   interpreter lock), which the file's name carries;
3. in one transaction on the SQLite connection itself
   (:func:`~aifi.gateway.ingest.index.write_transaction`): a row with this SOP Instance UID is
   looked for; if none, the file is renamed into place and its folder fsync'd, then the
   ``gw_instance`` row is inserted and the ``gw_study`` row created or touched (first/last
   received, completion back to OPEN); the transaction commits;
4. the forwarder's doorbell rings.

Durability, and what it costs. The file is durable before the acknowledgement (two
fsyncs: the file, then its folder after the rename). The row's commit is not fsync'd by
itself: the ingest writes through its own connection with SQLite ``synchronous=NORMAL``
(WAL), which survives any crash of the process (kill -9) and loses, on a power cut or an OS
crash, at most the newest commits — a suffix, never a middle, since the WAL is replayed in
order. What such a loss can take is recovered from the disk: at start-up every stored file
without a row is read and indexed again (:meth:`Ingest.recover`); a file under its final
name is always complete (only fsync'd files are renamed to it). The other writers of the
gateway's database (forwarding, results) keep ``synchronous=FULL``. This saves the third
fsync per instance (the WAL's), about a third of the C-STORE path's time on this class of
disk.

Re-sent instances (PS3.4 B.4.1 leaves the policy to the SCP). The identity of an instance's
content is the SHA-256 of its *data set* (the bytes after the File Meta Information, which
differ between C-STORE and STOW-RS and between senders):

* the same SOP Instance UID with the same data set: success, nothing written, no second
  row, not forwarded again;
* the same SOP Instance UID with a *different* data set: refused with 0x0111 (Duplicate
  SOP Instance, PS3.7 C.5; STOW-RS Failure Reason 0111), the stored instance kept. The
  hub keeps the first version of an instance as well (its STOW-RS refuses a conflicting
  re-send), so a second version could never replace the first there: refusing at the door
  tells the sender at once instead of failing later, out of sight. A modality that must
  correct an instance gives it a new SOP Instance UID (PS3.3 C.12.1.1.1). The same
  instance re-sent in another transfer syntax has other data set bytes and is refused
  the same way.

Completion (the hub's study-complete signal, sent by the forwarder): the studies an
association brought become DUE when it is released or aborted
(:meth:`Ingest.association_ended`); studies received over STOW-RS stay OPEN and the
forwarder treats them as complete ``quiet_seconds`` after ``last_received_at``. A new
instance of a study makes it OPEN again (whatever its state), so that the hub hears of it
once more. At start-up, OPEN studies that came over an association the restart cut short
become DUE (:meth:`Ingest.recover`).
"""

from __future__ import annotations

import enum
import errno
import io
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import (
    and_,
    exists,
    select,
    update,
)

from aifi.clock import Clock, utc_now
from aifi.gateway.ingest.index import INSTANCE, STUDY, IngestStatements, write_transaction
from aifi.gateway.ingest.part10 import (
    DATA_SET_MISMATCH,
    DUPLICATE_SOP_INSTANCE,
    HASH_CHUNK,
    OUT_OF_RESOURCES,
    PREAMBLE,
    PROCESSING_FAILURE,
    SUCCESS,
    InstanceHeader,
    Unreadable,
    dataset_offset,
    file_digest,
    read_header,
    scan_header,
    start_digest,
)
from aifi.gateway.ingest.store import InstanceStore
from aifi.gateway.persistence.tables import CompletionState, InstanceState
from aifi.hub.persistence.database import Database

log = logging.getLogger(__name__)


class IngestStatus(enum.Enum):
    STORED = "stored"
    """On disk and committed (new)."""
    ALREADY_STORED = "already-stored"
    """The same data set was stored before: success, nothing changed."""
    CONFLICT = "conflict"
    """Another data set with this SOP Instance UID is stored: refused (0x0111)."""
    REFUSED = "refused"
    """Not stored: ``failure`` and ``reason`` say why."""

    @property
    def acknowledged(self) -> bool:
        return self in (IngestStatus.STORED, IngestStatus.ALREADY_STORED)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an instance came from."""

    source: str
    """``dimse:CALLING_AE@address`` or ``stow:address``."""
    association: str | None = None
    """The DIMSE association (its end makes the study's completion due); ``None`` for
    STOW-RS."""


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    status: IngestStatus
    failure: int = SUCCESS
    """The C-STORE status / STOW-RS Failure Reason (0 when acknowledged)."""
    reason: str = ""
    header: InstanceHeader | None = None


RECOVERED = Origin(source="recovered", association="recovered")
"""The origin of an instance indexed again at start-up (:meth:`Ingest.recover`): its
association, whatever it was, ended with the restart."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`Ingest.recover` did at start-up."""

    reindexed: int
    """Stored files whose row was lost, indexed again."""
    removed: int
    """Temporary, staging, unreadable or superseded files removed."""
    due: int
    """Studies made DUE (their association ended with the restart)."""


# -- ingest -----------------------------------------------------------------------------------


class Bell(Protocol):
    """What the ingest rings after a commit: the forwarder's
    :class:`~aifi.dicomweb.worklist.Doorbell` in this process, or
    :class:`~aifi.gateway.worker_process.SocketBell` when the workers run in a child."""

    def ring(self) -> None: ...


class Ingest:
    """Stores received instances durably and indexes them (see the module docstring).

    Thread-safe: the DIMSE SCP calls it from one thread per association, STOW-RS from
    worker threads; SQLite serialises the commits (``BEGIN IMMEDIATE``). ``db`` is the
    gateway's SQLite database (:func:`~aifi.gateway.ingest.index.ingest_database`)."""

    def __init__(
        self, db: Database, store: InstanceStore, doorbell: Bell, *, clock: Clock = utc_now
    ) -> None:
        if not db.is_sqlite:
            raise ValueError("the ingest writes an SQLite database (see ingest_database)")
        self.db = db
        self.store = store
        self.doorbell = doorbell
        """Rung after each commit of a new instance, and when studies become DUE (the
        forwarder listens)."""
        self.clock = clock
        self._lock = threading.Lock()
        self._association_studies: dict[str, set[str]] = {}
        self._sql = IngestStatements(db.writer.dialect)

    # -- entry points -------------------------------------------------------------------

    def receive_dataset(
        self,
        file_meta: bytes,
        dataset: bytes | memoryview,
        origin: Origin,
        *,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        transfer_syntax_uid: str | None = None,
    ) -> IngestOutcome:
        """A C-STORE data set as received (``dataset``, in the negotiated transfer syntax,
        ``transfer_syntax_uid`` when the caller knows it) with its encoded File Meta
        Information group (``file_meta``, without preamble). ``sop_class_uid``/
        ``sop_instance_uid``: the request's Affected SOP Class/Instance UID, which the data
        set must match. ``dataset`` is only read during the call (a view of the
        association's buffer will do)."""
        size = len(PREAMBLE) + len(file_meta) + len(dataset)
        try:
            header = None
            if transfer_syntax_uid is not None:  # the fast path (see scan_header)
                header = scan_header(dataset, transfer_syntax_uid)
            if header is None:
                part10 = b"".join((PREAMBLE, file_meta, dataset))
                header = read_header(io.BytesIO(part10), size)
            for expected, found, keyword in (
                (sop_class_uid, header.sop_class_uid, "SOP Class UID"),
                (sop_instance_uid, header.sop_instance_uid, "SOP Instance UID"),
            ):
                if expected is not None and expected.strip("\x00 ") != found:
                    raise Unreadable(
                        DATA_SET_MISMATCH,
                        f"the data set's {keyword} {found} is not the request's {expected}",
                    )
        except Unreadable as exc:
            return self._refused(exc, origin)
        digest = start_digest(dataset)
        try:
            return self._commit(
                header,
                digest,
                size,
                origin,
                lambda: self.store.write_temp(
                    header.study_instance_uid,
                    header.sop_instance_uid,
                    (PREAMBLE, file_meta, dataset),
                ),
            )
        finally:
            digest()  # the hashing thread is done with ``dataset`` before the caller is

    def receive_file(self, path: Path, origin: Origin) -> IngestOutcome:
        """A complete Part 10 file (a STOW-RS part staged in
        :meth:`InstanceStore.staging_dir`); the file is consumed (moved into the store or
        removed)."""
        try:
            try:
                size = path.stat().st_size
                with open(path, "rb") as fp:
                    header = read_header(fp, size)
                    fp.seek(0)
                    offset = dataset_offset(fp.read(min(size, HASH_CHUNK)))
                    digest = file_digest(fp, offset)
            except Unreadable as exc:
                return self._refused(exc, origin)
            return self._commit(
                header,
                lambda: digest,
                size,
                origin,
                lambda: self.store.adopt(path, header.study_instance_uid, header.sop_instance_uid),
            )
        finally:
            path.unlink(missing_ok=True)

    def association_ended(self, association: str) -> int:
        """The association was released or aborted: the studies it brought that are still
        OPEN become DUE (the forwarder sends their completion signal once forwarded).
        Returns how many studies became DUE."""
        with self._lock:
            studies = self._association_studies.pop(association, set())
        if not studies:
            return 0
        with self.db.transaction() as conn:
            changed = conn.execute(
                update(STUDY)
                .where(
                    STUDY.c.study_instance_uid.in_(sorted(studies)),
                    STUDY.c.completion == CompletionState.OPEN.value,
                )
                .values(completion=CompletionState.DUE.value, next_attempt_at=self.clock())
            ).rowcount
        self.doorbell.ring()
        return int(changed or 0)

    def recover(self) -> Recovery:
        """At start-up, before anything is received: remove temporary and staging files
        (never acknowledged); index again every stored file without a row (a commit lost
        with the power, see the module docstring; a file whose SOP Instance UID has a row
        already is a leftover of a purge or a conflict and goes); make OPEN studies brought
        by an association (which the restart ended) DUE."""
        removed = self.store.sweep_temporary()
        indexed = set(self.indexed_files())
        reindexed = 0
        for relpath in self.store.stored_files():
            if relpath not in indexed:
                if self._reindex(relpath):
                    reindexed += 1
                else:
                    removed += 1
        with self.db.transaction() as conn:
            from_dimse = exists().where(
                and_(
                    INSTANCE.c.study_instance_uid == STUDY.c.study_instance_uid,
                    INSTANCE.c.association.is_not(None),
                )
            )
            due = conn.execute(
                update(STUDY)
                .where(STUDY.c.completion == CompletionState.OPEN.value, from_dimse)
                .values(completion=CompletionState.DUE.value, next_attempt_at=self.clock())
            ).rowcount
        if reindexed:
            log.warning("indexed again %d stored instances whose rows were lost", reindexed)
        return Recovery(reindexed=reindexed, removed=removed, due=int(due or 0))

    def _reindex(self, relpath: str) -> bool:
        path = self.store.path(relpath)
        try:
            size = path.stat().st_size
            with open(path, "rb") as fp:
                header = read_header(fp, size)
                fp.seek(0)
                digest = file_digest(fp, dataset_offset(fp.read(min(size, HASH_CHUNK))))
            expected = self.store.relpath(
                header.study_instance_uid, header.sop_instance_uid, digest
            )
        except (Unreadable, OSError, ValueError) as exc:
            log.warning("removing an unreadable stored file %s: %s", relpath, exc)
            self.store.remove(relpath)
            return False
        with write_transaction(self.db) as conn:
            known = self._sql.find.run(conn, {"sop": header.sop_instance_uid}).fetchone()
            if known is None and expected == relpath:
                self._insert(conn, header, digest, size, relpath, RECOVERED)
                return True
        self.store.remove(relpath)
        return False

    def indexed_files(self) -> list[str]:
        """The files the index references."""
        with self.db.reader.connect() as conn:
            return [
                str(f)
                for (f,) in conn.execute(
                    select(INSTANCE.c.file).where(INSTANCE.c.file.is_not(None))
                )
            ]

    # -- the commit ---------------------------------------------------------------------

    def _refused(self, exc: Unreadable, origin: Origin) -> IngestOutcome:
        log.warning(
            "refused an instance from %s: %s [%04X]", origin.source, exc.reason, exc.failure
        )
        return IngestOutcome(IngestStatus.REFUSED, exc.failure, exc.reason)

    def _commit(
        self,
        header: InstanceHeader,
        digest_of: Callable[[], str],
        size: int,
        origin: Origin,
        place: Callable[[], Path],
    ) -> IngestOutcome:
        """Put the instance in its folder as an fsync'd temporary file (``place``), then
        in one transaction: look for its SOP Instance UID, rename the file to its name
        (which carries the data set's digest, ``digest_of``) and insert its row."""
        try:
            temp = place()
        except ValueError as exc:  # a UID that cannot be a path segment
            return self._refused(Unreadable(DATA_SET_MISMATCH, str(exc)), origin)
        except OSError as exc:
            return self._failed(exc, header)
        digest = digest_of()
        relpath = self.store.relpath(header.study_instance_uid, header.sop_instance_uid, digest)
        published = False
        try:
            with write_transaction(self.db) as conn:
                known = self._sql.find.run(conn, {"sop": header.sop_instance_uid}).fetchone()
                if known is not None:
                    if known[0] == digest:
                        status = IngestStatus.ALREADY_STORED
                    else:
                        status = IngestStatus.CONFLICT
                else:
                    self.store.publish(temp, relpath)
                    published = True
                    self._insert(conn, header, digest, size, relpath, origin)
                    status = IngestStatus.STORED
        except Exception as exc:
            if published:  # never acknowledged: no row may point at nothing, no file at no row
                self.store.remove(relpath)
            else:
                temp.unlink(missing_ok=True)
            return self._failed(exc, header)
        if not published:
            temp.unlink(missing_ok=True)
        if status is IngestStatus.CONFLICT:
            log.warning(
                "refused a different instance with a stored SOP Instance UID from %s",
                origin.source,
            )
            return IngestOutcome(
                status,
                DUPLICATE_SOP_INSTANCE,
                "a different instance with this SOP Instance UID was received before; it was "
                "kept and this one refused",
                header,
            )
        if origin.association is not None:
            with self._lock:
                self._association_studies.setdefault(origin.association, set()).add(
                    header.study_instance_uid
                )
        if status is IngestStatus.STORED:
            self.doorbell.ring()
        return IngestOutcome(status, SUCCESS, "", header)

    def _insert(
        self,
        conn: sqlite3.Connection,
        header: InstanceHeader,
        digest: str,
        size: int,
        relpath: str,
        origin: Origin,
    ) -> None:
        now = self.clock()
        self._sql.insert_instance.run(
            conn,
            {
                "sop_instance_uid": header.sop_instance_uid,
                "sop_class_uid": header.sop_class_uid,
                "study_instance_uid": header.study_instance_uid,
                "series_instance_uid": header.series_instance_uid,
                "transfer_syntax_uid": header.transfer_syntax_uid,
                "source": origin.source[:200],
                "association": origin.association,
                "file": relpath,
                "size": size,
                "sha256": digest,
                "state": InstanceState.RECEIVED.value,
                "attempts": 0,
                "next_attempt_at": now,
                "received_at": now,
            },
        )
        study = {
            "study": header.study_instance_uid,
            "now": now,
            "completion": CompletionState.OPEN.value,
            "attempts": 0,
        }
        if not self._sql.touch_study.run(conn, study).rowcount:
            self._sql.insert_study.run(conn, study)

    def _failed(self, exc: BaseException, header: InstanceHeader) -> IngestOutcome:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return IngestOutcome(IngestStatus.REFUSED, OUT_OF_RESOURCES, "out of storage space")
        log.error("storing a received instance failed", exc_info=exc)
        log.debug("the instance that failed is %s", header.sop_instance_uid)
        return IngestOutcome(
            IngestStatus.REFUSED, PROCESSING_FAILURE, "the instance could not be stored"
        )
