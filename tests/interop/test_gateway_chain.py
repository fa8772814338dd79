"""The whole two-tier chain with real processes (issue 15, "Tests that must exist"):

modality (DCMTK storescu) -> ``aifi gateway serve`` -> ``aifi serve`` (authentication on,
``require_deidentified`` on) -> the reference products as UPS-RS performers -> results back
through the gateway, re-identified, into the PACS (Orthanc with DICOMweb, or DCMTK's
storescp when Orthanc is absent).

- A PHI-planted corpus (:func:`tests.support.gateway.planted_study`: every attribute of
  PS3.15 Table E.1-1 a generator can fill, nested sequences, private elements, the
  patient's name inside the descriptions, two character sets) goes through; a scan of
  every file the hub holds (DICOM, SQLite database with its WAL), of the hub's log (its
  own loggers at DEBUG, the access log at INFO) and of everything the performers received
  (UPS-RS workitems, WADO-RS, metadata, QIDO-RS) finds no planted value and no original
  UID, while the same scan finds them all in what the modality sent; the results arrive
  in the PACS with the original patient, study and instance references.
- A hub that answers 403 (the gateway's client lacks ``dicomweb.write``) shows in
  ``GET /api/v1/gateway/status`` and ``aifi gateway status`` with a reason that says what
  to fix, and nothing is lost.
- The hub down for 60 s while a study is forwarded: once it is back (same port, same data),
  every instance arrives exactly once and the study is routed.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread

from aifi.conformance.dcmtk import dcmtk_tool, require_dcmtk_tool
from aifi.conformance.orthanc import OrthancPeer, orthanc_unavailable
from aifi.conformance.pilot_studies import chest_ct, hand_xray
from aifi.hub.admin.local_clients import LocalClients, register_local_clients
from aifi.hub.auth.clients import ClientRegistry
from aifi.hub.persistence.database import Database
from aifi.hub.serve import free_port, wait_for_port
from aifi.hub.settings import Settings
from aifi.oauth_client import ClientCredentials, Credentials
from aifi.vendors.performer import Performer
from aifi.vendors.products import PRODUCTS
from tests.support.gateway import (
    CT_PATIENT,
    HAND_PATIENT,
    GatewayProcess,
    HubProcess,
    Planted,
    Scanner,
    gateway_process,
    planted_study,
    storescu,
)
from tests.support.wait import hold, wait_until

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="DCMTK storescu not installed"),
]

REVIEWER = "Chain^Reviewer"
LIMITED_SCOPES = ("dicomweb.read", "results.read", "worklist.requester")
"""A hospital client that may not store (no ``dicomweb.write``)."""


# -- the PACS ---------------------------------------------------------------------------------


class Pacs:
    """Where the gateway delivers results: Orthanc (DICOMweb) when installed, else DCMTK's
    storescp (C-STORE)."""

    def __init__(self, stack: ExitStack, root: Path) -> None:
        self.orthanc: OrthancPeer | None = None
        self.folder = root / "pacs"
        if orthanc_unavailable() is None:
            self.orthanc = stack.enter_context(OrthancPeer())
            self.target = self.orthanc.dicomweb_url
        else:
            self.folder.mkdir(parents=True)
            port = free_port()
            log = (root / "storescp.log").open("ab")
            stack.callback(log.close)
            process = subprocess.Popen(
                [
                    require_dcmtk_tool("storescp"),
                    "--output-directory",
                    str(self.folder),
                    "-aet",
                    "PACS",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(process.wait, 20)
            stack.callback(process.terminate)
            assert wait_for_port(port, process, 30), "storescp did not start"
            self.target = f"dimse://PACS@127.0.0.1:{port}"

    def instances(self) -> list[Dataset]:
        if self.orthanc is not None:
            return [
                dcmread(io.BytesIO(self.orthanc.instance_file(i)))
                for i in self.orthanc.ids("instances")
            ]
        out: list[Dataset] = []
        for path in sorted(self.folder.glob("*")):
            try:
                out.append(dcmread(path))
            except Exception:  # storescp is still writing it: read it next time
                continue
        return out


# -- performers that record what they receive ----------------------------------------------------


class Recorder:
    """An httpx response hook: every response a performer receives (status line, headers,
    body) as a file of its own, for the scan."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.kinds: Counter[str] = Counter()
        self.workitems: set[str] = set()
        self._lock = threading.Lock()
        self._n = 0

    @staticmethod
    def kind(response: httpx.Response) -> str:
        path = response.request.url.path
        if "/workitems" in path:
            return "workitem"
        if path.endswith("/metadata"):
            return "metadata"
        if response.headers.get("content-type", "").startswith("multipart/related"):
            return "wado"
        if "/oauth/" in path:
            return "token"
        return "other"

    def hook(self, response: httpx.Response) -> None:
        response.read()
        kind = self.kind(response)
        head = f"{response.request.method} {response.request.url} -> {response.status_code}\n"
        head += "".join(f"{k}: {v}\n" for k, v in response.headers.items())
        with self._lock:
            self._n += 1
            n = self._n
            if response.status_code == 200:  # what counts as received, for the checks
                self.kinds[kind] += 1
        name = f"{n:05d}-{kind}.bin"
        (self.folder / name).write_bytes(head.encode() + b"\n" + response.content)
        if kind == "workitem" and response.status_code == 200 and response.content:
            body = response.json()
            for item in body if isinstance(body, list) else [body]:
                uid = item.get("00080018", {}).get("Value", [None])[0]
                if uid:
                    with self._lock:
                        self.workitems.add(str(uid))

    def client(self, auth: ClientCredentials) -> httpx.Client:
        return httpx.Client(timeout=60, auth=auth, event_hooks={"response": [self.hook]})


