"""Issue 18 point 4: ``aifi clients add --role performer`` records a passing conformance report
(``--conformance-report``), refuses one that is not a passing performer report of the product,
and warns, registering anyway, when no passing report is recorded for a product — on SQLite
and on PostgreSQL (the ``database_url`` fixture). The reports are the kit's own
``report.json`` (:class:`aifi.conformance_kit.report.model.Report`, the writer the hub reads)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aifi.cli import app as cli
from aifi.conformance_kit.report.model import Kind, Report
from aifi.hub.admin.conformance_records import passing_report
from aifi.hub.admin.options import open_database

PRODUCT = "AIFI-BONEAGE"
OTHER = "AIFI-IPE"


def kit_report(
    product: str = PRODUCT, *, kind: Kind = Kind.PERFORMER, failing: str | None = None
) -> dict[str, Any]:
    """A performer run's ``report.json`` as the kit writes it: three required cases that pass
    (one slow, a warning) and an optional one that failed; ``failing`` fails a required one."""
    target = {"product": product, "run": "vendor-ai --hub {hub}"} if kind == Kind.PERFORMER else {}
    report = Report(kind=kind, target=target)
    cites = ["IHE RAD TF-2 RAD-82"]
    report.case("claim.transaction-uid", "Claims with a Transaction UID", cites).passed("ok")
    report.case("results.air", "Results pass IHE AIR", cites).passed("ok")
    report.case("timing.claim", "Claim latency", cites).warned("slower than the norm time")
    report.case("progress", "Reports progress", cites, required=False).failed("no progress")
    if failing:
        report.find(failing).failed("the product did not do it")
    report.finish()
    return report.to_json()


def write(folder: Path, data: dict[str, Any], name: str = "report.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def clients(data_dir: Path, database_url: str | None, *args: str) -> Result:
    """``aifi clients …`` on the hub's database (stdout and stderr apart)."""
    where = ["--data-dir", str(data_dir)]
    if database_url:
        where += ["--database-url", database_url]
    return CliRunner().invoke(cli, ["clients", *args, *where])


def add_performer(data_dir: Path, database_url: str | None, client_id: str, *extra: str) -> Result:
    return clients(
        data_dir,
        database_url,
        "add",
        "--tenant",
        "umc",
        "--role",
        "performer",
        "--auth",
        "client_secret_basic",
        "--client-id",
        client_id,
        *extra,
    )


def registered(data_dir: Path, database_url: str | None) -> dict[str, dict[str, Any]]:
    listed = clients(data_dir, database_url, "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    return {row["client_id"]: row for row in rows}


def test_a_passing_report_is_recorded_and_the_product_registered_without_a_warning(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    path = write(tmp_path / "run", kit_report())
    added = add_performer(
        data_dir, database_url, "boneage", "--product", PRODUCT, "--conformance-report", str(path)
    )
    assert added.exit_code == 0, added.output
    assert "WARNING" not in added.stderr
    assert f"conformance report for {PRODUCT} recorded: passed" in added.stdout

    db, _ = open_database(data_dir, database_url)
    try:
        row = passing_report(db, PRODUCT)
    finally:
        db.dispose()
    assert row is not None and row.passed and row.kind == "performer"
    assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(row.report) == json.loads(path.read_text())

    again = add_performer(data_dir, database_url, "boneage-2", "--product", PRODUCT)
    assert again.exit_code == 0 and "WARNING" not in again.stderr  # the recorded report counts
    shown = registered(data_dir, database_url)
    assert shown["boneage"]["conformance_passed"] == {PRODUCT: True}
    assert set(shown) == {"boneage", "boneage-2"}


def test_a_failing_report_is_refused_and_the_client_not_registered(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    path = write(tmp_path / "run", kit_report(failing="results.air"))
    refused = add_performer(
        data_dir, database_url, "boneage", "--product", PRODUCT, "--conformance-report", str(path)
    )
    assert refused.exit_code == 2
    assert "did not pass" in refused.stderr and "results.air" in refused.stderr
    assert "boneage" not in registered(data_dir, database_url)
    db, _ = open_database(data_dir, database_url)
    try:
        assert passing_report(db, PRODUCT) is None
    finally:
        db.dispose()


def test_a_report_of_another_product_is_refused(tmp_path: Path, database_url: str | None) -> None:
    data_dir = tmp_path / "data"
    path = write(tmp_path / "run", kit_report(OTHER))
    refused = add_performer(
        data_dir, database_url, "boneage", "--product", PRODUCT, "--conformance-report", str(path)
    )
    assert refused.exit_code == 2
    assert f"a report for product {OTHER}, not {PRODUCT}" in refused.stderr
    assert registered(data_dir, database_url) == {}
    db, _ = open_database(data_dir, database_url)
    try:
        assert passing_report(db, OTHER) is None  # not recorded either
    finally:
        db.dispose()


def test_without_a_report_the_operator_is_warned_and_the_client_registered(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    path = write(tmp_path / "run", kit_report())
    added = add_performer(
        data_dir,
        database_url,
        "two-products",
        "--product",
        PRODUCT,
        "--product",
        OTHER,
        "--conformance-report",
        str(path),
    )
    assert added.exit_code == 0, added.output
    warnings = [line for line in added.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1  # for the product without a report only
    assert f"product {OTHER}" in warnings[0]
    assert f"aifi conformance performer --product {OTHER} --run" in warnings[0]
    shown = registered(data_dir, database_url)["two-products"]
    assert shown["products"] == [PRODUCT, OTHER]
    assert shown["conformance_passed"] == {PRODUCT: True, OTHER: False}
    text = clients(data_dir, database_url, "list")
    assert f"conformance={PRODUCT}:passed,{OTHER}:none" in text.stdout


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "not JSON"),
        (json.dumps({"format": "junit"}), "not an aifi conformance report"),
        (json.dumps(kit_report(kind=Kind.PACS)), "a pacs report, not a performer report"),
        (json.dumps({**kit_report(failing="claim.transaction-uid"), "passed": True}), "not pass"),
    ],
    ids=["not-json", "other-format", "pacs-report", "claims-passed-but-failed"],
)
def test_what_is_not_a_passing_performer_report_is_refused(
    tmp_path: Path, content: str, reason: str
) -> None:
    data_dir = tmp_path / "data"
    path = tmp_path / "report.json"
    path.write_text(content)
    refused = add_performer(
        data_dir, None, "boneage", "--product", PRODUCT, "--conformance-report", str(path)
    )
    assert refused.exit_code == 2
    assert reason in refused.stderr
    assert registered(data_dir, None) == {}


def test_the_option_is_refused_for_other_roles(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = write(tmp_path / "run", kit_report())
    refused = clients(
        data_dir,
        None,
        "add",
        "--tenant",
        "umc",
        "--role",
        "hospital",
        "--auth",
        "client_secret_basic",
        "--conformance-report",
        str(path),
    )
    assert refused.exit_code == 2
    assert "--conformance-report is for --role performer" in refused.stderr
    assert registered(data_dir, None) == {}
    hospital = clients(
        data_dir,
        None,
        "add",
        "--tenant",
        "umc",
        "--role",
        "hospital",
        "--auth",
        "client_secret_basic",
    )
    assert hospital.exit_code == 0 and "WARNING" not in hospital.stderr
