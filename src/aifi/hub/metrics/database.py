"""Database time: ``aifi_db_query_duration_seconds``, a histogram of the time of each SQL
statement on the hub's engines, by operation (the statement's first keyword: ``select``,
``insert``, ``update``, ``delete``, or ``other``), measured between SQLAlchemy's
``before_cursor_execute`` and ``after_cursor_execute`` engine events (the driver's execute,
not the fetching of rows). Per process."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy import Engine, event

QUERY_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
OPERATIONS = frozenset({"select", "insert", "update", "delete"})
_STARTED = "aifi_query_started"


def operation(statement: str) -> str:
    """The label of a statement: its first keyword if it is one of :data:`OPERATIONS`."""
    word = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else ""
    return word if word in OPERATIONS else "other"


class QueryTimer:
    """Times the statements of the engines it is given (:meth:`listen_to`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "aifi_db_query_duration_seconds",
            "Time of SQL statements on the hub's database engines, by operation.",
            ("operation",),
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        self._children = {name: self.histogram.labels(name) for name in (*OPERATIONS, "other")}

    def listen_to(self, *engines: Engine) -> None:
        """Listen to ``engines`` (each once, also when the reader is the writer)."""
        for engine in dict.fromkeys(engines):
            event.listen(engine, "before_cursor_execute", self._before)
            event.listen(engine, "after_cursor_execute", self._after)
            event.listen(engine, "handle_error", self._failed)

    @staticmethod
    def _before(conn: Any, _cursor: Any, _statement: str, *_args: Any) -> None:
        conn.info.setdefault(_STARTED, []).append(time.perf_counter())

    def _after(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        started: list[float] = conn.info.get(_STARTED) or []
        if started:
            self._children[operation(statement)].observe(time.perf_counter() - started.pop())

    @staticmethod
    def _failed(context: Any) -> None:
        """A statement that raised has no ``after_cursor_execute``: drop its start."""
        conn = context.connection
        started: list[float] = conn.info.get(_STARTED) or [] if conn is not None else []
        if started:
            started.pop()
