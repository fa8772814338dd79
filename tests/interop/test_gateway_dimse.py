"""The gateway's DIMSE SCP against independent peers: DCMTK's echoscu and storescu,
pynetdicom as a second SCU, Orthanc as a modality (C-STORE SCU). What a sender sees (the
C-ECHO/C-STORE statuses, an A-ASSOCIATE-RJ with its result, source and reason) and what the
gateway then holds: each acknowledged instance on disk with its bytes as sent and one row
— also across a kill -9 of the gateway in the middle of a transfer."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import text

from aifi.conformance.dcmtk import dcmtk_tool, require_dcmtk_tool
from aifi.conformance.orthanc import OrthancPeer
from aifi.dicomweb.instance_checks import transfer_syntax_supported
from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.ingest.dimse_scp import TRANSFER_SYNTAXES
from aifi.gateway.ingest.part10 import PREAMBLE, dataset_offset, encode_file_meta
from aifi.gateway.ingest.pipeline import Origin
from aifi.gateway.settings import GatewaySettings
from tests.conftest import free_port, run_live_server
from tests.support.dicom import bundled_files, make_ct, to_bytes
from tests.support.wait import wait_until

AE_TITLE = "AIFI-GW"
HAS_DCMTK = dcmtk_tool("storescu") is not None and dcmtk_tool("echoscu") is not None
needs_dcmtk = pytest.mark.skipif(not HAS_DCMTK, reason="DCMTK storescu/echoscu not installed")

pytestmark = pytest.mark.filterwarnings(
    # a few of pydicom's test files are deliberately odd; pydicom says so while reading them
    "ignore:Expected explicit VR:UserWarning",
    "ignore:.*:UserWarning:pydicom.*",
)


# -- the gateway -----------------------------------------------------------------------------


class Running:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.port = gateway.scp.bound_port

    def rows(self) -> dict[str, dict[str, Any]]:
        with self.gateway.db.reader.connect() as conn:
            rows = conn.execute(text("SELECT * FROM gw_instance")).mappings()
            return {str(r["sop_instance_uid"]): dict(r) for r in rows}

    def studies(self) -> dict[str, str]:
        with self.gateway.db.reader.connect() as conn:
            rows = conn.execute(text("SELECT study_instance_uid, completion FROM gw_study"))
            return {str(uid): str(state) for uid, state in rows}

    def stored(self, row: dict[str, Any]) -> bytes:
        path: Path = self.gateway.settings.data_dir / str(row["file"])
        return path.read_bytes()

    def files(self) -> list[Path]:
        return sorted(p for p in self.gateway.store.root.rglob("*") if p.is_file())


@contextlib.contextmanager
def running_gateway(data_dir: Path, config: str | None = None) -> Iterator[Running]:
    config_file = None
    if config is not None:
        config_file = data_dir.parent / "gateway.yaml"
        config_file.write_text(config)
    settings = GatewaySettings(
        data_dir=data_dir,
        dimse_port=free_port(),
        ae_title=AE_TITLE,
        dev_mode=True,
        workers=False,
        config_file=config_file,
    )
    gateway = build_gateway(settings)
    with run_live_server(gateway.app, lifespan=True):  # the lifespan starts the SCP
        yield Running(gateway)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Running]:
    with running_gateway(tmp_path / "gw") as running:
        yield running


def _all_due(gw: Running) -> bool:
    """Every study of the gateway is due for forwarding (its completion was decided)."""
    return set(gw.studies().values()) <= {"due"}


def data_set(data: bytes) -> bytes:
    """The data set of a Part 10 file (what C-STORE carries)."""
    return data[dataset_offset(data) :]


# -- pydicom's bundled files ---------------------------------------------------------------

_STORAGE = {str(c.abstract_syntax) for c in AllStoragePresentationContexts}
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _storage_test_files() -> list[tuple[Path, str]]:
    """Every bundled test file that is a storage instance with File Meta, its UIDs and a
    file transfer syntax: (path, SOP Instance UID)."""
    found: list[tuple[Path, str, str]] = []
    for name in bundled_files("*"):
        try:
            ds = dcmread(name, stop_before_pixels=True)
            meta = ds.file_meta
            if (
                str(meta.MediaStorageSOPClassUID) in _STORAGE
                and ds.SOPClassUID == meta.MediaStorageSOPClassUID
                and ds.SOPInstanceUID == meta.MediaStorageSOPInstanceUID
                and transfer_syntax_supported(str(meta.TransferSyntaxUID))
                and ds.StudyInstanceUID
                and ds.SeriesInstanceUID
            ):
                found.append((Path(name), str(ds.SOPInstanceUID), str(meta.TransferSyntaxUID)))
        except Exception:  # odd files on purpose (no meta, broken): not storage instances
            continue
    # the same instance in several syntaxes: the compressed ones first (rarer)
    found.sort(key=lambda item: (item[2] in _UNCOMPRESSED, str(item[0])))
    return [(path, uid) for path, uid, _ in found]


def pydicom_files() -> tuple[list[Path], list[Path]]:
    """(one file per SOP Instance UID, the other files sharing one of those UIDs: the
    same instance in another transfer syntax)."""
    rounds = pydicom_rounds()
    return rounds[0], [path for later in rounds[1:] for path in later]


def pydicom_rounds() -> list[list[Path]]:
    """The files in rounds, each with a SOP Instance UID at most once."""
    rounds: list[list[Path]] = []
    seen: list[set[str]] = []
    for path, uid in _storage_test_files():
        index = next((i for i, uids in enumerate(seen) if uid not in uids), len(seen))
        if index == len(seen):
            rounds.append([])
            seen.append(set())
        rounds[index].append(path)
        seen[index].add(uid)
    return rounds


def same_content(original: Dataset, stored: Dataset) -> list[str]:
    """The top-level elements whose values differ (group lengths, Data Set Trailing Padding
    (FFFC,FFFC) and the pad byte DCMTK adds to an odd-length value aside)."""
    differences = []
    for element in original:
        if element.tag.element == 0 or element.tag == 0xFFFCFFFC:
            continue
        if element.tag not in stored:
            differences.append(f"{element.tag} missing")
            continue
        kept = stored[element.tag].value
        value = element.value
        if isinstance(value, bytes) and isinstance(kept, bytes):
            if kept[: len(value)] != value or len(kept) - len(value) > 1:
                differences.append(f"{element.tag} bytes differ")
        elif kept != value:
            differences.append(f"{element.tag} {value!r} != {kept!r}")
    return differences


def assert_stored_as_sent(gw: Running, files: list[Path], *, exact: bool = True) -> None:
    """Each file stored once, its row's hash and size those of the stored file; with
    ``exact`` (a sender that sends the file's data set as it is) the same bytes, else
    (storescu re-encodes what it read: group lengths, padding) the same content."""
    rows = gw.rows()
    for path in files:
        original = path.read_bytes()
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid in rows, f"{path.name} was not stored"
        stored = gw.stored(rows[uid])
        if exact:
            assert data_set(stored) == data_set(original), f"{path.name}: other bytes stored"
        else:
            differences = same_content(dcmread(path), dcmread(io.BytesIO(stored)))
            assert not differences, f"{path.name}: {differences[:5]}"
        assert rows[uid]["sha256"] == hashlib.sha256(data_set(stored)).hexdigest()
        assert rows[uid]["size"] == len(stored)
        syntax = dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert rows[uid]["transfer_syntax_uid"] == syntax
        if exact:
            assert syntax == dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID


def dcmtk_reads(path: Path) -> bool:
    """A few of pydicom's files are odd on purpose beyond what DCMTK reads (e.g. UIDs with
    another VR than UI): storescu would stop at them."""
    result = subprocess.run(
        [require_dcmtk_tool("dcmdump"), "-q", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
    )
    return (
        result.returncode == 0
        and "E: " not in result.stderr
        and re.search(r"^\(0008,0016\) UI ", result.stdout, re.MULTILINE) is not None
        and re.search(r"^\(0008,0018\) UI ", result.stdout, re.MULTILINE) is not None
    )


# -- DCMTK ----------------------------------------------------------------------------------


@pytest.mark.dcmtk
@needs_dcmtk
def test_echoscu(gw: Running) -> None:
    result = subprocess.run(
        [require_dcmtk_tool("echoscu"), "-aec", AE_TITLE, "127.0.0.1", str(gw.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2": "-x=",
    "1.2.840.10008.1.2.1": "-x=",
    "1.2.840.10008.1.2.2": "-x=",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
"""storescu's option proposing each transfer syntax (it sends a file in its own syntax)."""


