"""Priors from the hospital's PACS (issue 17, points 3 and 4), with Orthanc as the PACS.

Part 1 — the query/retrieve clients alone (:mod:`aifi.gateway.pacs_query`) against Orthanc:
QIDO-RS + WADO-RS (streamed into the gateway's real ingest) and C-FIND + C-MOVE (to the
gateway's real DIMSE SCP, registered in Orthanc as a modality) and C-GET; the patient's
earlier studies newest first, the current study and other patients left out, the window
of days and the body part obeyed; a refused C-MOVE (move destination unknown) as a clear
error with the status and its meaning; the pure filter; the migration.

Part 2 — the whole chain with real processes: ``aifi serve`` (authentication on, the
reference comparison product ``bone-age-follow-up`` routed with ``priors``), ``aifi
gateway serve`` with a ``priors:`` section naming Orthanc over DICOMweb, DIMSE with C-MOVE,
and DIMSE with C-GET, and the product's performer. The child's earlier hand radiograph is
in Orthanc; the new one arrives at the gateway; the prior reaches the hub pseudonymised
(the same patient pseudonym, the dates shifted, the interval between the studies kept),
the workitem lists it as a prior, the product reports the change since the prior and the
result reaches Orthanc re-identified. Performance (issue 17): the time from the hub's
prior request to the gateway's answer against the PACS's own retrieve time (printed; at
most 1 s more). Bad input: a PACS that refuses the C-MOVE -> the request fails with the
status and its meaning, and the workitem runs without priors, saying why.
"""

from __future__ import annotations

import io
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from aifi.conformance.orthanc import OrthancPeer
from aifi.conformance.pilot_studies import Patient, hand_xray
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import PacsQueryError, PacsRefused
from aifi.gateway.ingest.dimse_scp import DimseScp
from aifi.gateway.ingest.index import ingest_database
from aifi.gateway.ingest.pipeline import Ingest
from aifi.gateway.ingest.store import InstanceStore
from aifi.gateway.pacs_query import (
    DicomwebQueryRetrieve,
    DimseQueryRetrieve,
    PacsQueryRetrieve,
    PriorQuery,
    StudyMatch,
    find_priors,
    parse_da,
    select_priors,
    status_meaning,
)
from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
from aifi.hub.admin.local_clients import LocalClients, register_local_clients
from aifi.hub.delivery.destinations import DicomwebDestination, DimseDestination
from aifi.hub.persistence.database import Database
from aifi.hub.settings import Settings
from aifi.ihe_profiles.aiw import prior_inputs
from aifi.vendors.performer import Performer
from aifi.vendors.products import PRODUCTS
from tests.conftest import free_port
from tests.support.gateway import GatewayProcess, HubProcess, gateway_process
from tests.support.migrations import downgrade, migrated_gateway_database, schema_differences
from tests.support.orthanc import orthanc  # noqa: F401  (fixture)
from tests.support.wait import wait_until

pytestmark = [pytest.mark.orthanc]

GATEWAY_AE = "AIFI-GW"
PATIENT = Patient(name="Prior^Kind", patient_id="PRIOR-PAT-1", birth_date="20160301", sex="F")
OTHER = Patient(name="Other^Kind", patient_id="PRIOR-PAT-2", birth_date="20160301", sex="M")
CURRENT_DATE = date(2026, 1, 15)


def _study(patient: Patient, when: date, *, body_part: str = "HAND", seed: int = 1) -> Dataset:
    ds = hand_xray(age_years=9, patient=patient, study_uid=generate_uid(), seed=seed)[0]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"{when:%Y%m%d}"
    ds.BodyPartExamined = body_part
    ds.AccessionNumber = f"ACC-{when:%Y%m%d}-{seed}"
    return ds


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Archive:
    """Orthanc holding the patient's history, and what is in it."""

    orthanc: OrthancPeer
    current: Dataset
    prior: Dataset  # the newest earlier HAND study
    older: Dataset  # an older HAND study
    foot: Dataset  # an earlier study of another body part
    ancient: Dataset  # outside the window
    other_patient: Dataset


