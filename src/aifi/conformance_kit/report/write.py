"""Write a :class:`~aifi.conformance_kit.report.model.Report` into a folder: ``report.json``,
``report.html`` and ``junit.xml``."""

from __future__ import annotations

from pathlib import Path

from aifi.conformance_kit.report.html import render_html
from aifi.conformance_kit.report.junit import render_junit
from aifi.conformance_kit.report.model import Report

JSON_NAME = "report.json"
HTML_NAME = "report.html"
JUNIT_NAME = "junit.xml"


def write_report(report: Report, folder: Path) -> Path:
    """Writes the three files (the folder is made when missing); returns the JSON's path."""
    if not report.finished:
        report.finish()
    folder.mkdir(parents=True, exist_ok=True)
    report.write_json(folder / JSON_NAME)
    (folder / HTML_NAME).write_text(render_html(report), encoding="utf-8")
    (folder / JUNIT_NAME).write_text(render_junit(report), encoding="utf-8")
    return folder / JSON_NAME
