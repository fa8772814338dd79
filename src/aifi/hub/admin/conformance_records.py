"""The conformance reports the hub's operator records (issue 18 point 4): reading a
``report.json`` of ``aifi conformance …``, keeping it (:class:`~aifi.hub.persistence.tables.
ConformanceReport`) and finding a product's newest passing performer report, which
``aifi clients add --role performer`` looks for before it registers an AI product.

The hub never imports the kit (:mod:`aifi.conformance_kit` is a driver), so this module reads
the report's JSON itself, by the format the kit writes (``aifi-conformance-report/1``), and is
strict about it: the format and the kind are checked, and whether the run passed is derived
again from the cases (every required case ``pass`` or ``warn``, at least one case) instead of
taken from the file's own ``passed`` field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import ConformanceReport

REPORT_FORMAT = "aifi-conformance-report/1"
"""The ``format`` of the kit's ``report.json`` that this reader understands."""
KINDS = ("performer", "pacs", "epd")
STATUSES = ("pass", "fail", "warn", "skip")
SHOWN = ("pass", "warn")
"""A case with one of these statuses showed conformance."""
PERFORMER = "performer"


@dataclass(frozen=True)
class ParsedReport:
    """What the hub read from a ``report.json``. ``passed`` is derived from the cases;
    ``not_shown`` names the required cases that did not pass (failed or skipped)."""

    kind: str
    product: str
    """The tested AI product (``target.product``) of a performer report; else empty."""
    tool_version: str
    finished: datetime
    passed: bool
    not_shown: tuple[str, ...]
    sha256: str
    """Hex SHA-256 of the file's bytes."""


def read_report(path: Path) -> ParsedReport:
    """The report in ``path``; :class:`ValueError` saying why when it is not one."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_report(raw)


def parse_report(raw: bytes) -> ParsedReport:
    """The report in ``raw`` (a ``report.json``'s bytes); :class:`ValueError` saying why when
    it is not a complete report of :data:`REPORT_FORMAT`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an aifi conformance report: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError("not an aifi conformance report: not a JSON object")
    found = data.get("format")
    if found != REPORT_FORMAT:
        raise ValueError(
            f"not an aifi conformance report: format {found!r}, expected {REPORT_FORMAT!r}"
        )
    kind = data.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r} (one of {', '.join(KINDS)})")
    not_shown, any_case = _required_not_shown(data.get("cases"))
    return ParsedReport(
        kind=kind,
        product=_product(kind, data.get("target")),
        tool_version=_text(data, "tool_version"),
        finished=_moment(data, "finished"),
        passed=any_case and not not_shown,
        not_shown=not_shown,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _product(kind: str, target: Any) -> str:
    if not isinstance(target, dict):
        raise ValueError("incomplete report: 'target' is not an object")
    if kind != PERFORMER:
        return ""
    product = target.get("product")
    if not isinstance(product, str) or not product:
        raise ValueError("incomplete performer report: 'target' names no product")
    return product


def _required_not_shown(cases: Any) -> tuple[tuple[str, ...], bool]:
    """The ids of the required cases that did not pass or warn, and whether there is any
    case at all."""
    if not isinstance(cases, list):
        raise ValueError("incomplete report: 'cases' is not a list")
    not_shown: list[str] = []
    for number, case in enumerate(cases, start=1):
        if not isinstance(case, dict):
            raise ValueError(f"incomplete report: case {number} is not an object")
        case_id, required, status = case.get("id"), case.get("required"), case.get("status")
        if not isinstance(case_id, str) or not isinstance(required, bool):
            raise ValueError(f"incomplete report: case {number} has no 'id' or 'required'")
        if status not in STATUSES:
            raise ValueError(f"incomplete report: case {case_id} has status {status!r}")
        if required and status not in SHOWN:
            not_shown.append(case_id)
    return tuple(not_shown), bool(cases)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"incomplete report: no {key!r}")
    return value


def _moment(data: dict[str, Any], key: str) -> datetime:
    value = _text(data, key)
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError as exc:
        raise ValueError(f"incomplete report: {key!r} is not a date and time: {value!r}") from exc


def record_report(
    db: Database,
    parsed: ParsedReport,
    raw_bytes: bytes,
    *,
    recorded_by: str | None = None,
    clock: Clock = utc_now,
) -> ConformanceReport:
    """Keep the report (``raw_bytes``, the file ``parsed`` was read from) with what was read
    from it. The same file recorded again returns the row already kept."""
    if hashlib.sha256(raw_bytes).hexdigest() != parsed.sha256:
        raise ValueError("these bytes are not the report that was read")
    with db.write() as session:
        kept = session.exec(
            select(ConformanceReport).where(ConformanceReport.sha256 == parsed.sha256)
        ).first()
        if kept is not None:
            return kept
        row = ConformanceReport(
            product=parsed.product,
            kind=parsed.kind,
            tool_version=parsed.tool_version,
            finished=parsed.finished,
            recorded_at=clock(),
            passed=parsed.passed,
            sha256=parsed.sha256,
            report=raw_bytes.decode("utf-8"),
            recorded_by=recorded_by,
        )
        session.add(row)
    return row


def passing_report(db: Database, product: str) -> ConformanceReport | None:
    """The newest passing performer report recorded for ``product`` (by the run's end), or
    ``None`` when there is none."""
    with db.read() as session:
        return session.exec(
            select(ConformanceReport)
            .where(
                ConformanceReport.product == product,
                ConformanceReport.kind == PERFORMER,
                col(ConformanceReport.passed).is_(True),
            )
            .order_by(col(ConformanceReport.finished).desc(), col(ConformanceReport.pk).desc())
        ).first()
