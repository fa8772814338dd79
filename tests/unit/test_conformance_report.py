"""The conformance report (issue 18 point 4): the verdict rule, report.json read back,
JUnit XML, and an HTML page that escapes what a target answered."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from aifi.conformance_kit.report import Kind, Report, Status, write_report
from aifi.conformance_kit.report.html import render_html
from aifi.conformance_kit.report.junit import render_junit


def _report() -> Report:
    report = Report(kind=Kind.PERFORMER, target={"product": "AIFI-X", "mode": "run"})
    report.case("a.pass", "Passes", ["DICOM PS3.4 CC.2.4"]).passed("fine", status=200)
    report.case("b.warn", "Warns", ["IHE RAD TF-2 RAD-85"]).warned("slow")
    report.case("c.optional", "Optional", ["x"], required=False).failed("not offered")
    return report


def test_required_cases_decide_and_warnings_count_as_shown() -> None:
    report = _report()
    assert report.passed
    assert report.counts == {"pass": 1, "fail": 1, "warn": 1, "skip": 0}
    report.case("d.skip", "Skipped", ["y"]).skipped("never reached")
    assert not report.passed  # a required case not shown is not a pass
    assert [case.id for case in report.failing()] == ["d.skip"]
    assert not Report(kind=Kind.PACS, target={}).passed  # nothing checked proves nothing


def test_a_failing_check_becomes_a_failed_case_not_a_crash() -> None:
    report = Report(kind=Kind.EPD, target={})
    case = report.case("e.boom", "Boom", ["z"])
    with case.timed():
        raise RuntimeError("the target hung up")
    assert case.status is Status.FAIL and "RuntimeError: the target hung up" in case.message
    assert case.seconds >= 0


def test_report_json_reads_back_and_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    report = _report()
    path = write_report(report, tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["format"] == "aifi-conformance-report/1" and data["passed"] is True
    assert data["cases"][0]["evidence"] == [{"status": 200}]
    again = Report.from_json(data)
    assert again.passed and [c.status for c in again.cases] == [c.status for c in report.cases]
    for bad in ({}, {"format": "x"}, {**data, "cases": [{"id": "x"}]}):
        with pytest.raises(ValueError):
            Report.from_json(bad)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "report.json",
        "report.html",
        "junit.xml",
    }


def test_junit_marks_required_failures_and_skips() -> None:
    report = _report()
    report.case("d.fail", "Fails", ["w"]).failed("refused 0xA900")
    report.case("e.skip", "Skipped", ["v"]).skipped("no C-GET")
    suite = ET.fromstring(render_junit(report)).find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "5" and suite.get("failures") == "2"
    by_name = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert by_name["d.fail"].find("failure") is not None
    assert by_name["e.skip"].find("skipped") is not None
    assert by_name["c.optional"].find("failure") is None  # optional: reported, not failed


def test_html_is_self_contained_and_escapes_the_targets_answers() -> None:
    report = Report(kind=Kind.PACS, target={"url": "http://pacs/<x>"})
    report.case("f.evil", "Evil", ["u"]).failed(
        "<script>alert(1)</script>", answer="<img src=x onerror=alert(1)>"
    )
    page = render_html(report)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in page
    assert "http://" not in page.replace("http://pacs/&lt;x&gt;", "")  # no external asset
    assert 'id="summary"' in page and "FAILED" in page


def test_every_performer_case_is_documented() -> None:
    from aifi.conformance_kit.performer.scenarios import SCENARIOS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "conformance-kit.md").read_text()
    ids = {"connect", "push.answer"} | {case for cases in SCENARIOS.values() for case in cases}
    assert all(f"`{case}`" in doc for case in ids), sorted(c for c in ids if f"`{c}`" not in doc)


def test_a_report_reads_back_field_for_field(tmp_path: Path) -> None:
    report = _report()
    report.cases[0].timings = {"claim_latency": 0.5, "processing": 1.25}
    report.cases[0].seconds = 2.5
    report.cases[1].note(answer="slow", took=12.0)
    report.finish()
    report.write_json(tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert text.endswith("}\n") and '\n  "kind": "performer"' in text
    again = Report.from_json(json.loads(text))
    assert again.to_json() == report.to_json()
    assert again.tool == "aifi conformance" and again.finished == report.finished
    assert again.environment == report.environment and again.started == report.started
    assert again.cases[0].timings == {"claim_latency": 0.5, "processing": 1.25}
    assert again.cases[0].seconds == 2.5 and again.cases[1].evidence[-1]["took"] == 12.0
    assert [c.required for c in again.cases] == [True, True, False]
    assert [c.message for c in again.cases] == ["fine", "slow", "not offered"]
    assert report.finished.endswith("+00:00") and "T" in report.finished


def test_every_verdict_keeps_its_evidence_and_the_json_says_status_and_ok() -> None:
    report = Report(kind=Kind.EPD, target={})
    made = [
        report.case("a", "A", ["x"]).failed("no", status=500),
        report.case("b", "B", ["x"]).warned("slow", seconds=12),
        report.case("c", "C", ["x"]).skipped("not offered", reason="405"),
    ]
    assert [case.evidence for case in made] == [
        [{"status": 500}],
        [{"seconds": 12}],
        [{"reason": "405"}],
    ]
    assert made[2].message == "not offered"
    assert report.find("b") is made[1]
    with pytest.raises(KeyError, match="z"):
        report.find("z")
    data = report.to_json()
    assert data["counts"] == {"pass": 0, "fail": 1, "warn": 1, "skip": 1}
    assert [(c["status"], c["ok"]) for c in data["cases"]] == [
        ("fail", False),
        ("warn", True),
        ("skip", False),
    ]
    minimal = {
        **data,
        "environment": None,
        "cases": [{"id": "m", "title": "M", "cites": [], "required": True, "status": "pass"}],
    }
    del minimal["environment"]
    again = Report.from_json(minimal)
    case = again.cases[0]
    assert (case.message, case.evidence, case.timings, case.seconds) == ("", [], {}, 0.0)
    assert again.environment == {} and again.tool_version == data["tool_version"]
    with pytest.raises(ValueError, match="not an aifi conformance report"):
        Report.from_json([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a complete aifi conformance report: 'kind'"):
        Report.from_json({k: v for k, v in data.items() if k != "kind"})
