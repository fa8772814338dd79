"""The raw-bytes reading of UIDs in STOW-RS's checks (``instance_checks._uid_value``)
gives what pydicom's own conversion gives, for every file among pydicom's test files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataelem import RawDataElement

from aifi.dicomweb.instance_checks import _UID_TAGS, _uid_value

FILES = sorted(p for p in (Path(DATA_ROOT) / "test_files").rglob("*") if p.is_file())


def _by_pydicom(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    text = str(value).strip("\x00 ") if value is not None else ""
    return text or None


def test_pydicom_s_test_files_are_found() -> None:
    """Without them the test below would have no case at all (and only be skipped)."""
    assert len(FILES) > 100


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_raw_uid_reading_matches_pydicom(path: Path) -> None:
    try:
        ds = dcmread(path, defer_size=1024, force=True)
    except Exception:
        pytest.skip("pydicom cannot read it at all")
    for keyword in _UID_TAGS:
        source = ds.file_meta if keyword.startswith(("Media", "Transfer")) else ds
        if source is None:
            continue
        fast = _uid_value(source, keyword)
        fresh = dcmread(path, defer_size=1024, force=True)
        slow_source = fresh.file_meta if source is not ds else fresh
        assert fast == _by_pydicom(slow_source, keyword), keyword


@pytest.mark.parametrize(
    "raw", [b"1.2.3\\4.5.6", "1.2.\u00e93".encode("latin-1"), b"1.2.3\x00", b" ", b""]
)
def test_unusual_raw_values_read_as_pydicom_reads_them(raw: bytes) -> None:
    def dataset() -> Dataset:
        ds = Dataset()
        tag = _UID_TAGS["SOPInstanceUID"]
        ds._dict[tag] = RawDataElement(tag, "UI", len(raw), raw, 0, False, True)
        return ds

    assert _uid_value(dataset(), "SOPInstanceUID") == _by_pydicom(dataset(), "SOPInstanceUID")
