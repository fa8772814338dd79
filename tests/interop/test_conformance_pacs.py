"""``aifi conformance pacs`` against real peers (issue 18 point 2): the command itself, run
with typer's CliRunner, writes its report, and the report says what the PACS did.

- Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) over DICOMweb: every case passes
  (STOW-RS, QIDO-RS, WADO-RS byte for byte, resend), ``--cleanup`` is skipped because
  neither PS3.18 nor Orthanc's plugin has a DELETE; the objects are checked independently
  in Orthanc's own index.
- The same Orthanc over DIMSE, with the kit's AE and its C-MOVE destination in Orthanc's
  ``DicomModalities``: C-STORE, C-FIND, C-GET and C-MOVE all pass.
- A PACS that refuses SEG (:mod:`tests.support.refusing_pacs`, 0xA900): ``store.seg`` fails
  naming the status, the exit code is 1, the other results pass; it offers no C-GET, so those
  cases are optional and skipped.

Orthanc tests are skipped with the reason when Orthanc is missing, except under CI.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode
from typer.testing import CliRunner

from aifi.cli import app
from aifi.conformance.orthanc import OrthancPeer
from aifi.conformance_kit.pacs.compare import Fidelity, Retrieved, compare_retrieved
from aifi.conformance_kit.pacs.objects import RESULT_KINDS, SentObject, generate
from tests.conftest import free_port
from tests.support.orthanc import needs_orthanc
from tests.support.refusing_pacs import refusing_pacs

KIT_AE = "AIFI-KIT"
MOVE_AE = "AIFI-KIT-MOVE"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
UNCLOSED_SOCKET = "ignore:unclosed <socket.socket:ResourceWarning"
"""pynetdicom 3.0.4 may leave a refused association's socket to the garbage collector."""


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["conformance", "pacs", *args])


def read_report(folder: Path) -> dict[str, Any]:
    for name in ("report.json", "report.html", "junit.xml"):
        assert (folder / name).is_file(), name
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return report


def cases(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {case["id"]: case for case in report["cases"]}


@pytest.fixture(scope="module")
def orthanc() -> Iterator[tuple[OrthancPeer, int]]:
    """Orthanc knowing the kit's AE (C-FIND, C-GET) and its C-MOVE destination."""
    needs_orthanc()
    move_port = free_port()
    modalities = {
        "kit": [KIT_AE, "127.0.0.1", move_port],
        "kit-move": [MOVE_AE, "127.0.0.1", move_port],
    }
    with OrthancPeer(extra_config={"DicomModalities": modalities}) as peer:
        yield peer, move_port


@pytest.mark.orthanc
def test_orthanc_over_dicomweb_passes_and_the_report_says_what_it_did(
    orthanc: tuple[OrthancPeer, int], tmp_path: Path
) -> None:
    peer, _ = orthanc
    result = run("--dicomweb", peer.dicomweb_url, "--report", str(tmp_path), "--cleanup")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path)
    found = cases(report)
    assert report["kind"] == "pacs" and report["passed"] is True
    assert report["target"]["mode"] == "dicomweb"
    assert report["target"]["url"] == peer.dicomweb_url
    assert found["store.study"]["status"] == "pass"
    for kind in RESULT_KINDS:
        stored = found[f"store.{kind}"]
        assert stored["status"] == "pass", stored
        [evidence] = stored["evidence"]
        assert evidence["delivered"] is True and evidence["status"] == "200"
        assert "STOW-RS" in evidence["reason"]
        # independently: Orthanc holds the object the report says it accepted
        assert peer.find_id("instances", evidence["sop_instance_uid"]) is not None
        assert found[f"find.{kind}"]["status"] in ("pass", "warn"), found[f"find.{kind}"]
        retrieved = found[f"retrieve.{kind}"]
        assert retrieved["status"] == "pass", retrieved
        assert retrieved["message"] == "byte-identical Part 10 file"
    assert found["find.study"]["status"] == "pass"
    assert found["store.resend"]["status"] in ("pass", "warn")
    assert found["store.resend"]["evidence"][-1]["instances_found"] == 1
    cleanup = found["cleanup"]
    assert (cleanup["status"], cleanup["required"]) == ("skip", False)
    assert "Table 10.3-1" in cleanup["message"]
    assert "PASSED" in result.output


@pytest.mark.orthanc
@pytest.mark.filterwarnings(UNCLOSED_SOCKET)
def test_orthanc_over_dimse_passes_with_c_find_c_get_and_c_move(
    orthanc: tuple[OrthancPeer, int], tmp_path: Path
) -> None:
    peer, move_port = orthanc
    result = run(
        "--dimse",
        f"ORTHANC@127.0.0.1:{peer.dicom_port}",
        "--calling-ae",
        KIT_AE,
        "--move-ae",
        MOVE_AE,
        "--move-port",
        str(move_port),
        "--report",
        str(tmp_path),
        "--cleanup",
    )
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path)
    found = cases(report)
    assert report["target"]["mode"] == "dimse"
    assert report["target"]["address"] == f"ORTHANC@127.0.0.1:{peer.dicom_port}"
    for kind in RESULT_KINDS:
        assert found[f"store.{kind}"]["status"] == "pass", found[f"store.{kind}"]
        assert found[f"find.{kind}"]["status"] in ("pass", "warn"), found[f"find.{kind}"]
        for service in ("get", "move"):
            retrieved = found[f"retrieve.{service}.{kind}"]
            assert (retrieved["status"], retrieved["required"]) == ("pass", True), retrieved
    assert found["store.resend"]["status"] in ("pass", "warn")
    assert found["cleanup"]["status"] == "skip"
    assert "no DIMSE service" in found["cleanup"]["message"]