@pytest.mark.dcmtk
@needs_dcmtk
def test_storescu_sends_pydicom_test_files(gw: Running) -> None:
    groups: dict[str, list[Path]] = {}
    for path in pydicom_files()[0]:
        syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if syntax in STORESCU_PROPOSAL and dcmtk_reads(path):
            groups.setdefault(STORESCU_PROPOSAL[syntax], []).append(path)
    files = [path for paths in groups.values() for path in paths]
    assert len(files) > 100
    assert {"-x=", "-xd", "-xy", "-xv", "-xw", "-xr"} <= set(groups)  # JPEG-LS: pynetdicom
    assert [f for f in files if "charset" in str(f.parent)], "the character set files too"
    for option, paths in groups.items():
        result = subprocess.run(
            [
                require_dcmtk_tool("storescu"),
                "-R",
                option,
                "-aec",
                AE_TITLE,
                "-aet",
                "DCMTK",
                "127.0.0.1",
                str(gw.port),
            ]
            + [str(path) for path in paths],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert_stored_as_sent(gw, files, exact=False)
    rows = gw.rows()
    assert len(rows) == len(files)  # once each
    assert {r["source"] for r in rows.values()} == {"dimse:DCMTK@127.0.0.1"}
    wait_until(lambda: set(gw.studies().values()) == {"due"}, 20, "completion after release")


# -- pynetdicom as SCU ---------------------------------------------------------------------


def pynetdicom_ae(title: str = "PYNETDICOM") -> AE:
    ae = AE(ae_title=title)
    ae.add_requested_context(Verification)
    return ae


@pytest.fixture
def raw_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's data set as it is in the file (no decoding)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def associate_for(files: list[Path], port: int, title: str = "PYNETDICOM") -> Any:
    ae = AE(ae_title=title)
    contexts = {
        (str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID))
        for m in (dcmread(f, stop_before_pixels=True).file_meta for f in files)
    }
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    assert len(contexts) <= 128
    return ae.associate("127.0.0.1", port, ae_title=AE_TITLE)


