"""The delivery outbox (``aifi.hub.delivery.deliverer``) over a real database (SQLite, and
PostgreSQL
when it answers) and the hub's real store, with an in-memory PACS client that plays the
PACS: confirmations, transient failures (retried with backoff), refusals (failed at once),
partial deliveries, crashes (stale leases) and concurrent hub processes.

The PACS's answers here are the ones :mod:`aifi.hub.delivery.destinations` reports (PS3.4 Annex B
C-STORE statuses, PS3.18 §10.5.3 STOW-RS); the real clients against a real Orthanc are in
``tests/interop/test_delivery_orthanc.py``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from sqlmodel import col, select

from aifi.conformance.synthetic import Patient, radiograph_study
from aifi.hub.delivery.deliverer import Deliverer
from aifi.hub.delivery.destinations import (
    Destination,
    DestinationsConfig,
    OutgoingInstance,
    SendOutcome,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AiResult, Delivery, ResultInstance
from aifi.hub.settings import Settings
from aifi.hub.store.repository import SqlDicomStore
from aifi.vendors.reference import reference_report
from tests.support.clock import Clock
from tests.support.dicom import ingest
from tests.support.wait import async_wait_until

TENANT = "default"

# -- test bench ---------------------------------------------------------------------------


Behaviour = Callable[[str, "FakePacs", OutgoingInstance], SendOutcome]


def confirm(_name: str, _pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
    return SendOutcome(
        sop_instance_uid=item.sop_instance_uid, delivered=True, retryable=False, reason=""
    )


def unavailable(name: str, _pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
    return SendOutcome(
        sop_instance_uid=item.sop_instance_uid,
        delivered=False,
        retryable=True,
        reason=f"HTTP 503 Service Unavailable from {name}",
    )


def refuse(_name: str, _pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
    return SendOutcome(
        sop_instance_uid=item.sop_instance_uid,
        delivered=False,
        retryable=False,
        reason="C-STORE status 0xA900 (Error: Data Set Does Not Match SOP Class)",
    )


@dataclass
class FakePacs:
    """Every PACS of the test: what each received, and how each answers (``behaviour``,
    which may change during the test). Clients made by :meth:`client` share it, across
    threads."""

    behaviour: Behaviour = confirm
    stored: dict[str, list[str]] = field(default_factory=dict)
    """Per destination: the SOP Instance UIDs it confirmed, in order (repeats included)."""
    sent: dict[str, list[str]] = field(default_factory=dict)
    """Per destination: every SOP Instance UID it was sent."""
    calls: int = 0
    closed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, destination: Destination) -> _Client:
        return _Client(self, destination.name)

    def times_stored(self, destination: str, uid: str) -> int:
        return self.stored.get(destination, []).count(uid)


class _Client:
    def __init__(self, pacs: FakePacs, name: str) -> None:
        self.pacs = pacs
        self.name = name

    def send(self, files: Sequence[OutgoingInstance]) -> list[SendOutcome]:
        outcomes = []
        for item in files:
            # the file is the stored instance it claims to be
            header = dcmread(item.path, stop_before_pixels=True)
            assert header.SOPInstanceUID == item.sop_instance_uid
            assert header.SOPClassUID == item.sop_class_uid
            with self.pacs.lock:
                self.pacs.calls += 1
                self.pacs.sent.setdefault(self.name, []).append(item.sop_instance_uid)
            outcome = self.pacs.behaviour(self.name, self.pacs, item)
            if outcome.delivered:
                with self.pacs.lock:
                    self.pacs.stored.setdefault(self.name, []).append(item.sop_instance_uid)
            outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        with self.pacs.lock:
            self.pacs.closed += 1


def destinations(*names: str, tenant: str = TENANT) -> DestinationsConfig:
    """DICOMweb destinations (the fake client does not look at the kind)."""
    return DestinationsConfig.model_validate(
        {
            "tenants": {
                tenant: [
                    {"kind": "dicomweb", "name": n, "url": f"http://{n}.invalid/dicom-web"}
                    for n in names
                ]
            }
        }
    )


@dataclass
class Released:
    """A released AI result in the hub: its row and its instances (stored in the hub)."""

    result: AiResult
    study_instance_uid: str
    inputs: list[Dataset]
    instances: list[Dataset]

    @property
    def sop_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.instances]


def store_result(
    db: Database,
    store: SqlDicomStore,
    *,
    instances: int = 2,
    tenant: str = TENANT,
    study: Iterator[bytes] | None = None,
) -> Released:
    """A study (generated radiographs) and ``instances`` result instances of one workitem
    in it (reference Basic Text SRs), stored in the hub with their ``ResultInstance`` rows
    and an ``AiResult`` (autonomous, released now)."""
    from io import BytesIO

    data = list(study or radiograph_study(2, patient=Patient(name="Delivery^Test")))
    inputs: list[Dataset] = [dcmread(BytesIO(b)) for b in data]
    results = [
        reference_report(inputs, f"finding {i + 1}", manufacturer="aifi-hub test")
        for i in range(instances)
    ]
    for i, ds in enumerate(results):
        ds.InstanceNumber = i + 1
        ds.SeriesInstanceUID = results[0].SeriesInstanceUID
    outcomes = ingest(store, [*data, *results], tenant)
    assert all(o.status.value in ("stored", "already-stored") for o in outcomes), outcomes
    study_uid = str(inputs[0].StudyInstanceUID)
    workitem_uid = str(generate_uid())
    with db.write() as session:
        for ds in results:
            session.add(
                ResultInstance(
                    tenant=tenant,
                    workitem_uid=workitem_uid,
                    study_instance_uid=study_uid,
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    kind="SR",
                    summary="test",
                )
            )
        result = AiResult(
            tenant=tenant,
            workitem_uid=workitem_uid,
            study_instance_uid=study_uid,
            product="AIFI-TEST",
            supervision="autonomous",
            outcome="negative",
            review_state="not-required",
            released_at=datetime.now(UTC),
        )
        session.add(result)
    return Released(result, study_uid, inputs, results)


def enqueue(deliverer: Deliverer, released: Released) -> list[Delivery]:
    with deliverer.db.write() as session:
        result = session.get(AiResult, released.result.pk)
        assert result is not None
        return deliverer.enqueue(session, result)


def deliveries(db: Database, released: Released | None = None) -> dict[str, Delivery]:
    """The result's delivery rows by destination (all rows when ``released`` is None,
    keyed ``pk:destination``)."""
    with db.read() as session:
        stmt = select(Delivery).order_by(col(Delivery.pk))
        if released is not None:
            stmt = stmt.where(col(Delivery.result_pk) == released.result.pk)
        rows = list(session.exec(stmt).all())
    if released is not None:
        return {r.destination: r for r in rows}
    return {f"{r.pk}:{r.destination}": r for r in rows}


def confirmed(row: Delivery) -> list[str]:
    value: list[str] = json.loads(row.delivered_sop_uids)
    return value


def utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


@dataclass
class Bench:
    db: Database
    store: SqlDicomStore
    pacs: FakePacs
    clock: Clock

    def deliverer(self, config: DestinationsConfig | None = None, **kwargs: object) -> Deliverer:
        return Deliverer(
            self.db,
            self.store,
            config if config is not None else destinations("pacs-a"),
            clock=self.clock,
            client_factory=self.pacs.client,
            **kwargs,  # type: ignore[arg-type]
        )

    def release(self, deliverer: Deliverer, **kwargs: object) -> Released:
        released = store_result(self.db, self.store, **kwargs)  # type: ignore[arg-type]
        enqueue(deliverer, released)
        return released


def open_hub_database(database_url: str | None, tmp_path: Path) -> tuple[Database, SqlDicomStore]:
    """The hub's database (migrated) and store, as ``create_app`` makes them."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    store = SqlDicomStore(db, settings.dicom_dir, fsync=False)
    store.ensure_tenant(TENANT)
    return db, store


