"""FHIR through the gateway (``aifi bench gateway-fhir``, issue 17 "Performance"): the same
read and search asked of the hub directly (with the pseudonyms it holds) and of the
hospital's gateway (with the hospital's own identifiers, which the gateway pseudonymises,
relays to the hub and re-identifies in the answer), in the same run, interleaved.

Set-up: ``aifi serve`` (development mode, no authentication) and ``aifi gateway serve``
(development mode, its FHIR facade without authentication, so both sides carry the same
work) as child processes on this machine; one generated hand radiograph sent to the
gateway's DIMSE SCP, so that the hub holds an ImagingStudy, a Patient and the Task of the
routed bone-age product. Then ``rounds`` rounds; in each, every request once at the hub and
once at the gateway, which first alternating. Printed per request: p50 and p95 at each,
and the gateway's p95 minus the hub's. Target: at most 20 ms.

Each side is timed by a persistent ``httpx.Client`` (one connection each), so the numbers
are the server's time plus loopback, not connection set-up.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation  # type: ignore[attr-defined]

from aifi.conformance.pilot_studies import Patient, hand_xray
from aifi.gateway.serve import gateway_subprocess
from aifi.hub.serve import serve_subprocess

TARGET_MS = 20.0
FHIR_JSON = {"Accept": "application/fhir+json"}
PATIENT_ID = "BENCH-FHIR-1"
ACCESSION = "BENCHACC1"


@dataclass
class GatewayFhirConfig:
    rounds: int = 200
    workdir: Path | None = None


@dataclass
class Timing:
    """One request's latencies (milliseconds) at the hub and through the gateway."""

    name: str
    hub_ms: list[float] = field(default_factory=list)
    gateway_ms: list[float] = field(default_factory=list)

    @staticmethod
    def _p(values: list[float], q: int) -> float:
        if len(values) < 2:
            return values[0] if values else 0.0
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    def summary(self) -> dict[str, float]:
        return {
            "hub_p50_ms": round(self._p(self.hub_ms, 50), 2),
            "hub_p95_ms": round(self._p(self.hub_ms, 95), 2),
            "gateway_p50_ms": round(self._p(self.gateway_ms, 50), 2),
            "gateway_p95_ms": round(self._p(self.gateway_ms, 95), 2),
            "p95_difference_ms": round(self._p(self.gateway_ms, 95) - self._p(self.hub_ms, 95), 2),
        }


@dataclass
class GatewayFhirResults:
    rounds: int
    timings: list[Timing]

    @property
    def met(self) -> bool:
        return all(t.summary()["p95_difference_ms"] <= TARGET_MS for t in self.timings)


def _send_study(port: int) -> None:
    """The hand radiograph over one association (its end tells the gateway the study is
    complete, so the hub routes it at once)."""
    patient = Patient(name="Bench^Fhir", patient_id=PATIENT_ID, birth_date="20150101", sex="F")
    datasets = hand_xray(age_years=10, patient=patient, accession=ACCESSION)
    ae = AE(ae_title="BENCHMOD")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation, "1.2.840.10008.1.2.1")
    association = ae.associate("127.0.0.1", port, ae_title="AIFI-GW")
    if not association.is_established:
        raise RuntimeError("the gateway's DIMSE SCP refused the association")
    try:
        for ds in datasets:
            status = association.send_c_store(ds)
            if getattr(status, "Status", None) != 0:
                raise RuntimeError(f"C-STORE to the gateway failed: {status}")
    finally:
        association.release()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def _total(client: httpx.Client, path: str) -> int:
    response = client.get(path, headers=FHIR_JSON)
    return int(response.json().get("total", 0)) if response.status_code == 200 else 0