REFUSED_TEST_FILES = {"MR_truncated.dcm": 0xC210}
"""pydicom's deliberately broken files, and the C-STORE status the gateway answers."""


def test_pynetdicom_sends_pydicom_test_files(tmp_path: Path, raw_sending: None) -> None:
    """Every storage file pydicom ships, in every transfer syntax it has them in (one
    gateway per round: the same instance in two syntaxes is two different data sets)."""
    rounds = pydicom_rounds()
    syntaxes = set()
    refused = 0
    for index, files in enumerate(rounds):
        good = [path for path in files if path.name not in REFUSED_TEST_FILES]
        with running_gateway(tmp_path / f"gw{index}") as gw:
            assoc = associate_for(files, gw.port)
            assert assoc.is_established
            for path in files:
                status = assoc.send_c_store(path).Status
                expected = REFUSED_TEST_FILES.get(path.name, 0x0000)
                assert status == expected, path.name
                refused += status != 0x0000
            if good:
                again = assoc.send_c_store(good[0])  # identical re-send: success, no new row
                assert again.Status == 0x0000
            assoc.release()
            assert_stored_as_sent(gw, good)
            assert len(gw.rows()) == len(good) == len(gw.files())
            wait_until(partial(_all_due, gw), 20, "completion")
            syntaxes |= {str(r["transfer_syntax_uid"]) for r in gw.rows().values()}
    assert refused == len(REFUSED_TEST_FILES)
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    } <= syntaxes


def test_a_different_instance_with_a_stored_uid_is_refused(gw: Running) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    first = make_ct(patient_name="First^Version")
    second = make_ct(
        patient_name="Corrected^Version",
        sop_uid=str(first.SOPInstanceUID),
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
    )
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
    assert assoc.send_c_store(first).Status == 0x0000
    assert assoc.send_c_store(first).Status == 0x0000  # identical: success
    refused = assoc.send_c_store(second)
    assoc.release()
    assert refused.Status == 0x0111  # Duplicate SOP Instance (PS3.7 C.5)
    assert "different instance" in refused.ErrorComment
    (row,) = gw.rows().values()
    assert dcmread(gw.gateway.settings.data_dir / row["file"]).PatientName == "First^Version"


def test_every_transfer_syntax_is_offered(gw: Running) -> None:
    """The usual ones at least: PS3.5 Annex A (and the JPEG-LS, JPEG 2000, RLE ones)."""
    for uid in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    ):
        assert uid in TRANSFER_SYNTAXES
    ae = AE(ae_title="PYNETDICOM")
    for uid in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"):
        ae.add_requested_context(CTImageStorage, uid)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
    assert assoc.is_established
    assert len(assoc.accepted_contexts) == 3
    assoc.release()