@pytest.mark.filterwarnings(UNCLOSED_SOCKET)
def test_a_pacs_that_refuses_seg_fails_store_seg_with_its_status(tmp_path: Path) -> None:
    with refusing_pacs(free_port(), {SEGMENTATION_STORAGE: 0xA900}) as refusing:
        result = run("--dimse", refusing.address, "--report", str(tmp_path), "--find-wait", "0")
    assert result.exit_code == 1, result.output
    report = read_report(tmp_path)
    found = cases(report)
    seg = found["store.seg"]
    assert seg["status"] == "fail"
    assert "0xA900" in seg["message"]
    assert seg["evidence"][-1]["status"] == "0xA900"
    assert refusing.refused == [seg["evidence"][-1]["sop_instance_uid"]]
    assert found["find.seg"]["status"] == "skip"
    for kind in ("sr", "gsps", "sc", "ko"):
        assert found[f"store.{kind}"]["status"] == "pass"
        assert found[f"find.{kind}"]["status"] == "pass", found[f"find.{kind}"]
    # no C-GET offered, no C-MOVE asked for: optional and skipped, with the reason
    for kind in RESULT_KINDS:
        for service in ("get", "move"):
            retrieved = found[f"retrieve.{service}.{kind}"]
            assert (retrieved["status"], retrieved["required"]) == ("skip", False)
    failing = {case["id"] for case in report["cases"] if case["required"] and not case["ok"]}
    assert failing == {"store.seg", "find.seg"}
    assert "FAIL  store.seg" in result.output


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--dicomweb", "http://127.0.0.1:9/dicom-web", "--dimse", "PACS@127.0.0.1:104"],
        ["--dimse", "no-port"],
        ["--dicomweb", "ftp://pacs/dicom-web"],
        ["--dicomweb", "http://127.0.0.1:9/dicom-web", "--move-ae", "X", "--move-port", "1"],
    ],
)
def test_options_that_cannot_test_anything_exit_2(args: list[str], tmp_path: Path) -> None:
    result = run(*args, "--report", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "report.json").exists()


def test_help_says_the_pacs_must_know_the_move_ae() -> None:

    result = CliRunner().invoke(app, ["conformance", "pacs", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "--move-ae" in text and "The PACS must know it" in text


# --- what the kit makes of a retrieved instance (pure: no PACS) -----------------------------


@pytest.fixture(scope="module")
def sent_sr(tmp_path_factory: pytest.TempPathFactory) -> SentObject:
    return generate(tmp_path_factory.mktemp("objects")).results["sr"]


def retrieved(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Retrieved:
    uid = UID(syntax)
    data = encode(ds, uid.is_implicit_VR, uid.is_little_endian)
    assert data is not None
    return Retrieved(dataset_bytes=data, transfer_syntax=syntax)


def test_a_data_set_sent_back_unchanged_is_the_same_data_set(sent_sr: SentObject) -> None:
    comparison = compare_retrieved(sent_sr.data, sent_sr.dataset, retrieved(sent_sr.dataset))
    assert comparison.fidelity is Fidelity.SAME_DATA_SET


def test_a_lost_element_deep_in_the_content_tree_is_lost_content(sent_sr: SentObject) -> None:
    ds = dcmread(io.BytesIO(sent_sr.data))
    del ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning
    ds.ContentSequence[-1].RelationshipType = "HAS PROPERTIES"
    comparison = compare_retrieved(sent_sr.data, sent_sr.dataset, retrieved(ds))
    assert comparison.fidelity is Fidelity.LOST
    assert comparison.evidence["lost"] == [
        "ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning"
    ]
    last = len(ds.ContentSequence) - 1
    assert comparison.evidence["changed"] == [f"ContentSequence[{last}].RelationshipType"]
    assert "lost ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning" in comparison.message


def test_a_new_transfer_syntax_coercion_and_additions_are_changes_not_losses(
    sent_sr: SentObject,
) -> None:
    ds = dcmread(io.BytesIO(sent_sr.data))
    ds.PatientID = "HOSPITAL-123"
    ds.InstitutionalDepartmentName = "Radiology"
    comparison = compare_retrieved(
        sent_sr.data, sent_sr.dataset, retrieved(ds, ImplicitVRLittleEndian)
    )
    assert comparison.fidelity is Fidelity.CHANGED
    assert comparison.evidence["coerced"] == ["PatientID"]
    assert comparison.evidence["added"] == ["InstitutionalDepartmentName"]
    assert comparison.evidence["lost"] == [] and comparison.evidence["changed"] == []
    assert "Transfer Syntax changed from Explicit VR Little Endian" in comparison.message


def test_a_part10_file_with_the_pacs_own_file_meta_keeps_the_same_data_set(
    sent_sr: SentObject,
) -> None:
    ds = dcmread(io.BytesIO(sent_sr.data))
    ds.file_meta.ImplementationVersionName = "OTHER_PACS"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    got = Retrieved.from_part10(buffer.getvalue())
    comparison = compare_retrieved(sent_sr.data, sent_sr.dataset, got)
    assert comparison.fidelity is Fidelity.SAME_DATA_SET
    assert comparison.evidence["file_meta_changed"] == ["ImplementationVersionName"]
    with pytest.raises(ValueError, match="Part 10"):
        Retrieved.from_part10(b"not dicom" * 20)
