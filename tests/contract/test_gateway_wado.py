"""WADO-RS at the gateway (issue 17 point 1; PS3.18 §10.4): the re-identified AI results it
keeps under ``results/`` (written the way :mod:`aifi.gateway.results.feed` writes them) and
the originals still in its instance store are retrieved byte for byte by their original UIDs
(the ImagingStudy the EPD reads through the gateway points its Endpoint here); metadata is
DICOM JSON; a study it never held, or whose files were purged, is 404 with a ``Warning``.

A real gateway (``build_gateway``) behind a real uvicorn server, read with httpx and with
dicomweb-client, authorized with a token of the gateway's own authorization server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from sqlmodel import col, select

from aifi.clock import utc_now
from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.persistence.result_tables import GatewayResult, ResultFile, ResultState
from aifi.gateway.results.feed import RESULTS_DIR, write_atomically
from aifi.gateway.settings import GatewaySettings
from aifi.oauth_client import ClientCredentials, Credentials, new_private_jwk, public_jwks
from tests.conftest import LiveServer, free_port, run_live_server
from tests.contract.test_wado import parts_of
from tests.support.dicom import make_ct, multipart_related, to_bytes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WORKITEM = "2.25.4242"


@dataclass
class Held:
    gateway: Gateway
    server: LiveServer
    headers: dict[str, str]
    original: Dataset
    results: dict[str, bytes]
    """SOP Instance UID → the result file's bytes as written."""

    @property
    def dicomweb(self) -> str:
        return self.server.url + "/dicomweb"

    @property
    def study(self) -> str:
        return str(self.original.StudyInstanceUID)


