"""The reference products (aifi.vendors.products) end to end against a real hub under
uvicorn: STOW-RS a generated pilot study, create the workitem for the product the routing
rules pick, let the product claim, analyse, store its IHE AIR results and complete — then
read the results back by QIDO-RS/WADO-RS and check them with air.validate; and a Cancel
Requested while a product analyses ends the workitem CANCELED with nothing stored."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import typer
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from aifi.conformance.pilot_studies import chest_ct, extremity_xray, hand_xray, study_json
from aifi.dicom_json import DicomJson
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.dicomweb.multipart_reader import read_parts
from aifi.ihe_profiles import air
from aifi.ihe_profiles.rules import StudyFacts, evaluate, load_rules
from aifi.vendors.cli import products_app
from aifi.vendors.performer import Performer, part10
from aifi.vendors.products import PRODUCTS
from aifi.vendors.products.skeletal_age import SkeletalAge
from tests.conftest import LiveServer
from tests.support.wait import wait_until

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
MULTIPART = 'multipart/related; type="application/dicom"'
STATE, PROGRESS_INFO, REASON = "00741000", "00741002", "00741238"
PERFORMED, OUTPUT = "00741216", "00404033"


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


@pytest.fixture
def hub(sqlite_live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sqlite_live_server.dicomweb, headers=JSON, timeout=30) as client:
        yield client


def stow(hub: httpx.Client, instances: list[Dataset]) -> None:
    boundary = new_boundary()
    body = encode([("application/dicom", part10(ds)) for ds in instances], boundary)
    response = hub.post(
        "/studies",
        content=body,
        headers={**JSON, "Content-Type": content_type("application/dicom", boundary)},
    )
    assert response.status_code == 200, response.text


def routed_to(instances: list[Dataset]) -> list[str]:
    facts = StudyFacts.from_metadata(study_json(instances))
    return [d.product.code for d in evaluate(load_rules(None), "default", facts) if d.matched]


def create_workitem(hub: httpx.Client, instances: list[Dataset], code: str) -> str:
    """A SCHEDULED workitem (RAD-80) for ``code`` on the study's one series, as the Task
    Manager makes it (Input Information with the instances and their Retrieve URL)."""
    first = instances[0]
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    refs = [
        {
            "00081150": element("UI", str(ds.SOPClassUID)),
            "00081155": element("UI", str(ds.SOPInstanceUID)),
        }
        for ds in instances
    ]
    url = f"{str(hub.base_url).rstrip('/')}/studies/{study}/series/{series}"
    ds: DicomJson = {
        "00100010": element("PN", {"Alphabetic": str(first.PatientName)}),
        "00100020": element("LO", str(first.PatientID)),
        "0020000D": element("UI", study),
        "00741200": element("CS", "HIGH"),
        "00741204": element("LO", code),
        "00404005": element("DT", "20260115101500"),
        "00404041": element("CS", "READY"),
        "00404018": element(
            "SQ",
            {
                "00080100": element("SH", code),
                "00080102": element("SH", "99AIFI"),
                "00080104": element("LO", code),
            },
        ),
        "00404021": element(
            "SQ",
            {
                "0020000D": element("UI", study),
                "0020000E": element("UI", series),
                "00081199": element("SQ", *refs),
                "0040E020": element("CS", "DICOM"),
                "0040E025": element("SQ", {"00081190": element("UR", url)}),
            },
        ),
    }
    uid = str(generate_uid())
    response = hub.post(f"/workitems?workitem={uid}", json=ds)
    assert response.status_code == 201, response.headers.get("warning")
    return uid


def workitem(hub: httpx.Client, uid: str) -> DicomJson:
    [ds] = hub.get(f"/workitems/{uid}").json()
    return dict(ds)


def wado(hub: httpx.Client, path: str) -> list[Dataset]:
    response = hub.get(path, headers={"Accept": MULTIPART})
    assert response.status_code == 200, response.text
    boundary = parse_media_type(response.headers["content-type"]).params["boundary"]
    return [dcmread(io.BytesIO(body)) for _h, body in read_parts(response.content, boundary)]


def result_series(hub: httpx.Client, study: list[Dataset]) -> set[str]:
    """Series UIDs in the study that were not in the input."""
    response = hub.get(f"/studies/{study[0].StudyInstanceUID}/series")
    found = {s["0020000E"]["Value"][0] for s in response.json()}
    return found - {str(ds.SeriesInstanceUID) for ds in study}


CASES: dict[str, tuple[str, Callable[[], list[Dataset]], str, set[str]]] = {
    "bone-age": (
        "skeletal-age",
        lambda: hand_xray(age_years=11.5),
        "Bone age: 11.5 a",
        {"SR", "OT"},
    ),
    "fracture": (
        "fracture-detection",
        lambda: extremity_xray(fracture=True, laterality="R"),
        "Fracture of bone: present (wrist joint, right)",
        {"SR", "PR"},
    ),
    "no-fracture": (
        "fracture-detection",
        lambda: extremity_xray(fracture=False, body_part="ANKLE"),
        "Fracture of bone: absent (ankle joint, left)",
        {"SR"},
    ),
    "embolism": (
        "incidental-pe",
        lambda: chest_ct(embolism=True, slices=8),
        "Pulmonary embolism: present (pulmonary artery)",
        {"SR"},
    ),
    "no-embolism": (
        "incidental-pe",
        lambda: chest_ct(embolism=False, slices=8),
        "Pulmonary embolism: absent (pulmonary artery)",
        {"SR"},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_product_performs_its_workitem_end_to_end(
    sqlite_live_server: LiveServer, hub: httpx.Client, case: str
):
    name, make, expected, modalities = CASES[case]
    product = PRODUCTS[name]
    study = make()
    assert product.code in routed_to(study)
    stow(hub, study)
    uid = create_workitem(hub, study, product.code)
    with Performer(
        sqlite_live_server.dicomweb, product.code, product.ae_title, product.factory(), timeout=30
    ) as performer:
        assert performer.run_once() == "COMPLETED"
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["COMPLETED"]
    outputs = ds[PERFORMED]["Value"][0][OUTPUT]["Value"]
    listed = {r["00081155"]["Value"][0] for o in outputs for r in o["00081199"]["Value"]}
    # Stored, findable (QIDO-RS) and retrievable (WADO-RS), and conformant (IHE AIR)
    study_uid = str(study[0].StudyInstanceUID)
    results = [
        r
        for series in result_series(hub, study)
        for r in wado(hub, f"/studies/{study_uid}/series/{series}")
    ]
    assert {str(r.SOPInstanceUID) for r in results} == listed
    assert {str(r.Modality) for r in results} == modalities
    context = air.InputContext.from_datasets(study)
    for result in results:
        assert air.validate(result, context) == [], result.Modality
        assert air.AlgorithmIdentity.from_dataset(result) == product.algorithm
        assert "DEMO" in result.SeriesDescription
    [sr] = [r for r in results if r.Modality == "SR"]
    summary = air.summarise(sr)
    assert summary.text() == expected
    assert summary.positive == ("present" in expected)


def test_cancel_requested_while_a_product_analyses(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    study = hand_xray(age_years=4.0)
    stow(hub, study)
    uid = create_workitem(hub, study, "AIFI-BONEAGE")
    heard: list[bool] = []

    class Interrupted(SkeletalAge):
        performer: Performer | None = None

        def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
            body = {REASON: element("LT", "Duplicate request")}
            assert hub.post(f"/workitems/{uid}/cancelrequest", json=body).status_code == 202
            heard.append(
                wait_until(
                    lambda: (
                        self.performer is not None and self.performer.cancellation(uid) is not None
                    ),
                    10,
                    "the Cancel Requested event at the performer",
                )
            )
            return super().analyze(workitem, inputs)

    analyzer = Interrupted()
    with Performer(
        sqlite_live_server.dicomweb, "AIFI-BONEAGE", "AIFI-BONEAGE", analyzer, timeout=30
    ) as performer:
        analyzer.performer = performer
        assert performer.run_once() == "CANCELED"
    assert heard == [True]
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    assert ds[PROGRESS_INFO]["Value"][0][REASON]["Value"] == ["Duplicate request"]
    assert result_series(hub, study) == set()  # nothing stored


def test_cli_runs_a_product_once(sqlite_live_server: LiveServer, hub: httpx.Client):
    root = typer.Typer()
    root.add_typer(products_app, name="vendors")
    study = chest_ct(embolism=True, slices=6)
    stow(hub, study)
    uid = create_workitem(hub, study, "AIFI-IPE")
    args = ["vendors", "run", "incidental-pe", "--hub", sqlite_live_server.dicomweb, "--once"]
    result = CliRunner().invoke(root, args)
    assert result.exit_code == 0, result.output
    assert "COMPLETED" in result.output
    assert workitem(hub, uid)[STATE]["Value"] == ["COMPLETED"]
    again = CliRunner().invoke(root, args)
    assert again.exit_code == 1 and "No SCHEDULED workitem for AIFI-IPE" in again.output
    listing = CliRunner().invoke(root, ["vendors", "list"])
    assert listing.exit_code == 0
    for product in PRODUCTS.values():
        assert product.name in listing.output and product.code in listing.output
    for verb in (
        ["vendors", "--help"],
        ["vendors", "run", "--help"],
        ["vendors", "list", "--help"],
    ):
        assert CliRunner().invoke(root, verb).exit_code == 0
    unknown = CliRunner().invoke(root, ["vendors", "run", "nope", "--hub", "http://x/dicomweb"])
    assert unknown.exit_code == 2