@pytest.fixture
def bench(database_url: str | None, tmp_path: Path) -> Iterator[Bench]:
    db, store = open_hub_database(database_url, tmp_path)
    try:
        yield Bench(db, store, FakePacs(), Clock())
    finally:
        store.close()
        db.dispose()


# -- tests --------------------------------------------------------------------------------


def test_a_released_result_is_delivered_to_every_destination_of_its_tenant(bench: Bench):
    deliverer = bench.deliverer(destinations("pacs-a", "pacs-b"))
    released = bench.release(deliverer, instances=3)
    rows = deliveries(bench.db, released)
    assert {d: r.state for d, r in rows.items()} == {"pacs-a": "pending", "pacs-b": "pending"}

    assert deliverer.tick() == 2
    rows = deliveries(bench.db, released)
    for name in ("pacs-a", "pacs-b"):
        row = rows[name]
        assert row.state == "delivered"
        assert row.attempts == 1
        assert row.last_error is None
        assert row.lease_until is None
        assert utc(row.delivered_at) == bench.clock.now
        assert sorted(confirmed(row)) == sorted(released.sop_uids)
        assert bench.pacs.stored[name] == released.sop_uids  # each once, in order
    assert bench.pacs.closed == 2  # one client per destination and round, closed

    assert deliverer.tick() == 0  # nothing is sent again
    assert sum(len(v) for v in bench.pacs.sent.values()) == 6


