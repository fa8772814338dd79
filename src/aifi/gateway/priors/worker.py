"""The priors worker: answers the hub's prior requests from the hospital's PACS (issue 17).

A comparison product's workitem waits at the hub (Input Readiness State INCOMPLETE) until
the gateway says which earlier studies of the patient it may compare with. The hub never
calls into the hospital, so :meth:`PriorsWorker.tick` (run by
:func:`aifi.hub.persistence.outbox.run_outbox_loop` every ``poll_seconds``):

1. **polls** ``GET {hub}/api/v1/prior-requests`` and records each new request
   (``gw_prior_request``, :class:`~aifi.gateway.priors.tables.PriorWork`);
2. for each ``NEW`` request: the pseudonymous study -> the original study and patient
   through the pseudonym map (``gw_study_map``, ``gw_patient``; the study's identity holds
   its Study Date); **queries the PACS** (:func:`aifi.gateway.pacs_query.find_priors`:
   QIDO-RS or C-FIND; same modality / body part when asked, within ``within_days`` before
   the current study, the current study excluded, newest first, ``count``);
   **registers** the priors at the hub under their pseudonyms (``Keyed.uid`` of the
   originals, which the forwarder will give them) before anything is forwarded;
   **retrieves** them (WADO-RS, C-MOVE to the gateway's own SCP, or C-GET) into the
   gateway's ingest — from there the normal forwarder pseudonymises them with the same key
   (same patient pseudonym, same date offset: the interval between the studies is kept)
   and sends them to the hub -> ``FORWARDING``;
3. ``FORWARDING``: once no instance of the priors waits to be forwarded (``gw_instance``
   states), the priors of which the hub holds at least one instance are ``found``; none ->
   ``failed`` with the reason (quarantined, refused by the hub). The tick waits for this
   itself for a short while (``forward_wait_seconds``) so that an answer follows the
   forwarding at once, instead of a poll later;
4. ``ANSWERING``: ``POST …/answer``; 204 -> ``ANSWERED``; 409/404 -> ``EXPIRED`` (the
   workitem went ahead without priors at its deadline); a hub that cannot be reached ->
   sent again after a back-off.

Outcomes: no matching study -> ``none``; a PACS that refuses (e.g. ``PACS refused C-MOVE:
status 0xA801 (Move destination unknown)``, QIDO-RS 4xx) -> ``failed`` with that reason at
once; a PACS that cannot be reached -> retried ``max_attempts`` times with back-off, then
``failed``. A reason told to the hub names no patient and no original UID (the PACS's own
words, e.g. an Error Comment, stay in ``last_error`` here).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from aifi import dicom_json
from aifi.clock import Clock, as_utc, parse_utc, utc_now
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import (
    Conflict,
    NotFound,
    PacsQueryError,
    PacsRefused,
    Unprocessable,
    UpstreamError,
)
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.deid.types import PseudonymLookup
from aifi.gateway.pacs_query import PacsQueryRetrieve, PriorQuery, find_priors, parse_da
from aifi.gateway.persistence.tables import InstanceState, ReceivedInstance
from aifi.gateway.priors.hub_api import HubPriors
from aifi.gateway.priors.tables import PriorOutcome, PriorState, PriorWork
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import retry_delay

log = logging.getLogger(__name__)

_STUDY_DATE = "00080020"
WAITING = (InstanceState.RECEIVED.value, InstanceState.FORWARDING.value)


class PriorsWorker:
    """Works the hub's prior requests (module docstring): an
    :class:`aifi.hub.persistence.outbox.OutboxWorker`."""

    def __init__(
        self,
        db: Database,
        hub: HubPriors,
        pacs: Callable[[], PacsQueryRetrieve],
        lookup: PseudonymLookup,
        key: bytes,
        *,
        clock: Clock = utc_now,
        doorbell: Doorbell | None = None,
        batch_size: int = 50,
        max_attempts: int = 3,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 60.0,
        forward_timeout_seconds: float = 600.0,
        forward_wait_seconds: float = 30.0,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.hub = hub
        self.pacs = pacs
        """Opens a client of the PACS for one request (closed after it)."""
        self.lookup = lookup
        self.keyed = Keyed(key)
        self.clock = clock
        self.doorbell = doorbell or Doorbell()
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.forward_timeout_seconds = forward_timeout_seconds
        self.forward_wait_seconds = forward_wait_seconds
        self._release = release
        """Releases what was built for this worker alone (the ingest's database)."""
        self._hub_unreachable_logged = False

    def close(self) -> None:
        """Once its loop has ended."""
        if self._release is not None:
            self._release()

    # -- the round ------------------------------------------------------------------------

    def tick(self) -> int:
        """Poll the hub, then work every due request; returns how many were worked."""
        self._poll()
        worked = 0
        for request_id in self._due():
            self._work(request_id)
            worked += 1
        return worked

    def _poll(self) -> None:
        try:
            items = self.hub.open_requests(limit=self.batch_size)
        except UpstreamError as exc:  # HubRefused included: the hub may not offer priors
            if not self._hub_unreachable_logged:
                log.warning("prior requests: %s", exc.reason)
                self._hub_unreachable_logged = True
            return
        self._hub_unreachable_logged = False
        if not items:
            return
        with self.db.write() as session:
            known = set(
                session.exec(
                    select(PriorWork.request_id).where(
                        col(PriorWork.request_id).in_([str(i["id"]) for i in items])
                    )
                ).all()
            )
            now = self.clock()
            for item in items:
                if item["id"] in known:
                    continue
                session.add(
                    PriorWork(
                        request_id=str(item["id"]),
                        pseudo_study_uid=str(item.get("study_instance_uid", "")),
                        product=str(item.get("product", ""))[:64],
                        request_json=json.dumps(item),
                        deadline=parse_utc(item.get("deadline")),
                        seen_at=now,
                        next_attempt_at=now,
                    )
                )

    def _due(self) -> list[str]:
        with self.db.read() as session:
            return list(
                session.exec(
                    select(PriorWork.request_id)
                    .where(
                        col(PriorWork.state).in_(
                            [PriorState.NEW, PriorState.FORWARDING, PriorState.ANSWERING]
                        ),
                        col(PriorWork.next_attempt_at) <= self.clock(),
                    )
                    .order_by(col(PriorWork.seen_at))
                    .limit(self.batch_size)
                ).all()
            )

    def _load(self, request_id: str) -> PriorWork:
        with self.db.read() as session:
            row = session.get(PriorWork, request_id)
            assert row is not None
            session.expunge(row)
            return row

    def _save(self, request_id: str, **values: Any) -> None:
        with self.db.write() as session:
            row = session.get(PriorWork, request_id)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)

    def _work(self, request_id: str) -> None:
        row = self._load(request_id)
        if row.deadline is not None and as_utc(row.deadline) <= self.clock():
            self._save(request_id, state=PriorState.EXPIRED, last_error="the deadline passed")
            return
        if row.state == PriorState.NEW:
            self._find_and_retrieve(row)
            row = self._load(request_id)
        if row.state == PriorState.FORWARDING:
            self._check_forwarded(row)
            row = self._load(request_id)
        if row.state == PriorState.ANSWERING:
            self._answer(row)

    # -- NEW: query, register, retrieve ------------------------------------------------------

    def _decide(
        self, request_id: str, outcome: PriorOutcome, reason: str = "", detail: str = ""
    ) -> None:
        """The answer is ``outcome`` with ``reason`` (told to the hub: it names no patient
        or study); ``detail`` (what the PACS said) stays in ``last_error``, here."""
        values: dict[str, Any] = {"last_error": f"{reason}: {detail}"} if detail else {}
        self._save(
            request_id,
            state=PriorState.ANSWERING,
            outcome=outcome,
            reason=reason,
            attempts=0,
            next_attempt_at=self.clock(),
            **values,
        )

    def _retry(self, row: PriorWork, error: str, detail: str = "") -> None:
        attempts = row.attempts + 1
        if attempts >= self.max_attempts and row.state == PriorState.NEW:
            self._decide(row.request_id, PriorOutcome.FAILED, error, detail)
            return
        delay = retry_delay(attempts, self.backoff_seconds, self.max_backoff_seconds)
        self._save(
            row.request_id,
            attempts=attempts,
            last_error=f"{error}: {detail}" if detail else error,
            next_attempt_at=self.clock() + timedelta(seconds=delay),
        )

    def _query(self, row: PriorWork) -> PriorQuery | str:
        """The PACS query for the request, or why there is none."""
        request = json.loads(row.request_json)
        study = self.lookup.study(row.pseudo_study_uid)
        if study is None:
            return "the gateway has no record of the current study"
        patient = self.lookup.patient(study.patient_pseudo_id)
        if patient is None or not patient.original_id.strip():
            return "the current study has no Patient ID to look for earlier studies with"
        modalities = tuple(str(m) for m in request.get("modalities") or ())
        body_parts = tuple(str(b) for b in request.get("body_parts") or ())
        return PriorQuery(
            patient_id=patient.original_id,
            issuer=patient.issuer,
            current_study_uid=study.original_study_uid,
            current_date=parse_da(dicom_json.text(study.identity, _STUDY_DATE) or ""),
            within_days=int(request.get("within_days", 1825)),
            modalities=modalities if request.get("same_modality", True) else (),
            body_parts=body_parts if request.get("same_body_part", True) else (),
            count=max(1, int(request.get("count", 1))),
        )

    def _find_and_retrieve(self, row: PriorWork) -> None:
        query = self._query(row)
        if isinstance(query, str):
            self._decide(row.request_id, PriorOutcome.NONE, query)
            return
        pacs = self.pacs()
        try:
            priors = find_priors(pacs, query)
            if not priors:
                self._decide(
                    row.request_id,
                    PriorOutcome.NONE,
                    f"no earlier study of the patient in PACS {pacs.name} matches"
                    f" (within {query.within_days} days"
                    + (f", modality {'/'.join(query.modalities)}" if query.modalities else "")
                    + (f", body part {'/'.join(query.body_parts)}" if query.body_parts else "")
                    + ")",
                )
                return
            originals = [p.study_instance_uid for p in priors]
            try:
                self.hub.register(row.request_id, [self.keyed.uid(u) for u in originals])
            except (Conflict, NotFound) as exc:
                self._save(row.request_id, state=PriorState.EXPIRED, last_error=exc.reason)
                return
            except UpstreamError as exc:
                self._retry(row, exc.reason)
                return
            seconds = 0.0
            for uid in originals:
                retrieved = pacs.retrieve_study(uid)
                seconds += retrieved.seconds
                if retrieved.completed == 0:
                    raise PacsRefused(
                        f"PACS {pacs.name} sent no instance of the prior study"
                        f" ({retrieved.failed} failed)"
                    )
            self._save(
                row.request_id,
                state=PriorState.FORWARDING,
                prior_studies_json=json.dumps(originals),
                retrieved_at=self.clock(),
                retrieve_seconds=seconds,
                attempts=0,
                last_error=None,
            )
            log.info(
                "prior request %s: %d prior studies retrieved in %.2f s",
                row.request_id,
                len(originals),
                seconds,
            )
        except PacsRefused as exc:
            self._decide(row.request_id, PriorOutcome.FAILED, exc.reason, exc.detail)
        except PacsQueryError as exc:
            self._retry(row, exc.reason, exc.detail)
        finally:
            pacs.close()

    # -- FORWARDING: until the hub holds them ------------------------------------------------

    def _forwarding(
        self, originals: Sequence[str]
    ) -> tuple[int, dict[str, int], dict[str, int], list[str]]:
        """(instances still waiting, forwarded instances per study, the others counted by
        state, and their reasons)."""
        with self.db.read() as session:
            rows = session.exec(
                select(
                    ReceivedInstance.study_instance_uid,
                    ReceivedInstance.state,
                    func.count(),
                    func.max(ReceivedInstance.reason),
                )
                .where(col(ReceivedInstance.study_instance_uid).in_(list(originals)))
                .group_by(col(ReceivedInstance.study_instance_uid), col(ReceivedInstance.state))
            ).all()
        waiting, forwarded, reasons = 0, dict.fromkeys(originals, 0), []
        others: dict[str, int] = {}
        for study, state, count, reason in rows:
            if state in WAITING:
                waiting += int(count)
            elif state == InstanceState.FORWARDED.value:
                forwarded[study] += int(count)
            else:
                others[str(state)] = others.get(str(state), 0) + int(count)
                if reason:
                    reasons.append(f"{state}: {reason}")
        return waiting, forwarded, others, reasons

    def _check_forwarded(self, row: PriorWork) -> None:
        originals: list[str] = json.loads(row.prior_studies_json)
        give_up = time.monotonic() + self.forward_wait_seconds
        while True:
            waiting, forwarded, others, reasons = self._forwarding(originals)
            if not waiting:
                break
            retrieved = as_utc(row.retrieved_at or row.seen_at)
            if self.clock() >= retrieved + timedelta(seconds=self.forward_timeout_seconds):
                self._decide(
                    row.request_id,
                    PriorOutcome.FAILED,
                    f"the prior studies did not reach the hub within "
                    f"{self.forward_timeout_seconds:g} s",
                )
                return
            if time.monotonic() >= give_up:
                return  # looked at again next round
            time.sleep(0.02)
        found = [self.keyed.uid(u) for u in originals if forwarded[u]]
        if found:
            self._save(
                row.request_id,
                state=PriorState.ANSWERING,
                outcome=PriorOutcome.FOUND,
                reason="",
                prior_studies_json=json.dumps([u for u in originals if forwarded[u]]),
                next_attempt_at=self.clock(),
            )
            return
        counts = ", ".join(f"{n} {state}" for state, n in sorted(others.items()))
        self._decide(  # the counts go to the hub; the reasons (the gateway's words) stay here
            row.request_id,
            PriorOutcome.FAILED,
            f"the prior studies could not be sent to the hub ({counts or 'none forwarded'})",
            "; ".join(sorted(set(reasons))[:3]),
        )

    # -- ANSWERING -----------------------------------------------------------------------------

    def _answer(self, row: PriorWork) -> None:
        outcome = PriorOutcome(row.outcome or PriorOutcome.FAILED)  # the column holds a str
        uids = (
            [self.keyed.uid(u) for u in json.loads(row.prior_studies_json)]
            if outcome is PriorOutcome.FOUND
            else []
        )
        try:
            self.hub.answer(
                row.request_id, outcome.value, reason=row.reason or "", study_instance_uids=uids
            )
        except (Conflict, NotFound) as exc:
            self._save(row.request_id, state=PriorState.EXPIRED, last_error=exc.reason)
            return
        except Unprocessable as exc:  # a named study is not (yet) at the hub
            self._decide(row.request_id, PriorOutcome.FAILED, exc.reason)
            return
        except UpstreamError as exc:
            self._retry(row, exc.reason)
            return
        self._save(
            row.request_id, state=PriorState.ANSWERED, answered_at=self.clock(), last_error=None
        )
        log.info("prior request %s answered: %s", row.request_id, outcome.value)
