"""The gateway's store-and-forward outbox against a real hub (issue 15 point 5): instances
received by the gateway are pseudonymised, recorded in the pseudonym map and sent with
STOW-RS in batches; the completion signal routes the study at once; the hub down, the hub
refusing, quarantined instances and the purge after retention.

The gateway's side is driven by hand: rows and files are put in place as the ingest side
does it, :meth:`Forwarder.tick` is called directly and time is a fake clock (backoff and
retention without waiting). The pseudonymiser is the real one (AIFI default profile); the
hub is the real app under uvicorn; the gateway's database is SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlmodel import col, select

from aifi.conformance.synthetic import radiograph_study
from aifi.gateway.deid import Profile, Pseudonymised, Pseudonymiser
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.forward import Forwarder
from aifi.gateway.hub_connection import hub_client
from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
from aifi.gateway.persistence.tables import (
    CompletionState,
    InstanceState,
    PatientMap,
    ReceivedInstance,
    StudyMap,
    StudyProgress,
    UidMap,
)
from aifi.hub.app import create_app
from aifi.hub.persistence.database import Database
from aifi.hub.settings import Settings
from aifi.oauth_client import Credentials
from tests.conftest import LiveServer, database_for, free_port, running_hub
from tests.support.auth import register, secured_hub
from tests.support.clock import Clock
from tests.support.dicom import make_ct, to_bytes
from tests.support.wait import wait_until

JSON = {"Accept": "application/dicom+json"}
CHILD = ("Demo^Kind", "AIFI-DEMO-0002")
"""Patient's Name and ID that radiograph_study gives its child's hand."""
QUIET = 30.0
"""The gateway's quiet time (fake clock)."""


# --- the pseudonymiser ---------------------------------------------------------------------

KEY = bytes(range(32))
"""The hospital's pseudonymisation key in these tests."""


def pseudonymiser() -> Pseudonymiser:
    """The real one with the AIFI default profile (PS3.15 Annex E)."""
    return Pseudonymiser(Profile(), KEY)


def pseudo(original: str) -> str:
    """The pseudonym of a UID under :data:`KEY`."""
    return Keyed(KEY).uid(original)


class Unmarking:
    """The real pseudonymiser, but Patient Identity Removed (0012,0062) is left out of the
    instances whose original SOP Instance UID is in ``originals`` (as a hospital's own
    de-identification might forget it)."""

    def __init__(self, originals: frozenset[str]) -> None:
        self.real = pseudonymiser()
        self.originals = originals

    def pseudonymise_file(self, data: bytes) -> tuple[bytes, Pseudonymised]:
        out, facts = self.real.pseudonymise_file(data)
        if facts.uids[str(facts.dataset.SOPInstanceUID)] in self.originals:
            del facts.dataset.PatientIdentityRemoved
            out = to_bytes(facts.dataset)
        return out, facts


# --- the gateway's side, as the ingest side leaves it ------------------------------------