def test_enqueue_is_idempotent_per_destination(bench: Bench):
    deliverer = bench.deliverer(destinations("pacs-a"))
    released = bench.release(deliverer)
    assert enqueue(deliverer, released) == []
    assert len(deliveries(bench.db, released)) == 1


def test_a_tenant_without_destinations_gets_no_deliveries(bench: Bench):
    deliverer = bench.deliverer(DestinationsConfig())
    released = bench.release(deliverer)
    assert deliveries(bench.db, released) == {}
    assert deliverer.tick() == 0
    # another tenant's destinations do not apply either
    other = bench.deliverer(destinations("pacs-x", tenant="elsewhere"))
    assert enqueue(other, released) == []
    assert bench.pacs.calls == 0


def test_a_result_without_instances_gets_no_deliveries(bench: Bench):
    deliverer = bench.deliverer()
    with bench.db.write() as session:
        result = AiResult(
            tenant=TENANT,
            workitem_uid=str(generate_uid()),
            outcome="cancelled",
            review_state="not-required",
        )
        session.add(result)
        assert deliverer.enqueue(session, result) == []


def test_a_pacs_that_is_unavailable_is_retried_with_backoff_until_it_confirms(bench: Bench):
    deliverer = bench.deliverer(backoff_seconds=2.0, max_backoff_seconds=600.0)
    released = bench.release(deliverer, instances=2)
    bench.pacs.behaviour = unavailable
    start = bench.clock.now

    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts) == ("pending", 1)
    assert utc(row.next_attempt_at) == start + timedelta(seconds=2)
    assert row.lease_until is None
    assert row.last_error is not None
    assert "'pacs-a'" in row.last_error
    for uid in released.sop_uids:
        assert uid in row.last_error
    assert "HTTP 503 Service Unavailable" in row.last_error
    assert "Basic Text SR" in row.last_error  # the SOP class, named
    assert confirmed(row) == []

    assert deliverer.tick() == 0  # not due yet
    bench.clock.advance(2)
    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts) == ("pending", 2)
    assert utc(row.next_attempt_at) == bench.clock.now + timedelta(seconds=4)  # doubled

    bench.clock.advance(3.9)
    assert deliverer.tick() == 0
    bench.pacs.behaviour = confirm
    bench.clock.advance(0.1)
    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)
    assert bench.pacs.stored["pacs-a"] == released.sop_uids


def test_backoff_is_capped(bench: Bench):
    deliverer = bench.deliverer(backoff_seconds=2.0, max_backoff_seconds=5.0)
    released = bench.release(deliverer, instances=1)
    bench.pacs.behaviour = unavailable
    waits = []
    for _ in range(4):
        assert deliverer.tick() == 1
        row = deliveries(bench.db, released)["pacs-a"]
        wait = utc(row.next_attempt_at) - bench.clock.now  # type: ignore[operator]
        waits.append(wait.total_seconds())
        bench.clock.advance(wait.total_seconds())
    assert waits == [2.0, 4.0, 5.0, 5.0]


