"""What a conformance run found: :class:`Report` (one run, one target) of :class:`Case`\\ s,
each with a status, the rule or standard section it checks and its evidence.

Pure data and JSON, no I/O beyond :meth:`Report.write_json`. The same report is written as
``report.json`` (this module), ``report.html`` (:mod:`~aifi.conformance_kit.report.html`)
and JUnit XML (:mod:`~aifi.conformance_kit.report.junit`).

A case is *required* or optional. A run passes (:attr:`Report.passed`, exit code 0) only
when every required case has status ``pass`` or ``warn``; a required case that was skipped
did not show conformance, so it fails the run too.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import aifi

REPORT_FORMAT = "aifi-conformance-report/1"
"""``report.json``'s ``format``: readers check it before they trust the fields."""


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    WARN = "warn"
    """Works, but not as a demanding user expects (e.g. slower than the norm time)."""
    SKIP = "skip"
    """Not checked (the target does not offer it, or an earlier case failed); says why."""


class Kind(StrEnum):
    PERFORMER = "performer"
    PACS = "pacs"
    EPD = "epd"


@dataclass
class Case:
    """One check: ``id`` is stable across runs (``claim.transaction-uid``), ``cites`` the
    sections it follows (``"DICOM PS3.4 CC.2.4.3"``, ``"IHE RAD TF-2 RAD-82"``)."""

    id: str
    title: str
    cites: list[str]
    required: bool = True
    status: Status = Status.SKIP
    message: str = ""
    """One or two sentences a person reads: what was expected and what happened."""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    """What was seen: requests and status codes, validator output, objects."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds, by name (``claim_latency``, ``processing``, ``norm``)."""
    seconds: float = 0.0
    """How long the case took to check."""

    def passed(self, message: str = "", **evidence: Any) -> Case:
        return self._set(Status.PASS, message, evidence)

    def failed(self, message: str, **evidence: Any) -> Case:
        return self._set(Status.FAIL, message, evidence)

    def warned(self, message: str, **evidence: Any) -> Case:
        return self._set(Status.WARN, message, evidence)

    def skipped(self, message: str, **evidence: Any) -> Case:
        return self._set(Status.SKIP, message, evidence)

    def _set(self, status: Status, message: str, evidence: dict[str, Any]) -> Case:
        self.status = status
        self.message = message
        if evidence:
            self.evidence.append(evidence)
        return self

    def note(self, **evidence: Any) -> None:
        """Add evidence without deciding the status."""
        self.evidence.append(evidence)

    @property
    def ok(self) -> bool:
        """Counts as shown: passed, or passed with a warning."""
        return self.status in (Status.PASS, Status.WARN)

    @contextmanager
    def timed(self) -> Iterator[Case]:
        """Time the block into :attr:`seconds`; an exception in it fails the case (the kit's
        own error is a finding too, never a crash that loses the report)."""
        started = time.perf_counter()
        try:
            yield self
        except Exception as exc:  # recorded in the report, never lost
            self.failed(f"the check could not finish: {type(exc).__name__}: {exc}")
        finally:
            self.seconds = round(time.perf_counter() - started, 3)


@dataclass
class Report:
    kind: Kind
    target: dict[str, Any]
    """What was tested: the product code and command, the PACS URL or AE, the EPD's base."""
    cases: list[Case] = field(default_factory=list)
    started: str = field(default_factory=lambda: _now())
    finished: str = ""
    tool: str = "aifi conformance"
    tool_version: str = aifi.__version__
    environment: dict[str, str] = field(
        default_factory=lambda: {
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
        }
    )

    def case(self, id: str, title: str, cites: list[str], *, required: bool = True) -> Case:
        """A new case, added to the report in the order it is made."""
        made = Case(id=id, title=title, cites=cites, required=required)
        self.cases.append(made)
        return made

    def find(self, id: str) -> Case:
        for case in self.cases:
            if case.id == id:
                return case
        raise KeyError(id)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(case.ok for case in self.cases if case.required)

    @property
    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for case in self.cases:
            counts[case.status.value] += 1
        return counts

    def failing(self) -> list[Case]:
        """Required cases that did not show conformance."""
        return [case for case in self.cases if case.required and not case.ok]

    def finish(self) -> None:
        self.finished = _now()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "tool": self.tool,
            "tool_version": self.tool_version,
            "kind": self.kind.value,
            "target": self.target,
            "started": self.started,
            "finished": self.finished,
            "environment": self.environment,
            "passed": self.passed,
            "counts": self.counts,
            "cases": [
                {**asdict(case), "status": case.status.value, "ok": case.ok} for case in self.cases
            ],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """A report read back (tools and tests; the hub has its own reader); raises
        :class:`ValueError` for anything that is not a report of this format."""
        if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
            raise ValueError(f"not an aifi conformance report (format {REPORT_FORMAT})")
        try:
            cases = [
                Case(
                    id=str(item["id"]),
                    title=str(item["title"]),
                    cites=[str(cite) for cite in item["cites"]],
                    required=bool(item["required"]),
                    status=Status(item["status"]),
                    message=str(item.get("message", "")),
                    evidence=list(item.get("evidence", [])),
                    timings=dict(item.get("timings", {})),
                    seconds=float(item.get("seconds", 0.0)),
                )
                for item in data["cases"]
            ]
            return cls(
                kind=Kind(data["kind"]),
                target=dict(data["target"]),
                cases=cases,
                started=str(data["started"]),
                finished=str(data["finished"]),
                tool=str(data["tool"]),
                tool_version=str(data["tool_version"]),
                environment=dict(data.get("environment", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a complete aifi conformance report: {exc}") from exc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
