"""The streaming multipart/related reader (RFC 2046 §5.1) used by STOW-RS."""

from __future__ import annotations

import os
import random
import time

import pytest

from aifi.dicomweb.multipart_reader import (
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    validate_boundary,
)
from aifi.errors import InvalidRequest
from tests.support.dicom import multipart_related

BOUNDARY = "aifi-test-boundary"


def parse(
    body: bytes, chunk: int | list[int] | None = None, boundary: str = BOUNDARY, **kw: int
) -> list[tuple[dict[str, str], bytes]]:
    """Feed ``body`` in pieces; return [(headers, bytes)] per complete part."""
    reader = MultipartReader(boundary, **kw)
    parts: list[tuple[dict[str, str], bytearray]] = []
    ended: list[int] = []
    sizes = [len(body) or 1] if chunk is None else chunk if isinstance(chunk, list) else [chunk]
    position, turn = 0, 0
    while position < len(body):
        size = sizes[turn % len(sizes)]
        turn += 1
        for event in reader.feed(body[position : position + size]):
            if isinstance(event, PartStart):
                assert event.index == len(parts) + 1
                parts.append((event.headers, bytearray()))
            elif isinstance(event, PartData):
                assert event.data, "PartData is never empty"
                assert len(ended) == len(parts) - 1, "data only inside an open part"
                parts[-1][1].extend(event.data)
            else:
                assert isinstance(event, PartEnd)
                ended.append(event.index)
        position += size
    reader.finish()
    assert reader.done
    assert ended == list(range(1, len(parts) + 1))
    return [(headers, bytes(data)) for headers, data in parts]


# Bodies that contain near-misses of the delimiter, CR/LF bytes and dashes at the edges.
TRICKY = [
    b"",
    b"\r\n",
    b"--",
    b"\r\n--aifi-test-boundar",
    b"x\r\n--aifi-test-boundarX--\r\n",
    b"--aifi-test-boundary-not-at-line-start",
    bytes(range(256)) * 3,
    b"\r" * 50 + b"\n" * 50,
]


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 7, 64, 4096, [1, 5, 2, 100, 3]])
def test_parts_round_trip_in_any_chunking(chunk: int | list[int] | None) -> None:
    body, _ = multipart_related(TRICKY)
    parts = parse(body, chunk)
    assert [data for _, data in parts] == TRICKY
    assert all(h == {"content-type": "application/dicom"} for h, _ in parts)


def test_every_split_point_of_the_delimiter() -> None:
    payload = [b"A" * 10, b"B" * 3]
    body, _ = multipart_related(payload)
    for cut in range(1, len(body)):
        parts = parse(body, [cut, len(body)])
        assert [d for _, d in parts] == payload, cut


def test_random_binary_parts_random_chunks() -> None:
    rng = random.Random(1234)
    payload = [rng.randbytes(rng.randint(0, 5000)) for _ in range(20)]
    body, _ = multipart_related(payload)
    for _ in range(5):
        sizes = [rng.randint(1, 3000) for _ in range(50)]
        assert [d for _, d in parse(body, sizes)] == payload


def test_preamble_padding_epilogue_and_headers() -> None:
    body = (
        b"This is the preamble.\r\n"
        b"--b  \t\r\n"  # transport padding after the delimiter
        b"Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
        b"Content-Location: http://x/1\r\n"
        b"X-Folded: one\r\n two\r\n"
        b"\r\n"
        b"first\r\n"
        b"--b\r\n"
        b"\r\n"  # a part without headers
        b"second\r\n"
        b"--b-- \r\n"
        b"epilogue, ignored\r\n--b\r\ngarbage"
    )
    parts = parse(body, boundary="b")
    assert parts[0] == (
        {
            "content-type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
            "content-location": "http://x/1",
            "x-folded": "one two",
        },
        b"first",
    )
    assert parts[1] == ({}, b"second")
    assert parse(body, 1, boundary="b") == parts


def test_empty_multipart_and_body_starting_with_delimiter() -> None:
    assert parse(b"--b--", boundary="b") == []
    assert parse(b"--b--\r\n", 1, boundary="b") == []
    assert parse(b"--b\r\n\r\n\r\n--b--", boundary="b") == [({}, b"")]