def test_association_end_makes_its_studies_due(gw: Running) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    study = generate_uid()
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
    for number in (1, 2):
        assert assoc.send_c_store(make_ct(study_uid=study, instance_number=number)).Status == 0
    assert gw.studies() == {study: "open"}  # the association is still open
    assoc.abort()  # an abort ends it as well as a release
    wait_until(lambda: gw.studies() == {study: "due"}, 20, "the study to become due")
    assert {r["association"] for r in gw.rows().values()} != {None}


# -- refused peers and refused data ---------------------------------------------------------


@pytest.fixture(autouse=True)
def _collect_rejected_sockets() -> Iterator[None]:
    """pynetdicom 3.0.4 leaves a rejected association's socket to the garbage collector (as
    tests/interop/test_pacs_clients.py notes): collect it after the test that made it, not in
    whichever test runs when the collector gets to it (CI met both)."""
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <socket.socket", ResourceWarning)
        gc.collect()


def test_calling_ae_not_allowed_is_rejected(tmp_path: Path) -> None:
    config = "dimse:\n  allowed_calling_ae_titles: [CT_ROOM_1]\n"
    with running_gateway(tmp_path / "gw", config) as gw:
        stranger = pynetdicom_ae("INTRUDER").associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
        assert stranger.is_rejected
        rejection = stranger.acceptor.primitive
        assert rejection is not None
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 3)
        friend = pynetdicom_ae("CT_ROOM_1").associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
        assert friend.is_established
        assert friend.send_c_echo().Status == 0
        friend.release()
        if HAS_DCMTK:
            result = subprocess.run(
                [
                    require_dcmtk_tool("echoscu"),
                    "-aet",
                    "INTRUDER",
                    "-aec",
                    AE_TITLE,
                    "127.0.0.1",
                    str(gw.port),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode != 0
            assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
        assert gw.rows() == {}


def test_an_association_for_another_ae_title_is_rejected_when_required(tmp_path: Path) -> None:
    """``dimse.require_called_ae_title``: a modality configured for another node is refused
    with reason 7 (called AE title not recognised, PS3.8 §9.3.4); without it, accepted."""
    with running_gateway(tmp_path / "gw", "dimse:\n  require_called_ae_title: true\n") as gw:
        wrong = pynetdicom_ae("CT_ROOM_1").associate("127.0.0.1", gw.port, ae_title="OTHER_NODE")
        assert wrong.is_rejected
        rejection = wrong.acceptor.primitive
        assert rejection is not None
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 7)
        right = pynetdicom_ae("CT_ROOM_1").associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
        assert right.is_established and right.send_c_echo().Status == 0
        right.release()
    with running_gateway(tmp_path / "gw2") as gw:
        anyone = pynetdicom_ae("CT_ROOM_1").associate("127.0.0.1", gw.port, ae_title="OTHER_NODE")
        assert anyone.is_established
        anyone.release()


def test_address_not_allowed_is_rejected(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw", "dimse:\n  allowed_addresses: [10.0.0.0/8]\n") as gw:
        assoc = pynetdicom_ae().associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
        assert assoc.is_rejected
        rejection = assoc.acceptor.primitive
        assert rejection is not None
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 1)


def test_corrupt_and_truncated_instances_fail_and_nothing_is_stored(
    gw: Running, tmp_path: Path, raw_sending: None
) -> None:
    whole = to_bytes(make_ct(rows=64, columns=64))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole[:-500])
    offset = dataset_offset(whole)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(whole[:offset] + b"\xfe\xff\x00\xe0" + os.urandom(3000))
    assoc = associate_for([truncated], gw.port)
    assert assoc.is_established
    for path in (truncated, garbage):
        status = assoc.send_c_store(path)
        assert status.Status == 0xC210, path.name  # Error: cannot understand
        assert status.ErrorComment
    good = assoc.send_c_store(make_ct())  # the association goes on
    assert good.Status == 0
    assoc.release()
    assert len(gw.rows()) == 1
    assert len(gw.files()) == 1