@pytest.fixture(scope="module")
def archive(orthanc: OrthancPeer) -> Archive:  # noqa: F811
    studies = Archive(
        orthanc,
        current=_study(PATIENT, CURRENT_DATE, seed=1),
        prior=_study(PATIENT, CURRENT_DATE - timedelta(days=200), seed=2),
        older=_study(PATIENT, CURRENT_DATE - timedelta(days=500), seed=3),
        foot=_study(PATIENT, CURRENT_DATE - timedelta(days=100), body_part="FOOT", seed=4),
        ancient=_study(PATIENT, CURRENT_DATE - timedelta(days=4000), seed=5),
        other_patient=_study(OTHER, CURRENT_DATE - timedelta(days=50), seed=6),
    )
    for ds in (
        studies.current,
        studies.prior,
        studies.older,
        studies.foot,
        studies.ancient,
        studies.other_patient,
    ):
        orthanc.upload(_bytes(ds))
    return studies


@dataclass
class GatewayIngest:
    ingest: Ingest
    db: Database
    scp: DimseScp

    def study_instances(self, study_uid: str) -> list[Dataset]:
        with self.db.reader.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT file FROM gw_instance WHERE study_instance_uid = ?", (study_uid,)
            ).fetchall()
        return [dcmread(self.ingest.store.path(str(f))) for (f,) in rows]


@pytest.fixture
def gateway_ingest(tmp_path: Path) -> Iterator[GatewayIngest]:
    """The gateway's real ingest (SQLite, store) and DIMSE SCP, without the rest."""
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    db = Database(url, migrations=GATEWAY_MIGRATIONS)
    db.migrate()
    ingest = Ingest(ingest_database(url), InstanceStore(tmp_path / "data"), Doorbell())
    scp = DimseScp(ingest, ae_title=GATEWAY_AE, host="127.0.0.1", port=free_port())
    scp.start()
    try:
        yield GatewayIngest(ingest, db, scp)
    finally:
        scp.stop()
        ingest.db.dispose()
        db.dispose()


def _query(archive: Archive, **changes: object) -> PriorQuery:
    values: dict[str, object] = {
        "patient_id": PATIENT.patient_id,
        "issuer": "",
        "current_study_uid": archive.current.StudyInstanceUID,
        "current_date": CURRENT_DATE,
        "within_days": 1825,
        "modalities": ("DX",),
        "body_parts": ("HAND",),
        "count": 1,
    }
    values.update(changes)
    return PriorQuery(**values)  # type: ignore[arg-type]


def _dicomweb(archive: Archive, ingest: GatewayIngest) -> DicomwebQueryRetrieve:
    return DicomwebQueryRetrieve(
        DicomwebDestination(name="pacs", url=archive.orthanc.dicomweb_url), ingest.ingest
    )


def _dimse(
    archive: Archive, ingest: GatewayIngest, retrieve: str = "move", destination: str = GATEWAY_AE
) -> DimseQueryRetrieve:
    pacs = DimseDestination(
        name="pacs",
        host="127.0.0.1",
        port=archive.orthanc.dicom_port,
        called_ae="ORTHANC",
        calling_ae=GATEWAY_AE,
    )
    _register_gateway(archive, ingest)
    return DimseQueryRetrieve(pacs, ingest.ingest, retrieve=retrieve, move_destination=destination)


def _register_gateway(archive: Archive, ingest: GatewayIngest) -> None:
    """The PACS administrator's part: the gateway's AE title, host and port (Orthanc answers
    C-FIND, C-MOVE and C-GET only to modalities it knows; C-MOVE sends to that address)."""
    archive.orthanc.request(
        "PUT",
        f"/modalities/{GATEWAY_AE}",
        json={"AET": GATEWAY_AE, "Host": "127.0.0.1", "Port": ingest.scp.bound_port},
    )


