"""WADO-RS (PS3.18 §10.4) against the real app on a real uvicorn server, SQLite and
PostgreSQL: instances byte for byte and transcoded, metadata, frames, bulk data, rendered
images and thumbnails, and the 400/404/406 answers. Data is loaded straight into the
store (``ingest``), so these tests do not depend on STOW-RS."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data.data_manager import DATA_ROOT
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.conftest import LiveServer
from tests.support.dicom import ingest, make_ct, make_study, to_bytes

ELE = "1.2.840.10008.1.2.1"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'
TEST_FILES = Path(DATA_ROOT) / "test_files"


# -- helpers ------------------------------------------------------------------------------


def params_of(content_type: str) -> dict[str, str]:
    out = {}
    for piece in content_type.split(";")[1:]:
        name, _, value = piece.strip().partition("=")
        out[name.lower()] = value.strip('"')
    return out


def parts_of(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related body (RFC 2387) into (headers, body) pairs."""
    ctype = response.headers["content-type"]
    assert ctype.startswith("multipart/related"), ctype
    boundary = params_of(ctype)["boundary"].encode()
    segments = (b"\r\n" + response.content).split(b"\r\n--" + boundary)
    assert segments[0] == b"" and segments[-1] == b"--\r\n", "malformed multipart framing"
    parts = []
    for segment in segments[1:-1]:
        head, _, body = segment[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, body))
    return parts


def bundled(name: str) -> bytes:
    """A pydicom test file (read from disk, never downloaded) with fresh UIDs, so files
    that share UIDs can be stored side by side; written in its own transfer syntax."""
    ds = dcmread(TEST_FILES / name)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def load(server: LiveServer, *items: Dataset | bytes) -> list[Dataset]:
    outcomes = ingest(server.app.state.dicom_store, list(items))
    assert all(o.status.value == "stored" for o in outcomes), outcomes
    return [dcmread(io.BytesIO(i if isinstance(i, bytes) else to_bytes(i))) for i in items]


def url(server: LiveServer, ds: Dataset, level: str = "instance") -> str:
    out = f"{server.dicomweb}/studies/{ds.StudyInstanceUID}"
    if level in ("series", "instance"):
        out += f"/series/{ds.SeriesInstanceUID}"
    if level == "instance":
        out += f"/instances/{ds.SOPInstanceUID}"
    return out


def get(address: str, accept: str | None = None, **params: str) -> httpx.Response:
    headers = {"Accept": accept} if accept is not None else {}
    return httpx.get(address, headers=headers, params=params, timeout=60)


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["warning"].startswith("299 "), response.headers


def pixels(data: bytes) -> np.ndarray:
    return dcmread(io.BytesIO(data)).pixel_array


# -- instances ----------------------------------------------------------------------------


def test_study_series_instance_are_sent_byte_for_byte(live_server: LiveServer) -> None:
    study = make_study(n_series=2, per_series=2)
    originals = {ds.SOPInstanceUID: to_bytes(ds) for ds in study}
    load(live_server, *study)
    first = study[0]

    response = get(url(live_server, first, "study"))
    assert response.status_code == 200
    ctype = response.headers["content-type"]
    assert ctype.startswith(DICOM_MULTIPART)
    assert params_of(ctype)["transfer-syntax"] == ELE
    assert int(response.headers["content-length"]) == len(response.content)
    assert "gzip" not in response.headers.get("content-encoding", "")
    parts = parts_of(response)
    assert len(parts) == 4
    for headers, body in parts:
        assert headers["content-type"] == f"application/dicom; transfer-syntax={ELE}"
        sop = dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID
        assert body == originals[sop]
        assert headers["content-location"].endswith(f"/instances/{sop}")

    series = parts_of(get(url(live_server, first, "series"), accept=DICOM_MULTIPART))
    assert len(series) == 2
    assert {dcmread(io.BytesIO(b)).SeriesInstanceUID for _, b in series} == {
        first.SeriesInstanceUID
    }

    star = get(url(live_server, first), accept=DICOM_MULTIPART + "; transfer-syntax=*")
    [(_, body)] = parts_of(star)
    assert body == originals[first.SOPInstanceUID]

    single = get(url(live_server, first), accept="application/dicom")
    assert single.headers["content-type"] == f"application/dicom; transfer-syntax={ELE}"
    assert single.content == originals[first.SOPInstanceUID]


