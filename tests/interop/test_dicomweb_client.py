"""The Python ``dicomweb-client`` (``DICOMwebClient``, an independent implementation of
PS3.18) against a real uvicorn server: every resource it can address.

STOW-RS ``store_instances``; QIDO-RS ``search_for_studies/series/instances`` with filters,
wildcards, date ranges, UID lists, ``fuzzymatching``, ``limit``/``offset`` and
``includefield``; WADO-RS ``retrieve_study/series/instance``, ``retrieve_*_metadata``,
``retrieve_instance_frames``, ``retrieve_bulkdata`` (a BulkDataURI taken from metadata),
``retrieve_instance_rendered``, ``retrieve_instance_frames_rendered`` and
``retrieve_series_rendered``. dicomweb-client 0.61 has no thumbnail method, so
``/thumbnail`` is fetched with ``requests`` (the client's HTTP library) when it is missing.

One hub per database backend for the whole module (SQLite always, PostgreSQL when it
answers; under CI PostgreSQL is required), loaded once through the client's STOW-RS.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import Dataset
from pydicom.uid import MultiFrameGrayscaleWordSecondaryCaptureImageStorage, generate_uid

from tests.conftest import LiveServer, hub_for_backend
from tests.support.dicom import make_ct, make_study

STUDY_DESCRIPTION = "Synthetic study"
PRIVATE_PAYLOAD = bytes(range(256)) * 8  # 2 KiB: above the hub's inline limit (1 KiB)


# -- the hub, once per backend ---------------------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with hub_for_backend(request.param, tmp_path_factory.mktemp("hub") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def client(hub: LiveServer) -> DICOMwebClient:
    return DICOMwebClient(url=hub.dicomweb)


# -- the data: two patients, a multi-frame object with private bulk data ----------------


def make_multiframe(study_uid: str, frames: int = 3, **kwargs: object) -> Dataset:
    """A Multi-frame Grayscale Word SC image, each frame different, with a private OB
    element large enough to be served as bulk data."""
    ds = make_ct(study_uid=study_uid, rows=8, columns=8, **kwargs)  # type: ignore[arg-type]
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "OT"
    ds.SeriesNumber = 2
    ds.NumberOfFrames = frames
    ds.PixelData = b"".join(frame_bytes(i) for i in range(1, frames + 1))
    block = ds.private_block(0x0009, "AIFI TEST", create=True)
    block.add_new(0x10, "OB", PRIVATE_PAYLOAD)
    return ds


def frame_bytes(number: int, size: int = 8 * 8) -> bytes:
    """Frame ``number`` (1-based) of :func:`make_multiframe`: 16-bit LE, constant value."""
    return (number * 100).to_bytes(2, "little") * size


@dataclass
class Stored:
    a: list[Dataset]
    """Study A: Doe^John, 2024-01-05, CT, 2 series x 3 instances."""
    b: list[Dataset]
    """Study B: Müller^Jürgen (UTF-8), 2024-02-20, one MR instance + one multi-frame OT."""
    response: Dataset

    @property
    def study_a(self) -> str:
        return str(self.a[0].StudyInstanceUID)

    @property
    def study_b(self) -> str:
        return str(self.b[0].StudyInstanceUID)

    @property
    def multiframe(self) -> Dataset:
        return self.b[1]


@pytest.fixture(scope="module")
def stored(client: DICOMwebClient) -> Stored:
    a = make_study(
        n_series=2,
        per_series=3,
        patient_name="Doe^John",
        patient_id="AIFI-A",
        study_date="20240105",
        accession="ACC-A",
    )
    study_b = generate_uid()
    b = [
        make_ct(
            study_uid=study_b,
            patient_name="Müller^Jürgen",
            patient_id="AIFI-B",
            study_date="20240220",
            accession="ACC-B",
            modality="MR",
            charset="ISO_IR 192",
        ),
        make_multiframe(
            study_b,
            patient_name="Müller^Jürgen",
            patient_id="AIFI-B",
            study_date="20240220",
            accession="ACC-B",
            charset="ISO_IR 192",
        ),
    ]
    for ds in a + b:
        # As if read from files: dicomweb-client then sends full PS3.10 files. Data sets
        # made in memory (preamble None) are sent without preamble and 'DICM': see
        # test_store_instances_made_in_memory.
        ds.preamble = b"\x00" * 128
    response = client.store_instances(a + b)
    return Stored(a=a, b=b, response=response)


def uid(item: dict[str, Any], tag: str) -> str:
    return str(item[tag]["Value"][0])


def uids(items: list[dict[str, Any]], tag: str) -> set[str]:
    return {uid(item, tag) for item in items}


def _status(error: requests.HTTPError) -> int:
    assert error.response is not None
    return error.response.status_code


STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


# -- STOW-RS -----------------------------------------------------------------------------


def test_store_instances_references_every_instance(stored: Stored) -> None:
    every = stored.a + stored.b
    referenced = stored.response.get("ReferencedSOPSequence", [])
    assert {item.ReferencedSOPInstanceUID for item in referenced} == {
        ds.SOPInstanceUID for ds in every
    }
    assert not stored.response.get("FailedSOPSequence")
    by_uid = {ds.SOPInstanceUID: ds for ds in every}
    for item in referenced:
        ds = by_uid[item.ReferencedSOPInstanceUID]
        assert item.ReferencedSOPClassUID == ds.SOPClassUID
        assert item.RetrieveURL.endswith(
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )


def test_store_instances_made_in_memory(client: DICOMwebClient) -> None:
    """dicomweb-client encodes each data set with ``pydicom.dcmwrite(buffer, ds)``, which
    writes the 128-byte preamble and ``DICM`` only when the data set has a preamble, so
    data sets built in memory (what highdicom makes: SEG, SR, the AI results this hub
    exists for) arrive as File Meta Information + data set, without preamble. Being
    tolerant when reading (CONVENTIONS.md), the hub must store them."""
    ds = make_ct(patient_id="AIFI-MEM")
    assert getattr(ds, "preamble", None) is None
    response = client.store_instances([ds])
    assert [i.ReferencedSOPInstanceUID for i in response.ReferencedSOPSequence] == [
        ds.SOPInstanceUID
    ]
    [found] = client.search_for_instances(search_filters={"PatientID": "AIFI-MEM"})
    assert uid(found, SOP_UID) == ds.SOPInstanceUID
    again = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert again.PixelData == ds.PixelData


def test_store_to_a_study_resource(client: DICOMwebClient, stored: Stored) -> None:
    """``POST /studies/{uid}``: an identical re-send succeeds; an instance of another study
    is refused with 409 (PS3.18 §10.5.3, Study Instance UID mismatch)."""
    again = client.store_instances([stored.a[0]], study_instance_uid=stored.study_a)
    assert [i.ReferencedSOPInstanceUID for i in again.ReferencedSOPSequence] == [
        stored.a[0].SOPInstanceUID
    ]
    stranger = make_ct(patient_id="AIFI-X")
    with pytest.raises(requests.HTTPError) as excinfo:
        client.store_instances([stranger], study_instance_uid=stored.study_a)
    assert _status(excinfo.value) == 409
    assert client.search_for_studies(search_filters={"PatientID": "AIFI-X"}) == []


# -- QIDO-RS -----------------------------------------------------------------------------


def test_search_for_studies_default_attributes(client: DICOMwebClient, stored: Stored) -> None:
    [study] = client.search_for_studies(search_filters={"PatientID": "AIFI-A"})
    assert uid(study, STUDY_UID) == stored.study_a
    assert study["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert study["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert study["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert study["00201208"]["Value"] == [6]  # NumberOfStudyRelatedInstances
    assert study["00080050"]["Value"] == ["ACC-A"]
    assert study["00081190"]["Value"][0].endswith(f"/studies/{stored.study_a}")  # RetrieveURL


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientName": "Doe^John"}, {"a"}),
        ({"PatientName": "Do*"}, {"a"}),
        ({"PatientName": "M?ller^J?rgen"}, {"b"}),
        ({"PatientName": "Müller*"}, {"b"}),
        ({"StudyDate": "20240101-20240131"}, {"a"}),
        ({"StudyDate": "-20240131"}, {"a"}),
        ({"StudyDate": "20240201-"}, {"b"}),
        ({"AccessionNumber": "ACC-B"}, {"b"}),
        ({"ModalitiesInStudy": "MR"}, {"b"}),
        ({"PatientID": "NOBODY"}, set()),
    ],
    ids=lambda v: str(v),
)
def test_search_for_studies_matching(
    client: DICOMwebClient, stored: Stored, filters: dict[str, str], expected: set[str]
) -> None:
    wanted = {"a": stored.study_a, "b": stored.study_b}
    found = uids(client.search_for_studies(search_filters=filters), STUDY_UID)
    assert found & set(wanted.values()) == {wanted[k] for k in expected}


def test_search_for_studies_uid_list(client: DICOMwebClient, stored: Stored) -> None:
    found = client.search_for_studies(
        search_filters={"StudyInstanceUID": f"{stored.study_a},{stored.study_b}"}
    )
    assert uids(found, STUDY_UID) == {stored.study_a, stored.study_b}


def test_search_for_studies_fuzzymatching(client: DICOMwebClient, stored: Stored) -> None:
    """Issue 2: fuzzy person-name matching ignores case and accents."""
    found = client.search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": "muller^jurgen"}
    )
    assert uids(found, STUDY_UID) == {stored.study_b}


@pytest.mark.parametrize("field", ["StudyDescription", "00081030", "all"])
def test_search_for_studies_includefield(
    client: DICOMwebClient, stored: Stored, field: str
) -> None:
    [study] = client.search_for_studies(
        search_filters={"StudyInstanceUID": stored.study_a}, fields=[field]
    )
    assert study["00081030"]["Value"] == [STUDY_DESCRIPTION]


def test_search_for_series(client: DICOMwebClient, stored: Stored) -> None:
    in_a = client.search_for_series(stored.study_a)
    assert uids(in_a, SERIES_UID) == {ds.SeriesInstanceUID for ds in stored.a}
    for series in in_a:
        assert series["00080060"]["Value"] == ["CT"]
        assert series["00201209"]["Value"] == [3]  # NumberOfSeriesRelatedInstances
    everywhere = client.search_for_series(search_filters={"Modality": "OT"})
    assert uids(everywhere, SERIES_UID) == {stored.multiframe.SeriesInstanceUID}


def test_search_limit_offset_pages_without_overlap(
    client: DICOMwebClient, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    """PS3.18 §8.3.4.4: ``limit``/``offset`` page through a stable order; a truncated page
    carries a ``Warning: 299`` that more results exist (dicomweb-client logs it)."""
    with caplog.at_level(logging.WARNING, logger="dicomweb_client"):
        first = client.search_for_series(stored.study_a, limit=1, offset=0)
    assert len(first) == 1
    assert any("299" in record.getMessage() for record in caplog.records)
    second = client.search_for_series(stored.study_a, limit=1, offset=1)
    assert len(second) == 1
    assert uids(first, SERIES_UID) | uids(second, SERIES_UID) == {
        ds.SeriesInstanceUID for ds in stored.a
    }
    assert client.search_for_series(stored.study_a, limit=1, offset=2) == []
    pages = client.search_for_instances(stored.study_a, limit=4, get_remaining=True)
    assert sorted(uid(i, SOP_UID) for i in pages) == sorted(ds.SOPInstanceUID for ds in stored.a)


def test_search_for_instances(client: DICOMwebClient, stored: Stored) -> None:
    series = stored.a[0].SeriesInstanceUID
    found = client.search_for_instances(stored.study_a, series)
    assert uids(found, SOP_UID) == {
        ds.SOPInstanceUID for ds in stored.a if ds.SeriesInstanceUID == series
    }
    assert {i["00200013"]["Value"][0] for i in found} == {1, 2, 3}  # InstanceNumber
    assert len(client.search_for_instances(stored.study_a)) == 6
    target = stored.multiframe
    [hit] = client.search_for_instances(search_filters={"SOPInstanceUID": target.SOPInstanceUID})
    assert uid(hit, "00080016") == target.SOPClassUID
    assert hit["00280008"]["Value"] == [3]  # NumberOfFrames


# -- WADO-RS -----------------------------------------------------------------------------


def test_retrieve_study_series_instance(client: DICOMwebClient, stored: Stored) -> None:
    originals = {ds.SOPInstanceUID: ds for ds in stored.a}
    study = client.retrieve_study(stored.study_a)
    assert {ds.SOPInstanceUID for ds in study} == set(originals)
    for ds in study:
        assert ds.PixelData == originals[ds.SOPInstanceUID].PixelData
    series = client.retrieve_series(stored.study_a, stored.a[3].SeriesInstanceUID)
    assert {ds.SOPInstanceUID for ds in series} == {
        ds.SOPInstanceUID
        for ds in stored.a
        if ds.SeriesInstanceUID == stored.a[3].SeriesInstanceUID
    }
    mr = stored.b[0]
    instance = client.retrieve_instance(
        mr.StudyInstanceUID, mr.SeriesInstanceUID, mr.SOPInstanceUID
    )
    assert instance.SOPInstanceUID == mr.SOPInstanceUID
    assert instance.SpecificCharacterSet == "ISO_IR 192"
    assert str(instance.PatientName) == "Müller^Jürgen"


def test_retrieve_metadata(client: DICOMwebClient, stored: Stored) -> None:
    study = client.retrieve_study_metadata(stored.study_a)
    assert uids(study, SOP_UID) == {ds.SOPInstanceUID for ds in stored.a}
    for item in study:
        assert "BulkDataURI" in item["7FE00010"]
        assert "InlineBinary" not in item["7FE00010"]
    first = stored.a[0]
    series = client.retrieve_series_metadata(stored.study_a, first.SeriesInstanceUID)
    assert len(series) == 3
    instance = client.retrieve_instance_metadata(
        stored.study_a, first.SeriesInstanceUID, first.SOPInstanceUID
    )
    assert instance["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert instance["00080018"]["Value"] == [first.SOPInstanceUID]


def test_retrieve_bulkdata_from_metadata_uris(client: DICOMwebClient, stored: Stored) -> None:
    mf = stored.multiframe
    metadata = client.retrieve_instance_metadata(
        mf.StudyInstanceUID, mf.SeriesInstanceUID, mf.SOPInstanceUID
    )
    private_uri = metadata["00091010"]["BulkDataURI"]
    assert b"".join(client.retrieve_bulkdata(private_uri)) == PRIVATE_PAYLOAD
    pixel_uri = metadata["7FE00010"]["BulkDataURI"]
    assert b"".join(client.retrieve_bulkdata(pixel_uri)) == mf.PixelData


def test_retrieve_instance_frames(client: DICOMwebClient, stored: Stored) -> None:
    mf = stored.multiframe
    frames = client.retrieve_instance_frames(
        mf.StudyInstanceUID, mf.SeriesInstanceUID, mf.SOPInstanceUID, frame_numbers=[1, 3]
    )
    assert frames == [frame_bytes(1), frame_bytes(3)]


def _image(data: bytes, fmt: str) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == fmt
    image.load()
    return image


@pytest.mark.parametrize(("media_type", "fmt"), [("image/jpeg", "JPEG"), ("image/png", "PNG")])
def test_retrieve_instance_rendered(
    client: DICOMwebClient, stored: Stored, media_type: str, fmt: str
) -> None:
    ct = stored.a[0]
    args = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    image = _image(client.retrieve_instance_rendered(*args, media_types=(media_type,)), fmt)
    assert image.size == (16, 16)
    narrow = client.retrieve_instance_rendered(
        *args, media_types=("image/png",), params={"window": "-1000,20,linear"}
    )
    wide = client.retrieve_instance_rendered(
        *args, media_types=("image/png",), params={"window": "1000,4000,linear"}
    )
    assert _image(narrow, "PNG").tobytes() != _image(wide, "PNG").tobytes()


def test_retrieve_instance_frames_rendered(client: DICOMwebClient, stored: Stored) -> None:
    mf = stored.multiframe
    rendered = [
        _image(
            client.retrieve_instance_frames_rendered(
                mf.StudyInstanceUID,
                mf.SeriesInstanceUID,
                mf.SOPInstanceUID,
                frame_numbers=[n],
                media_types=("image/png",),
                params={"window": "-824,400,linear"},  # HU = value - 1024
            ),
            "PNG",
        )
        for n in (1, 3)
    ]
    assert all(image.size == (8, 8) for image in rendered)
    # Frame 1 is -924 HU, frame 3 is -724 HU: a quarter and three quarters of the window.
    assert np.asarray(rendered[0]).max() < 100 < np.asarray(rendered[1]).min()


def test_retrieve_series_rendered(client: DICOMwebClient, stored: Stored) -> None:
    """A rendered series is one image per instance in ``multipart/related`` (PS3.18
    §10.4.1.1.3); dicomweb-client 0.61 hands back the body undecoded, so split it here."""
    series = stored.a[0].SeriesInstanceUID
    body = client.retrieve_series_rendered(stored.study_a, series, media_types=("image/jpeg",))
    delimiter = body.split(b"\r\n", 1)[0]
    assert delimiter.startswith(b"--"), body[:80]
    parts = [p for p in body.split(delimiter)[1:] if not p.startswith(b"--")]
    images = [_image(part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n"), "JPEG") for part in parts]
    assert [image.size for image in images] == [(16, 16)] * 3


def test_retrieve_instance_thumbnail(
    client: DICOMwebClient, hub: LiveServer, stored: Stored
) -> None:
    ct = stored.a[0]
    args = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    method = getattr(client, "retrieve_instance_thumbnail", None)
    if method is not None:
        data = method(*args, media_types=("image/jpeg",))
    else:
        url = f"{hub.dicomweb}/studies/{args[0]}/series/{args[1]}/instances/{args[2]}/thumbnail"
        response = requests.get(url, headers={"Accept": "image/jpeg"}, timeout=30)
        assert response.status_code == 200, response.text
        data = response.content
    assert _image(data, "JPEG").size[0] > 0


def test_unknown_resources_are_404_and_empty_searches(
    client: DICOMwebClient, stored: Stored
) -> None:
    with pytest.raises(requests.HTTPError) as excinfo:
        client.retrieve_study(generate_uid())
    assert _status(excinfo.value) == 404
    with pytest.raises(requests.HTTPError) as excinfo:
        client.retrieve_instance_metadata(stored.study_a, generate_uid(), generate_uid())
    assert _status(excinfo.value) == 404
    assert client.search_for_series(generate_uid()) == []
