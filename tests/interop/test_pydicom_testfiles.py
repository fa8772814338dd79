"""Every valid Part 10 file bundled with pydicom round-trips through the hub:
STOW-RS stores it, QIDO-RS finds it, WADO-RS (``transfer-syntax=*``) returns the same bytes.

The files are those *installed with pydicom* under ``pydicom.data.DATA_ROOT``
(``test_files/**`` and ``charset_files/*``), read from disk. ``get_testdata_files()`` is not
used because it also downloads the ``pydicom-data`` files (``data_path_with_download``);
this suite never touches the network. A file is kept when it is a valid Part 10 file:
``dcmread`` reads it without a warning, with preamble and ``DICM``, File Meta Information
with a Transfer Syntax UID, SOP Class, SOP Instance, Study Instance and Series Instance
UIDs, and File Meta Media Storage SOP Class/Instance UIDs equal to the data set's (PS3.10
§7.1). With pydicom 3.0 that keeps 149 files; excluded, with the reason:

- no File Meta / not Part 10: ``ExplVR_BigEndNoMeta.dcm``, ``ExplVR_LitEndNoMeta.dcm``,
  ``no_meta.dcm``, ``rtstruct.dcm``, ``meta_missing_tsyntax.dcm`` (meta without Transfer
  Syntax UID);
- not DICOM at all: ``README.txt``, ``crayons.icc``, ``*.dump``, ``*.json``, ``zipMR.gz``,
  ``dicomdirtests/README.txt``, ``TINY_ALPHA/README``, ``charset_files/FileInfo.txt``;
- no Study/Series Instance UID: ``JPEGLSNearLossless_08.dcm``,
  ``JPEGLSNearLossless_16.dcm``, ``SC_rgb_jls_lossy_line.dcm``,
  ``SC_rgb_jls_lossy_sample.dcm``;
- no SOP/Study/Series UIDs (fragments, not composite instances): ``UN_sequence.dcm``,
  ``empty_charset_LEI.dcm``, ``nested_priv_SQ.dcm``, ``priv_SQ.dcm``,
  ``no_meta_group_length.dcm``, ``charset_files/chrSQEncoding.dcm``,
  ``charset_files/chrSQEncoding1.dcm``;
- DICOMDIRs (Media Storage Directory, no composite UIDs): ``dicomdirtests/DICOMDIR*``,
  ``TINY_ALPHA/DICOMDIR``;
- Media Storage SOP Instance UID differs from the SOP Instance UID (the hub refuses
  these, Failure Reason C002): ``badVR.dcm``, ``rtdose.dcm``, ``rtdose_1frame.dcm``,
  ``rtdose_expb.dcm``, ``rtdose_expb_1frame.dcm``, ``rtplan.dcm``,
  ``rtplan_truncated.dcm``, ``charset_files/chrJapMulti.dcm``,
  ``charset_files/chrJapMultiExplicitIR6.dcm``;
- read only with a warning: ``SC_rgb_jpeg.dcm`` (its data set is Implicit VR under an
  Explicit VR Transfer Syntax);
- truncated (Pixel Data shorter than Rows x Columns x ...): ``MR_truncated.dcm``.

WADO-RS with ``transfer-syntax=*`` must return the stored bytes, except for files stored in
Implicit VR Little Endian or Explicit VR Big Endian: PS3.18 §8.7.3 forbids those two
Transfer Syntaxes in web services, so these come back in Explicit VR Little Endian and
are compared element by element (pixels as arrays).

Several bundled files reuse one SOP Instance UID for different content (``MR_small*.dcm``,
``rtdose*.dcm``, ``SC_rgb_rle*.dcm``, ``liver*_1frame.dcm``, ``chrFren*.dcm``, ...). The
hub's documented policy (``aifi.hub.store.repository``): the first stored instance is kept, a
*different* instance with the same SOP Instance UID is refused (Failed SOP Sequence,
Failure Reason 0111H), an *identical* re-send succeeds. So the first file of each UID (in
path order) is stored in a first set of requests, the others in a last request, and the
test checks the policy: each later file refused or accepted as the policy says, and
WADO-RS still returning the first file's bytes.

The character-set files are found by their non-ASCII Patient's Name, sent as
percent-encoded UTF-8 (PS3.18 §8.3.4.1), exactly and with a wildcard on the ideographic
component group.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data.data_manager import DATA_ROOT
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.conftest import LiveServer, hub_for_backend
from tests.support.dicom import multipart_related

BUNDLED_FOLDERS = ("test_files", "charset_files")
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
STOW_BATCH = 40
ANY_TRANSFER_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DUPLICATE_SOP_INSTANCE = 0x0111
NOT_FOR_WEB_SERVICES = {ImplicitVRLittleEndian, ExplicitVRBigEndian}
"""PS3.18 §8.7.3: "shall not be used with Web Services"."""


@dataclass(frozen=True)
class BundledFile:
    name: str
    """Path relative to ``pydicom.data.DATA_ROOT``."""
    data: bytes
    transfer_syntax: str
    sop_class: str
    sop_instance: str
    study: str
    series: str
    patient_name: str
    """Decoded with the file's Specific Character Set ('' when absent)."""
    patient_name_json: dict[str, str] | None
    """The DICOM JSON PN value (``{"Alphabetic": ..., "Ideographic": ...}``)."""


