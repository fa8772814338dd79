"""STOW-RS (PS3.18 §10.5) against the real app on a real uvicorn server, SQLite and
PostgreSQL: statuses, the Store Instances Response Module (Annex I), bad input."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, generate_uid

from aifi.hub.store.repository import SqlDicomStore
from tests.conftest import LiveServer
from tests.support.dicom import make_ct, make_study, multipart_related, to_bytes

DICOM_JSON = "application/dicom+json"
RETRIEVE_URL = "00081190"
FAILED = "00081198"
REFERENCED = "00081199"
OTHER = "0008119A"
FAILURE_REASON = "00081197"
SOP_CLASS = "00081150"
SOP_INSTANCE = "00081155"


def post(
    server: LiveServer,
    parts: list[bytes] | None = None,
    *,
    body: bytes | Iterator[bytes] | None = None,
    content_type: str | None = None,
    study: str | None = None,
    accept: str | None = None,
) -> httpx.Response:
    if parts is not None:
        body, default_type = multipart_related(parts)
        content_type = content_type or default_type
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    url = server.dicomweb + "/studies" + (f"/{study}" if study else "")
    return httpx.post(url, content=body, headers=headers, timeout=60)


def store_of(server: LiveServer) -> SqlDicomStore:
    store: SqlDicomStore = server.app.state.dicom_store
    return store


def staging_files(server: LiveServer) -> list[Path]:
    return list(store_of(server).staging_dir().iterdir())


def stored_bytes(server: LiveServer, ds: Dataset) -> bytes | None:
    found = store_of(server).find_instances(
        "default", str(ds.StudyInstanceUID), sop_instance_uid=str(ds.SOPInstanceUID)
    )
    return found[0].path.read_bytes() if found else None


def seq(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = body.get(tag, {}).get("Value", [])
    return items


def uids(items: list[dict[str, Any]], tag: str = SOP_INSTANCE) -> list[str]:
    return [item[tag]["Value"][0] for item in items]


def reasons(body: dict[str, Any], tag: str = FAILED) -> list[int]:
    return [item[FAILURE_REASON]["Value"][0] for item in seq(body, tag)]


def bare_data_set(ds: Dataset) -> bytes:
    """A data set without preamble and File Meta Information (not PS3.10)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def assert_clean(server: LiveServer) -> None:
    assert staging_files(server) == [], "staging must be empty after every request"


