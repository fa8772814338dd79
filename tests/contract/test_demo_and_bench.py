"""`aifi demo` and `aifi bench dicomweb` keep working (tiny sizes; no timing asserted)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from aifi.hub.bench import BenchConfig, report, run
from aifi.hub.demo import run_demo
from aifi.hub.settings import Settings


def test_demo_stores_finds_retrieves_and_renders(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    result = run_demo(Settings(data_dir=tmp_path / "data"), slices=3, series=2, console=console)
    assert result.ok
    assert result.stored == 6
    assert result.identical == 6
    assert result.thumbnail is not None
    assert result.thumbnail.read_bytes().startswith(b"\x89PNG")
    output = console.export_text()
    assert "6/6 instances byte-identical" in output
    assert result.routed == ["AIFI-BONEAGE", "AIFI-FRACTURE"]
    assert result.performed == "COMPLETED" and result.result_series
    assert "AIW-I routing" in output and "AIFI-BONEAGE: COMPLETED" in output
    assert "demo OK" in output


def test_bench_runs_end_to_end_and_reports(tmp_path: Path) -> None:
    config = BenchConfig(
        ct_per_config=2,
        dx_per_config=1,
        qido_instances=40,
        qido_repeats=2,
        wado_repeats=1,
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
    assert any("peak RSS" in line for line in lines)


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