def test_a_damaged_stored_file_is_reported_not_sent(sqlite_live_server: LiveServer) -> None:
    """A stored file whose size no longer matches the index (truncated behind the hub's
    back) makes the retrieve fail with a reason instead of sending damaged bytes; the
    intact instances of another series stay retrievable."""
    server = sqlite_live_server
    study = make_study(n_series=2, per_series=2)
    load(server, *study)
    damaged = study[0]
    [stored] = server.app.state.dicom_store.find_instances(
        "default",
        damaged.StudyInstanceUID,
        damaged.SeriesInstanceUID,
        damaged.SOPInstanceUID,
    )
    with open(stored.file, "r+b") as f:
        f.truncate(stored.size - 100)

    for level in ("study", "series", "instance"):
        response = get(url(server, damaged, level))
        assert response.status_code == 500, level
        assert "the index says" in response.text
    intact = next(ds for ds in study if ds.SeriesInstanceUID != damaged.SeriesInstanceUID)
    response = get(url(server, intact, "series"))
    assert response.status_code == 200
    assert len(parts_of(response)) == 2


@pytest.mark.parametrize(
    ("name", "lossless"),
    [
        ("MR_small_implicit.dcm", True),  # Implicit VR Little Endian
        ("MR_small_bigendian.dcm", True),  # Explicit VR Big Endian
        ("image_dfl.dcm", True),  # Deflated Explicit VR Little Endian
        ("JPGExtended.dcm", False),  # JPEG Extended 4.51
        ("SC_rgb_jpeg_gdcm.dcm", True),  # JPEG Lossless SV1 4.70
        ("MR_small_jpeg_ls_lossless.dcm", True),  # JPEG-LS 4.80
        ("JPEG2000.dcm", False),  # JPEG 2000 4.91
        ("MR_small_RLE.dcm", True),  # RLE Lossless
    ],
)
def test_transfer_syntax_negotiation(
    sqlite_live_server: LiveServer, name: str, lossless: bool
) -> None:
    server = sqlite_live_server
    data = bundled(name)
    [ds] = load(server, data)
    stored = str(ds.file_meta.TransferSyntaxUID)
    expected = ds.pixel_array

    default = get(url(server, ds))
    assert default.status_code == 200, default.text
    assert params_of(default.headers["content-type"])["transfer-syntax"] == ELE
    [(headers, body)] = parts_of(default)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ELE}"
    sent = dcmread(io.BytesIO(body))
    assert sent.file_meta.TransferSyntaxUID == ELE
    assert sent.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(sent.pixel_array, expected)

    star = get(url(server, ds), accept=DICOM_MULTIPART + "; transfer-syntax=*")
    [(headers, body)] = parts_of(star)
    never = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2"}
    if stored in never:
        assert headers["content-type"].endswith(ELE)  # PS3.18 §8.7.3: never sent as such
        assert np.array_equal(pixels(body), expected)
    else:
        assert headers["content-type"] == f"application/dicom; transfer-syntax={stored}"
        assert body == data  # as stored: the stored bytes, unchanged

    exact = get(url(server, ds), accept=f"{DICOM_MULTIPART}; transfer-syntax={stored}")
    if stored in never:
        assert_error(exact, 406)
    else:
        assert exact.status_code == 200