@pytest.mark.parametrize("kind", ["dicomweb", "dimse"])
def test_finds_the_patients_earlier_studies_newest_first(
    archive: Archive, gateway_ingest: GatewayIngest, kind: str
) -> None:
    pacs = (_dicomweb if kind == "dicomweb" else _dimse)(archive, gateway_ingest)
    try:
        newest = find_priors(pacs, _query(archive))
        assert [s.study_instance_uid for s in newest] == [archive.prior.StudyInstanceUID]
        two = find_priors(pacs, _query(archive, count=5))
        assert [s.study_instance_uid for s in two] == [
            archive.prior.StudyInstanceUID,
            archive.older.StudyInstanceUID,
        ]
        any_part = find_priors(pacs, _query(archive, body_parts=(), count=5))
        assert [s.study_instance_uid for s in any_part] == [
            archive.foot.StudyInstanceUID,
            archive.prior.StudyInstanceUID,
            archive.older.StudyInstanceUID,
        ]
        assert find_priors(pacs, _query(archive, modalities=("CT",))) == []
        everything = find_priors(pacs, _query(archive, within_days=5000, count=10))
        assert archive.ancient.StudyInstanceUID in {s.study_instance_uid for s in everything}
        assert find_priors(pacs, _query(archive, patient_id="NOBODY")) == []
    finally:
        pacs.close()


@pytest.mark.parametrize("kind", ["dicomweb", "move", "get"])
def test_retrieves_a_study_into_the_gateway_ingest(
    archive: Archive, gateway_ingest: GatewayIngest, kind: str
) -> None:
    pacs: PacsQueryRetrieve = (
        _dicomweb(archive, gateway_ingest)
        if kind == "dicomweb"
        else _dimse(archive, gateway_ingest, retrieve=kind)
    )
    uid = archive.prior.StudyInstanceUID
    try:
        retrieved = pacs.retrieve_study(uid)
    finally:
        pacs.close()
    assert (retrieved.completed, retrieved.failed) == (1, 0)
    assert retrieved.seconds > 0
    (stored,) = gateway_ingest.study_instances(uid)
    assert stored.SOPInstanceUID == archive.prior.SOPInstanceUID
    assert stored.PatientID == PATIENT.patient_id
    assert stored.StudyDate == archive.prior.StudyDate


def test_a_refused_c_move_is_a_clear_error(archive: Archive, gateway_ingest: GatewayIngest) -> None:
    pacs = _dimse(archive, gateway_ingest, destination="NOT-KNOWN")
    with pytest.raises(PacsRefused) as refused:
        pacs.retrieve_study(archive.prior.StudyInstanceUID)
    assert refused.value.status is not None
    assert "PACS refused C-MOVE: status 0x" in refused.value.reason
    print(refused.value.reason)
    assert gateway_ingest.study_instances(archive.prior.StudyInstanceUID) == []


def test_a_pacs_that_does_not_know_the_gateway_is_a_clear_error(
    archive: Archive, gateway_ingest: GatewayIngest
) -> None:
    """Orthanc answers C-FIND only to modalities it knows: the error names the calling AE
    title to register (and is transient: the worker tries again)."""
    pacs = DimseQueryRetrieve(
        DimseDestination(
            name="pacs",
            host="127.0.0.1",
            port=archive.orthanc.dicom_port,
            called_ae="ORTHANC",
            calling_ae="NOT-REGISTERED",
            timeout_seconds=10,
        ),
        gateway_ingest.ingest,
    )
    with pytest.raises(PacsQueryError) as failed:
        pacs.find_studies(_query(archive))
    assert not isinstance(failed.value, PacsRefused)
    assert "NOT-REGISTERED" in failed.value.reason


def test_the_study_level_filter_and_the_status_meanings() -> None:
    """Tolerant of a PACS that ignores matching keys: the current study, another issuer,
    studies outside the window or of another modality are dropped; newest first."""
    query = PriorQuery(
        patient_id="P",
        issuer="HOSP",
        current_study_uid="1.1",
        current_date=date(2026, 1, 15),
        within_days=30,
        modalities=("DX", "CR"),
    )
    assert query.date_range == "20251216-20260115"
    assert query.single_modality is None
    studies = [
        StudyMatch("1.1", "20260115", "", ("DX",)),  # the current study
        StudyMatch("1.2", "20260101", "0800", ("CR",)),
        StudyMatch("1.3", "20260101", "1015", ("DX", "SR")),
        StudyMatch("1.4", "20251001", "", ("DX",)),  # outside the window
        StudyMatch("1.5", "20260110", "", ("CT",)),  # another modality
        StudyMatch("1.6", "20260111", "", ("DX",), issuer="OTHER"),  # another patient domain
        StudyMatch("1.7", "20260115", "0700", ("DX",)),  # earlier the same day
    ]
    studies = [replace(s, patient_id="P") for s in studies]  # the PACS answers the patient
    studies.append(StudyMatch("1.8", "20260112", "", ("DX",), patient_id="Q"))  # another one
    assert [s.study_instance_uid for s in select_priors(query, studies)] == ["1.7", "1.3", "1.2"]
    assert PriorQuery("P", "", "1", None).date_range == ""
    assert parse_da("20260115") == date(2026, 1, 15)
    assert parse_da("2026") is None and parse_da("20261345") is None
    assert status_meaning("C-MOVE", 0xA801) == "Move destination unknown"
    assert status_meaning("C-MOVE", 0xC123) == "Unable to Process"
    assert status_meaning("C-GET", 0xA702).startswith("Refused: Out of resources")
    with pytest.raises(ValueError):
        PriorQuery(" ", "", "1", None)


