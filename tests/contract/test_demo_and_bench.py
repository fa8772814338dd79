"""`aifi demo` and `aifi bench dicomweb` keep working (tiny sizes; no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from aifi.conformance.orthanc import orthanc_unavailable
from aifi.hub.bench import BenchConfig, report, run
from aifi.hub.bench_store_only import NAME as STORE_ONLY
from aifi.hub.demo import run_demo
from aifi.hub.settings import Settings


def test_demo_stores_finds_retrieves_and_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative data folder, as `aifi demo` uses by default
    console = Console(record=True, width=120)
    # The test environment says development mode without auth (tests/conftest.py); the
    # demo runs its hub with the built-in authorization server regardless, with its own
    # clients, and every request of it and of its product processes carries a token.
    settings = Settings(data_dir=Path("data"))
    assert settings.auth == "off" and settings.dev_mode
    result = run_demo(settings, slices=3, series=2, console=console)
    assert result.ok
    assert result.auth == "builtin"
    assert result.anonymous_status == 401
    assert result.credentials is not None
    files = sorted(p.name for p in result.credentials.iterdir())
    assert files == [
        "admin.json",
        "hospital.json",
        "performer-AIFI-BONEAGE.json",
        "performer-AIFI-FRACTURE.json",
        "performer-AIFI-IPE.json",
    ]
    assert all((result.credentials / f).stat().st_mode & 0o777 == 0o600 for f in files)
    assert result.stored == 6
    assert result.identical == 6
    assert result.thumbnail is not None
    assert result.thumbnail.read_bytes().startswith(b"\x89PNG")
    output = console.export_text()
    assert "6/6 instances byte-identical" in output
    # The AI chain: hand (bone age + fracture), wrist (fracture), chest CT (embolism).
    chain = result.chain
    assert sorted(c.product for c in chain.cases) == [
        "AIFI-BONEAGE",
        "AIFI-FRACTURE",
        "AIFI-FRACTURE",
        "AIFI-IPE",
    ], chain
    outcomes = {(c.case, c.product): c.outcome for c in chain.cases}
    assert outcomes[("wrist X-ray", "AIFI-FRACTURE")] == "positive"
    assert outcomes[("contrast chest CT", "AIFI-IPE")] == "positive"
    assert all(c.review in ("not-required", "accepted") for c in chain.cases)
    assert all(c.turnaround_seconds is not None for c in chain.cases)
    if orthanc_unavailable() is None:  # installed: the results are in the PACS's study
        assert chain.pacs_url, output
        assert all(c.delivery == "delivered" and c.in_pacs for c in chain.cases), chain
    assert any("embolism" in note.lower() for note in chain.notifications), chain.notifications
    assert "AI results" in output and "demo OK" in output
    assert "without one: HTTP 401" in output


def test_bench_runs_end_to_end_and_reports(tmp_path: Path) -> None:
    # Server CPU time is counted in clock ticks (10 ms): each measured step must do at
    # least a few ticks' work, or its CPU figure can read 0 (the zero-copy WADO-RS of one
    # 50 MB study takes about 15 ms of server CPU).
    config = BenchConfig(
        ct_per_config=4,
        dx_per_config=1,
        qido_instances=40,
        qido_repeats=2,
        wado_repeats=4,
        rss_gigabytes=0.005,
        with_orthanc=False,
        workdir=tmp_path,
    )
    lines: list[str] = []
    results = run(config, say=lines.append)
    table = report(results)
    assert "QIDO p95 ms" in table
    assert (results.value("QIDO p95 ms", "aifi-hub") or 0) > 0
    assert (results.value("WADO study c1 MB/s", "aifi-hub") or 0) > 0
    assert (results.value("STOW CT 1/req c1 CPU ms/inst", "aifi-hub") or 0) > 0
    assert (results.value("WADO study c1 CPU ms/MB", "aifi-hub") or 0) > 0
    assert any("peak RSS" in line for line in lines)
    # the store-only Python server is measured for STOW-RS alongside the hub
    assert (results.value("STOW CT 1/req c1 inst/s", STORE_ONLY) or 0) > 0
    assert (results.value("STOW DX 1/req c4 MB/s", STORE_ONLY) or 0) > 0
    assert f"ceiling ({STORE_ONLY})" in table


def test_turnaround_bench_runs_end_to_end(tmp_path: Path) -> None:
    from aifi.hub.bench_turnaround import TurnaroundConfig
    from aifi.hub.bench_turnaround import report as turnaround_report
    from aifi.hub.bench_turnaround import run as turnaround_run

    config = TurnaroundConfig(
        studies=3,
        quiet_seconds=0.3,
        interval_seconds=0.2,
        performers_per_product=1,
        workdir=tmp_path,
    )
    results = turnaround_run(config, say=lambda _line: None)
    assert not results.missing
    # hand: bone age + fracture; wrist: fracture; chest CT: embolism
    assert sorted(r.product for r in results.requests) == [
        "AIFI-BONEAGE",
        "AIFI-FRACTURE",
        "AIFI-FRACTURE",
        "AIFI-IPE",
    ]
    assert all(r.compute_seconds > 0 and r.turnaround > 0 for r in results.requests)
    assert "hub overhead p95 ms" in turnaround_report(results)


def test_workflow_bench_runs_end_to_end(tmp_path: Path) -> None:
    from aifi.hub.bench_workflow import WorkflowConfig
    from aifi.hub.bench_workflow import report as workflow_report
    from aifi.hub.bench_workflow import run as workflow_run

    config = WorkflowConfig(
        studies=2, quiet_seconds=0.3, workitems=6, performers=3, workdir=tmp_path
    )
    results = workflow_run(config, say=lambda _line: None)
    assert len(results.quiet_latency_ms) == 2 and len(results.signal_latency_ms) == 2
    assert results.claims == 6
    assert "claims/s" in workflow_report(results)
