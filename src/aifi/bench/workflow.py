"""AIW-I workflow benchmark: how fast a complete study becomes claimable work, and how
many claims per second the worklist sustains with concurrent performers.

Measured against the hub as its own ``aifi serve`` process (embedded SQLite, fsync on, or
PostgreSQL with ``--database-url``), driven over HTTP like real clients:

- **routing latency after the quiet period**: a small hand radiograph study (bone-age
  input) is stored with STOW-RS; from the moment the STOW-RS response arrives, UPS-RS is
  searched every few milliseconds until the study's workitem is there. The latency is that
  time minus the quiet period (DX, set short for the run). Target: p95 < 200 ms;
- **routing latency after a completion signal**: the same for CR studies, whose quiet
  period is set long, and ``POST /api/v1/studies/{uid}/complete`` right after storing;
- **claims per second**: ``workitems`` workitems are created over UPS-RS, then
  ``performers`` threads each search for SCHEDULED work and claim one of the answers
  (Change Workitem State to IN PROGRESS) until none is left; claims/s counts the
  successful claims, and the refused ones (another performer was first) are reported.

There is no peer: Orthanc has no UPS-RS. The figures are absolute and machine-dependent.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydicom.uid import generate_uid

from aifi.conformance.synthetic import radiograph_study
from aifi.dicomweb import multipart
from aifi.hub.serve import serve_subprocess

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
BONE_AGE = "AIFI-BONEAGE"
CLAIM_CODE = "BENCH-CLAIM"
POLL_SECONDS = 0.01
"""How often the benchmark searches for the workitem it waits for (the resolution)."""


@dataclass
class WorkflowConfig:
    studies: int = 40
    """Studies per latency measurement."""
    quiet_seconds: float = 1.0
    """Quiet period for DX during the run (the shipped default is 10 s)."""
    workitems: int = 400
    performers: int = 8
    concurrency: int = 1
    """Studies in flight at once during the latency measurements (each is searched for
    every :data:`POLL_SECONDS` while it waits, which is load on the hub too)."""
    database_url: str | None = None
    workdir: Path | None = None


@dataclass
class WorkflowResults:
    quiet_latency_ms: list[float] = field(default_factory=list)
    signal_latency_ms: list[float] = field(default_factory=list)
    claims: int = 0
    refused: int = 0
    claim_seconds: float = 0.0
    workitems: int = 0
    performers: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "routing after quiet period p50 ms": _pct(self.quiet_latency_ms, 0.5),
            "routing after quiet period p95 ms": _pct(self.quiet_latency_ms, 0.95),
            "routing after completion signal p50 ms": _pct(self.signal_latency_ms, 0.5),
            "routing after completion signal p95 ms": _pct(self.signal_latency_ms, 0.95),
            "claims/s": self.claims / self.claim_seconds if self.claim_seconds else 0.0,
            "claims": self.claims,
            "claims refused (lost race)": self.refused,
            "performers": self.performers,
            "workitems": self.workitems,
        }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rules(path: Path, quiet: float) -> Path:
    config = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    config["quiet_period_seconds"] = {"DX": quiet, "CR": 3600, "default": 3600}
    path.write_text(yaml.safe_dump(config))
    return path


def _stow(client: httpx.Client, dicomweb: str, files_: list[bytes]) -> None:
    boundary = multipart.new_boundary()
    response = client.post(
        dicomweb + "/studies",
        content=multipart.encode([("application/dicom", f) for f in files_], boundary),
        headers={
            "Content-Type": multipart.content_type("application/dicom", boundary),
            "Accept": "application/dicom+json",
        },
    )
    if response.status_code != 200:
        raise RuntimeError(f"STOW-RS answered {response.status_code}: {response.text[:200]}")


def _wait_for_workitem(client: httpx.Client, dicomweb: str, study_uid: str) -> float:
    """Search until the study's bone-age workitem exists; the perf_counter when seen."""
    params = {"StudyInstanceUID": study_uid, "ScheduledWorkitemCodeSequence.CodeValue": BONE_AGE}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = client.get(dicomweb + "/workitems", params=params, headers=JSON)
        if response.status_code == 200 and response.json():
            return time.perf_counter()
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"no workitem for study {study_uid} within 120 s")


def measure_routing(
    dicomweb: str, base: str, config: WorkflowConfig, *, signal: bool
) -> list[float]:
    """Routing latency (ms) per study, beyond the quiet period or after the signal."""

    def one(_: int) -> float:
        study_uid = str(generate_uid())
        modality = "CR" if signal else "DX"
        data = list(radiograph_study(2, study_uid=study_uid, modality=modality))
        with httpx.Client(timeout=60) as client:
            _stow(client, dicomweb, data)
            start = time.perf_counter()
            if signal:
                response = client.post(f"{base}/api/v1/studies/{study_uid}/complete")
                if response.status_code != 202:
                    raise RuntimeError(f"completion signal answered {response.status_code}")
                start = time.perf_counter()
            seen = _wait_for_workitem(client, dicomweb, study_uid)
        waited = seen - start
        return (waited - (0.0 if signal else config.quiet_seconds)) * 1000

    with ThreadPoolExecutor(config.concurrency) as pool:
        return list(pool.map(one, range(config.studies)))