def _read(path: Path, root: Path) -> BundledFile | str:
    """The file, or why it is excluded."""
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a file pydicom must guess at is not valid
            ds = dcmread(io.BytesIO(data))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return f"not Part 10: {exc}"
    except UserWarning as warning:
        return f"read only with a warning: {warning}"
    if data[128:132] != b"DICM":
        return "no preamble/DICM prefix"
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        return "no Transfer Syntax UID in File Meta"
    missing = [k for k in REQUIRED_UIDS if k not in ds]
    if missing:
        return "missing " + ", ".join(missing)
    meta = ds.file_meta
    if meta.get("MediaStorageSOPInstanceUID") != ds.SOPInstanceUID:
        return "Media Storage SOP Instance UID differs from the SOP Instance UID"
    if meta.get("MediaStorageSOPClassUID") != ds.SOPClassUID:
        return "Media Storage SOP Class UID differs from the SOP Class UID"
    native = "PixelData" in ds and not meta.TransferSyntaxUID.is_encapsulated
    if native and len(ds.PixelData) < get_expected_length(ds, unit="bytes"):
        return "truncated: Pixel Data shorter than its image pixel description"
    pn_json = None
    if ds.get("PatientName"):
        pn_json = ds["PatientName"].to_json_dict(None, 0).get("Value", [None])[0]
    return BundledFile(
        name=path.relative_to(root).as_posix(),
        data=data,
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        sop_class=str(ds.SOPClassUID),
        sop_instance=str(ds.SOPInstanceUID),
        study=str(ds.StudyInstanceUID),
        series=str(ds.SeriesInstanceUID),
        patient_name=str(ds.get("PatientName", "")),
        patient_name_json=pn_json,
    )


def _bundled() -> tuple[list[BundledFile], dict[str, str]]:
    root = Path(DATA_ROOT)
    kept: list[BundledFile] = []
    excluded: dict[str, str] = {}
    paths = sorted(p for folder in BUNDLED_FOLDERS for p in (root / folder).rglob("*"))
    for path in paths:
        if path.is_file() and path.suffix != ".py":
            result = _read(path, root)
            if isinstance(result, BundledFile):
                kept.append(result)
            else:
                excluded[path.relative_to(root).as_posix()] = result
    return kept, excluded


KEPT, EXCLUDED = _bundled()
FIRSTS: dict[str, BundledFile] = {}
LATER: list[BundledFile] = []
for _file in KEPT:
    if _file.sop_instance in FIRSTS:
        LATER.append(_file)
    else:
        FIRSTS[_file.sop_instance] = _file
OWNERS = list(FIRSTS.values())
NON_ASCII_NAMES = [f for f in OWNERS if not f.patient_name.isascii()]


def _ids(files: list[BundledFile]) -> list[str]:
    return [f.name for f in files]


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
def http(hub: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.dicomweb, timeout=60, trust_env=False) as client:
        yield client


@dataclass
class StowResult:
    status: int
    referenced: set[str]
    failed: dict[str, int]
    """SOP Instance UID -> Failure Reason."""
    warning: str = ""
    """The response's Warning header(s): the hub's reason for each failure."""


