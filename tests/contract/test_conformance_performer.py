"""``aifi conformance performer`` (issue 18 point 1), run as a vendor runs it: the real
command in its own process, its own private hub, the product as a process the kit starts.

- The three reference products pass with ``--run``; a push-mode product passes with
  ``--push-url``.
- Deliberately broken performers (:mod:`tests.support.broken_performer`), one flaw each,
  are each caught with the case and rule named; a push endpoint that answers 500 too.
- The reports (JSON, HTML, JUnit XML) are written whatever the verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from aifi.cli import app
from tests.support.push_product import running_push_product

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = {
    "AIFI-BONEAGE": "skeletal-age",
    "AIFI-FRACTURE": "fracture-detection",
    "AIFI-IPE": "incidental-pe",
}


def kit(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    """Runs the kit; its exit code, report.json and output."""
    report = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "aifi", "conformance", "performer", "--report", str(report), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = run.stdout + run.stderr
    assert (report / "report.json").exists(), output
    return run.returncode, json.loads((report / "report.json").read_text()), output


def cases(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {case["id"]: case for case in report["cases"]}


def reference_command(name: str) -> str:
    return f"aifi vendors run {name} --hub {{dicomweb}} --credentials {{credentials}}"


@pytest.mark.parametrize("code", sorted(PRODUCTS))
def test_the_reference_products_pass(tmp_path: Path, code: str) -> None:
    code_, report, output = kit(
        tmp_path, "--product", code, "--run", reference_command(PRODUCTS[code])
    )
    assert code_ == 0, output
    assert report["passed"] and report["kind"] == "performer"
    found = cases(report)
    assert {
        "connect",
        "claim.transaction-uid",
        "claim.own-product",
        "retrieve.inputs",
        "results.air",
        "results.study",
        "complete.outputs",
        "progress",
        "timing",
        "negative.explicit",
        "cancel",
        "priority.high",
        "not-for-product",
    } <= set(found)
    assert all(case["status"] == "pass" for case in found.values()), output
    timing = found["timing"]["timings"]
    assert timing["norm"] > 0 and "claim_latency" in timing and "processing" in timing
    # dciodvfy checked every result (CI installs dicom3tools)
    air = found["results.air"]["evidence"][0]
    assert air["dciodvfy"] != "not installed" or not _ci()
    assert {"routing", "kit", "total"} <= set(timing)  # measured by `aifi bench conformance`
    junit = ET.parse(tmp_path / "report" / "junit.xml").getroot()
    assert junit.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]
    assert (tmp_path / "report" / "product.log").exists()
    # the operator records the passing report when registering the product for production
    registered = CliRunner().invoke(
        app,
        [
            "clients",
            "add",
            "--data-dir",
            str(tmp_path / "hub"),
            "--tenant",
            "default",
            "--role",
            "performer",
            "--product",
            code,
            "--generate-key",
            "--hub-url",
            "http://127.0.0.1:8000",
            "--conformance-report",
            str(tmp_path / "report" / "report.json"),
        ],
    )
    assert registered.exit_code == 0, registered.output
    assert f"conformance report for {code} recorded: passed" in registered.output
    assert "WARNING" not in registered.output


def _ci() -> bool:
    import os

    return bool(os.environ.get("CI"))


def test_a_push_mode_product_passes(tmp_path: Path) -> None:
    with running_push_product("AIFI-FRACTURE") as product:
        code, report, output = kit(
            tmp_path, "--product", "AIFI-FRACTURE", "--push-url", product.url
        )
    assert code == 0, output
    found = cases(report)
    assert found["push.answer"]["status"] == "pass"
    assert found["results.air"]["status"] == "pass"
    assert found["negative.explicit"]["status"] == "pass"
    # what the kit's own adapter does is not the product's to prove
    assert found["claim.transaction-uid"]["status"] == "skip"
    assert not found["claim.transaction-uid"]["required"]
    assert product.count >= 2


def test_a_push_endpoint_that_answers_500_fails(tmp_path: Path) -> None:
    with running_push_product("AIFI-FRACTURE", fail=True) as product:
        code, report, output = kit(
            tmp_path, "--product", "AIFI-FRACTURE", "--push-url", product.url, "--cases", "main"
        )
    assert code == 1, output
    answer = cases(report)["push.answer"]
    assert answer["status"] == "fail"
    assert "500" in answer["message"], answer
    assert product.count >= 1


FLAWS = [
    # flaw, scenarios, the case that must fail, what its finding must name
    ("no-algorithm-id", "main", "results.air", "algorithm identification"),
    ("wrong-study", "main", "results.study", "result in the inputs' study"),
    ("no-outputs", "main", "complete.outputs", "Output Information Sequence"),
    ("ignores-cancel", "cancel", "cancel", "ignored the cancellation request"),
    ("no-transaction-uid", "main", "claim.transaction-uid", "Transaction UID (0008,1195)"),
    ("other-product", "main", "claim.own-product", "another product's work"),
]


@pytest.mark.parametrize(
    ("flaw", "scenarios", "case_id", "named"), FLAWS, ids=[flaw[0] for flaw in FLAWS]
)
def test_a_broken_performer_is_caught(
    tmp_path: Path, flaw: str, scenarios: str, case_id: str, named: str
) -> None:
    command = (
        f"{sys.executable} -m tests.support.broken_performer {flaw} --hub {{dicomweb}} "
        "--credentials {credentials} --product AIFI-BONEAGE"
    )
    code, report, output = kit(
        tmp_path,
        "--product",
        "AIFI-BONEAGE",
        "--run",
        command,
        "--cases",
        scenarios,
        "--timeout",
        "10",
    )
    assert code == 1, output
    caught = cases(report)[case_id]
    assert caught["status"] == "fail" and caught["required"], caught
    assert named in caught["message"], caught
    assert caught["cites"], caught
    html = (tmp_path / "report" / "report.html").read_text()
    assert "FAILED" in html and case_id in html


def test_options_that_cannot_work_are_refused_before_anything_starts(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "aifi",
            "conformance",
            "performer",
            "--product",
            "AIFI-BONEAGE",
            "--report",
            str(tmp_path),
            "--wait",
            "--run",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and "exactly one of" in run.stderr
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "aifi",
            "conformance",
            "performer",
            "--product",
            "NO-SUCH",
            "--report",
            str(tmp_path),
            "--run",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and "no product NO-SUCH" in run.stderr


def test_wait_prints_what_the_vendor_needs_and_waits_for_the_product(tmp_path: Path) -> None:
    kit_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aifi",
            "conformance",
            "performer",
            "--product",
            "AIFI-BONEAGE",
            "--wait",
            "--cases",
            "main",
            "--report",
            str(tmp_path / "report"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert kit_process.stdout is not None
    seen: dict[str, str] = {}
    for line in kit_process.stdout:
        if line.startswith("kit hub: "):
            seen["dicomweb"] = line.split("(DICOMweb ", 1)[1].rstrip(")\n")
        elif line.startswith("credentials: "):
            seen["credentials"] = line.split(": ", 1)[1].strip()
        if line.startswith("start the product"):
            break
    assert set(seen) == {"dicomweb", "credentials"}, seen
    product = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aifi",
            "vendors",
            "run",
            "skeletal-age",
            "--hub",
            seen["dicomweb"],
            "--credentials",
            seen["credentials"],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        rest = kit_process.communicate(timeout=180)[0]
    finally:
        product.terminate()
        product.wait(timeout=30)
    assert kit_process.returncode == 0, rest
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["target"]["mode"] == "wait" and report["passed"]