def test_the_migration_builds_exactly_the_priors_table_and_goes_back(tmp_path: Path) -> None:
    with migrated_gateway_database(tmp_path) as db:
        assert schema_differences(db) == []
        tables = downgrade(db, "0005")
        assert "gw_instance" in tables and "gw_prior_request" not in tables


# -- part 2: the whole chain ------------------------------------------------------------------
#
# hub (authentication on, the bone-age follow-up product with ``priors`` routed for every
# hand radiograph) + ``aifi gateway serve`` (its ``priors:`` section naming Orthanc, over
# DICOMweb or DIMSE) + the reference performer; Orthanc is the hospital's PACS: it holds
# the child's earlier hand radiograph and receives the re-identified results.

FOLLOW_UP = "AIFI-BONEAGE-FU"
PRIOR_DAYS = 200


def _rules_file(path: Path) -> Path:
    """The shipped rules with the follow-up product (as its comment shows) as the default
    tenant's only product, priors waiting at most 120 s."""
    rules = yaml.safe_load(
        resources.files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text()
    )
    template = next(p for p in rules["products"] if p["code"] == "AIFI-BONEAGE")
    rules["products"].append(
        {
            **template,
            "code": FOLLOW_UP,
            "name": "Bone age follow-up",
            "model_name": "bone-age-follow-up",
            "supervision": "autonomous",
            "priors": {
                "count": 1,
                "same_modality": True,
                "same_body_part": True,
                "within_days": 1825,
                "wait_seconds": 120,
            },
        }
    )
    rules["tenants"] = {"default": [FOLLOW_UP]}
    path.write_text(yaml.safe_dump(rules))
    return path


@dataclass
class Hub:
    root: Path
    process: HubProcess
    clients: LocalClients
    orthanc: OrthancPeer

    def sql(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        path = self.process.data_dir / "aifi.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.execute("PRAGMA busy_timeout = 5000")
            return list(db.execute(query, args).fetchall())


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancPeer) -> Iterator[Hub]:  # noqa: F811
    root = tmp_path_factory.mktemp("priors")
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    hub_dir = root / "hub"
    clients = register_local_clients(
        Settings(data_dir=hub_dir),
        hub_url,
        root / "credentials",
        products=[FOLLOW_UP],
        label="gateway priors test",
    )
    env = {
        "AIFI_REQUIRE_DEIDENTIFIED": "true",
        "AIFI_RULES_FILE": str(_rules_file(root / "rules.yaml")),
    }
    product = PRODUCTS["bone-age-follow-up"]
    with ExitStack() as stack:
        process = stack.enter_context(HubProcess(hub_dir, root / "hub.log", port, env))
        client = httpx.Client(timeout=60, auth=clients.performer_auth(FOLLOW_UP))
        stack.callback(client.close)
        performer = Performer(
            hub_url + "/dicomweb",
            product.code,
            product.ae_title,
            product.factory(),
            client=client,
            watch_cancel=False,
        )
        stop = threading.Event()
        thread = threading.Thread(
            target=performer.run,
            args=(stop,),
            kwargs={"poll_seconds": 0.2, "events": False},
            daemon=True,
        )
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(stop.set)
        yield Hub(root, process, clients, orthanc)


