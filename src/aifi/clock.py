"""The one clock: what time it is, in UTC, injectable.

Every component that needs the time takes a :class:`Clock` (a callable returning an aware
UTC ``datetime``) in its constructor, defaulting to :func:`utc_now`; tests pass a fixed or
stepping clock instead of patching module helpers. :func:`as_utc` reads a stored moment
back as UTC (SQLite returns naive datetimes for what was written as UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