def write_result(
    gateway: Gateway, instances: list[Dataset], workitem: str = WORKITEM
) -> dict[str, bytes]:
    """Re-identified result instances recorded as the results worker records them: files
    under ``results/<workitem>/<SOP Instance UID>.dcm``, one ``gw_result_instance`` row each
    under a stored ``gw_result``."""
    written: dict[str, bytes] = {}
    with gateway.db.write() as session:
        result = GatewayResult(
            workitem_uid=workitem,
            pseudo_study_uid=generate_uid(),
            study_instance_uid=str(instances[0].StudyInstanceUID),
            product="AIFI-TEST",
            outcome="positive",
            state=ResultState.STORED,
            stored_at=utc_now(),
        )
        session.add(result)
        session.flush()
        for ds in instances:
            data = to_bytes(ds)
            sop = str(ds.SOPInstanceUID)
            relative = Path(RESULTS_DIR) / workitem / f"{sop}.dcm"
            write_atomically(gateway.settings.data_dir / relative, data)
            session.add(
                ResultFile(
                    result_pk=result.pk or 0,
                    sop_instance_uid=sop,
                    sop_class_uid=str(ds.SOPClassUID),
                    study_instance_uid=str(ds.StudyInstanceUID),
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    pseudo_sop_instance_uid=generate_uid(),
                    file=relative.as_posix(),
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
            written[sop] = data
    return written


def result_instances(original: Dataset, count: int) -> list[Dataset]:
    series = generate_uid()
    out = []
    for number in range(1, count + 1):
        ds = make_ct(
            study_uid=str(original.StudyInstanceUID),
            series_uid=series,
            series_number=900,
            instance_number=number,
            patient_id=str(original.PatientID),
            patient_name=str(original.PatientName),
            accession=str(original.AccessionNumber),
        )
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.SeriesDescription = "AI result"
        out.append(ds)
    return out


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    data_dir = tmp_path_factory.mktemp("gw-wado") / "data"
    settings = GatewaySettings(
        data_dir=data_dir, dimse_port=free_port(), dev_mode=True, workers=False, auth="builtin"
    )
    gateway = build_gateway(settings)
    try:
        assert gateway.auth is not None
        private = new_private_jwk()
        gateway.auth.registry.add(
            tenant=settings.tenant,
            role="hospital",
            auth_method="private_key_jwt",
            client_id="epd",
            scopes=["dicomweb.read", "system/ImagingStudy.rs"],
            jwks=public_jwks(private),
        )
        original = make_ct(patient_id="HOSP-123", patient_name="Jansen^Piet", accession="A-77")
        results = write_result(gateway, result_instances(original, 2))
        with run_live_server(gateway.app) as server:
            # the original arrives as the PACS sends it: STOW-RS, no token (address-listed)
            body, content_type = multipart_related([to_bytes(original)])
            stored = httpx.post(
                server.url + "/dicomweb/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            )
            assert stored.status_code == 200, stored.text
            credentials = Credentials("epd", server.url + "/oauth/token", private_jwk=private)
            headers = ClientCredentials(credentials, ["dicomweb.read"]).headers()
            yield Held(gateway, server, headers, original, results)
    finally:
        gateway.close()


ALL_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def test_retrieve_study_returns_the_result_files_byte_for_byte(held: Held):
    response = httpx.get(
        f"{held.dicomweb}/studies/{held.study}", headers={**held.headers, "Accept": ALL_AS_STORED}
    )
    assert response.status_code == 200, response.text
    parts = parts_of(response)
    bodies = [body for _, body in parts]
    for sop, data in held.results.items():
        assert data in bodies, f"result {sop} not returned byte for byte"
    assert len(parts) == len(held.results) + 1  # and the original the PACS sent
    locations = {headers["content-location"] for headers, _ in parts}
    sop = next(iter(held.results))
    assert any(location.endswith(f"/instances/{sop}") for location in locations)


def test_retrieve_series_and_instance(held: Held):
    sop = next(iter(held.results))
    with held.gateway.db.read() as session:
        row = session.exec(select(ResultFile).where(col(ResultFile.sop_instance_uid) == sop)).one()
    series_url = f"{held.dicomweb}/studies/{held.study}/series/{row.series_instance_uid}"
    series = httpx.get(series_url, headers={**held.headers, "Accept": ALL_AS_STORED})
    assert series.status_code == 200
    assert sorted(body for _, body in parts_of(series)) == sorted(held.results.values())
    single = httpx.get(
        f"{series_url}/instances/{sop}",
        headers={**held.headers, "Accept": "application/dicom; transfer-syntax=*"},
    )
    assert single.status_code == 200
    assert single.headers["content-type"].startswith("application/dicom")
    assert single.content == held.results[sop]
    frame = httpx.get(f"{series_url}/instances/{sop}/frames/1", headers=held.headers)
    assert frame.status_code == 200
    [(_, pixels)] = parts_of(frame)
    assert len(pixels) == 16 * 16 * 2  # the 16x16 16-bit frame, as stored
    # the link of a report's summary page, re-based onto the gateway (PS3.18 §10.4.1.1.3)
    rendered = httpx.get(
        f"{series_url}/instances/{sop}/rendered", headers={**held.headers, "Accept": "image/png"}
    )
    assert rendered.status_code == 200, rendered.text
    assert rendered.headers["content-type"] == "image/png"
    assert rendered.content.startswith(b"\x89PNG")


def test_dicomweb_client_reads_the_results_and_the_original(held: Held):
    client = DICOMwebClient(url=held.dicomweb, headers=held.headers)
    instances = client.retrieve_study(held.study)
    uids = {str(ds.SOPInstanceUID) for ds in instances}
    assert uids == {*held.results, str(held.original.SOPInstanceUID)}
    assert {str(ds.PatientID) for ds in instances} == {"HOSP-123"}


def test_metadata_is_dicom_json_with_the_hospitals_identities(held: Held):
    response = httpx.get(f"{held.dicomweb}/studies/{held.study}/metadata", headers=held.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    items = response.json()
    assert len(items) == len(held.results) + 1
    for item in items:
        assert item["0020000D"] == {"vr": "UI", "Value": [held.study]}
        assert item["00100020"] == {"vr": "LO", "Value": ["HOSP-123"]}
        assert item["00100010"]["Value"][0]["Alphabetic"] == "Jansen^Piet"
        sop = item["00080018"]["Value"][0]
        assert item["7FE00010"]["BulkDataURI"].startswith(
            f"{held.dicomweb}/studies/{held.study}/series/"
        )
        assert sop in item["7FE00010"]["BulkDataURI"]
    sop = next(iter(held.results))
    row = next(i for i in items if i["00080018"]["Value"] == [sop])
    assert row["0008103E"]["Value"] == ["AI result"]


def test_a_study_the_gateway_never_held_is_404_with_a_warning(held: Held):
    for path in (f"/studies/{generate_uid()}", f"/studies/{generate_uid()}/metadata"):
        response = httpx.get(held.dicomweb + path, headers=held.headers)
        assert response.status_code == 404
        assert response.headers["warning"].startswith("299 ")
    bad = httpx.get(held.dicomweb + "/studies/not-a-uid", headers=held.headers)
    assert bad.status_code == 400


def test_a_purged_result_is_404_saying_so(held: Held):
    original = make_ct(patient_id="HOSP-9")
    written = write_result(held.gateway, result_instances(original, 1), "2.25.4343")
    url = f"{held.dicomweb}/studies/{original.StudyInstanceUID}"
    assert httpx.get(url, headers=held.headers).status_code == 200
    with held.gateway.db.write() as session:
        for row in session.exec(
            select(ResultFile).where(col(ResultFile.sop_instance_uid).in_(list(written)))
        ).all():
            (held.gateway.settings.data_dir / row.file).unlink()
            row.purged_at = utc_now()
            session.add(row)
    for path in ("", "/metadata"):
        response = httpx.get(url + path, headers=held.headers)
        assert response.status_code == 404
        assert "purged" in response.headers["warning"]