# -- success ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary=aifi-test-boundary',
        "multipart/related; type=application/dicom; boundary=aifi-test-boundary",
        'Multipart/Related;Type="Application/DICOM";Boundary="aifi-test-boundary"',
    ],
)
def test_store_a_study_200_with_response_module(live_server: LiveServer, content_type: str) -> None:
    study = make_study(n_series=2, per_series=2)
    blobs = [to_bytes(ds) for ds in study]
    response = post(live_server, blobs, content_type=content_type)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM_JSON
    body = response.json()
    study_uid = str(study[0].StudyInstanceUID)
    service = live_server.dicomweb
    assert body[RETRIEVE_URL] == {"vr": "UR", "Value": [f"{service}/studies/{study_uid}"]}
    assert FAILED not in body and OTHER not in body
    items = seq(body, REFERENCED)
    assert uids(items) == [str(ds.SOPInstanceUID) for ds in study]
    for item, ds in zip(items, study, strict=True):
        assert item[SOP_CLASS] == {"vr": "UI", "Value": [str(ds.SOPClassUID)]}
        assert item[RETRIEVE_URL]["Value"] == [
            f"{service}/studies/{study_uid}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        ]
        assert "00081196" not in item
    # The stored files are the received bytes; the index matches them.
    for ds, blob in zip(study, blobs, strict=True):
        assert stored_bytes(live_server, ds) == blob
    found = store_of(live_server).find_instances("default", study_uid)
    assert len(found) == 4
    assert_clean(live_server)


def test_store_into_target_study_streamed_in_odd_chunks(live_server: LiveServer) -> None:
    study = make_study(n_series=1, per_series=3)
    body, content_type = multipart_related([to_bytes(ds) for ds in study])

    def trickle() -> Iterator[bytes]:
        for i in range(0, len(body), 777):
            yield body[i : i + 777]

    study_uid = str(study[0].StudyInstanceUID)
    response = post(live_server, body=trickle(), content_type=content_type, study=study_uid)
    assert response.status_code == 200, response.text
    assert len(seq(response.json(), REFERENCED)) == 3
    assert_clean(live_server)


def test_identical_resend_succeeds(live_server: LiveServer) -> None:
    blobs = [to_bytes(ds) for ds in make_study(1, 2)]
    assert post(live_server, blobs).status_code == 200
    again = post(live_server, blobs)
    assert again.status_code == 200, again.text
    assert len(seq(again.json(), REFERENCED)) == 2
    # The same instance twice in one request is also fine.
    twice = post(live_server, [blobs[0], blobs[0]])
    assert twice.status_code == 200


def test_conflicting_resend_is_refused_and_stored_instance_untouched(
    live_server: LiveServer,
) -> None:
    ds = make_ct()
    original = to_bytes(ds)
    assert post(live_server, [original]).status_code == 200
    path = store_of(live_server).find_instances("default", str(ds.StudyInstanceUID))[0].path
    before = path.stat()
    ds.PatientName = "Someone^Else"
    changed = to_bytes(ds)
    response = post(live_server, [changed])
    assert response.status_code == 409, response.text
    body = response.json()
    assert reasons(body) == [0x0111]
    assert uids(seq(body, FAILED)) == [str(ds.SOPInstanceUID)]
    assert REFERENCED not in body
    assert "already stored" in response.headers["warning"]
    assert path.read_bytes() == original
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert stored_bytes(live_server, ds) == original
    # In one request, identical and conflicting copies: 202, the stored one still intact.
    other = make_ct()
    mixed = post(live_server, [to_bytes(other), changed])
    assert mixed.status_code == 202
    assert reasons(mixed.json()) == [0x0111]
    assert stored_bytes(live_server, ds) == original
    assert_clean(live_server)


def test_specific_character_set_round_trips(live_server: LiveServer) -> None:
    latin = make_ct(charset="ISO_IR 192", patient_name="Müller^Jürgen")
    japanese = make_ct(
        charset=["", "ISO 2022 IR 87"],  # type: ignore[arg-type]
        patient_name="Yamada^Tarou=山田^太郎",
    )
    blobs = [to_bytes(latin), to_bytes(japanese)]
    response = post(live_server, blobs)
    assert response.status_code == 200, response.text
    for ds, blob in zip((latin, japanese), blobs, strict=True):
        assert stored_bytes(live_server, ds) == blob
        found = store_of(live_server).find_instances("default", str(ds.StudyInstanceUID))
        assert str(dcmread(found[0].path).PatientName) == str(ds.PatientName)
    found = store_of(live_server).find_instances("default", str(japanese.StudyInstanceUID))
    name = dcmread(found[0].path).PatientName
    assert (name.alphabetic, name.ideographic) == ("Yamada^Tarou", "山田^太郎")
    # The DICOM JSON kept for QIDO/WADO decodes the names with their character sets.
    for ds, expected in (
        (latin, {"Alphabetic": "Müller^Jürgen"}),
        (japanese, {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}),
    ):
        [meta] = store_of(live_server).instance_metadata("default", str(ds.StudyInstanceUID))
        assert meta["00100010"]["Value"] == [expected]


def test_file_meta_without_preamble_is_stored_as_part10(live_server: LiveServer) -> None:
    """What dicomweb-client sends for data sets built in memory: File Meta Information and
    data set, without the 128-byte preamble and DICM prefix."""
    ds = make_ct()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    sent = buffer.getvalue()
    assert sent[128:132] != b"DICM" and sent[:2] == b"\x02\x00"
    response = post(live_server, [sent])
    assert response.status_code == 200, response.text
    assert stored_bytes(live_server, ds) == b"\x00" * 128 + b"DICM" + sent
    assert post(live_server, [sent]).status_code == 200  # identical re-send


def test_xml_response_when_asked(sqlite_live_server: LiveServer) -> None:
    good = make_ct()
    response = post(
        sqlite_live_server,
        [to_bytes(good), b"not dicom"],
        accept="application/dicom+xml, application/dicom+json;q=0.5",
    )
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/dicom+xml"
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    root = ET.fromstring(response.content)
    referenced = root.find("d:DicomAttribute[@tag='00081199']", ns)
    assert referenced is not None
    sop = referenced.find("d:Item/d:DicomAttribute[@tag='00081155']/d:Value", ns)
    assert sop is not None and sop.text == str(good.SOPInstanceUID)
    other = root.find("d:DicomAttribute[@tag='0008119A']/d:Item/d:DicomAttribute/d:Value", ns)
    assert other is not None and int(other.text or "0") == 0xC001


def test_not_acceptable(sqlite_live_server: LiveServer) -> None:
    response = post(sqlite_live_server, [to_bytes(make_ct())], accept="text/html")
    assert response.status_code == 406
    assert "299 " in response.headers["warning"]


def test_more_parts_than_one_batch(live_server: LiveServer) -> None:
    study = make_study(n_series=1, per_series=70, rows=4, columns=4)
    blobs = [to_bytes(ds) for ds in study]
    blobs.insert(65, b"garbage")
    response = post(live_server, blobs)
    assert response.status_code == 202, response.text
    body = response.json()
    assert uids(seq(body, REFERENCED)) == [str(ds.SOPInstanceUID) for ds in study]
    assert reasons(body, OTHER) == [0xC001]
    assert (
        len(store_of(live_server).find_instances("default", str(study[0].StudyInstanceUID))) == 70
    )
    assert_clean(live_server)


def test_dicomweb_client_can_store(sqlite_live_server: LiveServer) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=sqlite_live_server.dicomweb)
    study = make_study(1, 2)
    result = client.store_instances([dcmread(io.BytesIO(to_bytes(ds))) for ds in study])
    assert len(result.ReferencedSOPSequence) == 2
    assert "FailedSOPSequence" not in result


