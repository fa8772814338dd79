"""The outbox engine's recording rules (aifi.hub.persistence.outbox), on plain rows: what an
attempt's outcome does to state, attempts, next attempt, lease and ``last_error``. Claiming
and fencing against a real database are covered by the contract tests of its users
(test_delivery, test_fhir_notify, test_gateway_forward)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import (
    Failure,
    Outbox,
    OutboxStates,
    Wording,
    retry_delay,
)

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
STATES = OutboxStates(due="pending", working="sending", done="delivered", failed="failed")


@dataclass
class Row:
    pk: int | None = 1
    state: Any = "sending"
    attempts: int = 1
    next_attempt_at: datetime = NOW
    lease_until: datetime | None = NOW + timedelta(seconds=60)
    last_error: str | None = None


def outbox(**kwargs: Any) -> Outbox[Row]:
    options: dict[str, Any] = {
        "lease_seconds": 60.0,
        "backoff_seconds": 2.0,
        "max_backoff_seconds": 10.0,
        "max_attempts": 3,
    }
    options.update(kwargs)
    return Outbox(cast(Database, None), Row, STATES, **options)


def test_the_backoff_doubles_up_to_its_cap():
    assert [retry_delay(n, 2.0, 10.0) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_success_is_done_and_gives_up_the_lease():
    row = Row(last_error="earlier")
    outbox().settle(row, NOW, None)
    assert (row.state, row.lease_until, row.last_error) == ("delivered", None, None)


def test_a_transient_failure_waits_for_the_backoff():
    row = Row(attempts=2)
    outbox().settle(row, NOW, Failure("attempt 2: HTTP 503", retryable=True))
    assert row.state == "pending" and row.lease_until is None
    assert row.next_attempt_at == NOW + timedelta(seconds=4)
    assert row.last_error == "attempt 2: HTTP 503; retry at 2026-03-01T08:00:04+00:00"


def test_a_refusal_or_the_last_attempt_fails_the_row():
    refused = Row()
    outbox().settle(refused, NOW, Failure("HTTP 400", retryable=False))
    assert (refused.state, refused.last_error) == ("failed", "HTTP 400; refused, not retried")
    last = Row(attempts=3)
    outbox().settle(last, NOW, Failure("HTTP 503", retryable=True))
    assert (last.state, last.last_error) == ("failed", "HTTP 503; gave up after 3 attempts")


def test_without_an_attempt_limit_a_transient_failure_is_retried_for_ever():
    wording = Wording(
        refused="{error}", retry="attempt {attempts}: {error}; retry at {at}", timespec="auto"
    )
    box = outbox(max_attempts=None, wording=wording)
    row = Row(attempts=50)
    box.settle(row, NOW, Failure("no connection", retryable=True))
    assert row.state == "pending"
    assert row.last_error == "attempt 50: no connection; retry at 2026-03-01T08:00:10+00:00"
    refused = Row()
    box.settle(refused, NOW, Failure("0xC411 not de-identified", retryable=False))
    assert (refused.state, refused.last_error) == ("failed", "0xC411 not de-identified")


def test_last_error_is_cut_to_the_outbox_limit():
    row = Row()
    outbox(error_chars=20).settle(row, NOW, Failure("x" * 100, retryable=True))
    assert row.last_error == "x" * 20


def test_a_row_given_back_untried_keeps_its_attempts():
    row = Row(attempts=4)
    outbox().give_back(row, NOW + timedelta(seconds=30), "waiting: the PACS is down")
    assert (row.state, row.attempts, row.lease_until) == ("pending", 3, None)
    assert row.next_attempt_at == NOW + timedelta(seconds=30)
    assert row.last_error == "waiting: the PACS is down"


def test_a_failed_row_is_requeued_with_fresh_attempts_a_busy_one_is_not():
    box = outbox()
    failed = Row(state="failed", attempts=3)
    assert box.requeue(failed, NOW)
    assert (failed.state, failed.attempts, failed.next_attempt_at) == ("pending", 0, NOW)
    busy = Row(state="sending", attempts=1)
    assert not box.requeue(busy, NOW) and busy.state == "sending"


def test_a_claim_is_owned_only_with_its_attempt_and_lease():
    box = outbox()
    lease = NOW + timedelta(seconds=60)
    row = Row(attempts=2, lease_until=lease.replace(tzinfo=None))  # as SQLite returns it
    assert box.owns(row, 2, lease)
    assert box.owns(row, 2)  # without a lease: attempt and state alone
    assert not box.owns(row, 1, lease)
    assert not box.owns(row, 2, lease + timedelta(seconds=1))
    row.state = "pending"
    assert not box.owns(row, 2)


def test_every_wording_sees_the_error_the_attempts_and_no_retry_time_when_final():
    wording = Wording(
        refused="refused [{error}] after {attempts} [{at}]",
        gave_up="gave up [{error}] after {attempts} [{at}]",
        retry="{error}",
    )
    box = outbox(wording=wording)
    refused = Row(attempts=2)
    box.settle(refused, NOW, Failure("HTTP 400", retryable=False))
    assert refused.last_error == "refused [HTTP 400] after 2 []"
    last = Row(attempts=3)
    box.settle(last, NOW, Failure("HTTP 503", retryable=True))
    assert last.last_error == "gave up [HTTP 503] after 3 []"


def test_a_reason_given_back_is_cut_to_the_outbox_limit_and_kept_whole_without_one():
    cut = Row(attempts=2)
    outbox(error_chars=7).give_back(cut, NOW, "waiting: the PACS is down")
    assert cut.last_error == "waiting"
    whole = Row(attempts=2)
    outbox(error_chars=None).give_back(whole, NOW, "waiting: the PACS is down")
    assert whole.last_error == "waiting: the PACS is down"


def test_a_requeued_row_holds_no_lease():
    row = Row(state="failed", attempts=3, lease_until=NOW)
    assert outbox().requeue(row, NOW + timedelta(seconds=5))
    assert row.lease_until is None and row.next_attempt_at == NOW + timedelta(seconds=5)
    waiting = Row(state="pending", attempts=2, lease_until=NOW)
    assert outbox().requeue(waiting, NOW)
    assert (waiting.attempts, waiting.lease_until) == (2, None)


def test_a_claim_s_lease_ends_its_lease_time_after_now():
    assert outbox(lease_seconds=90.0).lease_end(NOW) == NOW + timedelta(seconds=90)
