"""The PACS clients against real peers: results reach the PACS, or say clearly why not.

- Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) receives a generated study by STOW-RS
  (PS3.18 §10.5, its DICOMweb plugin at ``/dicom-web/studies``) and by C-STORE (PS3.4
  Annex B; Orthanc's DICOM port, which stores from any AE: ``DicomAlwaysAllowStore`` is
  true by default, ``UnknownSopClassAccepted`` false). Checked through Orthanc's REST API:
  same Study Instance UID, same UIDs, same bytes; sending again is harmless.
- A pynetdicom Storage SCP in this process answers chosen C-STORE statuses.
- A tiny ``http.server`` answers STOW-RS with chosen statuses and Failed SOP Sequences.
- A closed port and a socket that never answers: retryable outcomes, quickly.

Orthanc tests carry the ``orthanc`` marker and are skipped with the reason when Orthanc is
absent, except under CI (``CI`` set), where a missing peer is a failure.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, generate_uid
from pynetdicom import AE, evt

from aifi.conformance.orthanc import OrthancPeer, orthanc_unavailable
from aifi.conformance.synthetic import Patient, radiograph_study, small_instance
from aifi.hub.delivery.destinations import DicomwebPacs, DimsePacs, OutgoingInstance, SendOutcome

UNCLOSED_SOCKET = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
"""pynetdicom 3.0.4 leaves the socket of a refused connection unclosed (its
``_shutdown_socket`` calls ``shutdown()`` on the unconnected socket, which raises, before
``close()``); the socket is freed at once. Python ignores ResourceWarning by default; this
suite turns warnings into errors, hence the filter on the tests that connect to nothing."""

QUICK = 2.0
"""Timeout (s) for the unreachable-PACS tests; each must answer well within 3 x this."""


# --- study files ----------------------------------------------------------------------------


@dataclass
class Study:
    uid: str
    files: list[OutgoingInstance]
    originals: dict[str, bytes] = field(default_factory=dict)


def _outgoing(path: Path) -> OutgoingInstance:
    ds = dcmread(path, stop_before_pixels=True)
    return OutgoingInstance(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.file_meta.TransferSyntaxUID),
        path,
    )


def _write(folder: Path, blobs: list[bytes]) -> Study:
    folder.mkdir(parents=True, exist_ok=True)
    study = Study(uid="", files=[])
    for index, data in enumerate(blobs):
        path = folder / f"{index}.dcm"
        path.write_bytes(data)
        outgoing = _outgoing(path)
        study.files.append(outgoing)
        study.originals[outgoing.sop_instance_uid] = data
    study.uid = str(dcmread(study.files[0].path, stop_before_pixels=True).StudyInstanceUID)
    return study


def make_study(folder: Path, patient: str = "PACS^Delivery") -> Study:
    """A small study with two SOP Classes: two tiny CT slices and two DX radiographs."""
    described = {
        "PatientName": patient,
        "PatientID": "AIFI-PACS-1",
        "AccessionNumber": "PACS-1",
        "StudyDate": "20260115",
    }
    blobs = list(small_instance(described, series=1, per_series=2))
    same = Patient(name=patient, patient_id=described["PatientID"])
    blobs += radiograph_study(2, patient=same, study_uid=described["StudyInstanceUID"], size=16)
    return _write(folder, blobs)


def _rewritten(path: Path, folder: Path, **changes: str) -> OutgoingInstance:
    """A copy of a file with new UIDs (and other top-level changes), as a new instance."""
    ds = dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    target = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(target, enforce_file_format=True)
    return _outgoing(target)


def _dataset_bytes(part10: bytes) -> bytes:
    """The data set after the File Meta Information (PS3.10 §7.1): preamble, "DICM", then
    (0002,0000) group length (explicit VR UL: 12 bytes) and that many bytes of meta."""
    assert part10[128:132] == b"DICM"
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


# --- Orthanc --------------------------------------------------------------------------------


def _orthanc_instances(orthanc: OrthancPeer, study_uid: str) -> dict[str, bytes]:
    """Instances Orthanc holds in the study (SOP Instance UID -> stored file)."""
    study_id = orthanc.find_id("studies", study_uid)
    if study_id is None:
        return {}
    stored = {}
    for item in orthanc.request("GET", f"/studies/{study_id}/instances").json():
        sop_uid = item["MainDicomTags"]["SOPInstanceUID"]
        stored[sop_uid] = orthanc.instance_file(item["ID"])
    return stored


def _forget(orthanc: OrthancPeer, study_uid: str) -> None:
    study_id = orthanc.find_id("studies", study_uid)
    if study_id is not None:
        orthanc.delete("studies", study_id)


def _assert_all_delivered(outcomes: list[SendOutcome], study: Study) -> None:
    assert [o.sop_instance_uid for o in outcomes] == [f.sop_instance_uid for f in study.files]
    assert all(o.delivered and not o.retryable for o in outcomes), outcomes


@pytest.mark.orthanc
def test_stow_rs_delivers_a_study_to_orthanc_byte_identical(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    study = make_study(tmp_path)
    with DicomwebPacs(orthanc.dicomweb_url, name="orthanc-web", timeout_seconds=30) as pacs:
        try:
            outcomes = pacs.send(study.files)
            _assert_all_delivered(outcomes, study)
            assert "stored by PACS 'orthanc-web'" in outcomes[0].reason
            assert "HTTP 200" in outcomes[0].reason
            stored = _orthanc_instances(orthanc, study.uid)
            assert stored == study.originals  # same study, same UIDs, same bytes

            # Sending again is harmless: delivered again, nothing duplicated.
            _assert_all_delivered(pacs.send(study.files), study)
            assert _orthanc_instances(orthanc, study.uid) == study.originals
        finally:
            _forget(orthanc, study.uid)


@pytest.mark.orthanc
def test_c_store_delivers_a_study_to_orthanc_data_set_identical(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    study = make_study(tmp_path)
    with DimsePacs(
        "127.0.0.1", orthanc.dicom_port, called_ae="ORTHANC", timeout_seconds=30, name="orthanc"
    ) as pacs:
        try:
            outcomes = pacs.send(study.files)
            _assert_all_delivered(outcomes, study)
            assert outcomes[0].reason == (
                f"stored by PACS 'orthanc' (DIMSE ORTHANC@127.0.0.1:{orthanc.dicom_port})"
                " (status 0x0000)"
            )
            stored = _orthanc_instances(orthanc, study.uid)
            assert set(stored) == set(study.originals)
            for sop_uid, original in study.originals.items():
                # Orthanc writes its own File Meta Information; the data set is ours.
                assert _dataset_bytes(stored[sop_uid]) == _dataset_bytes(original), sop_uid
                meta = dcmread(io.BytesIO(stored[sop_uid]), stop_before_pixels=True).file_meta
                assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
                orthanc_id = orthanc.find_id("instances", sop_uid)
                remote_aet = f"/instances/{orthanc_id}/metadata/RemoteAET"
                assert orthanc.request("GET", remote_aet).text == "AIFI-HUB"

            _assert_all_delivered(pacs.send(study.files), study)
            assert set(_orthanc_instances(orthanc, study.uid)) == set(study.originals)
        finally:
            _forget(orthanc, study.uid)


@pytest.mark.orthanc
def test_c_store_of_an_unsupported_sop_class_is_refused_the_rest_delivered(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    study = make_study(tmp_path / "study")
    unknown_class = "1.2.826.0.1.3680043.8.498.4242.1"  # not a Storage SOP Class
    odd = _rewritten(study.files[0].path, tmp_path, SOPClassUID=unknown_class)
    with DimsePacs("127.0.0.1", orthanc.dicom_port, called_ae="ORTHANC", name="orthanc") as pacs:
        try:
            good, refused = pacs.send([study.files[0], odd])
            assert good.delivered, good
            assert not refused.delivered and not refused.retryable
            assert "accepts no presentation context for 1.2.826.0.1.3680043.8.498.4242.1" in (
                refused.reason
            )
            assert "PACS 'orthanc'" in refused.reason
            # Alone, the association is aborted for lack of any context: still a refusal.
            [alone] = pacs.send([odd])
            assert not alone.delivered and not alone.retryable, alone
            assert "accepts no presentation context" in alone.reason
            assert orthanc.find_id("instances", odd.sop_instance_uid) is None
        finally:
            _forget(orthanc, study.uid)


@pytest.mark.orthanc
@UNCLOSED_SOCKET
def test_a_stopped_orthanc_gives_retryable_outcomes_quickly(tmp_path: Path) -> None:
    reason = orthanc_unavailable()
    if reason:
        pytest.skip(reason)
    study = make_study(tmp_path)
    with OrthancPeer() as peer:
        web_url, dicom_port = peer.dicomweb_url, peer.dicom_port
    clients: list[DicomwebPacs | DimsePacs] = [
        DicomwebPacs(web_url, name="stopped-web", timeout_seconds=QUICK),
        DimsePacs("127.0.0.1", dicom_port, called_ae="ORTHANC", timeout_seconds=QUICK),
    ]
    reasons = []
    for pacs in clients:
        with pacs:
            started = time.monotonic()
            outcomes = pacs.send(study.files)
            assert time.monotonic() - started < 3 * QUICK
        assert all(not o.delivered and o.retryable for o in outcomes), outcomes
        assert len({o.reason for o in outcomes}) == 1
        reasons.append(outcomes[0].reason)
    web, dimse = reasons
    assert web.startswith("cannot reach PACS 'stopped-web' (STOW-RS ")
    assert "ConnectError" in web
    assert dimse.startswith(f"cannot connect to PACS ORTHANC@127.0.0.1:{dicom_port} (DIMSE):")


# --- peers without Orthanc ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


@UNCLOSED_SOCKET
def test_a_closed_port_gives_retryable_outcomes(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    port = _free_port()
    for pacs in (
        DicomwebPacs(f"http://127.0.0.1:{port}/dicom-web", timeout_seconds=QUICK),
        DimsePacs("127.0.0.1", port, called_ae="NOBODY", timeout_seconds=QUICK),
    ):
        with pacs:
            started = time.monotonic()
            outcomes = pacs.send(study.files)
        assert time.monotonic() - started < 3 * QUICK
        assert len(outcomes) == len(study.files), outcomes  # one for each instance
        assert all(not o.delivered and o.retryable for o in outcomes), outcomes


def test_an_unknown_host_is_retryable(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    with DimsePacs("no-such-host.invalid", 104, called_ae="NOBODY", timeout_seconds=QUICK) as pacs:
        [outcome, *_] = pacs.send(study.files)
    assert not outcome.delivered and outcome.retryable
    assert outcome.reason.startswith("cannot connect to PACS NOBODY@no-such-host.invalid:104")
    with DicomwebPacs("http://no-such-host.invalid/dw", timeout_seconds=QUICK) as web:
        [outcome, *_] = web.send(study.files)
    assert not outcome.delivered and outcome.retryable
    assert outcome.reason.startswith(
        "cannot reach PACS at http://no-such-host.invalid/dw/studies (STOW-RS): ConnectError"
    )


def test_a_silent_peer_times_out_retryable(tmp_path: Path, silent_port: int) -> None:
    study = make_study(tmp_path)
    web = DicomwebPacs(f"http://127.0.0.1:{silent_port}/dw", name="mute", timeout_seconds=1)
    dimse = DimsePacs("127.0.0.1", silent_port, called_ae="MUTE", timeout_seconds=1)
    for pacs, expected in (
        (
            web,
            f"PACS 'mute' (STOW-RS http://127.0.0.1:{silent_port}/dw/studies)"
            " did not answer within 1 s",
        ),
        (dimse, "did not answer the association request within 1 s"),
    ):
        with pacs:
            started = time.monotonic()
            outcomes = pacs.send(study.files)
        assert time.monotonic() - started < 5
        assert all(not o.delivered and o.retryable for o in outcomes), outcomes
        assert expected in outcomes[0].reason, outcomes[0].reason


# --- a pynetdicom Storage SCP with chosen statuses -----------------------------------------


SCP_SYNTAXES = ["1.2.840.10008.1.2.1"]


@pytest.fixture
def scp_syntaxes() -> list[str]:
    """Transfer Syntaxes the Storage SCP accepts (override by parametrizing)."""
    return SCP_SYNTAXES


@pytest.fixture
def storage_scp(scp_syntaxes: list[str]) -> Iterator[tuple[int, dict[str, int], list[Dataset]]]:
    """A C-STORE SCP for CT and DX on a free port, in ``scp_syntaxes``; ``statuses`` maps
    SOP Instance UID -> status to answer (default 0x0000); every data set is recorded."""
    statuses: dict[str, int] = {}
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return statuses.get(str(ds.SOPInstanceUID), 0x0000)

    ae = AE(ae_title="TEST-SCP")
    ae.require_called_aet = True
    ae.add_supported_context(CTImageStorage, scp_syntaxes)
    ae.add_supported_context(DigitalXRayImageStorageForPresentation, scp_syntaxes)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    try:
        yield int(server.server_address[1]), statuses, received
    finally:
        server.shutdown()


def test_c_store_statuses_map_to_outcomes(
    tmp_path: Path, storage_scp: tuple[int, dict[str, int], list[Dataset]]
) -> None:
    port, statuses, received = storage_scp
    study = make_study(tmp_path)
    extra = [_rewritten(study.files[0].path, tmp_path) for _ in range(2)]
    files = study.files + extra
    uids = [f.sop_instance_uid for f in files]
    statuses.update({uids[1]: 0xB000, uids[2]: 0xA702, uids[3]: 0xA900, uids[4]: 0xC123})
    statuses[uids[5]] = 0x0122
    with DimsePacs("127.0.0.1", port, called_ae="TEST-SCP", name="scp") as pacs:
        outcomes = pacs.send(files)
    assert [o.sop_instance_uid for o in outcomes] == uids
    assert [(o.delivered, o.retryable) for o in outcomes] == [
        (True, False),
        (True, False),  # warning: stored
        (False, True),  # out of resources
        (False, False),
        (False, False),
        (False, False),
    ]
    assert "with warning status 0xB000 (Coercion of Data Elements)" in outcomes[1].reason
    assert "could not store it now: status 0xA702 (Refused: Out of Resources)" in outcomes[2].reason
    assert "refused: status 0xA900 (Data Set Does Not Match SOP Class)" in outcomes[3].reason
    assert "refused: status 0xC123 (Cannot Understand)" in outcomes[4].reason
    assert "refused: status 0x0122 (Refused: SOP Class Not Supported)" in outcomes[5].reason
    assert all("PACS 'scp' (DIMSE TEST-SCP@127.0.0.1:" in o.reason for o in outcomes)
    assert [str(ds.SOPInstanceUID) for ds in received] == uids  # one association, in order


def test_c_store_rejected_association_is_retryable(
    tmp_path: Path, storage_scp: tuple[int, dict[str, int], list[Dataset]]
) -> None:
    port, _statuses, received = storage_scp
    study = make_study(tmp_path)
    with DimsePacs("127.0.0.1", port, called_ae="WRONG-AE", timeout_seconds=QUICK) as pacs:
        outcomes = pacs.send(study.files)
    assert received == []
    assert all(not o.delivered and o.retryable for o in outcomes), outcomes
    assert "rejected the association" in outcomes[0].reason


@pytest.mark.parametrize("scp_syntaxes", [["1.2.840.10008.1.2"]])
def test_c_store_falls_back_to_implicit_vr_little_endian(
    tmp_path: Path, storage_scp: tuple[int, dict[str, int], list[Dataset]]
) -> None:
    port, _statuses, received = storage_scp
    study = make_study(tmp_path)
    with DimsePacs("127.0.0.1", port, called_ae="TEST-SCP") as pacs:
        outcomes = pacs.send(study.files)
    assert len(outcomes) == len(study.files), outcomes  # one for each instance
    assert all(o.delivered for o in outcomes), outcomes
    for ds, f in zip(received, study.files, strict=True):
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        original = dcmread(f.path)
        assert ds.SOPInstanceUID == original.SOPInstanceUID
        assert ds.PixelData == original.PixelData
        assert ds.PatientName == original.PatientName


@pytest.mark.parametrize("scp_syntaxes", [["1.2.840.10008.1.2.4.50"]])  # JPEG Baseline only
def test_c_store_in_an_unsupported_transfer_syntax_is_refused(
    tmp_path: Path, storage_scp: tuple[int, dict[str, int], list[Dataset]]
) -> None:
    port, _statuses, received = storage_scp
    study = make_study(tmp_path)
    with DimsePacs("127.0.0.1", port, called_ae="TEST-SCP", name="jpeg-only") as pacs:
        outcomes = pacs.send(study.files)
    assert received == []
    assert all(not o.delivered and not o.retryable for o in outcomes), outcomes
    assert (
        "PACS 'jpeg-only' (DIMSE TEST-SCP@127.0.0.1:" in outcomes[0].reason
        and "accepts no presentation context for CT Image Storage (1.2.840.10008.5.1.4.1.1.2)"
        " in Explicit VR Little Endian (1.2.840.10008.1.2.1), Implicit VR Little Endian"
        " (1.2.840.10008.1.2) (SOP Class or Transfer Syntax not supported)"
        in outcomes[0].reason
    ), outcomes[0].reason


# --- a STOW-RS server with chosen answers ---------------------------------------------------


@dataclass
class Canned:
    status: int
    body: Callable[[list[str]], dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def stow_server() -> Iterator[tuple[str, Canned]]:
    canned = Canned(200)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            canned.requests.append((self.path, dict(self.headers.items()), body))
            uids = [
                str(dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID)
                for part in _parts(body, self.headers["Content-Type"])
            ]
            answer = json.dumps(canned.body(uids)).encode() if canned.body else b""
            self.send_response(canned.status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(answer)))
            for name, value in canned.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", canned
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _parts(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a multipart/related body (RFC 2046 §5.1.1), each checked for its type."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    chunks = body.split(b"--" + boundary.encode())
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom" in head
        assert data.endswith(b"\r\n")
        parts.append(data[:-2])
    return parts


def _failed(uids: list[str], code: int) -> dict[str, Any]:
    return {
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                    "00081155": {"vr": "UI", "Value": [uid]},
                    "00081197": {"vr": "US", "Value": [code]},
                }
                for uid in uids
            ],
        }
    }


def test_stow_request_is_well_formed(tmp_path: Path, stow_server: tuple[str, Canned]) -> None:
    url, canned = stow_server
    study = make_study(tmp_path)
    headers = {"Authorization": "Bearer t0k3n"}
    with DicomwebPacs(url + "/", headers=headers) as pacs:
        outcomes = pacs.send(study.files)
    assert len(outcomes) == len(study.files), outcomes  # one for each instance
    assert all(o.delivered for o in outcomes)  # 200 with an empty body: all stored
    [(path, sent, body)] = canned.requests
    assert path == "/dicom-web/studies"
    assert sent["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    assert sent["Accept"] == "application/dicom+json"
    assert sent["Authorization"] == "Bearer t0k3n"
    assert int(sent["Content-Length"]) == len(body)
    assert _parts(body, sent["Content-Type"]) == list(study.originals.values())


def test_stow_409_with_failed_sop_sequence_is_refused(
    tmp_path: Path, stow_server: tuple[str, Canned]
) -> None:
    url, canned = stow_server
    canned.status = 409
    canned.body = lambda uids: _failed(uids, 0xA900)
    canned.headers = {"Warning": '299 refuser "Data set does not match SOP class"'}
    study = make_study(tmp_path)
    with DicomwebPacs(url, name="refuser") as pacs:
        outcomes = pacs.send(study.files)
    assert all(not o.delivered and not o.retryable for o in outcomes), outcomes
    assert outcomes[0].reason == (
        f"PACS 'refuser' (STOW-RS {url}/studies) refused: 0xA900 (Data Set Does Not Match"
        ' SOP Class) (HTTP 409, Warning: 299 refuser "Data set does not match SOP class")'
    )


def test_stow_202_partial_and_out_of_resources(
    tmp_path: Path, stow_server: tuple[str, Canned]
) -> None:
    url, canned = stow_server
    canned.status = 202

    def partial(uids: list[str]) -> dict[str, Any]:
        body = _failed(uids[1:], 0xA700)
        body["00081199"] = {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [uids[0]]}}],
        }
        return body

    canned.body = partial
    study = make_study(tmp_path)
    with DicomwebPacs(url) as pacs:
        first, *rest = pacs.send(study.files)
    assert first.delivered
    assert all(not o.delivered and o.retryable for o in rest)
    assert "0xA700 (Refused: Out of Resources)" in rest[0].reason


def test_stow_503_is_retryable_with_retry_after(
    tmp_path: Path, stow_server: tuple[str, Canned]
) -> None:
    url, canned = stow_server
    canned.status = 503
    canned.headers = {"Retry-After": "30"}
    study = make_study(tmp_path)
    with DicomwebPacs(url, name="busy") as pacs:
        outcomes = pacs.send(study.files)
    assert all(not o.delivered and o.retryable for o in outcomes)
    assert outcomes[0].reason.endswith("is unavailable for now (HTTP 503, Retry-After: 30)")


def test_unreadable_file_is_refused_without_stopping_the_others(
    tmp_path: Path, stow_server: tuple[str, Canned]
) -> None:
    url, canned = stow_server
    study = make_study(tmp_path)
    missing = OutgoingInstance(
        study.files[0].sop_class_uid,
        "1.2.3.4",
        study.files[0].transfer_syntax_uid,
        tmp_path / "gone.dcm",
    )
    with DicomwebPacs(url) as pacs:
        outcomes = pacs.send([missing, *study.files])
    assert not outcomes[0].delivered and not outcomes[0].retryable
    assert "gone.dcm" in outcomes[0].reason
    assert len(outcomes) == 1 + len(study.files), outcomes  # one for each instance
    assert all(o.delivered for o in outcomes[1:])
    [(_path, _sent, body)] = canned.requests
    assert len(_parts(body, _sent["Content-Type"])) == len(study.files)
