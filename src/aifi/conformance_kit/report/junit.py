"""JUnit XML of a report, for CI systems (the de-facto schema of Ant's JUnit task, as read by
Jenkins, GitLab and GitHub Actions): one ``testsuite`` per run, one ``testcase`` per case; a
failed required case is a ``failure``, a failed optional case or a warning is
``system-out`` text on a passing test, a skipped case is ``skipped``."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from aifi.conformance_kit.report.model import Report, Status


def render_junit(report: Report) -> str:
    suites = ET.Element("testsuites")
    failures = len(report.failing())
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"aifi conformance {report.kind.value}",
        tests=str(len(report.cases)),
        failures=str(failures),
        errors="0",
        skipped=str(report.counts[Status.SKIP.value]),
        time=f"{sum(case.seconds for case in report.cases):.3f}",
        timestamp=report.started,
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in report.target.items():
        ET.SubElement(properties, "property", name=f"target.{key}", value=str(value))
    for case in report.cases:
        element = ET.SubElement(
            suite,
            "testcase",
            classname=f"aifi.conformance.{report.kind.value}",
            name=case.id,
            time=f"{case.seconds:.3f}",
        )
        detail = f"{case.title} ({', '.join(case.cites)}): {case.message}"
        if case.status is Status.FAIL and case.required:
            failure = ET.SubElement(element, "failure", message=case.message, type="conformance")
            failure.text = detail + "\n" + json.dumps(case.evidence, indent=2, default=str)
        elif case.status is Status.SKIP:
            reason = case.message if not case.required else f"required, not shown: {case.message}"
            ET.SubElement(element, "skipped", message=reason)
            if case.required:
                failure = ET.SubElement(element, "failure", message=reason, type="not-shown")
        else:
            ET.SubElement(element, "system-out").text = f"{case.status.value}: {detail}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")
