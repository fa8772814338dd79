"""`aifi demo` (the two-tier chain: modality -> gateway -> hub -> products -> gateway ->
PACS) and `aifi bench dicomweb` keep working (tiny sizes; no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from aifi.bench.dicomweb import BenchConfig, report, run
from aifi.bench.store_only import NAME as STORE_ONLY
from aifi.conformance.dcmtk import dcmtk_tool
from aifi.conformance.orthanc import orthanc_unavailable
from aifi.demo import DemoResult, run_demo
from aifi.demo import peers as demo_peers
from aifi.hub.settings import Settings


def _run_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DemoResult, str]:
    monkeypatch.chdir(tmp_path)  # a relative data folder, as `aifi demo` uses by default
    console = Console(record=True, width=200)
    # The test environment says development mode without auth (tests/conftest.py); the
    # demo runs its hub with the built-in authorization server and a tenant requiring
    # de-identified data regardless, and its gateway with the hospital's credentials.
    settings = Settings(data_dir=Path("data"))
    assert settings.auth == "off" and settings.dev_mode
    result = run_demo(settings, slices=3, series=2, console=console)
    return result, console.export_text()


def _check_chain(result: DemoResult, output: str) -> None:
    assert result.ok, output
    assert "demo OK" in output
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
    assert all(c.delivered_seconds is not None for c in chain.cases)
    # every result came back re-identified: original study, patient, references
    assert all(c.reidentified and c.files for c in chain.cases), chain
    assert any("embolism" in note.lower() for note in chain.notifications), chain.notifications
    # The three views of one study: the hub holds pseudonyms only, the PACS the original.
    views = result.views
    assert "Three views of one study" in output
    rows = {label: (sent, hub, back) for label, sent, hub, back in views.rows}
    sent, hub, back = rows["Patient ID"]
    assert sent == back and hub != sent and sent in output and hub in output
    sent, hub, back = rows["Patient's Name"]
    assert sent == back and hub != sent
    sent, hub, back = rows["Study Instance UID"]
    assert sent == back and hub.startswith("2.25.") and hub != sent
    assert rows["Accession Number"][0] == rows["Accession Number"][2] != rows["Accession Number"][1]
    assert rows["Patient's Birth Date"][1] in ("—", "(empty)")
    assert rows["Patient Identity Removed"][1] == "YES"
    assert "Basic Application Confidentiality Profile" in rows["De-identification Method"][1]
    assert "pseudonymised instances" in rows["References (0008,1155)"][1]
    assert rows["References (0008,1155)"][2].endswith("→ original instances")
    assert views.identity_at_hub == [] and views.found_by_original_id == 0
    assert "original identifiers in the study's metadata: none" in output


def test_demo_runs_the_two_tier_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, output = _run_demo(tmp_path, monkeypatch)
    _check_chain(result, output)
    assert result.auth == "builtin"
    assert result.anonymous_status == 401
    assert "without one: HTTP 401" in output
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
    # Part 1: the guard refuses identified data; the pseudonymised CT round-trips.
    assert result.guard_refused and "C411" in result.guard
    assert result.stored == 6
    assert result.identical == 6
    assert "6/6 instances byte-identical" in output
    assert result.thumbnail is not None
    assert result.thumbnail.read_bytes().startswith(b"\x89PNG")
    assert result.gateway_dir == (tmp_path / "data" / "demo" / "gateway").resolve()
    assert (result.gateway_dir / "pseudonym.key").stat().st_mode & 0o777 == 0o600
    if demo_peers.storescu_binary() is not None:
        assert result.chain.scu == "DCMTK storescu"
    if orthanc_unavailable() is None:  # installed: the results are in the PACS's study
        assert result.chain.pacs_url, output
        assert all(c.back == "in Orthanc" for c in result.chain.cases), result.chain
        assert all(f.startswith(result.chain.pacs_url) for c in result.chain.cases for f in c.files)
    else:  # absent: the gateway's own store (the other test checks it in detail)
        assert all(c.back == "in the gateway store" for c in result.chain.cases)


def test_demo_without_dcmtk_and_orthanc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh machine: pynetdicom plays the modality, the gateway keeps the re-identified
    results in its own store (data_dir/results)."""
    if demo_peers.storescu_binary() is None and orthanc_unavailable() is not None:
        pytest.skip("DCMTK and Orthanc are absent: the other demo test runs this path")
    monkeypatch.setattr(demo_peers, "storescu_binary", lambda: None)
    monkeypatch.setattr(demo_peers, "orthanc_unavailable", lambda: "hidden by the test")
    result, output = _run_demo(tmp_path, monkeypatch)
    _check_chain(result, output)
    assert result.chain.scu.startswith("pynetdicom")
    assert result.chain.pacs_url is None
    assert "the gateway keeps the results in its own store" in output
    assert result.gateway_dir is not None
    results = result.gateway_dir / "results"
    for case in result.chain.cases:
        assert case.back == "in the gateway store"
        assert all(Path(f).is_file() and Path(f).is_relative_to(results) for f in case.files)


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
    from aifi.bench.turnaround import TurnaroundConfig
    from aifi.bench.turnaround import report as turnaround_report
    from aifi.bench.turnaround import run as turnaround_run

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
    from aifi.bench.workflow import WorkflowConfig
    from aifi.bench.workflow import report as workflow_report
    from aifi.bench.workflow import run as workflow_run

    config = WorkflowConfig(
        studies=2, quiet_seconds=0.3, workitems=6, performers=3, workdir=tmp_path
    )
    results = workflow_run(config, say=lambda _line: None)
    assert len(results.quiet_latency_ms) == 2 and len(results.signal_latency_ms) == 2
    assert results.claims == 6
    assert "claims/s" in workflow_report(results)


@pytest.mark.slow
@pytest.mark.dcmtk
@pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="needs DCMTK (storescu, storescp)")
def test_gateway_bench_runs_end_to_end(tmp_path: Path) -> None:
    from aifi.bench.gateway import GatewayBenchConfig
    from aifi.bench.gateway import report as gateway_report
    from aifi.bench.gateway import run as gateway_run

    config = GatewayBenchConfig(
        ct_instances=12,
        big_study_gigabytes=0.01,
        hand_studies=1,
        rounds=2,
        workdir=tmp_path / "bench",
    )
    results = gateway_run(config, say=lambda _line: None)
    assert set(results.rates) == {"bare pynetdicom SCP", "DCMTK storescp", "gateway"}
    assert all(rate > 0 for rate in results.rates.values())
    assert results.forward_rate > 0 and results.peak_rss_mb > 0
    assert results.rate_hub_normal_priority > 0 and len(results.round_ratios) == 2
    assert results.receive_cpu_ms_per_instance > 0 and results.worker_cpu_ms_per_instance > 0
    assert results.hub_cpu_ms_per_instance > 0
    assert 0 < results.pseudonymise_cpu_ms <= results.pseudonymise_file_cpu_ms
    [(round_trip, compute)] = results.round_trips
    assert round_trip > compute > 0  # the skeletal-age result came back into the "PACS"
    text = gateway_report(results)
    assert "gateway / bare pynetdicom SCP" in text and "re-identified result in the PACS" in text