@dataclass
class Gateway:
    db: Database
    data_dir: Path
    clock: Clock

    def receive(
        self, files: list[bytes], completion: CompletionState = CompletionState.DUE
    ) -> list[str]:
        """Put received instances in place (Part 10 file under ``instances/``, a
        ``gw_instance`` row, the ``gw_study`` row); their original SOP Instance UIDs."""
        now = self.clock()
        uids = []
        with self.db.write() as session:
            for data in files:
                ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
                relative = Path("instances") / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}"
                (self.data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                (self.data_dir / relative).write_bytes(data)
                session.add(
                    ReceivedInstance(
                        sop_instance_uid=str(ds.SOPInstanceUID),
                        sop_class_uid=str(ds.SOPClassUID),
                        study_instance_uid=str(ds.StudyInstanceUID),
                        series_instance_uid=str(ds.SeriesInstanceUID),
                        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                        source="dimse:MODALITY@127.0.0.1",
                        file=str(relative),
                        size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        received_at=now,
                        next_attempt_at=now,
                    )
                )
                study = session.exec(
                    select(StudyProgress).where(
                        col(StudyProgress.study_instance_uid) == str(ds.StudyInstanceUID)
                    )
                ).first()
                if study is None:
                    study = StudyProgress(
                        study_instance_uid=str(ds.StudyInstanceUID),
                        first_received_at=now,
                        next_attempt_at=now,
                    )
                study.last_received_at = now
                study.completion = completion
                session.add(study)
                uids.append(str(ds.SOPInstanceUID))
        return uids

    def instances(self) -> list[ReceivedInstance]:
        with self.db.read() as session:
            return list(session.exec(select(ReceivedInstance).order_by(col(ReceivedInstance.pk))))

    def states(self) -> Counter[str]:
        return Counter(str(row.state) for row in self.instances())

    def study(self, study_uid: str) -> StudyProgress:
        with self.db.read() as session:
            return session.exec(
                select(StudyProgress).where(col(StudyProgress.study_instance_uid) == study_uid)
            ).one()

    def forwarder(self, hub: httpx.Client, **settings: Any) -> Forwarder:
        settings.setdefault("quiet_seconds", QUIET)
        return Forwarder(
            self.db,
            self.data_dir,
            settings.pop("pseudonymiser", None) or pseudonymiser(),
            hub,
            clock=self.clock,
            **settings,
        )


@contextlib.contextmanager
def gateway_on(backend: str, folder: Path) -> Iterator[Gateway]:
    with database_for(backend) as url:
        db = Database(url or f"sqlite:///{folder / 'gateway.db'}", migrations=GATEWAY_MIGRATIONS)
        db.migrate()
        yield Gateway(db, folder, Clock())
        db.dispose()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """The gateway's folder and database (SQLite, its embedded default)."""
    with gateway_on("sqlite", tmp_path / "gateway") as gw:
        yield gw


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    """The same on SQLite and on PostgreSQL (claims with FOR UPDATE SKIP LOCKED)."""
    with gateway_on(request.param, tmp_path / "gateway") as gw:
        yield gw


# --- the hub ------------------------------------------------------------------------------


def rules_file(path: Path, quiet: float) -> Path:
    """The shipped routing rules with a quiet period of ``quiet`` seconds."""
    from importlib.resources import files

    config = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    config["quiet_period_seconds"] = dict.fromkeys(("DX", "CR", "CT", "MR", "default"), quiet)
    path.write_text(yaml.safe_dump(config))
    return path


def hub_settings(data_dir: Path, **changes: Any) -> Settings:
    """A hub whose quiet period (60 s) is longer than any test here: a workitem that appears
    at once came from the completion signal."""
    data_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "rules_file": rules_file(data_dir / "rules.yaml", 60),
        "task_manager_poll_seconds": 0.02,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_hub(hub_settings(tmp_path_factory.mktemp("hub")), lifespan=True) as server:
        yield server


@pytest.fixture
def client(hub: LiveServer) -> Iterator[httpx.Client]:
    with hub_client(hub.url, None) as c:
        yield c


@contextlib.contextmanager
def serve_on(app: FastAPI, port: int) -> Iterator[None]:
    """The app under uvicorn on a given port (a hub that comes back where it was)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn to start")
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def qido(server: LiveServer, path: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.dicomweb}{path}", params=params, headers=JSON, timeout=30)
    assert response.status_code in (200, 204), response.text
    return list(response.json()) if response.status_code == 200 else []


def hand(images: int, **kwargs: Any) -> list[bytes]:
    return list(radiograph_study(images, **kwargs))


def study_of(files: list[bytes]) -> str:
    return str(dcmread(io.BytesIO(files[0]), stop_before_pixels=True).StudyInstanceUID)


def naive(moment: datetime) -> datetime:
    """SQLite hands back naive date-times (written in UTC)."""
    return moment.replace(tzinfo=None)


# --- tests ----------------------------------------------------------------------------------


def test_a_study_is_forwarded_pseudonymised_in_batches_and_routed_at_once(
    hub: LiveServer, client: httpx.Client, any_gateway: Gateway
):
    gateway = any_gateway
    files = hand(5)
    original_study = study_of(files)
    sops = gateway.receive(files)
    forwarder = gateway.forwarder(client, batch_size=2)

    # A full batch means "more is waiting": run_outbox_loop ticks again at once.
    assert forwarder.tick() == 2
    assert gateway.states() == {"forwarded": 2, "received": 3}
    assert gateway.study(original_study).completion == CompletionState.DUE  # not yet
    assert forwarder.tick() == 2
    signalled = time.monotonic()
    assert forwarder.tick() == 1  # the last instance, then the completion signal
    assert gateway.states() == {"forwarded": 5}

    # The hub holds the pseudonymous study, five instances, and nothing that identifies.
    study = gateway.study(original_study)
    assert study.completion == CompletionState.SIGNALLED and study.last_error is None
    pseudo_study = study.pseudo_study_instance_uid
    assert pseudo_study == pseudo(original_study)
    assert qido(hub, "/studies", StudyInstanceUID=original_study) == []
    assert qido(hub, "/studies", PatientID=CHILD[1]) == []
    assert qido(hub, "/studies", PatientName=CHILD[0]) == []
    stored = qido(hub, f"/studies/{pseudo_study}/instances")
    assert sorted(i["00080018"]["Value"][0] for i in stored) == sorted(pseudo(s) for s in sops)
    metadata = httpx.get(f"{hub.dicomweb}/studies/{pseudo_study}/metadata", headers=JSON).text
    assert CHILD[0] not in metadata and CHILD[1] not in metadata
    assert original_study not in metadata and not any(s in metadata for s in sops)

    # The map holds every pseudonym the hub holds, and the rows say which.
    with gateway.db.read() as session:
        mapped = {row.pseudo: row.original for row in session.exec(select(UidMap))}
        assert mapped[pseudo_study] == original_study
        assert all(mapped[pseudo(s)] == s for s in sops)
        study_map = session.get(StudyMap, pseudo_study)
        assert study_map is not None and study_map.original_study_uid == original_study
        patient = session.get(PatientMap, study_map.patient_pseudo_id)
        assert patient is not None and patient.original_id == CHILD[1]
    assert all(r.pseudo_sop_instance_uid == pseudo(r.sop_instance_uid) for r in gateway.instances())

    # Routed at once: the hub's quiet period is 60 s.
    workitems = wait_until(
        lambda: qido(hub, "/workitems", StudyInstanceUID=pseudo_study), 5, "the workitems"
    )
    assert time.monotonic() - signalled < 5
    assert CHILD[0] not in str(workitems) and CHILD[1] not in str(workitems)


def test_a_resent_study_is_already_stored_and_stored_once(
    hub: LiveServer, client: httpx.Client, any_gateway: Gateway
):
    gateway = any_gateway
    files = hand(3)
    gateway.receive(files)
    forwarder = gateway.forwarder(client)
    forwarder.tick()
    pseudo_study = pseudo(study_of(files))
    assert len(qido(hub, f"/studies/{pseudo_study}/instances")) == 3

    # As after a crash between the hub's answer and the commit: every row sent again, now
    # in requests of at most about two instances.
    with gateway.db.write() as session:
        for row in session.exec(select(ReceivedInstance)):
            row.state = InstanceState.RECEIVED
            row.forwarded_at = None
    requests: list[int] = []
    client.event_hooks["request"].append(lambda request: requests.append(len(request.content)))
    size = max(len(f) for f in files)
    small = gateway.forwarder(client, max_request_bytes=int(size * 2.5))
    assert small.tick() == small.batch_size  # two sent; "more is waiting": again at once
    assert small.tick() == 1
    assert gateway.states() == {"forwarded": 3}
    assert all(r.last_error is None for r in gateway.instances())
    assert len(requests) == 2 and all(n < size * 2.5 + 1000 for n in requests)
    assert len(qido(hub, f"/studies/{pseudo_study}/instances")) == 3


def test_the_hub_down_then_back_on_the_same_port(tmp_path: Path, gateway: Gateway):
    port = free_port()  # nothing listens there yet
    files = hand(4)
    original_study = study_of(files)
    gateway.receive(files)
    start = gateway.clock()
    with hub_client(f"http://127.0.0.1:{port}", None) as client:
        forwarder = gateway.forwarder(client, batch_size=2, backoff_seconds=10)

        assert forwarder.tick() == 2
        assert gateway.states() == {"received": 4}
        failed = [r for r in gateway.instances() if r.attempts == 1]
        assert len(failed) == 2
        for row in failed:
            assert "cannot reach the hub" in (row.last_error or "")
            assert "ConnectError" in (row.last_error or "")
            assert naive(row.next_attempt_at) == naive(start + timedelta(seconds=10))
        # The next round (at once: it was a full batch) does not knock again before the
        # retry is due: the two others wait untouched.
        assert forwarder.tick() == 0
        assert sorted(r.attempts for r in gateway.instances()) == [0, 0, 1, 1]

        gateway.clock.advance(10)
        assert forwarder.tick() == 2  # the two that waited: still down
        assert [r.attempts for r in gateway.instances()] == [1, 1, 1, 1]
        gateway.clock.advance(10)
        assert forwarder.tick() == 2  # the first two again: the backoff doubles
        for row in gateway.instances()[:2]:
            assert row.attempts == 2 and "attempt 2: cannot reach the hub" in str(row.last_error)
            assert naive(row.next_attempt_at) == naive(start + timedelta(seconds=40))

        app = create_app(hub_settings(tmp_path / "hub"))
        try:
            with serve_on(app, port):
                gateway.clock.advance(20)
                while forwarder.tick():
                    pass
                assert gateway.states() == {"forwarded": 4}
                assert all(r.last_error is None for r in gateway.instances())
                assert gateway.study(original_study).completion == CompletionState.SIGNALLED
                server = LiveServer(f"http://127.0.0.1:{port}", app)
                assert len(qido(server, f"/studies/{pseudo(original_study)}/instances")) == 4
        finally:
            app.state.hub.close()


def test_instances_the_hub_refuses_as_not_deidentified_fail_with_its_reason(
    tmp_path: Path, gateway: Gateway
):
    files = hand(3)
    unmarked = dcmread(io.BytesIO(files[1]), stop_before_pixels=True).SOPInstanceUID
    gateway.receive(files)
    settings = hub_settings(tmp_path / "hub", require_deidentified=True)
    with running_hub(settings) as server, hub_client(server.url, None) as client:
        forwarder = gateway.forwarder(client, pseudonymiser=Unmarking(frozenset({str(unmarked)})))
        forwarder.tick()
        by_uid = {r.sop_instance_uid: r for r in gateway.instances()}
        refused = by_uid.pop(str(unmarked))
        assert refused.state == InstanceState.FAILED
        assert "0xC411" in (refused.reason or "")
        assert "Patient Identity Removed (0012,0062) is not YES" in (refused.reason or "")
        assert len(by_uid) == 2  # the other two instances of the study
        assert all(r.state == InstanceState.FORWARDED for r in by_uid.values())
        # The study is signalled (two of its instances are at the hub) ...
        assert gateway.study(study_of(files)).completion == CompletionState.SIGNALLED
        # ... and the refused one is not sent again.
        gateway.clock.advance(3600)
        assert forwarder.tick() == 0
        assert refused.attempts == 1 and gateway.states()["failed"] == 1


def _credentials_file(server: LiveServer, tmp_path: Path, **kwargs: Any) -> Path:
    credentials: Credentials = register(server, role="hospital", **kwargs)
    path = tmp_path / f"credentials-{credentials.client_id}.json"
    credentials.write(path)
    return path


def test_a_hub_with_authentication_401_and_403_are_retried_then_credentials_work(
    tmp_path: Path, gateway: Gateway
):
    files = hand(2)
    gateway.receive(files)
    with secured_hub(tmp_path / "hub") as server:
        with hub_client(server.url, None) as anonymous:
            gateway.forwarder(anonymous, backoff_seconds=5).tick()
        rows = gateway.instances()
        assert gateway.states() == {"received": 2}
        assert all("HTTP 401" in (r.last_error or "") for r in rows)
        assert all("credentials" in (r.last_error or "") for r in rows)

        read_only = _credentials_file(server, tmp_path, scopes=["dicomweb.read"])
        gateway.clock.advance(5)
        with hub_client(server.url, read_only, scopes=("dicomweb.read",)) as weak:
            gateway.forwarder(weak, backoff_seconds=5).tick()
        assert all("HTTP 403" in (r.last_error or "") for r in gateway.instances())
        assert all("dicomweb.write" in (r.last_error or "") for r in gateway.instances())
        assert gateway.states() == {"received": 2}

        gateway.clock.advance(10)
        with hub_client(server.url, _credentials_file(server, tmp_path)) as hospital:
            gateway.forwarder(hospital).tick()
        assert gateway.states() == {"forwarded": 2}
        assert gateway.study(study_of(files)).completion == CompletionState.SIGNALLED


def test_quarantined_and_unreadable_instances_are_never_sent(
    hub: LiveServer, client: httpx.Client, gateway: Gateway
):
    burned = make_ct(patient_name="Burned^In", patient_id="BURNED-1")
    burned.BurnedInAnnotation = "YES"
    gateway.receive([to_bytes(burned)])
    study_uid = generate_uid()
    good = make_ct(study_uid=study_uid)
    truncated_uid = gateway.receive([to_bytes(good)])[0]
    missing = make_ct(study_uid=study_uid)
    gateway.receive([to_bytes(missing)])
    by_uid = {r.sop_instance_uid: r for r in gateway.instances()}
    truncated = gateway.data_dir / str(by_uid[truncated_uid].file)
    truncated.write_bytes(truncated.read_bytes()[:300])  # corrupt on disk
    (gateway.data_dir / str(by_uid[str(missing.SOPInstanceUID)].file)).unlink()

    forwarder = gateway.forwarder(client)
    forwarder.tick()
    by_uid = {r.sop_instance_uid: r for r in gateway.instances()}
    quarantined = by_uid[str(burned.SOPInstanceUID)]
    assert quarantined.state == InstanceState.QUARANTINED
    assert quarantined.reason == "Burned In Annotation (0028,0301) is YES"
    assert quarantined.pseudo_sop_instance_uid is None
    assert (gateway.data_dir / str(quarantined.file)).exists()  # kept for an operator
    assert by_uid[truncated_uid].state == InstanceState.QUARANTINED
    assert "not a readable DICOM instance" in (by_uid[truncated_uid].reason or "")
    gone = by_uid[str(missing.SOPInstanceUID)]
    assert gone.state == InstanceState.FAILED and "cannot read the original" in (gone.reason or "")

    for uid in (burned.StudyInstanceUID, study_uid):
        assert qido(hub, "/studies", StudyInstanceUID=pseudo(str(uid))) == []
        study = gateway.study(str(uid))
        assert study.completion == CompletionState.FAILED
        assert "no instance was forwarded" in (study.last_error or "")
    assert "1 quarantined" in (gateway.study(str(burned.StudyInstanceUID)).last_error or "")


def test_originals_are_purged_after_retention_quarantined_ones_kept_longer(
    client: httpx.Client, gateway: Gateway
):
    burned = make_ct()
    burned.BurnedInAnnotation = "YES"
    gateway.receive([to_bytes(burned), *hand(2)])
    forwarder = gateway.forwarder(
        client, retention_seconds=3600, unsent_retention_seconds=30 * 86400
    )
    forwarder.tick()
    rows = gateway.instances()
    files = {r.sop_instance_uid: gateway.data_dir / str(r.file) for r in rows}

    gateway.clock.advance(3599)
    assert forwarder.purge() == 0
    assert all(path.exists() for path in files.values())
    gateway.clock.advance(1)
    forwarder.tick()
    for row in gateway.instances():
        if row.state == InstanceState.FORWARDED:
            assert row.file is None and row.purged_at is not None
            assert not files[row.sop_instance_uid].exists()
        else:
            assert row.state == InstanceState.QUARANTINED and row.file is not None
            assert files[row.sop_instance_uid].exists()
    gateway.clock.advance(30 * 86400 - 3600 - 1)
    assert forwarder.purge() == 0  # a quarantined original is kept 30 days after receipt
    gateway.clock.advance(1)
    assert forwarder.purge() == 1
    (quarantined,) = [r for r in gateway.instances() if r.state == InstanceState.QUARANTINED]
    assert quarantined.file is None and quarantined.reason  # the row and its reason stay
    assert not files[quarantined.sop_instance_uid].exists()


def test_late_instances_reopen_the_study_and_it_is_signalled_again(
    hub: LiveServer, client: httpx.Client, gateway: Gateway
):
    study_uid = str(generate_uid())
    series_uid = str(generate_uid())
    gateway.receive(hand(2, study_uid=study_uid, series_uid=series_uid), CompletionState.OPEN)
    forwarder = gateway.forwarder(client)
    forwarder.tick()
    assert gateway.states() == {"forwarded": 2}
    assert gateway.study(study_uid).completion == CompletionState.OPEN  # quiet time not over
    gateway.clock.advance(QUIET)
    forwarder.tick()
    first = gateway.study(study_uid)
    assert first.completion == CompletionState.SIGNALLED
    pseudo_study = str(first.pseudo_study_instance_uid)

    def inputs() -> int:
        items = qido(hub, "/workitems", StudyInstanceUID=pseudo_study)
        if not items:
            return 0
        sequence = items[0]["00404021"]["Value"][0]["00081199"]["Value"]
        return len(sequence) if items[0]["00404041"]["Value"][0] == "READY" else 0

    assert wait_until(inputs, 5, "a READY workitem") == 2
    gateway.receive(hand(1, study_uid=study_uid, series_uid=series_uid), CompletionState.OPEN)
    forwarder.tick()
    assert gateway.study(study_uid).completion == CompletionState.OPEN
    gateway.clock.advance(QUIET)
    forwarder.tick()
    again = gateway.study(study_uid)
    assert again.completion == CompletionState.SIGNALLED
    assert again.signalled_at is not None and first.signalled_at is not None
    assert again.signalled_at > first.signalled_at
    wait_until(lambda: inputs() == 3, 5, "the workitem to list 3 inputs")


def test_an_expired_lease_is_taken_over_and_two_forwarders_store_each_instance_once(
    hub: LiveServer, client: httpx.Client, any_gateway: Gateway
):
    gateway = any_gateway
    files = hand(12)
    gateway.receive(files)
    now = gateway.clock()
    with gateway.db.write() as session:
        rows = list(session.exec(select(ReceivedInstance).order_by(col(ReceivedInstance.pk))))
        rows[0].state = InstanceState.FORWARDING  # held by a gateway that died
        rows[0].lease_until = now - timedelta(seconds=1)
        rows[1].state = InstanceState.FORWARDING  # held, lease running
        rows[1].lease_until = now + timedelta(seconds=60)
    first = gateway.forwarder(client, batch_size=3)
    second = gateway.forwarder(client, batch_size=3)
    errors: list[BaseException] = []

    def run(forwarder: Forwarder) -> None:
        try:
            while forwarder.tick():
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert gateway.states() == {"forwarded": 11, "forwarding": 1}
    assert all(r.attempts == 1 for r in gateway.instances() if r.state == "forwarded")
    gateway.clock.advance(61)
    first.tick()
    assert gateway.states() == {"forwarded": 12}
    assert len(qido(hub, f"/studies/{pseudo(study_of(files))}/instances")) == 12


def test_an_instance_the_hub_cannot_store_now_is_retried_alone(gateway: Gateway):
    """0xA700 (out of resources) for one instance of a 202 answer: that one waits with
    backoff, the other is forwarded. (A mock hub: the real one answers A700 only when its
    disk is full.)"""
    files = hand(2)
    gateway.receive(files)

    def hub(request: httpx.Request) -> httpx.Response:
        first, second = (pseudo(s) for s in sops)
        module = {
            "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [first]}}]},
            "00081198": {
                "vr": "SQ",
                "Value": [
                    {
                        "00081155": {"vr": "UI", "Value": [second]},
                        "00081197": {"vr": "US", "Value": [0xA700]},
                    }
                ],
            },
        }
        return httpx.Response(202, json=module)

    sops = [r.sop_instance_uid for r in gateway.instances()]
    with httpx.Client(base_url="http://hub.test", transport=httpx.MockTransport(hub)) as client:
        forwarder = gateway.forwarder(client, backoff_seconds=7)
        forwarder.tick()
        first, second = gateway.instances()
        assert first.state == InstanceState.FORWARDED
        assert second.state == InstanceState.RECEIVED and second.attempts == 1
        assert "0xA700 (Refused: Out of Resources)" in str(second.last_error)
        assert naive(second.next_attempt_at) == naive(gateway.clock() + timedelta(seconds=7))
        # Not a hub that is down: the next due round sends again at once.
        gateway.clock.advance(7)
        assert forwarder.tick() == 1
        assert gateway.instances()[1].attempts == 2