def test_data_set_not_matching_the_request_fails(
    gw: Running, tmp_path: Path, raw_sending: None
) -> None:
    data = to_bytes(make_ct())
    offset = dataset_offset(data)
    uid = str(dcmread(io.BytesIO(data)).SOPInstanceUID).encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    # the File Meta (and so the C-STORE request) names another instance than the data set
    path = tmp_path / "mismatch.dcm"
    path.write_bytes(data[:offset].replace(uid, other) + data[offset:])
    assoc = associate_for([path], gw.port)
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status == 0xA900
    assert gw.rows() == {}


def _receive(
    gw: Running, data: bytes, *, transfer_syntax: str | None, sop: str | None = None
) -> tuple[int, bytes]:
    """Hand ``data`` (a Part 10 file) to the ingest as the SCP does: a view of a buffer,
    which must be let go of when the call returns (a BytesIO with a view on it cannot be
    closed). Returns the status and what the file meta was."""
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    sop_class, sop_instance = str(ds.SOPClassUID), sop or str(ds.SOPInstanceUID)
    meta = encode_file_meta(sop_class, sop_instance, str(ds.file_meta.TransferSyntaxUID), "X")
    buffer = io.BytesIO(data_set(data))
    with buffer.getbuffer() as view:
        outcome = gw.gateway.ingest.receive_dataset(
            meta,
            view,
            Origin(source="dimse:X@127.0.0.1", association="a"),
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            transfer_syntax_uid=transfer_syntax,
        )
    buffer.close()  # raises BufferError if the ingest (or its hashing thread) kept a view
    return outcome.failure, meta


@pytest.mark.parametrize("fast_first", [True, False], ids=["scan-first", "pydicom-first"])
def test_the_fast_header_scan_and_pydicom_store_the_same_instance(
    gw: Running, fast_first: bool
) -> None:
    """The same data set through the fast scan and through pydicom's reading: the second is
    the same instance (same digest, so success without a second row), and the stored file
    is the File Meta and the data set as received."""
    data = to_bytes(make_ct(rows=64, columns=64))
    first, second = (ExplicitVRLittleEndian, None) if fast_first else (None, ExplicitVRLittleEndian)
    status, meta = _receive(gw, data, transfer_syntax=first)
    assert status == 0
    assert _receive(gw, data, transfer_syntax=second)[0] == 0
    (row,) = gw.rows().values()
    stored = (gw.gateway.settings.data_dir / str(row["file"])).read_bytes()
    assert stored == PREAMBLE + meta + data_set(data)
    assert row["sha256"] == hashlib.sha256(data_set(data)).hexdigest()
    assert row["transfer_syntax_uid"] == ExplicitVRLittleEndian
    assert len(gw.files()) == 1


def test_the_buffer_is_let_go_of_whatever_the_outcome(gw: Running) -> None:
    ct = make_ct(rows=256, columns=256)  # large enough to be hashed in another thread
    data = to_bytes(ct)
    assert _receive(gw, data, transfer_syntax=ExplicitVRLittleEndian)[0] == 0
    changed = ct.copy()
    changed.StudyDescription = "another version"
    other = to_bytes(changed)
    assert _receive(gw, other, transfer_syntax=ExplicitVRLittleEndian)[0] == 0x0111
    cut = data[:-700]
    assert _receive(gw, cut, transfer_syntax=ExplicitVRLittleEndian)[0] == 0xC210
    assert _receive(gw, data, transfer_syntax=ExplicitVRLittleEndian, sop="1.2.3")[0] == 0xA900
    assert len(gw.rows()) == 1 and len(gw.files()) == 1


def test_pynetdicom_s_per_message_logging_is_bound_only_for_debugging(
    tmp_path: Path,
) -> None:
    """pynetdicom's standard handlers (a text per PDU and DIMSE message, an INFO line per
    C-STORE) are off unless pynetdicom's DEBUG lines are shown."""
    pynetdicom_log = logging.getLogger("pynetdicom")
    level = pynetdicom_log.level
    try:
        pynetdicom_log.setLevel(logging.INFO)
        with running_gateway(tmp_path / "a"):
            assert _config.LOG_HANDLER_LEVEL == "none"
        pynetdicom_log.setLevel(logging.DEBUG)
        with running_gateway(tmp_path / "b") as gw:
            assert _config.LOG_HANDLER_LEVEL == "standard"
            ae = pynetdicom_ae()
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", gw.port, ae_title=AE_TITLE)
            assert assoc.send_c_store(make_ct()).Status == 0
            assoc.release()
    finally:
        pynetdicom_log.setLevel(level)
        _config.LOG_HANDLER_LEVEL = "none"