def test_a_partial_delivery_is_not_done_and_only_the_rest_is_sent_again(bench: Bench):
    deliverer = bench.deliverer()
    released = bench.release(deliverer, instances=3)
    first, *rest = released.sop_uids

    def first_only(name: str, pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
        return (confirm if item.sop_instance_uid == first else unavailable)(name, pacs, item)

    bench.pacs.behaviour = first_only
    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert row.state == "pending"
    assert row.delivered_at is None
    assert confirmed(row) == [first]
    assert row.last_error is not None
    assert first not in row.last_error and all(uid in row.last_error for uid in rest)

    bench.pacs.behaviour = confirm
    bench.clock.advance(2)
    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert row.state == "delivered"
    assert sorted(confirmed(row)) == sorted(released.sop_uids)
    assert bench.pacs.sent["pacs-a"] == [first, *rest, *rest]  # the first was not resent
    assert all(bench.pacs.times_stored("pacs-a", uid) == 1 for uid in released.sop_uids)


def test_a_refusal_fails_the_delivery_at_once_with_the_pacs_reason(bench: Bench):
    deliverer = bench.deliverer()
    released = bench.release(deliverer, instances=2)
    bench.pacs.behaviour = refuse
    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.last_error is not None
    assert "'pacs-a'" in row.last_error
    assert "0xA900 (Error: Data Set Does Not Match SOP Class)" in row.last_error
    assert all(uid in row.last_error for uid in released.sop_uids)
    assert "not retried" in row.last_error
    bench.clock.advance(3600)
    assert deliverer.tick() == 0  # failed stays failed


def test_one_retryable_failure_among_refusals_keeps_the_delivery_pending(bench: Bench):
    deliverer = bench.deliverer()
    released = bench.release(deliverer, instances=2)
    refused = released.sop_uids[0]

    def mixed(name: str, pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
        return (refuse if item.sop_instance_uid == refused else unavailable)(name, pacs, item)

    bench.pacs.behaviour = mixed
    deliverer.tick()
    row = deliveries(bench.db, released)["pacs-a"]
    assert row.state == "pending"
    assert row.last_error is not None and "0xA900" in row.last_error and "503" in row.last_error


def test_after_max_attempts_a_delivery_fails_and_retry_starts_it_again(bench: Bench):
    deliverer = bench.deliverer(max_attempts=3, backoff_seconds=1.0)
    released = bench.release(deliverer, instances=1)
    bench.pacs.behaviour = unavailable
    for attempt in (1, 2, 3):
        assert deliverer.tick() == 1
        row = deliveries(bench.db, released)["pacs-a"]
        assert row.attempts == attempt
        bench.clock.advance(60)
    assert row.state == "failed"
    assert row.last_error is not None and "gave up after 3 attempts" in row.last_error
    assert deliverer.tick() == 0

    bench.pacs.behaviour = confirm
    deliverer.retry(TENANT, released.result.workitem_uid, "pacs-a")
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts) == ("pending", 0)
    assert utc(row.next_attempt_at) == bench.clock.now
    assert deliverer.tick() == 1
    assert deliveries(bench.db, released)["pacs-a"].state == "delivered"


def test_retry_of_an_unknown_delivery_is_not_found(bench: Bench):
    from aifi.errors import NotFound

    deliverer = bench.deliverer()
    released = bench.release(deliverer)
    with pytest.raises(NotFound):
        deliverer.retry(TENANT, released.result.workitem_uid, "no-such-pacs")
    with pytest.raises(NotFound):
        deliverer.retry("elsewhere", released.result.workitem_uid, "pacs-a")


class Crash(BaseException):
    """The hub process dies (not an error the deliverer could catch and record)."""


def test_a_delivery_left_by_a_process_that_died_is_taken_over_when_its_lease_expires(
    bench: Bench,
):
    crashing = bench.deliverer(lease_seconds=120)
    released = bench.release(crashing, instances=2)
    first = released.sop_uids[0]

    def die_after_the_first(name: str, pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
        if item.sop_instance_uid != first:
            raise Crash
        return confirm(name, pacs, item)

    bench.pacs.behaviour = die_after_the_first
    with pytest.raises(Crash):
        crashing.tick()
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts) == ("delivering", 1)
    assert utc(row.lease_until) == bench.clock.now + timedelta(seconds=120)

    survivor = bench.deliverer(lease_seconds=120)
    bench.pacs.behaviour = confirm
    bench.clock.advance(119)
    assert survivor.tick() == 0  # the lease still holds
    bench.clock.advance(2)
    assert survivor.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts) == ("delivered", 2)
    assert sorted(confirmed(row)) == sorted(released.sop_uids)
    # The PACS confirmed the first instance just before the crash, which was never
    # recorded: it is sent again with the same SOP Instance UID (at-least-once, idempotent
    # UIDs: the PACS keeps one instance). The second is stored once.
    assert bench.pacs.times_stored("pacs-a", first) == 2
    assert bench.pacs.times_stored("pacs-a", released.sop_uids[1]) == 1