@dataclass
class Chain:
    root: Path
    hub: HubProcess
    clients: LocalClients
    limited_credentials: Path
    pacs: Pacs
    gateway: GatewayProcess
    recorder: Recorder
    performer_clients: dict[str, httpx.Client] = field(default_factory=dict)

    @property
    def dicomweb(self) -> str:
        return self.hub.url + "/dicomweb"


def _limited_client(hub_dir: Path, hub_url: str, path: Path) -> Path:
    """A hospital client without ``dicomweb.write``, registered as ``aifi clients add``
    would (before the hub starts)."""
    settings = Settings(data_dir=hub_dir)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
        registration = ClientRegistry(db).add(
            tenant=settings.default_tenant,
            role="hospital",
            auth_method="client_secret_basic",
            scopes=LIMITED_SCOPES,
            description="gateway chain test: may not store",
        )
    finally:
        db.dispose()
    Credentials(
        client_id=registration.client.client_id,
        token_url=hub_url + "/oauth/token",
        secret=registration.secret,
    ).write(path)
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("chain")
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    hub_dir = root / "hub"
    clients = register_local_clients(
        Settings(data_dir=hub_dir),
        hub_url,
        root / "credentials",
        products=[p.code for p in PRODUCTS.values()],
        label="gateway chain test",
    )
    limited = _limited_client(hub_dir, hub_url, root / "credentials" / "limited.json")
    with ExitStack() as stack:
        hub = stack.enter_context(
            HubProcess(hub_dir, root / "hub.log", port, {"AIFI_REQUIRE_DEIDENTIFIED": "true"})
        )
        pacs = Pacs(stack, root)
        gateway = stack.enter_context(
            gateway_process(
                root / "gateway",
                hub.url,
                root / "gateway.log",
                credentials=clients.hospital,
                pacs=pacs.target,
            )
        )
        recorder = Recorder(root / "performer-received")
        chain = Chain(root, hub, clients, limited, pacs, gateway, recorder)
        stop = threading.Event()
        threads = []
        for product in PRODUCTS.values():
            client = recorder.client(clients.performer_auth(product.code))
            stack.callback(client.close)
            chain.performer_clients[product.code] = client
            performer = Performer(
                chain.dicomweb,
                product.code,
                product.ae_title,
                product.factory(),
                client=client,
                watch_cancel=False,  # no event channel: everything received is HTTP, recorded
            )
            thread = threading.Thread(
                target=performer.run,
                args=(stop,),
                kwargs={"poll_seconds": 0.5, "events": False},
                daemon=True,
            )
            thread.start()
            threads.append(thread)

        def stop_performers() -> None:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

        stack.callback(stop_performers)
        yield chain