# -- per-instance failures --------------------------------------------------------------


def test_study_uid_mismatch_is_409(live_server: LiveServer) -> None:
    study = make_study(1, 2)
    target = generate_uid()
    response = post(live_server, [to_bytes(ds) for ds in study], study=target)
    assert response.status_code == 409, response.text
    body = response.json()
    assert reasons(body) == [0xC409, 0xC409]
    assert uids(seq(body, FAILED)) == [str(ds.SOPInstanceUID) for ds in study]
    assert body[RETRIEVE_URL] == {"vr": "UR"}
    assert "does not match the target study" in response.headers["warning"]
    assert store_of(live_server).find_instances("default", str(study[0].StudyInstanceUID)) == []
    assert_clean(live_server)


def test_mix_of_good_and_bad_parts_is_202_with_both_sequences(live_server: LiveServer) -> None:
    good = make_ct()
    other_study = make_ct()
    bare = make_ct()
    no_series = make_ct(study_uid=str(good.StudyInstanceUID))
    del no_series.SeriesInstanceUID
    verification = make_ct(study_uid=str(good.StudyInstanceUID))
    verification.SOPClassUID = verification.file_meta.MediaStorageSOPClassUID = UID(
        "1.2.840.10008.1.1"
    )
    private_ts = make_ct(study_uid=str(good.StudyInstanceUID))
    meta_mismatch = make_ct(study_uid=str(good.StudyInstanceUID))
    sop = str(meta_mismatch.SOPInstanceUID).encode()
    other_sop = sop[:-1] + (b"1" if sop[-1:] != b"1" else b"2")
    # pydicom rewrites the File Meta UIDs on save: change the first occurrence (File Meta).
    meta_mismatch_bytes = to_bytes(meta_mismatch).replace(sop, other_sop, 1)
    truncated = make_ct(study_uid=str(good.StudyInstanceUID), rows=64, columns=64)
    cut = to_bytes(truncated)
    bad_uid = make_ct(study_uid=str(good.StudyInstanceUID))
    bad_uid.SeriesInstanceUID = "1.2.abc"
    parts = [
        to_bytes(good),
        b"\x00" * 200 + b"plain garbage",
        bare_data_set(bare),
        to_bytes(other_study),
        to_bytes(no_series),
        to_bytes(verification),
        to_bytes(private_ts).replace(b"1.2.840.10008.1.2.1\x00", b"1.2.3.4.5.6.7.8.9.1\x00", 1),
        meta_mismatch_bytes,
        cut[: len(cut) - 100],
        to_bytes(bad_uid),
    ]
    response = post(live_server, parts, study=str(good.StudyInstanceUID))
    assert response.status_code == 202, response.text
    body = response.json()
    assert uids(seq(body, REFERENCED)) == [str(good.SOPInstanceUID)]
    assert body[RETRIEVE_URL]["Value"] == [
        f"{live_server.dicomweb}/studies/{good.StudyInstanceUID}"
    ]
    failed = dict(zip(uids(seq(body, FAILED)), reasons(body), strict=True))
    assert failed == {
        str(bare.SOPInstanceUID): 0xC001,  # DICOM, but without File Meta
        str(other_study.SOPInstanceUID): 0xC409,
        str(no_series.SOPInstanceUID): 0xA900,
        str(verification.SOPInstanceUID): 0x0122,
        str(private_ts.SOPInstanceUID): 0xC122,
        str(meta_mismatch.SOPInstanceUID): 0xC002,
        str(bad_uid.SOPInstanceUID): 0xC003,
        str(truncated.SOPInstanceUID): 0xC000,  # the data set is cut short
    }
    # Not tied to a SOP Instance: the garbage part.
    assert reasons(body, OTHER) == [0xC001]
    warning = response.headers["warning"]
    assert warning.startswith(f"299 {live_server.dicomweb}: ")
    assert "not a DICOM PS3.10 file" in warning
    assert len(store_of(live_server).find_instances("default", str(good.StudyInstanceUID))) == 1
    assert_clean(live_server)


