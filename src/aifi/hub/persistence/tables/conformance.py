"""Conformance reports the operator recorded (issue 18 point 4, :mod:`aifi.hub.admin.
conformance_records`): the ``report.json`` an AI vendor's run of ``aifi conformance performer``
wrote, kept as it was handed over, with what the hub read from it.

A report is about a product (or a PACS or EPD), not about one hospital, so the table has no
``tenant``; ``sha256`` identifies the file, so recording the same file twice keeps one row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now as _now


class ConformanceReport(SQLModel, table=True):
    """One recorded ``report.json`` (format ``aifi-conformance-report/1``). ``passed`` is what
    the hub derived from the cases (every required case ``pass`` or ``warn``, at least one
    case), not the file's own ``passed`` field; ``finished`` is when the run ended, by the
    report; ``recorded_at`` when the operator recorded it."""

    __tablename__ = "conformance_report"
    __table_args__ = (
        UniqueConstraint("sha256", name="uq_conformance_report_sha256"),
        Index("ix_conformance_report_product", "product", "kind", "passed", "finished"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    product: str = Field(default="", max_length=64)
    """The AI product a performer report tested; empty for a PACS or EPD report."""
    kind: str = Field(max_length=16)
    """``performer``, ``pacs`` or ``epd``."""
    tool_version: str = Field(max_length=64)
    finished: datetime
    recorded_at: datetime = Field(default_factory=_now)
    passed: bool
    sha256: str = Field(max_length=64)
    """Hex SHA-256 of the file's bytes."""
    report: str = Field(sa_type=Text)
    """The file's JSON text, as it was handed over."""
    recorded_by: str | None = Field(default=None, max_length=200)
    """Free text: who recorded it (an operator's name, a ticket)."""
