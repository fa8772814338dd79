"""Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``), an independent PACS, uses aifi-hub as
a remote DICOMweb server: Orthanc sends a study into the hub (STOW-RS), finds it
(QIDO-RS), forgets it, pulls it back (WADO-RS) and holds the very same bytes.

Orthanc runs once for the module on free loopback ports with a configuration the harness
writes (:class:`aifi.conformance.orthanc.OrthancPeer`); each test starts a real uvicorn hub
(SQLite, and PostgreSQL when it answers) and declares it to Orthanc as server ``aifi``.
Every request Orthanc makes to the hub is recorded, so a failure shows what it sent.

What Orthanc's DICOMweb plugin 1.7 sends (``Plugin/DicomWebClient.cpp``):

- STOW-RS ``POST {hub}/studies``, ``Transfer-Encoding: chunked``,
  ``Content-Type: multipart/related; type="application/dicom"; boundary=<uuid>-<uuid>``,
  ``Accept: application/dicom+json``; each part has ``Content-Length``. The job fails
  unless every instance is in the Referenced SOP Sequence and none is in the Failed SOP
  Sequence of the answer.
- WADO-RS ``GET {hub}/studies/{uid}[/series/{uid}[/instances/{uid}]]`` with
  ``Accept: multipart/related; type="application/dicom"; transfer-syntax=*``; every part
  must be ``application/dicom``.
- QIDO-RS (``/qido``) and ``/get``: ``GET {hub}{uri}?{arguments}`` with ``Accept: */*``.
  ``/get`` relays the answer; ``/qido`` converts it to Orthanc's own format (one string
  per tag: the first of several values; IS/DS given as JSON numbers are dropped).

Skipped with the reason when Orthanc or its plugin is missing, except under CI (the ``CI``
environment variable set), where a missing peer is a failure: CI must run these tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydicom import Dataset, dcmread
from pydicom.data.data_manager import DATA_ROOT

from aifi.conformance.orthanc import OrthancError, OrthancPeer
from tests.conftest import LiveServer, run_live_server
from tests.support.dicom import make_study, to_bytes

pytestmark = pytest.mark.orthanc

SERVER = "aifi"
RECORDED_HEADERS = ("accept", "content-type", "transfer-encoding", "content-length", "expect")


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int = 0
    warning: str = ""


@dataclass
class RequestLog:
    """Every request the hub received (pure ASGI middleware: nothing is buffered)."""

    requests: list[Recorded] = field(default_factory=list)

    def matching(self, method: str, path_suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def __str__(self) -> str:
        return "\n".join(
            f"{r.method} {r.path}{'?' + r.query if r.query else ''} {r.headers}"
            f" -> {r.status} {r.warning}"
            for r in self.requests
        )


class _Recorder:
    def __init__(self, app: Any, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k.decode("latin-1") in RECORDED_HEADERS
        }
        entry = Recorded(
            scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers
        )
        self.log.requests.append(entry)

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                entry.warning = "; ".join(
                    v.decode("latin-1") for k, v in message.get("headers", []) if k == b"warning"
                )
            await send(message)

        await self.app(scope, receive, recording_send)


@pytest.fixture
def hub(app: FastAPI, orthanc: OrthancPeer) -> Iterator[tuple[LiveServer, RequestLog]]:
    """The hub (parametrized over SQLite/PostgreSQL by ``app``), declared to Orthanc."""
    log = RequestLog()
    app.add_middleware(_Recorder, log=log)
    with run_live_server(app) as server:
        orthanc.add_server(SERVER, server.dicomweb)
        try:
            yield server, log
        finally:
            orthanc.remove_server(SERVER)


@contextlib.contextmanager
def explained(log: RequestLog) -> Iterator[None]:
    """An Orthanc job failure, with what the hub received and answered."""
    try:
        yield
    except OrthancError as exc:
        raise AssertionError(f"{exc}\nRequests to the hub:\n{log}") from exc


def _upload(orthanc: OrthancPeer, datasets: list[Dataset]) -> dict[str, bytes]:
    """Upload to Orthanc; the original Part 10 bytes by SOP Instance UID."""
    originals = {}
    for ds in datasets:
        data = to_bytes(ds)
        orthanc.upload(data)
        originals[str(ds.SOPInstanceUID)] = data
    return originals


def _forget(orthanc: OrthancPeer, study_uid: str) -> None:
    orthanc_id = orthanc.find_id("studies", study_uid)
    if orthanc_id is not None:
        orthanc.delete("studies", orthanc_id)


def _orthanc_value(item: dict[str, Any], tag: str) -> Any:
    return item.get(tag, {}).get("Value")


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value", []))


def test_orthanc_stores_finds_and_retrieves_a_study_byte_identical(
    orthanc: OrthancPeer, hub: tuple[LiveServer, RequestLog]
) -> None:
    _server, log = hub
    datasets = make_study(n_series=3, per_series=2, patient_name="Orthanc^Interop")
    study_uid = str(datasets[0].StudyInstanceUID)
    series_uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    originals = _upload(orthanc, datasets)
    orthanc_study = orthanc.find_id("studies", study_uid)
    assert orthanc_study is not None

    # STOW-RS: Orthanc -> hub. The job succeeds only if the hub referenced all 6.
    with explained(log):
        content = orthanc.stow(SERVER, [orthanc_study])
    assert content.get("InstancesCount") == str(len(datasets)), log
    [stow] = log.matching("POST", "/dicomweb/studies")
    assert stow.status == 200, log
    assert stow.headers["content-type"].startswith("multipart/related"), log

    # QIDO-RS: Orthanc finds the study, its series and their instances in the hub.
    # (Orthanc's /qido answers in its own format: {tag: {"Name", "vr", "Value": str}}.)
    [study] = orthanc.qido(SERVER, "/studies", {"StudyInstanceUID": study_uid})
    assert _orthanc_value(study, "0020000D") == study_uid
    assert _orthanc_value(study, "00100010") == "Orthanc^Interop"
    by_name = orthanc.qido(SERVER, "/studies", {"PatientName": "Orthanc^Interop"})
    assert [_orthanc_value(s, "0020000D") for s in by_name] == [study_uid]
    series = orthanc.qido(SERVER, f"/studies/{study_uid}/series")
    assert {_orthanc_value(s, "0020000E") for s in series} == series_uids
    instances = orthanc.qido(SERVER, f"/studies/{study_uid}/instances")
    assert {_orthanc_value(i, "00080018") for i in instances} == set(originals)
    # The same query relayed raw: DICOM JSON with the computed attributes.
    [raw] = orthanc.get(SERVER, "/studies", {"StudyInstanceUID": study_uid}).json()
    assert _values(raw, "00201206") == [len(series_uids)]  # NumberOfStudyRelatedSeries
    assert _values(raw, "00201208") == [len(datasets)]  # NumberOfStudyRelatedInstances

    # Orthanc forgets the study...
    orthanc.delete("studies", orthanc_study)
    assert orthanc.find_id("studies", study_uid) is None

    # ...and pulls it back from the hub with WADO-RS (transfer-syntax=*).
    with explained(log):
        content = orthanc.retrieve(SERVER, [{"Study": study_uid}])
    assert content.get("ReceivedInstancesCount") == str(len(datasets)), log
    [wado] = log.matching("GET", f"/dicomweb/studies/{study_uid}")
    assert wado.status == 200, log
    for sop_uid, original in originals.items():
        orthanc_id = orthanc.find_id("instances", sop_uid)
        assert orthanc_id is not None, sop_uid
        assert orthanc.instance_file(orthanc_id) == original, sop_uid

    _forget(orthanc, study_uid)


def test_orthanc_retrieves_series_and_instances_and_reads_metadata(
    orthanc: OrthancPeer, hub: tuple[LiveServer, RequestLog]
) -> None:
    _server, log = hub
    datasets = make_study(n_series=2, per_series=2, patient_name="Orthanc^Levels")
    study_uid = str(datasets[0].StudyInstanceUID)
    originals = _upload(orthanc, datasets)
    orthanc_study = orthanc.find_id("studies", study_uid)
    assert orthanc_study is not None
    with explained(log):
        orthanc.stow(SERVER, [orthanc_study])

    # WADO-RS metadata through Orthanc's generic GET relay.
    response = orthanc.get(SERVER, f"/studies/{study_uid}/metadata")
    metadata = response.json()
    assert {_values(m, "00080018")[0] for m in metadata} == set(originals), log
    assert all("BulkDataURI" in m["7FE00010"] for m in metadata)

    orthanc.delete("studies", orthanc_study)
    first, second = datasets[0], datasets[2]  # one of each series
    assert first.SeriesInstanceUID != second.SeriesInstanceUID
    with explained(log):
        orthanc.retrieve(
            SERVER,
            [
                {"Study": study_uid, "Series": str(first.SeriesInstanceUID)},
                {
                    "Study": study_uid,
                    "Series": str(second.SeriesInstanceUID),
                    "Instance": str(second.SOPInstanceUID),
                },
            ],
        )
    expected = {
        str(ds.SOPInstanceUID) for ds in datasets if ds.SeriesInstanceUID == first.SeriesInstanceUID
    } | {str(second.SOPInstanceUID)}
    for sop_uid, original in originals.items():
        orthanc_id = orthanc.find_id("instances", sop_uid)
        if sop_uid in expected:
            assert orthanc_id is not None, log
            assert orthanc.instance_file(orthanc_id) == original
        else:
            assert orthanc_id is None
    _forget(orthanc, study_uid)


BUNDLED = (
    "charset_files/chrH31.dcm",  # ISO 2022 IR 87 (Japanese), three component groups
    "charset_files/chrX1.dcm",  # ISO_IR 192 (UTF-8)
    "test_files/examples_ybr_color.dcm",  # JPEG Baseline, YBR_FULL_422
    "test_files/SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1
    "test_files/693_J2KI.dcm",  # JPEG 2000
    "test_files/rtdose_rle.dcm",  # RLE Lossless, multi-frame
    "test_files/image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "test_files/waveform_ecg.dcm",  # a waveform, no pixel data
)
"""pydicom's bundled files in Transfer Syntaxes and character sets the hub must carry
through unchanged (PS3.18 §8.7.3 allows them all in web services)."""


def test_orthanc_round_trips_compressed_and_character_set_files(
    orthanc: OrthancPeer, hub: tuple[LiveServer, RequestLog]
) -> None:
    _server, log = hub
    root = Path(DATA_ROOT)
    originals = {name: (root / name).read_bytes() for name in BUNDLED}
    headers = {name: dcmread(root / name, stop_before_pixels=True) for name in BUNDLED}
    orthanc_ids = [orthanc.upload(data) for data in originals.values()]
    try:
        with explained(log):
            content = orthanc.stow(SERVER, orthanc_ids)
        assert content.get("InstancesCount") == str(len(BUNDLED))
        for orthanc_id in orthanc_ids:
            orthanc.delete("instances", orthanc_id)
        with explained(log):
            orthanc.retrieve(
                SERVER,
                [
                    {
                        "Study": str(ds.StudyInstanceUID),
                        "Series": str(ds.SeriesInstanceUID),
                        "Instance": str(ds.SOPInstanceUID),
                    }
                    for ds in headers.values()
                ],
            )
        for name, ds in headers.items():
            found = orthanc.find_id("instances", str(ds.SOPInstanceUID))
            assert found is not None, name
            assert orthanc.instance_file(found) == originals[name], name
    finally:
        for ds in headers.values():
            _forget(orthanc, str(ds.StudyInstanceUID))