# -- kill -9 --------------------------------------------------------------------------------


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            errors = process.stderr.read().decode()[-2000:] if process.stderr else ""
            raise AssertionError(f"the gateway exited: {errors}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    wait_until(listening, timeout, "the gateway to listen")


def _serve(data_dir: Path, dimse_port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, AIFI_DEV_MODE="true", AIFI_GATEWAY_WORKERS="false")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aifi",
            "gateway",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
            "--dimse-port",
            str(dimse_port),
            "--ae-title",
            AE_TITLE,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.dcmtk
@pytest.mark.slow
@needs_dcmtk
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    source = tmp_path / "ct"
    source.mkdir()
    study, series = generate_uid(), generate_uid()
    files = []
    for number in range(1, 501):  # a 500-instance C-STORE, as the issue asks
        path = source / f"{number:04d}.dcm"
        ct = make_ct(
            study_uid=study, series_uid=series, instance_number=number, rows=128, columns=128
        )
        path.write_bytes(to_bytes(ct))
        files.append(path)
    data_dir = tmp_path / "gw"
    port = free_port()
    gateway = _serve(data_dir, port)
    try:
        _wait_for_port(port, gateway)
        sender = subprocess.Popen(
            [
                require_dcmtk_tool("storescu"),
                "-v",
                "-aec",
                AE_TITLE,
                "127.0.0.1",
                str(port),
                *map(str, files),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        acked = threading.Event()

        def read() -> None:
            assert sender.stdout is not None
            for line in sender.stdout:
                lines.append(line)
                if sum("Received Store Response (Success)" in x for x in lines) >= 100:
                    acked.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert acked.wait(120), "".join(lines[-20:])
        gateway.send_signal(signal.SIGKILL)  # in the middle of the transfer
        gateway.wait(30)
        sender.wait(60)
        reader.join(30)
        assert sender.stdout is not None
        sender.stdout.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            gateway.kill()
        gateway.wait(30)
        if gateway.stderr is not None:
            gateway.stderr.close()
    acknowledged = []
    current = None
    for line in lines:
        sending = re.search(r"Sending file: (\S+)", line)
        if sending:
            current = Path(sending.group(1))
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    assert 100 <= len(acknowledged) < len(files), "the kill came in the middle"

    restarted = build_gateway(
        GatewaySettings(data_dir=data_dir, dimse_port=free_port(), dev_mode=True, workers=False)
    )
    try:
        gw = Running(restarted)
        rows = gw.rows()
        for path in acknowledged:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert uid in rows, f"{path.name} was acknowledged and is lost"
            assert data_set(gw.stored(rows[uid])) == data_set(path.read_bytes())
        with restarted.db.reader.connect() as conn:
            duplicates = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT sop_instance_uid FROM gw_instance "
                    "GROUP BY sop_instance_uid HAVING count(*) > 1)"
                )
            ).scalar()
        assert duplicates == 0
        files_on_disk = {str(p.relative_to(data_dir)) for p in gw.files()}
        assert files_on_disk == {r["file"] for r in rows.values()}  # no stray files
        assert gw.studies() == {study: "due"}  # the association ended with the kill
    finally:
        restarted.close()


# -- Orthanc as a modality ---------------------------------------------------------------------


@pytest.mark.orthanc
def test_orthanc_sends_with_c_store(orthanc: OrthancPeer, gw: Running) -> None:
    study = generate_uid()
    instances = [
        make_ct(study_uid=study, instance_number=n, charset="ISO_IR 100") for n in (1, 2, 3)
    ]
    ids = [orthanc.upload(to_bytes(ds)) for ds in instances]
    orthanc.request(
        "PUT",
        "/modalities/aifi-gateway",
        json={"AET": AE_TITLE, "Host": "127.0.0.1", "Port": gw.port},
    )
    orthanc.request(
        "POST",
        "/modalities/aifi-gateway/store",
        json={"Resources": ids, "Synchronous": True},
    )
    rows = gw.rows()
    assert set(rows) == {str(ds.SOPInstanceUID) for ds in instances}
    for ds in instances:
        row = rows[str(ds.SOPInstanceUID)]
        assert row["source"] == "dimse:ORTHANC@127.0.0.1"
        stored = dcmread(gw.gateway.settings.data_dir / row["file"])
        assert stored.PatientName == ds.PatientName
        assert stored.PixelData == ds.PixelData
    echo = orthanc.request("POST", "/modalities/aifi-gateway/echo", json={})
    assert echo.status_code == 200
