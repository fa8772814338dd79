"""The hub's reader of the conformance kit's ``report.json`` (issue 18 point 4,
:mod:`aifi.hub.admin.conformance_records`): it checks the format and the kind and derives
"passed" from the cases itself; recording the same file twice keeps one row. The reports are
built here as plain dicts (the hub does not import the kit)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from aifi.hub.admin.conformance_records import (
    parse_report,
    passing_report,
    read_report,
    record_report,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import ConformanceReport


def case(case_id: str, status: str, *, required: bool = True) -> dict[str, Any]:
    return {
        "id": case_id,
        "title": case_id,
        "cites": ["IHE RAD TF-2 RAD-82"],
        "required": required,
        "status": status,
        "ok": status in ("pass", "warn"),
        "message": "",
        "evidence": [],
        "timings": {},
        "seconds": 0.1,
    }


def report(*cases: dict[str, Any], **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": "aifi-conformance-report/1",
        "tool": "aifi conformance",
        "tool_version": "0.9.0",
        "kind": "performer",
        "target": {"product": "AIFI-BONEAGE"},
        "started": "2026-12-09T09:00:00+00:00",
        "finished": "2026-12-09T09:01:00+00:00",
        "environment": {},
        "passed": True,
        "counts": {},
        "cases": list(cases),
    }
    data.update(changes)
    return data


def raw(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("cases", "passed", "not_shown"),
    [
        ([case("a", "pass"), case("b", "warn")], True, ()),
        ([case("a", "pass"), case("b", "fail", required=False)], True, ()),
        ([case("a", "pass"), case("b", "skip")], False, ("b",)),
        ([case("a", "fail"), case("b", "pass"), case("c", "skip")], False, ("a", "c")),
        ([], False, ()),
    ],
    ids=["pass-and-warn", "optional-failed", "required-skipped", "two-not-shown", "no-cases"],
)
def test_passed_is_derived_from_the_cases_not_taken_from_the_file(
    cases: list[dict[str, Any]], passed: bool, not_shown: tuple[str, ...]
) -> None:
    parsed = parse_report(raw(report(*cases, passed=True)))
    assert parsed.passed is passed
    assert parsed.not_shown == not_shown
    assert parsed.product == "AIFI-BONEAGE" and parsed.kind == "performer"
    assert parsed.tool_version == "0.9.0"
    assert parsed.finished == datetime(2026, 12, 9, 9, 1, tzinfo=UTC)


def test_a_pacs_report_names_no_product() -> None:
    parsed = parse_report(raw(report(case("a", "pass"), kind="pacs", target={"url": "x"})))
    assert parsed.kind == "pacs" and parsed.product == "" and parsed.passed


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (raw(report(format="aifi-conformance-report/2")), "format 'aifi-conformance-report/2'"),
        (raw(report(kind="scanner")), "unknown report kind 'scanner'"),
        (raw(report(target={})), "names no product"),
        (raw(report(target={"product": 123})), "names no product"),
        (raw(report(target=["AIFI-BONEAGE"])), "'target' is not an object"),
        (raw(report(cases=[1])), "case 1 is not an object"),
        (raw(report(cases={"a": 1})), "'cases' is not a list"),
        (raw(report({"id": "a", "status": "pass"})), "case 1 has no 'id' or 'required'"),
        (raw(report(case("a", "passed"))), "case a has status 'passed'"),
        (raw(report(case("a", "pass"), finished="")), "no 'finished'"),
        (raw(report(case("a", "pass"), finished="yesterday")), "not a date and time"),
    ],
)
def test_what_is_not_a_complete_report_is_refused_with_the_reason(
    content: bytes, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_report(content)


def test_read_report_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        read_report(tmp_path / "missing.json")


def test_recording_keeps_one_row_per_file_and_finds_the_newest_passing_report(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.migrate()
    try:
        older = raw(report(case("a", "pass"), finished="2026-12-01T10:00:00+00:00"))
        newer = raw(report(case("a", "pass"), finished="2026-12-08T10:00:00+00:00"))
        failed = raw(report(case("a", "fail"), finished="2026-12-09T10:00:00+00:00"))
        for content in (newer, older, failed):  # recorded out of order: newest by its time
            path = tmp_path / "report.json"
            path.write_bytes(content)
            record_report(db, read_report(path), content, recorded_by="operator")
        first = record_report(db, parse_report(older), older)
        again = record_report(db, parse_report(older), older)
        assert first.pk == again.pk
        with db.read() as session:
            assert len(session.exec(select(ConformanceReport)).all()) == 3
        found = passing_report(db, "AIFI-BONEAGE")
        assert found is not None and found.report == newer.decode()
        assert found.recorded_by == "operator" and found.recorded_at is not None
        assert passing_report(db, "AIFI-IPE") is None
        with pytest.raises(ValueError, match="not the report that was read"):
            record_report(db, parse_report(older), newer)
    finally:
        db.dispose()


def test_the_reader_does_not_import_the_kit() -> None:
    """The hub never imports the drivers: the reader stands without the kit."""
    code = (
        "import sys, aifi.hub.admin.conformance_records, aifi.hub.admin.clients_cli; "
        "sys.exit(any(m.startswith('aifi.conformance_kit') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