def test_negotiation_q_values_mixed_syntaxes_and_406(sqlite_live_server: LiveServer) -> None:
    server = sqlite_live_server
    study_uid = generate_uid()
    native = make_ct(study_uid=study_uid, series_uid=generate_uid())
    compressed = dcmread(io.BytesIO(bundled("MR_small_RLE.dcm")))
    compressed.StudyInstanceUID = study_uid
    broken = dcmread(io.BytesIO(bundled("JPEG-lossy.dcm")))  # pylibjpeg cannot decode it
    load(server, native, to_bytes(compressed), to_bytes(broken))

    # Preferred range unsatisfiable for the native instance; the q=0.5 one is used.
    accept = (
        f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.5, "
        f"{DICOM_MULTIPART}; transfer-syntax=*; q=0.5"
    )
    response = get(url(server, native, "study"), accept=accept)
    assert response.status_code == 200
    assert "transfer-syntax" not in params_of(response.headers["content-type"])
    syntaxes = {h["content-type"].split("=")[-1] for h, _ in parts_of(response)}
    assert syntaxes == {ELE, "1.2.840.10008.1.2.5"}

    # Equal q: the range that needs no conversion wins.
    both = f"{DICOM_MULTIPART}; transfer-syntax={ELE}, {DICOM_MULTIPART}; transfer-syntax=*"
    [(headers, _)] = parts_of(get(url(server, compressed), accept=both))
    assert headers["content-type"].endswith("1.2.840.10008.1.2.5")

    # Undecodable JPEG: the default (Explicit VR LE) cannot be produced, as stored can.
    assert_error(get(url(server, broken)), 406)
    assert get(url(server, broken), accept=DICOM_MULTIPART + "; transfer-syntax=*").is_success

    assert_error(get(url(server, native), accept="text/html"), 406)
    assert_error(get(url(server, native), accept="application/dicom; q=zero"), 400)
    implicit = f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2"
    assert_error(get(url(server, native), accept=implicit), 406)
    # The accept query parameter (PS3.18 §8.3.3.1) overrides the header.
    by_query = httpx.get(
        url(server, native), params={"accept": "application/dicom"}, headers={"Accept": "text/html"}
    )
    assert by_query.headers["content-type"].startswith("application/dicom;")


def test_unknown_and_malformed_addresses(live_server: LiveServer) -> None:
    [ds] = load(live_server, make_ct())
    base = url(live_server, ds)
    assert_error(get(f"{live_server.dicomweb}/studies/1.2.3.999"), 404)
    assert_error(get(f"{url(live_server, ds, 'study')}/series/1.2.3.999"), 404)
    assert_error(get(f"{url(live_server, ds, 'series')}/instances/1.2.3.999/metadata"), 404)
    assert_error(get(f"{live_server.dicomweb}/studies/not-a-uid"), 400)
    assert_error(get(f"{live_server.dicomweb}/studies/1.2.3.999/metadata"), 404)
    for frames in ("0", "x", "1,,2", "-1"):
        assert_error(get(f"{base}/frames/{frames}"), 400)
    assert_error(get(f"{base}/frames/2"), 404)
    assert_error(get(f"{base}/bulkdata/7FE0"), 400)
    assert_error(get(f"{base}/bulkdata/00091010"), 404)
    assert_error(get(f"{base}/bulkdata/00100010"), 404)  # not bulk data
    assert_error(get(f"{base}/rendered", window="40"), 400)
    assert_error(get(f"{base}/rendered", viewport="0,10"), 400)
    assert_error(get(f"{base}/rendered", viewport="10,10,0,0,100,100"), 400)
    assert_error(get(f"{base}/rendered", quality="101"), 400)
    assert_error(get(f"{base}/rendered", accept="image/gif"), 406)
    assert_error(get(f"{base}/metadata", accept="text/plain"), 406)


# -- metadata and bulk data ---------------------------------------------------------------