def _requests(hub: httpx.Client, gateway: httpx.Client) -> list[tuple[str, str, str]]:
    """(name, hub path, gateway path) of the same question on both sides."""
    study = hub.get("/ImagingStudy", headers=FHIR_JSON).json()["entry"][0]["resource"]
    pseudo_study = study["id"]
    hub_patient = study["subject"]["identifier"]
    hub_accession = next(i["value"] for i in study["identifier"] if i.get("type", {}).get("coding"))
    original = gateway.get("/ImagingStudy", headers=FHIR_JSON).json()["entry"][0]["resource"]
    original_study = original["id"]
    gateway_patient = original["subject"]["identifier"]
    patient_ref = original["subject"]["reference"]
    hub_patient_ref = study["subject"]["reference"]
    hub_token = f"{hub_patient['system']}|{hub_patient['value']}"
    gateway_token = f"{gateway_patient['system']}|{gateway_patient['value']}"
    return [
        ("read ImagingStudy", f"/ImagingStudy/{pseudo_study}", f"/ImagingStudy/{original_study}"),
        ("read Patient", f"/{hub_patient_ref}", f"/{patient_ref}"),
        (
            "search Task by patient identifier",
            f"/Task?patient:identifier={hub_token}",
            f"/Task?patient:identifier={gateway_token}",
        ),
        (
            "search ImagingStudy by accession",
            f"/ImagingStudy?identifier={hub_accession}",
            f"/ImagingStudy?identifier={ACCESSION}",
        ),
        (
            "search DiagnosticReport by patient",
            f"/DiagnosticReport?patient={hub_patient_ref}",
            f"/DiagnosticReport?patient={patient_ref}",
        ),
    ]


def _timed(client: httpx.Client, path: str) -> float:
    start = time.perf_counter()
    response = client.get(path, headers=FHIR_JSON)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {client.base_url}{path}: {response.status_code} {response.text}")
    return elapsed


@contextmanager
def _workdir(config: GatewayFhirConfig) -> Iterator[Path]:
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
        yield config.workdir
        return
    with tempfile.TemporaryDirectory(prefix="aifi-bench-gwfhir-") as folder:
        yield Path(folder)


def run(config: GatewayFhirConfig, say: Callable[[str], None] = print) -> GatewayFhirResults:
    with _workdir(config) as workdir, ExitStack() as stack:
        say("hub ...")
        _process, hub_url = stack.enter_context(
            serve_subprocess(workdir / "hub", workdir / "hub.log", auth="dev")
        )
        say("gateway ...")
        env = {**os.environ, "AIFI_GATEWAY_AUTH": "off"}
        gateway = stack.enter_context(
            gateway_subprocess(workdir / "gateway", hub_url, workdir / "gateway.log", env=env)
        )
        hub = stack.enter_context(httpx.Client(base_url=hub_url + "/fhir", timeout=30))
        gw = stack.enter_context(httpx.Client(base_url=gateway.url + "/fhir", timeout=30))
        say("a hand radiograph through the gateway, until the hub has its Task ...")
        _send_study(gateway.dimse_port)
        _wait(lambda: _total(hub, "/Task") >= 1, 120, "the hub's Task")
        _wait(lambda: _total(gw, "/ImagingStudy") >= 1, 60, "the study at the gateway's FHIR")
        requests = _requests(hub, gw)
        timings = [Timing(name) for name, _, _ in requests]
        for _ in range(10):  # warm-up: imports, caches, connections
            for _name, hub_path, gw_path in requests:
                _timed(hub, hub_path)
                _timed(gw, gw_path)
        say(f"{config.rounds} rounds ...")
        for round_number in range(config.rounds):
            for timing, (_name, hub_path, gw_path) in zip(timings, requests, strict=True):
                if round_number % 2:
                    timing.gateway_ms.append(_timed(gw, gw_path))
                    timing.hub_ms.append(_timed(hub, hub_path))
                else:
                    timing.hub_ms.append(_timed(hub, hub_path))
                    timing.gateway_ms.append(_timed(gw, gw_path))
        return GatewayFhirResults(config.rounds, timings)


def report(results: GatewayFhirResults) -> str:
    lines = [
        f"FHIR read and search: the hub directly vs through the gateway ({results.rounds} "
        "rounds, interleaved)",
        f"{'request':38} {'hub p50':>8} {'hub p95':>8} {'gw p50':>8} {'gw p95':>8} {'Δp95':>7}",
    ]
    for timing in results.timings:
        s = timing.summary()
        lines.append(
            f"{timing.name:38} {s['hub_p50_ms']:8.1f} {s['hub_p95_ms']:8.1f} "
            f"{s['gateway_p50_ms']:8.1f} {s['gateway_p95_ms']:8.1f} {s['p95_difference_ms']:7.1f}"
        )
    verdict = "met" if results.met else "NOT met"
    lines.append(f"target: gateway p95 within {TARGET_MS:.0f} ms of the hub's — {verdict}")
    return "\n".join(lines)


def to_json(results: GatewayFhirResults) -> dict[str, Any]:
    return {
        "rounds": results.rounds,
        "target_ms": TARGET_MS,
        "met": results.met,
        "requests": {t.name: t.summary() for t in results.timings},
    }