def test_a_process_whose_lease_was_taken_over_does_not_overwrite_the_outcome(bench: Bench):
    slow = bench.deliverer(lease_seconds=10)
    released = bench.release(slow, instances=1)
    other = bench.deliverer(lease_seconds=10)
    outcomes_of_other: list[int] = []

    def stall_then_refuse(name: str, pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
        # the slow process stalls past its lease; the other takes over and delivers
        pacs.behaviour = confirm
        bench.clock.advance(11)
        outcomes_of_other.append(other.tick())
        return refuse(name, pacs, item)

    bench.pacs.behaviour = stall_then_refuse
    assert slow.tick() == 1
    assert outcomes_of_other == [1]
    row = deliveries(bench.db, released)["pacs-a"]
    assert (row.state, row.attempts, row.last_error) == ("delivered", 2, None)


def test_a_client_that_raises_is_a_retryable_failure_with_the_reason(bench: Bench):
    deliverer = bench.deliverer()
    released = bench.release(deliverer, instances=1)

    def broken(_name: str, _pacs: FakePacs, _item: OutgoingInstance) -> SendOutcome:
        raise OSError("No route to host")

    bench.pacs.behaviour = broken
    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert row.state == "pending"
    assert row.last_error is not None and "OSError: No route to host" in row.last_error


def test_a_destination_removed_from_the_configuration_fails_its_deliveries(bench: Bench):
    deliverer = bench.deliverer(destinations("pacs-a"))
    released = bench.release(deliverer, instances=1)
    reconfigured = bench.deliverer(destinations("pacs-b"))
    assert reconfigured.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert row.state == "failed"
    assert row.last_error is not None and "no longer configured" in row.last_error
    assert bench.pacs.calls == 0


def test_an_instance_missing_from_the_store_is_not_counted_as_delivered(bench: Bench):
    deliverer = bench.deliverer()
    released = bench.release(deliverer, instances=2)
    [stored] = bench.store.find_instances(
        TENANT, released.study_instance_uid, None, released.sop_uids[1]
    )
    stored.path.unlink()
    assert deliverer.tick() == 1
    row = deliveries(bench.db, released)["pacs-a"]
    assert row.state == "failed"
    assert confirmed(row) == [released.sop_uids[0]]
    assert row.last_error is not None
    assert (
        f"{released.sop_uids[1]} (Basic Text SR Storage): not in the hub's store" in row.last_error
    )


def test_a_slow_pacs_does_not_hold_up_another_hospitals(bench: Bench):
    config = DestinationsConfig.model_validate(
        {
            "tenants": {
                TENANT: [{"kind": "dicomweb", "name": "slow", "url": "http://slow.invalid"}],
                "other": [{"kind": "dicomweb", "name": "fast", "url": "http://fast.invalid"}],
            }
        }
    )
    bench.store.ensure_tenant("other")
    deliverer = bench.deliverer(config)
    slow = bench.release(deliverer, instances=1)
    fast = bench.release(deliverer, instances=1, tenant="other")
    fast_done = threading.Event()

    def slow_one(name: str, pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
        if name == "slow":
            assert fast_done.wait(10), "the other hospital's delivery waited for this one"
        else:
            fast_done.set()
        return confirm(name, pacs, item)

    bench.pacs.behaviour = slow_one
    assert deliverer.tick() == 2
    assert deliveries(bench.db, slow)["slow"].state == "delivered"
    assert deliveries(bench.db, fast)["fast"].state == "delivered"


def test_two_processes_ticking_at_once_never_send_one_delivery_twice(bench: Bench):
    config = destinations("pacs-a", "pacs-b")
    first = bench.deliverer(config)
    results = [bench.release(first, instances=1) for _ in range(8)]
    second = bench.deliverer(config)
    for d in (first, second):
        d.batch_size = 3  # small batches, so both take part
    # Each process's first send waits (at most 10 s) until the other process sends too: both
    # are in the middle of a round at once, however the threads happen to be scheduled.
    arrived = [threading.Event(), threading.Event()]

    class Meeting(_Client):
        def __init__(self, destination: Destination, index: int) -> None:
            super().__init__(bench.pacs, destination.name)
            self.index = index

        def send(self, files: Sequence[OutgoingInstance]) -> list[SendOutcome]:
            if not arrived[self.index].is_set():
                arrived[self.index].set()
                arrived[1 - self.index].wait(10)
            return super().send(files)

    first.client_factory = partial(Meeting, index=0)
    second.client_factory = partial(Meeting, index=1)
    errors: list[BaseException] = []
    worked: dict[int, int] = {0: 0, 1: 0}

    def run(index: int, deliverer: Deliverer) -> None:
        try:
            for _ in range(200):
                worked[index] += deliverer.tick()
                if all(r.state == "delivered" for r in deliveries(bench.db).values()):
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, d)) for i, d in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    rows = deliveries(bench.db)
    assert len(rows) == 16
    assert all(r.state == "delivered" and r.attempts == 1 for r in rows.values())
    assert worked[0] + worked[1] == 16
    assert worked[0] > 0 and worked[1] > 0
    for name in ("pacs-a", "pacs-b"):
        sent = bench.pacs.sent[name]
        assert sorted(sent) == sorted(r.sop_uids[0] for r in results)  # each exactly once


