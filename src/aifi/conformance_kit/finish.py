"""The end of every kit run: write the report, print the verdict, choose the exit code."""

from __future__ import annotations

from pathlib import Path

import typer

from aifi.conformance_kit.report import Report, Status, write_report

EXIT_PASSED = 0
EXIT_FAILED = 1
"""A required case was not shown (failed, or skipped)."""
EXIT_UNUSABLE = 2
"""The kit could not test at all (bad options, its own hub did not start)."""


def finish(report: Report, folder: Path) -> int:
    """Writes ``report.json``, ``report.html`` and ``junit.xml`` into ``folder``, prints one
    line per case and the verdict; returns the exit code (0 only when every required case
    passed)."""
    written = write_report(report, folder)
    marks = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.WARN: "WARN", Status.SKIP: "SKIP"}
    for case in report.cases:
        flag = "" if case.required else " (optional)"
        typer.echo(f"{marks[case.status]:4}  {case.id}{flag}: {case.message}")
    counts = ", ".join(f"{count} {status}" for status, count in report.counts.items())
    verdict = "PASSED" if report.passed else "FAILED"
    typer.echo(f"{verdict} ({counts}); report: {written} and {folder / 'report.html'}")
    return EXIT_PASSED if report.passed else EXIT_FAILED
