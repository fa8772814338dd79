"""Media types and Accept negotiation (PS3.18 §8.7)."""

from __future__ import annotations

import pytest

from aifi.dicomweb.media import parse_accept, parse_media_type
from aifi.errors import InvalidRequest


def test_quoted_and_unquoted_parameters_and_q_order() -> None:
    ranges = parse_accept(
        'application/json;q=0.5, multipart/related; type="application/dicom"; '
        "transfer-syntax=*, image/png;q=0"
    )
    assert [r.mime for r in ranges] == ["multipart/related", "application/json"]
    assert ranges[0].related_type == "application/dicom"
    assert ranges[0].transfer_syntax == "*"
    unquoted = parse_media_type('multipart/related; type=application/dicom; boundary="a;b"')
    assert unquoted.params == {"type": "application/dicom", "boundary": "a;b"}


def test_wildcard_part_type_admits_any_part() -> None:
    wildcard = parse_media_type('multipart/related; type="*/*"')
    assert wildcard.admits_part("application/octet-stream")
    assert parse_media_type("multipart/related").admits_part("application/dicom")
    assert parse_media_type('multipart/related; type="application/*"').admits_part(
        "application/dicom"
    )
    assert not parse_media_type('multipart/related; type="image/*"').admits_part(
        "application/dicom"
    )


@pytest.mark.parametrize("bad", ["dicom", "multipart/related; type", "a/b; q=2", "a/b; q=x"])
def test_malformed_media_types_are_invalid_requests(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_media_type(bad)