def _claim_workitem(index: int) -> dict[str, Any]:
    return {
        "00100020": {"vr": "LO", "Value": [f"BENCH-{index}"]},
        "00741200": {"vr": "CS", "Value": [random.choice(["HIGH", "MEDIUM", "LOW"])]},
        "00741204": {"vr": "LO", "Value": ["Claim benchmark"]},
        "00404005": {"vr": "DT", "Value": ["20261123100000"]},
        "00404041": {"vr": "CS", "Value": ["READY"]},
        "00404018": {
            "vr": "SQ",
            "Value": [
                {
                    "00080100": {"vr": "SH", "Value": [CLAIM_CODE]},
                    "00080102": {"vr": "SH", "Value": ["99AIFI"]},
                    "00080104": {"vr": "LO", "Value": ["Claim benchmark"]},
                }
            ],
        },
    }


def measure_claims(dicomweb: str, config: WorkflowConfig, results: WorkflowResults) -> None:
    with httpx.Client(timeout=60) as client:
        for i in range(config.workitems):
            response = client.post(
                f"{dicomweb}/workitems?workitem={generate_uid()}",
                json=_claim_workitem(i),
                headers=JSON,
            )
            if response.status_code != 201:
                raise RuntimeError(f"create answered {response.status_code}")
    lock = threading.Lock()
    barrier = threading.Barrier(config.performers)
    search = {
        "ProcedureStepState": "SCHEDULED",
        "ScheduledWorkitemCodeSequence.CodeValue": CLAIM_CODE,
        "limit": "16",
        "includefield": "00080018",
    }

    def performer(_: int) -> None:
        rng = random.Random()
        with httpx.Client(timeout=60, headers=JSON) as client:
            barrier.wait()
            while True:
                found = client.get(f"{dicomweb}/workitems", params=search).json()
                if not found:
                    return
                uid = rng.choice(found)["00080018"]["Value"][0]
                body = {
                    "00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
                    "00081195": {"vr": "UI", "Value": [str(generate_uid())]},
                }
                status = client.put(f"{dicomweb}/workitems/{uid}/state", json=body).status_code
                with lock:
                    if status == 200:
                        results.claims += 1
                    else:
                        results.refused += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(config.performers) as pool:
        list(pool.map(performer, range(config.performers)))
    results.claim_seconds = time.perf_counter() - start
    results.workitems = config.workitems
    results.performers = config.performers


def run(config: WorkflowConfig, say: Callable[[str], None] = print) -> WorkflowResults:
    results = WorkflowResults()
    with tempfile.TemporaryDirectory(prefix="aifi-bench-workflow-") as tmp:
        root = config.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rules = _rules(root / "rules.yaml", config.quiet_seconds)
        # Development mode (no authentication), explicitly: this benchmark measures the
        # Task Manager's routing and the worklist's claim rate with 8 performers racing for
        # the same workitems as fast as they can; with tokens they would share one
        # performer client and meet its rate limit (a client's requests a minute), which
        # would be measured instead of the worklist. The token check's cost per request is
        # in `aifi bench turnaround`, which runs with authentication on.
        with serve_subprocess(
            root / "data",
            root / "hub.log",
            database_url=config.database_url,
            rules_file=rules,
            auth="dev",
        ) as (_process, base):
            dicomweb = base + "/dicomweb"
            say(f"hub at {base} (development mode); DX quiet period {config.quiet_seconds:g} s")
            results.quiet_latency_ms = measure_routing(dicomweb, base, config, signal=False)
            say(
                f"after the quiet period: p50 {_pct(results.quiet_latency_ms, 0.5):.0f} ms, "
                f"p95 {_pct(results.quiet_latency_ms, 0.95):.0f} ms "
                f"(mean {statistics.fmean(results.quiet_latency_ms):.0f} ms)"
            )
            results.signal_latency_ms = measure_routing(dicomweb, base, config, signal=True)
            say(
                f"after a completion signal: p50 {_pct(results.signal_latency_ms, 0.5):.0f} ms, "
                f"p95 {_pct(results.signal_latency_ms, 0.95):.0f} ms"
            )
            measure_claims(dicomweb, config, results)
            say(
                f"claims: {results.claims} by {config.performers} performers in "
                f"{results.claim_seconds:.1f} s = {results.claims / results.claim_seconds:.0f}/s "
                f"({results.refused} refused: another performer was first)"
            )
    return results


def report(results: WorkflowResults) -> str:
    lines = [f"{'metric':<42} {'value':>10}"]
    for name, value in results.summary().items():
        lines.append(
            f"{name:<42} {value:>10.1f}" if isinstance(value, float) else f"{name:<42} {value:>10}"
        )
    target = _pct(results.quiet_latency_ms, 0.95)
    verdict = "MET" if target < 200 else "NOT MET"
    lines.append(f"target: routing p95 < 200 ms beyond the quiet period: {verdict}")
    return "\n".join(lines)


def to_json(results: WorkflowResults) -> str:
    return json.dumps(
        {
            **results.summary(),
            "quiet_latency_ms": results.quiet_latency_ms,
            "signal_latency_ms": results.signal_latency_ms,
        },
        indent=2,
    )