def test_part_with_other_content_type_fails(sqlite_live_server: LiveServer) -> None:
    body = (
        b"--b\r\nContent-Type: application/dicom+json\r\n\r\n{}\r\n"
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + to_bytes(make_ct()) + b"\r\n--b--"
    )
    response = post(
        sqlite_live_server,
        body=body,
        content_type='multipart/related; type="application/dicom"; boundary=b',
    )
    assert response.status_code == 202
    assert reasons(response.json(), OTHER) == [0xC004]


# -- request-level errors ---------------------------------------------------------------


WRONG_MEDIA_TYPES = [
    (None, "needs Content-Type"),
    ("application/dicom", "not supported"),
    ("application/json", "not supported"),
    ('multipart/related; type="application/dicom+json"; boundary=b', "only application/dicom"),
    ("multipart/related; type=application/dicom+xml; boundary=b", "only application/dicom"),
    ("multipart/related; boundary=b", "type parameter"),
    ("multipart/form-data; boundary=b", "not supported"),
]


def test_wrong_media_types_are_415(sqlite_live_server: LiveServer) -> None:
    """Media type checks come before any storage: one database is enough."""
    for content_type, message in WRONG_MEDIA_TYPES:
        response = post(sqlite_live_server, body=b"--b--", content_type=content_type)
        assert response.status_code == 415, (content_type, response.text)
        assert response.headers["warning"].startswith(f"299 {sqlite_live_server.dicomweb}: ")
        assert message in response.headers["warning"], content_type
    gzip = httpx.post(
        sqlite_live_server.dicomweb + "/studies",
        content=b"--b--",
        headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
            "Content-Encoding": "gzip",
        },
    )
    assert gzip.status_code == 415


def test_missing_boundary_is_400(sqlite_live_server: LiveServer) -> None:
    response = post(
        sqlite_live_server, body=b"x", content_type='multipart/related; type="application/dicom"'
    )
    assert response.status_code == 400
    assert "boundary" in response.headers["warning"]


def test_invalid_study_uid_in_path_is_400(sqlite_live_server: LiveServer) -> None:
    response = post(sqlite_live_server, [to_bytes(make_ct())], study="not-a-uid")
    assert response.status_code == 400


MALFORMED = [
    (b"this is not a multipart body", "no boundary delimiter"),
    (b"--aifi-test-boundary--", "no parts"),
    (
        b"--aifi-test-boundary\r\nbroken header line\r\n\r\nxx\r\n--aifi-test-boundary--",
        "not 'name: value'",
    ),
    (b"--aifi-test-boundaryXYZ\r\n\r\nxx", "unexpected bytes"),
]


def test_malformed_multipart_is_400(live_server: LiveServer) -> None:
    for body, message in MALFORMED:
        response = post(
            live_server,
            body=body,
            content_type='multipart/related; type="application/dicom"; boundary=aifi-test-boundary',
        )
        assert response.status_code == 400, response.text
        assert message in response.headers["warning"]
        assert_clean(live_server)