def _gateway_config(hub: Hub, kind: str, move_destination: str | None = None) -> str:
    pacs: dict[str, Any]
    if kind == "dicomweb":
        pacs = {"kind": "dicomweb", "name": "archive", "url": hub.orthanc.dicomweb_url}
    else:
        pacs = {
            "kind": "dimse",
            "name": "archive",
            "host": "127.0.0.1",
            "port": hub.orthanc.dicom_port,
            "called_ae": "ORTHANC",
        }
    priors: dict[str, Any] = {"pacs": "archive", "poll_seconds": 0.2}
    if kind == "get":
        priors["retrieve"] = "get"
    if move_destination:
        priors["move_destination"] = move_destination
    return yaml.safe_dump({"pacs": [pacs], "priors": priors})


def _send(port: int, datasets: list[Dataset]) -> None:
    """A modality's C-STORE of the current study to the gateway (one association)."""
    ae = AE(ae_title="ZZMODALITY")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status and status.Status == 0, status
    finally:
        assoc.release()


@dataclass
class Run:
    gateway: GatewayProcess
    current: Dataset
    prior: Dataset
    pseudo_current: str
    request: tuple[Any, ...]
    """The hub's prior_request row: state, reason, created_at, answered_at, workitem_uid."""

    def released(self, hub: Hub) -> list[dict[str, Any]]:
        """The follow-up's released result(s) of the current study."""
        with httpx.Client(timeout=30, auth=hub.clients.hospital_auth()) as client:

            def done() -> list[dict[str, Any]] | None:
                answer = client.get(
                    f"{hub.process.url}/api/v1/results", params={"study": self.pseudo_current}
                )
                answer.raise_for_status()
                return [r for r in answer.json()["results"] if r.get("released_at")] or None

            return wait_until(done, 90, "the follow-up's released result")

    def summary_page(self, hub: Hub) -> Dataset:
        """The result's summary page, re-identified, in the PACS."""
        return wait_until(
            lambda: [
                ds for ds in _orthanc_results(hub, self.current.PatientID) if "ImageComments" in ds
            ],
            60,
            "the re-identified summary page in the PACS",
        )[0]


@contextmanager
def _run(hub: Hub, kind: str, name: str, move_destination: str | None = None) -> Iterator[Run]:
    """A patient with an earlier hand radiograph in Orthanc; the new one arrives at the
    gateway (running while the block runs); yielded once the hub's prior request is
    answered."""
    patient = Patient(
        name=f"Follow^{name}", patient_id=f"FU-{name}", birth_date="20160301", sex="F"
    )
    current = _study(patient, CURRENT_DATE, seed=11)
    prior = _study(patient, CURRENT_DATE - timedelta(days=PRIOR_DAYS), seed=12)
    hub.orthanc.upload(_bytes(prior))
    with gateway_process(
        hub.root / f"gateway-{name}",
        hub.process.url,
        hub.root / f"gateway-{name}.log",
        credentials=hub.clients.hospital,
        config=_gateway_config(hub, kind, move_destination),
    ) as gateway:
        hub.orthanc.request(  # the PACS administrator's part (C-FIND/C-MOVE/C-GET peers)
            "PUT",
            f"/modalities/{GATEWAY_AE}",
            json={"AET": GATEWAY_AE, "Host": "127.0.0.1", "Port": gateway.dimse_port},
        )
        _send(gateway.dimse_port, [current])
        pseudo = wait_until(
            lambda: gateway.pseudo_study(str(current.StudyInstanceUID)), 30, "forwarding"
        )

        def answered() -> tuple[Any, ...] | None:
            rows = hub.sql(
                "SELECT state, reason, created_at, answered_at, workitem_uid FROM prior_request"
                " WHERE study_instance_uid = ?",
                pseudo,
            )
            return rows[0] if rows and rows[0][0] != "open" else None

        request = wait_until(answered, 60, "the gateway's answer to the prior request")
        yield Run(gateway, current, prior, pseudo, request)


def _orthanc_results(hub: Hub, patient_id: str) -> list[Dataset]:
    out: list[Dataset] = []
    for orthanc_id in hub.orthanc.ids("instances"):
        ds = dcmread(io.BytesIO(hub.orthanc.instance_file(orthanc_id)))
        if ds.PatientID == patient_id and ds.Modality in ("SR", "OT"):
            out.append(ds)
    return out