def test_quoted_looking_boundary_with_specials() -> None:
    boundary = "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1 (x)=?"
    body, _ = multipart_related([b"abc"], boundary=boundary)
    assert [d for _, d in parse(body, 3, boundary=boundary)] == [b"abc"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no boundary delimiter"),
        (b"hello world, not multipart at all", "no boundary delimiter"),
        (b"--other\r\n\r\nx\r\n--other--", "no boundary delimiter"),
        (b"--b\r\nContent-Type: a\r\n\r\nhalf a part", "Truncated"),
        (b"--b\r\nContent-Type: a\r\n", "Truncated"),
        (b"--b\r\nContent-Type: a\r\n\r\nbody\r\n--b", "Truncated"),
        (b"--b\r\nContent-Type: a\r\n\r\nbody\r\n--b\r\n", "Truncated"),
        (b"--bX\r\n\r\nbody\r\n--b--", "unexpected bytes"),
        (b"--b\r\nno colon here\r\n\r\nx\r\n--b--", "not 'name: value'"),
        (b"--b\r\n: empty name\r\n\r\nx\r\n--b--", "not 'name: value'"),
        (b"--b\nContent-Type: a\n\nx\n--b--", "unexpected bytes"),
    ],
)
def test_malformed_bodies_raise_clear_errors(body: bytes, message: str) -> None:
    for chunk in (None, 1):
        with pytest.raises(MultipartError, match=message):
            parse(body, chunk, boundary="b")


def test_error_is_a_400_invalid_request() -> None:
    assert issubclass(MultipartError, InvalidRequest)
    assert MultipartError("x").status_code == 400


def test_garbage_is_refused_early_with_bounded_buffer() -> None:
    reader = MultipartReader("b", max_preamble=1000)
    for _ in range(9):
        reader.feed(b"z" * 100)
        assert len(reader._buffer) < 100 + 10
    with pytest.raises(MultipartError, match="first 1000 bytes"):
        reader.feed(b"z" * 200)


def test_oversized_headers() -> None:
    body = b"--b\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\nx\r\n--b--"
    for chunk in (None, 1000):
        with pytest.raises(MultipartError, match="exceed 16384 bytes"):
            parse(body, chunk, boundary="b")
    assert parse(body, 1000, boundary="b", max_header_size=32768)[0][1] == b"x"


def test_buffer_stays_bounded_while_streaming_a_large_part() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.feed(b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n")
    chunk = os.urandom(256 * 1024)
    total = 0
    for _ in range(64):  # 16 MiB through the reader
        for event in reader.feed(chunk):
            assert isinstance(event, PartData)
            total += len(event.data)
        assert len(reader._buffer) < len(BOUNDARY) + 8
    events = reader.feed(b"\r\n--" + BOUNDARY.encode() + b"--\r\n")
    total += sum(len(e.data) for e in events if isinstance(e, PartData))
    reader.finish()
    assert total == 64 * len(chunk)


def test_boundary_validation() -> None:
    assert validate_boundary("abc") == "abc"
    orthanc = "c7558102-904c-488f-8493-f58cc3c4855f-c7558102-904c-488f-8493-f58cc3c4855f"
    assert validate_boundary(orthanc) == orthanc  # 73 > 70 characters: tolerated
    for bad in ("", "a" * 201, "ends with space ", " ", "new\r\nline", "tab\t", "é"):
        with pytest.raises(MultipartError):
            validate_boundary(bad)


def test_parser_throughput() -> None:
    """Hundreds of MB/s: one bytes.find per chunk, no per-byte Python work."""
    payload = [os.urandom(4 * 1024 * 1024) for _ in range(16)]  # 64 MiB
    body, _ = multipart_related(payload)
    reader = MultipartReader(BOUNDARY)
    chunk = 256 * 1024
    start = time.perf_counter()
    for position in range(0, len(body), chunk):
        reader.feed(body[position : position + chunk])
    reader.finish()
    rate = len(body) / (time.perf_counter() - start) / 1e6
    print(f"multipart reader: {rate:.0f} MB/s")
    assert rate > 200, f"{rate:.0f} MB/s"


def test_read_parts_returns_each_part_with_its_headers() -> None:
    from aifi.dicomweb.multipart import encode
    from aifi.dicomweb.multipart_reader import read_parts

    body = encode([("application/dicom", b"one\r\n--x"), ("application/json", b"{}")], "bnd")
    parts = read_parts(body, "bnd")
    assert [(h["content-type"], b) for h, b in parts] == [
        ("application/dicom", b"one\r\n--x"),
        ("application/json", b"{}"),
    ]


def test_read_parts_refuses_a_truncated_body() -> None:
    from aifi.dicomweb.multipart import encode
    from aifi.dicomweb.multipart_reader import MultipartError, read_parts

    body = encode([("application/dicom", b"data")], "bnd")
    with pytest.raises(MultipartError):
        read_parts(body[:-10], "bnd")