def test_truncated_body_stores_nothing_when_no_part_completed(live_server: LiveServer) -> None:
    ds = make_ct(rows=128, columns=128)
    body, content_type = multipart_related([to_bytes(ds)])
    response = post(live_server, body=body[: len(body) // 2], content_type=content_type)
    assert response.status_code == 400
    assert "Truncated" in response.headers["warning"]
    assert store_of(live_server).find_instances("default", str(ds.StudyInstanceUID)) == []
    assert_clean(live_server)


def test_truncated_body_keeps_the_parts_that_completed(live_server: LiveServer) -> None:
    study = make_study(1, 3, rows=64, columns=64)
    body, content_type = multipart_related([to_bytes(ds) for ds in study])
    cut = body.rindex(b"--aifi-test-boundary") - 500  # inside the third part
    response = post(live_server, body=body[:cut], content_type=content_type)
    assert response.status_code == 202, response.text
    result = response.json()
    assert uids(seq(result, REFERENCED)) == [str(ds.SOPInstanceUID) for ds in study[:2]]
    assert reasons(result, OTHER) == [0xC005]
    assert "Truncated" in response.headers["warning"]
    stored = store_of(live_server).find_instances("default", str(study[0].StudyInstanceUID))
    assert [s.sop_instance_uid for s in stored] == [str(ds.SOPInstanceUID) for ds in study[:2]]
    for s in stored:
        assert s.path.is_file()
    assert_clean(live_server)


def test_nothing_already_stored_is_touched_by_bad_requests(live_server: LiveServer) -> None:
    ds = make_ct()
    blob = to_bytes(ds)
    assert post(live_server, [blob]).status_code == 200
    path = store_of(live_server).find_instances("default", str(ds.StudyInstanceUID))[0].path
    body, content_type = multipart_related([blob, blob])
    post(live_server, body=body[:-30], content_type=content_type)
    post(live_server, body=b"garbage", content_type=content_type)
    post(live_server, [blob], study=generate_uid())
    assert path.read_bytes() == blob
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()
    assert len(store_of(live_server).find_instances("default", str(ds.StudyInstanceUID))) == 1
    assert_clean(live_server)


# -- bounded memory ---------------------------------------------------------------------


def test_examine_part_never_loads_pixel_data(tmp_path: Path) -> None:
    from pydicom.dataelem import RawDataElement

    from aifi.dicomweb.dicomjson import dataset_to_metadata
    from aifi.dicomweb.instance_checks import examine_part

    blob = to_bytes(make_ct(rows=256, columns=256))
    path = tmp_path / "part"
    path.write_bytes(blob)
    outcome, instance = examine_part(path, len(blob), "0" * 64, 1, None)
    assert outcome.failure is None and instance is not None
    raw = instance.header._dict[BaseTag(0x7FE00010)]
    assert isinstance(raw, RawDataElement) and raw.value is None, "Pixel Data was read"
    assert instance.metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "7FE00010"}
    assert instance.metadata == dataset_to_metadata(dcmread(path))


def test_a_large_instance_streams_through_bounded_memory(sqlite_live_server: LiveServer) -> None:
    import tracemalloc

    ds = make_ct(rows=4096, columns=4096)  # 32 MiB of pixels
    blob = to_bytes(ds)
    body, content_type = multipart_related([blob])
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    del body
    tracemalloc.start()  # traces the server thread too (same process)
    try:
        response = post(sqlite_live_server, body=iter(pieces), content_type=content_type)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a 32 MB instance"
    print(f"traced peak while storing a {len(blob) / 1e6:.0f} MB instance: {peak / 1e6:.1f} MB")
    assert stored_bytes(sqlite_live_server, ds) == blob


def test_concurrent_requests_are_stored_consistently(live_server: LiveServer) -> None:
    """Concurrent requests share store transactions (group commit); a SOP Instance sent
    concurrently with different bytes is stored once, the other copy refused, and no
    file is left behind that the index does not know."""
    from concurrent.futures import ThreadPoolExecutor

    studies = [make_study(1, 3, rows=8, columns=8) for _ in range(6)]
    contested = make_ct(rows=8, columns=8)
    first = to_bytes(contested)
    contested.PatientName = "Other^Copy"
    second = to_bytes(contested)
    bodies = [[to_bytes(ds) for ds in study] for study in studies] + [[first], [second]]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda parts: post(live_server, parts), bodies))
    assert [r.status_code for r in responses[:6]] == [200] * 6
    assert sorted(r.status_code for r in responses[6:]) == [200, 409]
    for study in studies:
        assert (
            len(store_of(live_server).find_instances("default", str(study[0].StudyInstanceUID)))
            == 3
        )
    kept = stored_bytes(live_server, contested)
    assert kept in (first, second)
    winner = responses[6] if responses[6].status_code == 200 else responses[7]
    assert kept == (first if winner is responses[6] else second)
    root = store_of(live_server).root
    files = set(root.rglob("*.dcm"))
    indexed = {
        s.path
        for study in [*studies, [contested]]
        for s in store_of(live_server).find_instances("default", str(study[0].StudyInstanceUID))
    }
    assert files == indexed
    assert_clean(live_server)