def _hub_studies(hub: Hub, uids: list[str]) -> list[dict[str, Any]]:
    """The studies as the hub holds them (QIDO-RS as the hospital)."""
    out = []
    with httpx.Client(timeout=30, auth=hub.clients.hospital_auth()) as client:
        for uid in uids:
            answer = client.get(
                f"{hub.process.url}/dicomweb/studies",
                params={"StudyInstanceUID": uid, "includefield": "PatientID,StudyDate"},
            )
            answer.raise_for_status()
            (study,) = answer.json()
            out.append(study)
    return out


def _workitem(hub: Hub, uid: str) -> dict[str, Any]:
    with httpx.Client(timeout=30, auth=hub.clients.performer_auth(FOLLOW_UP)) as performer:
        answer = performer.get(
            f"{hub.process.url}/dicomweb/workitems/{uid}",
            headers={"Accept": "application/dicom+json"},
        )
        answer.raise_for_status()
    body = answer.json()
    return dict(body[0] if isinstance(body, list) else body)


@pytest.mark.parametrize("kind", ["dicomweb", "dimse", "get"])
def test_the_prior_reaches_the_product_pseudonymised_and_the_result_comes_back(
    hub: Hub, kind: str
) -> None:
    with _run(hub, kind, kind) as run:
        state, reason, created, answered, workitem_uid = run.request
        assert state == "found", (state, reason)
        (pseudo_prior,) = run.gateway.query(
            "SELECT pseudo FROM gw_uid_map WHERE original = ?", str(run.prior.StudyInstanceUID)
        )[0]
        (retrieve_seconds,) = wait_until(  # the hub may record the answer first
            lambda: run.gateway.query(
                "SELECT retrieve_seconds FROM gw_prior_request WHERE state = 'answered'"
            ),
            10,
            "the gateway's record of its answer",
        )[0]

        # performance: what the priors added to the workitem's start vs the PACS's retrieve
        waited = (_moment(answered) - _moment(created)).total_seconds()
        print(
            f"\n[{kind}] PACS retrieve {retrieve_seconds:.3f} s; prior request -> answer"
            f" {waited:.3f} s (beyond the retrieve: {waited - retrieve_seconds:.3f} s)"
        )
        assert waited <= retrieve_seconds + 1.0

        # the prior at the hub: pseudonymised, the same patient pseudonym, the interval kept
        now, then = _hub_studies(hub, [run.pseudo_current, pseudo_prior])
        assert now["00100020"]["Value"] == then["00100020"]["Value"]
        assert now["00100020"]["Value"][0] != run.current.PatientID
        dates = [date.fromisoformat(_iso(s["00080020"]["Value"][0])) for s in (now, then)]
        assert dates[0] != CURRENT_DATE, "the dates are shifted"
        assert (dates[0] - dates[1]).days == PRIOR_DAYS

        # the workitem lists it as a prior
        priors = prior_inputs(_workitem(hub, workitem_uid))
        assert [p.study_instance_uid for p in priors] == [pseudo_prior]

        # the product compared with it; the result, re-identified, is in the PACS
        assert len(run.released(hub)) == 1
        page = run.summary_page(hub)
    assert page.StudyInstanceUID == run.current.StudyInstanceUID
    assert "since prior" in page.ImageComments, page.ImageComments
    assert f"{PRIOR_DAYS / (365.25 / 12):.1f} months" in page.ImageComments


def test_a_pacs_refusing_c_move_fails_the_request_with_the_reason(hub: Hub) -> None:
    with _run(hub, "dimse", "refused", move_destination="NOT-KNOWN") as run:
        state, reason, _created, _answered, _workitem = run.request
        assert state == "failed"
        assert reason.startswith("PACS refused C-MOVE: status 0x"), reason
        print(f"\n[refused] the hub was told: {reason}")
        assert len(run.released(hub)) == 1  # the workitem ran without priors
        page = run.summary_page(hub)
    assert "no prior study available" in page.ImageComments
    assert "PACS refused C-MOVE" in page.ImageComments


def _moment(value: object) -> datetime:
    assert value
    return datetime.fromisoformat(str(value)).replace(tzinfo=None)


def _iso(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}"
