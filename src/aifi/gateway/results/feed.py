"""The way back from the hub (issue 15 points 6 and 7): poll the hub's released-results feed,
fetch each result with WADO-RS, re-identify it, write it under ``results/`` and queue its
PACS deliveries.

**Polling, not being called.** The hub never connects into the hospital: the gateway asks
``GET {hub}/api/v1/results?released_after=CURSOR&limit=N`` (oldest release first; each item
with an opaque ``cursor``, the page with ``next_cursor``). Results of studies this gateway
does not know (no ``gw_study_map`` row: another hospital's gateway, a direct upload) are
skipped. The new ones become ``gw_result`` rows in the *same* transaction that moves the
cursor (``gw_result_feed``), so a restart continues where it was and nothing is lost
between the two; a result already known is not added twice (unique workitem UID).

**Working a result off** (:meth:`ResultsWorker.tick`, each due ``pending`` row):

* positive, negative, measured — the detail ``GET {hub}/api/v1/results/{workitem}``, then
  every instance with WADO-RS (PS3.18 §10.4, ``Accept: multipart/related;
  type="application/dicom"; transfer-syntax=*`` so it comes as stored), re-identified
  (:mod:`aifi.gateway.results.reidentify`). A result without instances is answered as a
  failure ("no result objects"): every request ends with something visible.
* failed, cancelled — the gateway's own "AI analysis not performed" Basic Text SR
  (:func:`aifi.ihe_profiles.air.not_performed.not_performed_report`) in the original study,
  from the pseudonym map's identity; its UIDs come from the workitem UID, so a re-run
  makes the same instance.

The files are written atomically (temp file, fsync, rename, fsync of the folder) before
the transaction that records them and queues one delivery per PACS destination
(:class:`aifi.gateway.results.delivery.PacsDeliverer`); a crash between the two rewrites
the same files. Outcomes: ``stored``; ``refused`` when it cannot be re-identified
(NotReidentifiable: the reason is kept and shown by the status, nothing is delivered);
``failed`` when the hub refuses for good (4xx); a hub that cannot be reached or answers
5xx/408/429 leaves the row ``pending`` with exponential backoff
(:func:`aifi.hub.persistence.outbox.retry_delay`) — never lost, never given up.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import timedelta
from pathlib import Path

import httpx
from sqlmodel import col, select

from aifi.clock import Clock, as_utc, parse_utc, utc_now
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import UpstreamError
from aifi.gateway.deid.types import NotReidentifiable, PseudonymLookup, StudyIdentity
from aifi.gateway.persistence.result_tables import (
    GatewayResult,
    ResultFeed,
    ResultFile,
    ResultState,
)
from aifi.gateway.results.delivery import PacsDeliverer
from aifi.gateway.results.hub_api import HubRefused, HubResults, ResultsPage
from aifi.gateway.results.reidentify import (
    FileReidentifier,
    ReidentifiedInstance,
    not_performed_instance,
    reidentify_instance,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import retry_delay

log = logging.getLogger(__name__)

RESULT_OUTCOMES = frozenset({"positive", "negative", "measured"})
NOT_PERFORMED_OUTCOMES = frozenset({"failed", "cancelled"})
NO_RESULT_OBJECTS = "no result objects"
RESULTS_DIR = "results"
_ERROR_CHARS = 4000


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path``, all or nothing: temp file, fsync, rename, fsync of the folder
    (a crash leaves either the old file or the new one, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class ResultsWorker:
    """Polls the hub's feed and turns released results into files for the PACS (module
    docstring); an :class:`aifi.hub.persistence.outbox.OutboxWorker`."""

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        reidentifier: FileReidentifier,
        lookup: PseudonymLookup,
        hub: httpx.Client,
        *,
        clock: Clock = utc_now,
        doorbell: Doorbell,
        deliverer: PacsDeliverer,
        batch_size: int = 16,
        page_size: int = 100,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 300.0,
        feed_name: str = "hub",
    ) -> None:
        if batch_size < 1 or page_size < 1:
            raise ValueError("batch_size and page_size must be at least 1")
        if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds:
            raise ValueError("backoff durations must be positive (max >= first)")
        self.db = db
        self.data_dir = data_dir
        self.reidentifier = reidentifier
        self.lookup = lookup
        self.hub = HubResults(hub)
        self.clock = clock
        self.doorbell = doorbell
        """Rung to poll at once (e.g. after a hub event); the loop also polls every round."""
        self.deliverer = deliverer
        self.batch_size = batch_size
        self.page_size = page_size
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.feed_name = feed_name

    def tick(self) -> int:
        """One round: poll the feed, then work off the due results. Returns the rows added
        plus the rows worked on."""
        return self.poll() + self.work()

    # -- polling ------------------------------------------------------------------------

    def poll(self) -> int:
        """Read the feed from the kept cursor to its end (page by page, each page's new
        rows and the cursor committed together). Returns the results added."""
        now = self.clock()
        with self.db.write() as session:
            feed = session.get(ResultFeed, self.feed_name)
            if feed is None:
                feed = ResultFeed(name=self.feed_name, next_poll_at=now)
                session.add(feed)
            if as_utc(feed.next_poll_at) > now:
                return 0
            cursor = feed.cursor
        added = 0
        while True:
            try:
                page = self.hub.page(cursor, self.page_size)
            except UpstreamError as exc:
                self._poll_failed(exc.reason)
                return added
            added += self._record(page)
            cursor = page.next_cursor
            if len(page.results) < self.page_size:
                return added

    def _record(self, page: ResultsPage) -> int:
        known: dict[str, StudyIdentity] = {}
        for item in page.results:
            pseudo = str(item.get("study_instance_uid") or "")
            if pseudo and pseudo not in known:
                study = self.lookup.study(pseudo)
                if study is not None:
                    known[pseudo] = study
        now = self.clock()
        added = 0
        with self.db.write() as session:
            for item in page.results:
                uid = str(item.get("workitem_uid") or "")
                study = known.get(str(item.get("study_instance_uid") or ""))
                if not uid or study is None:
                    continue  # not a study of this gateway (another hospital, a direct upload)
                exists = session.exec(
                    select(GatewayResult.pk).where(col(GatewayResult.workitem_uid) == uid)
                ).first()
                if exists is not None:
                    continue
                session.add(
                    GatewayResult(
                        workitem_uid=uid,
                        pseudo_study_uid=study.pseudo_study_uid,
                        study_instance_uid=study.original_study_uid,
                        product=str(item.get("product") or "")[:64],
                        outcome=str(item.get("outcome") or "")[:16],
                        hub_reason=item.get("reason") or None,
                        released_at=parse_utc(item.get("released_at")),
                        next_attempt_at=now,
                        received_at=now,
                    )
                )
                added += 1
            feed = session.get(ResultFeed, self.feed_name)
            if feed is None:
                feed = ResultFeed(name=self.feed_name)
                session.add(feed)
            feed.cursor = page.next_cursor
            feed.attempts = 0
            feed.last_error = None
            feed.polled_at = now
            feed.next_poll_at = now
        if added:
            log.info("results feed: %d new result(s) for this gateway", added)
        return added

    def _poll_failed(self, reason: str) -> None:
        now = self.clock()
        with self.db.write() as session:
            feed = session.get(ResultFeed, self.feed_name)
            if feed is None:
                return
            feed.attempts += 1
            delay = retry_delay(feed.attempts, self.backoff_seconds, self.max_backoff_seconds)
            feed.next_poll_at = now + timedelta(seconds=delay)
            feed.last_error = f"poll {feed.attempts}: {reason}"[:_ERROR_CHARS]
        log.warning("results feed: %s; next poll in %.0f s", reason, delay)

    # -- working results off ------------------------------------------------------------

    def work(self) -> int:
        """Fetch, re-identify, write and queue the due ``pending`` results."""
        now = self.clock()
        with self.db.read() as session:
            rows = list(
                session.exec(
                    select(GatewayResult)
                    .where(
                        col(GatewayResult.state) == ResultState.PENDING,
                        col(GatewayResult.next_attempt_at) <= now,
                    )
                    .order_by(col(GatewayResult.next_attempt_at), col(GatewayResult.pk))
                    .limit(self.batch_size)
                ).all()
            )
        for row in rows:
            self._process(row)
        return len(rows)

    def _process(self, row: GatewayResult) -> None:
        assert row.pk is not None
        try:
            study = self.lookup.study(row.pseudo_study_uid)
            if study is None:
                raise NotReidentifiable(
                    f"study {row.pseudo_study_uid} is no longer in the pseudonym map"
                )
            if row.outcome in RESULT_OUTCOMES:
                made = self._fetch(row, study)
            elif row.outcome in NOT_PERFORMED_OUTCOMES:
                made = [self._not_performed(row, study, row.hub_reason or row.outcome)]
            else:
                raise HubRefused(f"unknown outcome {row.outcome!r}")
            files = [self._write(row, instance) for instance in made]
        except NotReidentifiable as exc:
            self._finish(row.pk, ResultState.REFUSED, exc.reason)
        except HubRefused as exc:
            self._finish(row.pk, ResultState.FAILED, exc.reason)
        except UpstreamError as exc:
            self._retry(row.pk, exc.reason)
        except Exception as exc:  # a bug or a full disk: recorded, retried later
            log.exception("result of workitem %s", row.workitem_uid)
            self._retry(row.pk, f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._stored(row.pk, files)

    def _fetch(self, row: GatewayResult, study: StudyIdentity) -> list[ReidentifiedInstance]:
        detail = self.hub.detail(row.workitem_uid)
        instances = [i for i in detail.get("instances") or [] if isinstance(i, dict)]
        if not instances:
            return [self._not_performed(row, study, NO_RESULT_OBJECTS)]
        made = []
        for item in instances:
            data = self.hub.instance(
                row.pseudo_study_uid,
                str(item.get("series_instance_uid") or ""),
                str(item.get("sop_instance_uid") or ""),
            )
            made.append(reidentify_instance(data, self.reidentifier, self.lookup, study))
        return made

    def _not_performed(
        self, row: GatewayResult, study: StudyIdentity, reason: str
    ) -> ReidentifiedInstance:
        """The "AI analysis not performed" report in the original study (point 7)."""
        return not_performed_instance(
            study,
            self.lookup,
            product=row.product or "AI product",
            reason=reason,
            workitem_uid=row.workitem_uid,
            when=as_utc(row.released_at or row.received_at),
        )

    def _write(self, row: GatewayResult, instance: ReidentifiedInstance) -> ResultFile:
        relative = Path(RESULTS_DIR) / row.workitem_uid / f"{instance.sop_instance_uid}.dcm"
        write_atomically(self.data_dir / relative, instance.data)
        return ResultFile(
            result_pk=row.pk or 0,
            sop_instance_uid=instance.sop_instance_uid,
            sop_class_uid=instance.sop_class_uid,
            study_instance_uid=instance.study_instance_uid,
            series_instance_uid=instance.series_instance_uid,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            pseudo_sop_instance_uid=instance.pseudo_sop_instance_uid,
            file=relative.as_posix(),
            size=len(instance.data),
            sha256=hashlib.sha256(instance.data).hexdigest(),
        )

    def _stored(self, pk: int, files: list[ResultFile]) -> None:
        now = self.clock()
        with self.db.write() as session:
            row = session.get(GatewayResult, pk)
            if row is None or row.state != ResultState.PENDING:
                return
            have = set(
                session.exec(
                    select(ResultFile.sop_instance_uid).where(col(ResultFile.result_pk) == pk)
                ).all()
            )
            for item in files:
                if item.sop_instance_uid not in have:
                    item.created_at = now
                    session.add(item)
            row.state = ResultState.STORED
            row.stored_at = now
            row.last_error = None
            session.flush()
            queued = self.deliverer.enqueue(session, pk)
        log.info(
            "result of workitem %s: %d file(s) stored, %d PACS deliver(ies) queued",
            row.workitem_uid,
            len(files),
            len(queued),
        )

    def _finish(self, pk: int, state: ResultState, reason: str) -> None:
        with self.db.write() as session:
            row = session.get(GatewayResult, pk)
            if row is None or row.state != ResultState.PENDING:
                return
            row.state = state
            row.reason = reason[:_ERROR_CHARS]
            row.attempts += 1
        log.warning("result of workitem %s %s: %s", row.workitem_uid, state.value, reason)

    def _retry(self, pk: int, reason: str) -> None:
        now = self.clock()
        with self.db.write() as session:
            row = session.get(GatewayResult, pk)
            if row is None or row.state != ResultState.PENDING:
                return
            row.attempts += 1
            delay = retry_delay(row.attempts, self.backoff_seconds, self.max_backoff_seconds)
            row.next_attempt_at = now + timedelta(seconds=delay)
            row.last_error = (
                f"attempt {row.attempts}: {reason}; retry at "
                f"{row.next_attempt_at.isoformat(timespec='seconds')}"
            )[:_ERROR_CHARS]
        log.warning("result of workitem %s: %s", row.workitem_uid, row.last_error)