def test_metadata_json_and_xml_with_bulk_data(live_server: LiveServer) -> None:
    ct = make_ct()
    ct.add_new(0x00091010, "LO", "AIFI")  # private creator
    ct.add_new(0x00091011, "OB", bytes(range(256)) * 8)  # private bulk data, 2 KiB
    ecg = dcmread(io.BytesIO(bundled("waveform_ecg.dcm")))
    ecg.StudyInstanceUID = ct.StudyInstanceUID
    [ct_read, ecg_read] = load(live_server, ct, to_bytes(ecg))

    response = get(url(live_server, ct, "study") + "/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    items = response.json()
    assert len(items) == 2
    meta = next(i for i in items if i["00080018"]["Value"] == [ct.SOPInstanceUID])
    pixel_uri = meta["7FE00010"]["BulkDataURI"]
    assert pixel_uri == url(live_server, ct) + "/bulkdata/7FE00010"
    assert "PatientName" not in meta and meta["00100010"]["vr"] == "PN"

    single = get(pixel_uri, accept="application/octet-stream")
    assert single.headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert single.content == ct_read.PixelData
    [(headers, body)] = parts_of(get(pixel_uri))
    assert body == ct_read.PixelData and headers["content-location"] == pixel_uri
    [(_, private)] = parts_of(get(meta["00091011"]["BulkDataURI"]))
    assert private == bytes(range(256)) * 8

    [ecg_meta] = get(url(live_server, ecg) + "/metadata").json()
    waveform_uri = ecg_meta["54000100"]["Value"][0]["54001010"]["BulkDataURI"]
    assert waveform_uri.endswith("/bulkdata/54000100/0/54001010")
    [(_, waveform)] = parts_of(get(waveform_uri))
    assert waveform == ecg_read.WaveformSequence[0].WaveformData
    assert_error(get(waveform_uri.replace("/0/", "/7/")), 404)

    xml = get(
        url(live_server, ct, "series") + "/metadata",
        accept=f'{"multipart/related"}; type="application/dicom+xml"',
    )
    assert xml.status_code == 200, xml.text
    [(headers, document)] = parts_of(xml)
    assert headers["content-type"].startswith("application/dicom+xml")
    root = ET.fromstring(document)
    bulk = root.find(".//{*}DicomAttribute[@tag='7FE00010']/{*}BulkData")
    assert bulk is not None and bulk.get("uri") == pixel_uri


# -- frames -------------------------------------------------------------------------------


def multiframe_ct(frames: int = 4) -> Dataset:
    ds = make_ct(rows=8, columns=6)
    stack = (np.arange(frames * 48, dtype=np.uint16).reshape(frames, 8, 6) * 5) % 4096
    ds.NumberOfFrames = frames
    ds.PixelData = stack.tobytes()
    return ds


def test_frames_native_compressed_and_decoded(live_server: LiveServer) -> None:
    native = multiframe_ct()
    jpeg = dcmread(io.BytesIO(bundled("examples_ybr_color.dcm")))  # 30 frames, 4.50
    rle = dcmread(io.BytesIO(bundled("SC_rgb_rle_2frame.dcm")))
    load(live_server, native, to_bytes(jpeg), to_bytes(rle))

    response = get(url(live_server, native) + "/frames/3,1")
    assert response.headers["content-type"].startswith(OCTETS)
    parts = parts_of(response)
    expected = native.pixel_array
    assert [b for _, b in parts] == [expected[2].tobytes(), expected[0].tobytes()]
    assert parts[0][0]["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert parts[0][0]["content-location"].endswith("/frames/3")
    one = get(url(live_server, native) + "/frames/2", accept="application/octet-stream")
    assert one.content == expected[1].tobytes()
    assert_error(get(url(live_server, native) + "/frames/5"), 404)

    stored = list(generate_frames(jpeg.PixelData, number_of_frames=30))
    as_stored = get(url(live_server, jpeg) + "/frames/1,30", accept=f"{OCTETS}; transfer-syntax=*")
    assert as_stored.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    [(h1, f1), (_, f30)] = parts_of(as_stored)
    assert h1["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert (f1, f30) == (stored[0], stored[29])
    # image/jpeg without a transfer syntax: the default (4.70) cannot be made, but a lossy
    # original may be sent as it is (PS3.18 §8.7.3).
    [(_, lossy)] = parts_of(
        get(url(live_server, jpeg) + "/frames/2", 'multipart/related; type="image/jpeg"')
    )
    assert lossy == stored[1]
    assert_error(
        get(url(live_server, jpeg) + "/frames/2", 'multipart/related; type="image/jp2"'), 406
    )
    decoded = parts_of(get(url(live_server, jpeg) + "/frames/2"))
    assert decoded[0][1] == np.ascontiguousarray(jpeg.pixel_array[1]).tobytes()

    rle_parts = parts_of(
        get(url(live_server, rle) + "/frames/2", 'multipart/related; type="image/dicom-rle"')
    )
    assert rle_parts[0][1] == list(generate_frames(rle.PixelData, number_of_frames=2))[1]

    # Pixel data bulk data of a compressed instance: its frames in their own media type,
    # or decoded into one uncompressed value.
    bulk = parts_of(
        get(url(live_server, rle) + "/bulkdata/7FE00010", f"{OCTETS}; transfer-syntax=*")
    )
    assert [b for _, b in bulk] == list(generate_frames(rle.PixelData, number_of_frames=2))
    [(_, whole)] = parts_of(get(url(live_server, rle) + "/bulkdata/7FE00010"))
    assert whole == rle.pixel_array.tobytes()
    single = get(url(live_server, rle) + "/bulkdata/7FE00010", "application/octet-stream")
    assert single.headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert single.content == whole


# -- rendered and thumbnails --------------------------------------------------------------


def image_of(response: httpx.Response, kind: str = "JPEG") -> Image.Image:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    assert image.format == kind
    return image


def test_rendered_and_thumbnails(live_server: LiveServer) -> None:
    study = make_study(n_series=1, per_series=3, rows=64, columns=32)
    frames = multiframe_ct(3)
    frames.StudyInstanceUID = study[0].StudyInstanceUID
    report = dcmread(io.BytesIO(bundled("test-SR.dcm")))
    load(live_server, *study, frames, to_bytes(report))
    ct = study[0]

    jpeg = image_of(get(url(live_server, ct) + "/rendered"))
    assert jpeg.size == (32, 64) and jpeg.mode == "L"
    assert not jpeg.info.get("exif") and "comment" not in jpeg.info
    png = image_of(get(url(live_server, ct) + "/rendered", accept="image/png"), "PNG")
    assert not png.info  # no text chunks: nothing identifying
    narrow = image_of(get(url(live_server, ct) + "/rendered", window="100,10,linear"), "JPEG")
    assert narrow.tobytes() != jpeg.tobytes()
    scaled = image_of(get(url(live_server, ct) + "/rendered", viewport="16,16", quality="50"))
    assert scaled.size == (8, 16)
    cropped = get(
        url(live_server, ct) + "/rendered", viewport="10,10,0,0,10,10", accept="image/png"
    )
    assert image_of(cropped, "PNG").size == (10, 10)

    many = get(url(live_server, frames) + "/frames/1,3/rendered", accept="image/png")
    assert many.headers["content-type"].startswith('multipart/related; type="image/png"')
    assert [Image.open(io.BytesIO(b)).size for _, b in parts_of(many)] == [(6, 8), (6, 8)]
    assert_error(get(url(live_server, frames) + "/frames/4/rendered"), 404)

    whole = get(url(live_server, ct, "study") + "/rendered")
    assert len(parts_of(whole)) == 4  # 3 CT + 1 multi-frame; the SR is left out
    assert len(parts_of(get(url(live_server, ct, "series") + "/rendered"))) == 3
    assert_error(get(url(live_server, report) + "/rendered"), 406)

    thumb = image_of(get(url(live_server, ct, "study") + "/thumbnail"))
    assert max(thumb.size) <= 128
    assert image_of(get(url(live_server, ct, "series") + "/thumbnail", accept="image/png"), "PNG")
    assert image_of(get(url(live_server, frames) + "/frames/2/thumbnail"))
    assert image_of(get(url(live_server, ct) + "/thumbnail", viewport="8,8")).size == (4, 8)
    assert_error(get(url(live_server, report, "series") + "/thumbnail"), 404)


def test_metadata_json_is_valid_for_every_instance(sqlite_live_server: LiveServer) -> None:
    """Large-ish study: metadata streams as one JSON array, ordered like retrieval."""
    study = make_study(n_series=3, per_series=20)
    load(sqlite_live_server, *study)
    response = get(url(sqlite_live_server, study[0], "study") + "/metadata")
    items = json.loads(response.content)
    assert len(items) == 60
    assert [i["00200013"]["Value"][0] for i in items[:20]] == list(range(1, 21))