def test_while_a_pacs_is_down_one_delivery_per_round_tries_it_and_the_rest_wait(bench: Bench):
    deliverer = bench.deliverer(backoff_seconds=2.0)
    results = [bench.release(deliverer, instances=1) for _ in range(3)]
    bench.pacs.behaviour = unavailable
    assert deliverer.tick() == 3
    assert bench.pacs.sent["pacs-a"] == results[0].sop_uids  # only the first was tried
    probe = deliveries(bench.db, results[0])["pacs-a"]
    assert (probe.state, probe.attempts) == ("pending", 1)
    for released in results[1:]:
        row = deliveries(bench.db, released)["pacs-a"]
        assert (row.state, row.attempts) == ("pending", 0)  # no attempt used up
        assert utc(row.next_attempt_at) == utc(probe.next_attempt_at)
        assert row.last_error is not None
        assert row.last_error.startswith("waiting: 'pacs-a' failed for another result")
        assert "HTTP 503" in row.last_error
    # results released meanwhile wait too, without the PACS being tried again
    bench.clock.advance(1)
    later = bench.release(deliverer, instances=1)
    assert deliverer.tick() == 1
    assert bench.pacs.calls == 1
    row = deliveries(bench.db, later)["pacs-a"]
    assert (row.state, row.attempts) == ("pending", 0)
    assert utc(row.next_attempt_at) == utc(probe.next_attempt_at)

    bench.pacs.behaviour = confirm
    bench.clock.advance(1)
    assert deliverer.tick() == 4
    rows = [deliveries(bench.db, r)["pacs-a"] for r in [*results, later]]
    assert [(r.state, r.attempts, r.last_error) for r in rows] == [
        ("delivered", 2, None),
        ("delivered", 1, None),
        ("delivered", 1, None),
        ("delivered", 1, None),
    ]


def test_the_delivery_loop_delivers_and_outlives_a_failing_round(bench: Bench):
    import asyncio

    from aifi.hub.delivery.deliverer import run_delivery_loop

    deliverer = bench.deliverer()
    deliverer.clock = lambda: datetime.now(UTC)
    released = bench.release(deliverer, instances=1)
    real_tick = deliverer.tick
    rounds: list[str] = []

    def tick() -> int:
        if not rounds:
            rounds.append("failed")
            raise RuntimeError("database went away for a moment")
        rounds.append("ran")
        return real_tick()

    deliverer.tick = tick  # type: ignore[method-assign]

    async def main() -> None:
        loop = asyncio.create_task(run_delivery_loop(deliverer, 0.01))
        try:
            await async_wait_until(
                lambda: deliveries(bench.db, released)["pacs-a"].state == "delivered",
                5,
                "the loop to deliver after its failed round",
                interval=0.01,
            )
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop

    asyncio.run(main())
    assert deliveries(bench.db, released)["pacs-a"].state == "delivered"
    assert rounds[0] == "failed" and "ran" in rounds


def test_a_row_whose_turn_comes_late_in_a_round_is_renewed_or_left_to_its_new_holder(
    bench: Bench,
):
    slow = bench.deliverer(lease_seconds=10)
    first, second, third = (bench.release(slow, instances=1) for _ in range(3))
    other = bench.deliverer(lease_seconds=10)
    calls: list[str] = []

    def slow_pacs(name: str, pacs: FakePacs, item: OutgoingInstance) -> SendOutcome:
        calls.append(item.sop_instance_uid)
        if item.sop_instance_uid == first.sop_uids[0]:
            bench.clock.advance(6)  # past half the lease: the next row's lease is renewed
        elif item.sop_instance_uid == second.sop_uids[0]:
            bench.clock.advance(
                5
            )  # t=11: the third row's lease (t=10) ran out, not this one's (16)
            assert other.tick() == 1
        return confirm(name, pacs, item)

    bench.pacs.behaviour = slow_pacs
    assert slow.tick() == 3
    assert calls == [first.sop_uids[0], second.sop_uids[0], third.sop_uids[0]]  # each once
    rows = [deliveries(bench.db, r)["pacs-a"] for r in (first, second, third)]
    assert [(r.state, r.attempts) for r in rows] == [
        ("delivered", 1),
        ("delivered", 1),
        ("delivered", 2),  # by the other process
    ]
