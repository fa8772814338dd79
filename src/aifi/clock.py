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


class SettableClock:
    """A :class:`Clock` whose source can be swapped while it is shared: the composition root
    gives one to every part of the workflow that must agree on the time (the worklist, the
    Task Manager, the results and the EPD requests); a test steers them all at once with
    :meth:`set`."""

    def __init__(self, source: Clock = utc_now) -> None:
        self.source = source

    def __call__(self) -> datetime:
        return self.source()

    def set(self, source: Clock) -> None:
        self.source = source


def parse_utc(value: object) -> datetime | None:
    """An ISO 8601 date-time as JSON carries it (``...Z`` or with an offset) as an aware UTC
    datetime; None when it is absent, not a string or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))  # Python 3.11 reads "Z" itself
    except ValueError:
        return None


def as_utc_or_none(moment: datetime | None) -> datetime | None:
    """:func:`as_utc` of a moment that may be missing."""
    return as_utc(moment) if moment is not None else None