def _stow(http: httpx.Client, files: list[BundledFile]) -> StowResult:
    body, content_type = multipart_related([f.data for f in files])
    response = http.post(
        "/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )
    assert response.status_code in (200, 202, 409), response.text
    answer: dict[str, Any] = response.json()
    referenced = {
        item["00081155"]["Value"][0] for item in answer.get("00081199", {}).get("Value", [])
    }
    failed = {
        item["00081155"]["Value"][0]: item.get("00081197", {}).get("Value", [None])[0]
        for item in answer.get("00081198", {}).get("Value", [])
    }
    warning = ", ".join(response.headers.get_list("warning"))
    return StowResult(response.status_code, referenced, failed, warning)


@pytest.fixture(scope="module")
def stored(http: httpx.Client) -> tuple[list[StowResult], list[StowResult]]:
    """All first files in batches, then each later file with a reused UID on its own
    (one request each, so that each outcome is known without ambiguity)."""
    firsts = [_stow(http, OWNERS[i : i + STOW_BATCH]) for i in range(0, len(OWNERS), STOW_BATCH)]
    later = [_stow(http, [f]) for f in LATER]
    return firsts, later


def _retrieve(http: httpx.Client, f: BundledFile) -> list[bytes]:
    response = http.get(
        f"/studies/{f.study}/series/{f.series}/instances/{f.sop_instance}",
        headers={"Accept": ANY_TRANSFER_SYNTAX},
    )
    assert response.status_code == 200, response.text
    return [content for _headers, content in parse_multipart(response)]


def parse_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/related`` body exactly as RFC 2046 §5.1.1 delimits it
    (``CRLF--boundary``), without trusting any library of the server's."""
    media_type, *params = (p.strip() for p in response.headers["content-type"].split(";"))
    assert media_type.lower() == "multipart/related"
    values = dict(p.split("=", 1) for p in params if "=" in p)
    boundary = values["boundary"].strip('"').encode()
    segments = (b"\r\n" + response.content).split(b"\r\n--" + boundary)
    parts = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            break
        head, _, content = segment.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n"):
            if b":" in line:
                key, _, value = line.partition(b":")
                headers[key.decode().strip().lower()] = value.decode().strip()
        parts.append((headers, content))
    return parts


# -- the tests ---------------------------------------------------------------------------


def test_bundled_files_were_found() -> None:
    """Guards the selection itself: pydicom 3 ships well over 100 usable files,
    character-set files among them."""
    assert len(OWNERS) > 100, EXCLUDED
    assert {"charset_files/chrH31.dcm", "charset_files/chrRuss.dcm"} <= {
        f.name for f in NON_ASCII_NAMES
    }


@pytest.mark.parametrize("f", OWNERS, ids=_ids(OWNERS))
def test_round_trip(
    http: httpx.Client, stored: tuple[list[StowResult], list[StowResult]], f: BundledFile
) -> None:
    firsts, _later = stored
    if not any(f.sop_instance in result.referenced for result in firsts):
        reasons = [
            f"Failure Reason {result.failed[f.sop_instance]!r}; {result.warning}"
            for result in firsts
            if f.sop_instance in result.failed
        ]
        pytest.fail(f"{f.name} was not stored: {reasons or 'not in the STOW-RS response'}")

    studies = http.get("/studies", params={"StudyInstanceUID": f.study})
    assert studies.status_code == 200, studies.text
    assert [s["0020000D"]["Value"] for s in studies.json()] == [[f.study]]

    instances = http.get(
        f"/studies/{f.study}/series/{f.series}/instances",
        params={"SOPInstanceUID": f.sop_instance},
    )
    assert instances.status_code == 200, instances.text
    [instance] = instances.json()
    assert instance["00080016"]["Value"] == [f.sop_class]

    [returned] = _retrieve(http, f)
    if f.transfer_syntax in NOT_FOR_WEB_SERVICES:
        assert_same_instance_in_explicit_little_endian(returned, f.data)
    else:
        assert returned == f.data


def assert_same_instance_in_explicit_little_endian(returned: bytes, original: bytes) -> None:
    got, want = dcmread(io.BytesIO(returned)), dcmread(io.BytesIO(original))
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian

    def tags(ds: Any) -> set[int]:  # group lengths are optional; the hub may drop them
        return {int(elem.tag) for elem in ds if elem.tag.element != 0}

    assert tags(got) == tags(want)
    for elem in want:
        if elem.tag.element == 0:
            continue
        if elem.keyword == "PixelData":
            assert np.array_equal(got.pixel_array, want.pixel_array)
        else:
            assert got[elem.tag].value == elem.value, elem


@pytest.mark.parametrize("f", NON_ASCII_NAMES, ids=_ids(NON_ASCII_NAMES))
def test_found_by_non_ascii_patient_name(
    http: httpx.Client, stored: tuple[list[StowResult], list[StowResult]], f: BundledFile
) -> None:
    queries = [f.patient_name]
    groups = f.patient_name.split("=")
    ideographic = next((g for g in groups[1:] if g and not g.isascii()), None)
    if ideographic:
        queries.append("*" + ideographic.split("^")[0] + "*")
    for query in queries:
        # Percent-encoded UTF-8, spelled out rather than left to the HTTP library.
        response = http.get(f"/studies?PatientName={quote(query, safe='')}")
        assert response.status_code == 200, (query, response.text)
        matches = {
            s["0020000D"]["Value"][0]: s.get("00100010", {}).get("Value", [None])[0]
            for s in response.json()
        }
        assert f.study in matches, query
        assert matches[f.study] == f.patient_name_json, query


def test_reused_sop_instance_uids_follow_the_documented_policy(
    http: httpx.Client, stored: tuple[list[StowResult], list[StowResult]]
) -> None:
    _firsts, later = stored
    outcomes = list(zip(LATER, later, strict=True))
    identical = [(f, r) for f, r in outcomes if f.data == FIRSTS[f.sop_instance].data]
    different = [(f, r) for f, r in outcomes if f.data != FIRSTS[f.sop_instance].data]
    assert identical and different  # the bundle has both kinds; keep testing both
    for f, result in identical:  # an identical re-send succeeds
        assert (result.status, result.referenced) == (200, {f.sop_instance}), f.name
    for f, result in different:  # PS3.18 §10.5.3: nothing stored, a conflict -> 409
        assert result.status == 409, f.name
        assert result.failed == {f.sop_instance: DUPLICATE_SOP_INSTANCE}, f.name
    for uid in {f.sop_instance for f in LATER}:
        first = FIRSTS[uid]
        [returned] = _retrieve(http, first)
        if first.transfer_syntax in NOT_FOR_WEB_SERVICES:
            assert_same_instance_in_explicit_little_endian(returned, first.data)
        else:
            assert returned == first.data, first.name
        found = http.get("/instances", params={"SOPInstanceUID": uid})
        assert found.status_code == 200, found.text
        assert len(found.json()) == 1, first.name
