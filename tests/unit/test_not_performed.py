"""The "AI analysis not performed" report (issue 15 point 7): a Basic Text SR in the original
study that dciodvfy accepts, the same instance for the same request, from a dataset or
DICOM JSON."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from aifi.ihe_profiles import air
from aifi.ihe_profiles.air.not_performed import (
    BASIC_TEXT_SR,
    not_performed_report,
    not_performed_uids,
)
from tests.support.dciodvfy import verify
from tests.support.dicom import make_ct, to_bytes

WHEN = datetime(2026, 12, 7, 9, 30, 15, tzinfo=UTC)
WORKITEM = "2.25.123456789012345678901234567890"


def original() -> Dataset:
    return make_ct(patient_name="Müller^Jörg", patient_id="PAT-42", accession="ACC-7")


def report(source: Dataset | dict[str, object], **changes: str) -> Dataset:
    args = {"product": "AIFI-BONEAGE", "reason": "no result objects", "workitem_uid": WORKITEM}
    args.update(changes)
    return air.not_performed_report(source, when=WHEN, **args)


def texts(ds: Dataset) -> list[str]:
    return [str(item.get("TextValue", "")) for item in ds.ContentSequence]


def test_it_is_a_basic_text_sr_in_the_original_study_saying_why():
    source = original()
    ds = report(source, reason="input images unreadable")
    assert ds.SOPClassUID == BASIC_TEXT_SR and ds.Modality == "SR"
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert ds.get(keyword) == source.get(keyword), keyword
    assert ds.ConceptNameCodeSequence[0].CodeMeaning == "AI analysis not performed"
    assert "AI analysis not performed — AIFI-BONEAGE: input images unreadable" in texts(ds)
    assert ds.ContentDate == "20261207" and ds.ContentTime == "093015"
    assert ds.Manufacturer == "aifi-hub"
    # written and read back: UTF-8 keeps the em dash and the patient's name
    back = dcmread(io.BytesIO(to_bytes(ds)))
    assert back.PatientName == "Müller^Jörg"
    assert "AI analysis not performed — AIFI-BONEAGE: input images unreadable" in texts(back)


def test_the_same_request_gives_the_same_instance_and_another_a_new_one():
    first, again = report(original()), report(original())
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == not_performed_uids(WORKITEM)
    assert (again.SeriesInstanceUID, again.SOPInstanceUID) == not_performed_uids(WORKITEM)
    other = report(original(), workitem_uid="2.25.98765")
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    assert first.SOPInstanceUID.startswith("2.25.") and len(first.SOPInstanceUID) <= 64


def test_dicom_json_input_and_a_product_name_with_its_code():
    source = original()
    source_json = Dataset()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate"):
        setattr(source_json, keyword, source.get(keyword))
    ds = not_performed_report(
        source_json.to_json_dict(),
        product="Skeletal age (bone age)",
        product_code="AIFI-BONEAGE",
        reason="cancelled",
        workitem_uid=WORKITEM,
        when=WHEN,
    )
    assert ds.PatientID == "PAT-42" and ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.AccessionNumber == "" and ds.StudyTime == ""  # Type 2: present, empty
    assert "AI analysis not performed — Skeletal age (bone age) (AIFI-BONEAGE): cancelled" in texts(
        ds
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workitem_uid": "not a uid"}, "workitem"),
        ({"product": " "}, "product"),
    ],
)
def test_bad_input_is_refused(change: dict[str, str], message: str):
    with pytest.raises(ValueError, match=message):
        report(original(), **change)
    without_study = original()
    del without_study.StudyInstanceUID
    with pytest.raises(ValueError, match="Study Instance UID"):
        report(without_study)


def test_dciodvfy_finds_no_error(dciodvfy: str, tmp_path: Path):
    for name, ds in (
        ("from-dataset", report(original())),
        ("empty-reason", report(original(), reason="")),
    ):
        errors, _lines = verify(dciodvfy, ds, tmp_path / f"{name}.dcm")
        assert errors == [], name