def _write(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _uids(ds: Dataset, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) of every UI value at every depth (path: keywords joined by "/")."""
    for element in ds:
        where = f"{path}/{element.keyword or element.tag}"
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _uids(item, where)
        elif element.VR == "UI" and element.value:
            values = element.value if isinstance(element.value, list) else [element.value]
            for value in values:
                yield where, str(value)


def _referenced_sops(ds: Dataset) -> dict[str, str]:
    """Referenced SOP Instance UID -> where it is."""
    return {v: p for p, v in _uids(ds) if p.endswith("/ReferencedSOPInstanceUID")}


# -- 4. a hub answering 4xx ------------------------------------------------------------------------


def test_a_hub_refusing_the_gateway_shows_in_the_status_with_the_reason(chain: Chain) -> None:
    """The gateway's client lacks dicomweb.write: the hub answers 403 to its STOW-RS. The
    status page and ``aifi gateway status`` say so and what to fix; the instance stays
    queued (not lost, not failed) and the hub holds nothing of it."""
    if not chain.hub.running:  # the PHI test stops it for its last scan
        chain.hub.start()
    study = hand_xray(age_years=9)
    files = _write(study, chain.root / "refused")
    with gateway_process(
        chain.root / "gateway-limited",
        chain.hub.url,
        chain.root / "gateway-limited.log",
        credentials=chain.limited_credentials,
    ) as gateway:
        storescu(gateway.dimse_port, files)

        def refused() -> dict[str, Any] | None:
            status = gateway.status()
            errors = [e for e in status["last_errors"] if "403" in str(e["error"])]
            return errors[0] if errors else None

        error = wait_until(refused, 60, "the 403 in the gateway's status")
        assert error["kind"] == "instance"
        assert error["sop_instance_uid"] == str(study[0].SOPInstanceUID)
        assert "dicomweb.write" in error["error"], error
        status = gateway.status()
        assert status["instances"]["failed"] == 0
        assert status["instances"]["received"] + status["instances"]["forwarding"] == 1
        assert status["instances"]["forwarded"] == 0

        printed = subprocess.run(
            [sys.executable, "-m", "aifi", "gateway", "status", "--url", gateway.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "HTTP 403" in printed and "dicomweb.write" in printed, printed

        pseudo = gateway.pseudo_study(str(study[0].StudyInstanceUID))
        assert pseudo
        with httpx.Client(timeout=30, auth=chain.clients.hospital_auth()) as hub:
            found = hub.get(f"{chain.dicomweb}/studies", params={"StudyInstanceUID": pseudo})
            assert found.status_code in (200, 204)
            assert not (found.json() if found.status_code == 200 else [])


# -- 1. PHI through the whole chain ----------------------------------------------------------------


def _accept_and_collect(
    chain: Chain, pseudo_studies: list[str], expected_products: int
) -> list[dict[str, Any]]:
    """The hub's results of ``pseudo_studies`` once every routed product has one, supervised
    ones accepted (as a radiologist would)."""
    accepted: set[str] = set()
    with httpx.Client(timeout=30, auth=chain.clients.hospital_auth()) as hub:

        def done() -> list[dict[str, Any]] | None:
            results = []
            for study in pseudo_studies:
                answer = hub.get(f"{chain.hub.url}/api/v1/results", params={"study": study})
                answer.raise_for_status()
                results += answer.json()["results"]
            for r in results:
                uid = str(r["workitem_uid"])
                if r.get("review_state") == "awaiting-review" and uid not in accepted:
                    hub.post(
                        f"{chain.hub.url}/api/v1/results/{uid}/accept",
                        json={"reviewer": REVIEWER, "reason": "chain test"},
                    ).raise_for_status()
                    accepted.add(uid)
            released = [r for r in results if r.get("released_at")]
            return released if len(released) >= expected_products else None

        results = wait_until(done, 150, "released results of every routed product")
        for r in results:
            detail = hub.get(f"{chain.hub.url}/api/v1/results/{r['workitem_uid']}")
            detail.raise_for_status()
            r["instances"] = detail.json()["instances"]
    return results


def _fetch_as_performers(chain: Chain, pseudo_studies: list[str]) -> None:
    """What else a performer may ask for, through the recording clients: every workitem it
    saw, the worklist, QIDO-RS, metadata and WADO-RS of the studies."""
    for code, client in chain.performer_clients.items():
        client.get(
            f"{chain.dicomweb}/workitems",
            params={"ScheduledWorkitemCodeSequence.CodeValue": code},
            headers={"Accept": "application/dicom+json"},
        )
        for uid in sorted(chain.recorder.workitems):
            client.get(f"{chain.dicomweb}/workitems/{uid}")
        for study in pseudo_studies:
            base = f"{chain.dicomweb}/studies/{study}"
            client.get(f"{chain.dicomweb}/studies", params={"StudyInstanceUID": study})
            client.get(f"{base}/series")
            client.get(f"{base}/instances", params={"includefield": "all"})
            client.get(f"{base}/metadata")
            client.get(base, headers={"Accept": 'multipart/related; type="application/dicom"'})


@pytest.mark.slow
def test_no_identifier_reaches_the_hub_its_log_or_a_performer(chain: Chain) -> None:
    planted = Planted()
    hand = planted_study(hand_xray(age_years=7), HAND_PATIENT, planted)
    ct = planted_study(chest_ct(embolism=True, slices=6), CT_PATIENT, planted, serial=5000)
    assert planted.rows_filled > 300, "the generator fills most of Table E.1-1"
    hand_files = _write(hand, chain.root / "modality" / "hand")
    ct_files = _write(ct, chain.root / "modality" / "ct")

    # The scan can find what it looks for: all of it is in what the modality sends.
    scanner = Scanner(planted)
    sent = b"".join(p.read_bytes() for p in hand_files + ct_files)
    seen = {s.casefold() for s in scanner.found(sent)}
    assert {s for s in planted.strings if s.casefold() not in seen} == set()
    assert {u for u in planted.uids if u not in seen} == set()
    assert {d for d in planted.dates if d.strftime("%Y%m%d") not in seen} == set()

    storescu(chain.gateway.dimse_port, hand_files)
    storescu(chain.gateway.dimse_port, ct_files)

    def forwarded() -> bool:
        states = chain.gateway.states()
        assert not states.get("failed") and not states.get("quarantined"), chain.gateway.status()
        return states.get("forwarded", 0) == len(hand) + len(ct)

    wait_until(forwarded, 60, "every instance forwarded to the hub")
    originals = {str(hand[0].StudyInstanceUID): hand, str(ct[0].StudyInstanceUID): ct}
    pseudo = {chain.gateway.pseudo_study(uid): uid for uid in originals}
    assert None not in pseudo

    # hand: skeletal age + fracture detection; chest CT: incidental PE
    results = _accept_and_collect(chain, [str(p) for p in pseudo], expected_products=3)
    assert sorted(r["product"] for r in results) == ["AIFI-BONEAGE", "AIFI-FRACTURE", "AIFI-IPE"]
    assert all(r["outcome"] in ("positive", "negative", "measured") for r in results), results
    expected = sum(len(r["instances"]) for r in results)

    def delivered() -> list[Dataset] | None:
        found = [ds for ds in chain.pacs.instances() if ds.StudyInstanceUID in originals]
        return found if len(found) >= expected else None

    in_pacs = wait_until(delivered, 90, f"{expected} re-identified results in the PACS")
    _fetch_as_performers(chain, [str(p) for p in pseudo])
    assert chain.recorder.kinds["workitem"] and chain.recorder.kinds["wado"], chain.recorder.kinds
    assert chain.recorder.kinds["metadata"], chain.recorder.kinds

    # The chain worked: results in the PACS under the original patient, study and instances.
    pseudonyms = chain.gateway.pseudonyms()
    assert pseudonyms
    for ds in in_pacs:
        study = originals[ds.StudyInstanceUID]
        assert str(ds.PatientName) == str(study[0].PatientName)
        assert ds.PatientID == study[0].PatientID
        for keyword in ("AccessionNumber", "StudyDate", "PatientBirthDate", "StudyDescription"):
            assert ds.get(keyword) == study[0].get(keyword), keyword
        input_sops = {str(x.SOPInstanceUID) for x in study}
        result_sops = {str(x.SOPInstanceUID) for x in in_pacs}
        references = _referenced_sops(ds)
        if ds.Modality in ("SR", "SEG", "PR", "KO"):  # objects that reference their evidence
            assert references.keys() & input_sops, (ds.SOPClassUID.name, references, input_sops)
        # the inputs, the product's own objects, or what the inputs referenced (mapped back)
        allowed = input_sops | result_sops | planted.uids
        assert references.keys() <= allowed, (references, allowed)
        assert not {v for _, v in _uids(ds)} & pseudonyms, "a pseudonym left in a result"

    # The mapping stays in the hospital: the same scan finds the identities in the
    # gateway's own database (and so would find them anywhere they were written).
    in_gateway = {
        f.what.casefold()
        for f in scanner.scan_tree(chain.gateway.data_dir)[0]
        if Path(f.where).name.startswith("gateway.db")  # the database and its WAL
    }
    for patient in (HAND_PATIENT, CT_PATIENT):
        assert {patient.name.casefold(), patient.patient_id.casefold()} <= in_gateway

    # ... and the hub's database is the one that holds the study, under its pseudonyms.
    hub_db = b"".join(p.read_bytes() for p in chain.hub.data_dir.glob("*.db*"))
    for (pseudo_id,) in chain.gateway.query("SELECT pseudo_id FROM gw_patient"):
        assert str(pseudo_id).encode() in hub_db
    for pseudo_study in pseudo:
        assert str(pseudo_study).encode() in hub_db

    # (b) the hub's log, (c) everything the performers received, (a) every file of the hub:
    # while it runs (database + WAL) and once stopped (checkpointed).
    log_findings = scanner.scan(chain.hub.log.read_bytes(), "hub.log")
    performer_findings, received = scanner.scan_tree(chain.recorder.folder)
    running_findings, files_running = scanner.scan_tree(chain.hub.data_dir)
    chain.hub.stop()
    stopped_findings, files_stopped = scanner.scan_tree(chain.hub.data_dir)
    assert received > 10 and files_running > 5 and files_stopped > 5
    assert len(chain.hub.log.read_bytes()) > 1000, "the hub logged (the scan is not vacuous)"
    findings = log_findings + performer_findings + running_findings + stopped_findings
    assert not findings, "\n".join(str(f) for f in findings[:40])


# -- 2. the hub down for 60 s during forwarding --------------------------------------------------

HUB_DOWN_SECONDS = 60.0
RETRY = {"AIFI_GATEWAY_RETRY_BACKOFF_SECONDS": "1", "AIFI_GATEWAY_RETRY_MAX_BACKOFF_SECONDS": "4"}
"""The hospital's retry settings for this test: tried again at most 4 s apart, so the hub's
return is noticed within seconds."""


@pytest.mark.slow
def test_the_hub_down_for_60_seconds_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    clients = register_local_clients(
        Settings(data_dir=tmp_path / "hub"),
        hub_url,
        tmp_path / "credentials",
        products=[],
        label="gateway hub-down test",
    )
    study = chest_ct(embolism=False, slices=30)
    files = _write(study, tmp_path / "ct")
    original = str(study[0].StudyInstanceUID)
    hub = HubProcess(tmp_path / "hub", tmp_path / "hub.log", port, {})
    with (
        hub,
        gateway_process(
            tmp_path / "gateway",
            hub.url,
            tmp_path / "gateway.log",
            credentials=clients.hospital,
            env=RETRY,
        ) as gateway,
    ):
        hub.stop()
        down_at = time.monotonic()
        storescu(gateway.dimse_port, files)  # acknowledged while the hub is down

        # Down for 60 s: nothing forwarded, nothing given up, the reason on the status page.
        errors: set[str] = set()

        def queued() -> bool:
            status = gateway.status()
            errors.update(str(e["error"]) for e in status["last_errors"])
            instances: dict[str, int] = status["instances"]
            return (
                instances["forwarded"] == 0
                and instances["failed"] == 0
                and instances["received"] + instances["forwarding"] == len(study)
            )

        # The outage itself is the subject: its length has to pass on the wall clock (the
        # hub is a real process, with no clock to move), checked every half second.
        hold(down_at + HUB_DOWN_SECONDS - time.monotonic(), queued)
        assert any("cannot reach" in e for e in errors), errors
        hub.start()
        print(f"hub back after {time.monotonic() - down_at:.1f} s")

        def everything_forwarded() -> bool:
            states = gateway.states()
            assert not states.get("failed"), gateway.status()
            return states.get("forwarded", 0) == len(study)

        wait_until(everything_forwarded, 60, "every instance forwarded after the hub's return")
        print(f"forwarded {time.monotonic() - down_at:.1f} s after the hub went down")
        pseudo = gateway.pseudo_study(original)
        assert pseudo

        with (
            httpx.Client(timeout=30, auth=clients.hospital_auth()) as hospital,
            httpx.Client(timeout=30, auth=clients.admin_auth()) as admin,
        ):

            def routed() -> str | None:
                answer = admin.get(f"{hub.url}/api/v1/studies/{pseudo}/routing")
                return answer.text if answer.status_code == 200 and "MATCH" in answer.text else None

            explanation = wait_until(routed, 60, "the study routed at the hub")
            assert "AIFI-IPE" in explanation

            instances = hospital.get(f"{hub.url}/dicomweb/studies/{pseudo}/instances")
            instances.raise_for_status()
            sop_uids = [item["00080018"]["Value"][0] for item in instances.json()]
            assert len(sop_uids) == len(set(sop_uids)) == len(study)
            studies = hospital.get(
                f"{hub.url}/dicomweb/studies", params={"StudyInstanceUID": pseudo}
            )
            [entry] = studies.json()
            assert entry["00201208"]["Value"] == [len(study)]  # NumberOfStudyRelatedInstances
        completion = gateway.query(
            "SELECT completion FROM gw_study WHERE study_instance_uid = ?", original
        )
        assert completion == [("signalled",)]
