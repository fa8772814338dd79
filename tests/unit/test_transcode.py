"""Transcoding, frame extraction and bulk data (aifi.dicomweb.transcode, .frames, .bulkdata),
checked against pydicom's own decoding of its bundled test files (read from disk, never
downloaded)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data.data_manager import DATA_ROOT
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pack_bits
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from aifi.dicomweb import transfer_syntax
from aifi.dicomweb.bulkdata import parse_tag_path, read_bulkdata
from aifi.dicomweb.frames import FrameReader, choose_frame_encoding, parse_frame_list
from aifi.dicomweb.media import parse_accept
from aifi.dicomweb.transcode import to_explicit_vr_little_endian
from aifi.dicomweb.transfer_syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN as ELE,
)
from aifi.dicomweb.transfer_syntax import TranscodeError, producible
from aifi.errors import InvalidRequest, NotAcceptable, NotFound
from tests.support.dicom import make_ct, to_bytes

TEST_FILES = Path(DATA_ROOT) / "test_files"

# Every bundled Part 10 file with pixel data that pydicom itself decodes, by transfer
# syntax: each must come out as Explicit VR Little Endian with the same pixels.
DECODABLE = [
    "CT_small.dcm",  # Explicit VR LE
    "MR_small_implicit.dcm",  # Implicit VR LE
    "rtdose.dcm",  # Implicit VR LE, 15 frames, 32-bit
    "SC_rgb_jpeg_dcmd.dcm",  # Implicit VR LE, RGB
    "MR_small_bigendian.dcm",  # Explicit VR BE
    "MR_small_expb.dcm",
    "ExplVR_BigEnd.dcm",  # BE, RGB planar
    "rtdose_expb.dcm",  # BE, 15 frames, 32-bit
    "SC_rgb_small_odd_big_endian.dcm",
    "liver_expb_1frame.dcm",  # BE, 1 bit
    "image_dfl.dcm",  # Deflated
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline 4.50, YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+s2.dcm",  # 4.50, YBR_FULL_422
    "examples_ybr_color.dcm",  # 4.50, 30 frames
    "JPGExtended.dcm",  # JPEG extended 4.51
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1 4.70
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless 4.80
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless 4.81
    "SC_rgb_jls_lossy_sample.dcm",
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless 4.90
    "JPEG2000.dcm",  # JPEG 2000 4.91
    "GDCMJ2K_TextGBR.dcm",  # 4.90, YBR_RCT
    "MR_small_RLE.dcm",  # RLE
    "SC_rgb_rle_16bit_2frame.dcm",
    "rtdose_rle.dcm",  # RLE, 15 frames, 32-bit
]


@pytest.mark.parametrize("name", DECODABLE)
def test_explicit_vr_little_endian_keeps_pixels_and_identity(name: str) -> None:
    original = dcmread(TEST_FILES / name)
    data = to_explicit_vr_little_endian(TEST_FILES / name)
    result = dcmread(io.BytesIO(data))
    assert result.file_meta.TransferSyntaxUID == ELE
    assert result.SOPInstanceUID == original.SOPInstanceUID
    assert result.is_little_endian and not result.is_implicit_VR
    assert np.array_equal(result.pixel_array, original.pixel_array)
    assert data[128:132] == b"DICM"


def test_data_sets_without_pixels_are_re_encoded() -> None:
    for name in ("rtplan.dcm", "test-SR.dcm", "UN_sequence.dcm"):  # Implicit, ELE, JPEG
        original = dcmread(TEST_FILES / name)
        result = dcmread(io.BytesIO(to_explicit_vr_little_endian(TEST_FILES / name)))
        assert result.file_meta.TransferSyntaxUID == ELE
        assert result.get("SOPInstanceUID") == original.get("SOPInstanceUID")
        assert len(result) == len(original)


def test_big_endian_words_are_swapped_in_sequences(tmp_path: Path) -> None:
    ds = make_ct()
    ds.add_new(0x00091010, "LO", "AIFI")
    ds.add_new(0x00091011, "OW", np.arange(4, dtype=">u2").tobytes())
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = np.arange(256, dtype=">u2").tobytes()
    path = tmp_path / "be.dcm"
    ds.save_as(path, little_endian=False, implicit_vr=False, enforce_file_format=True)
    result = dcmread(io.BytesIO(to_explicit_vr_little_endian(path)))
    assert np.array_equal(np.frombuffer(result[0x00091011].value, "<u2"), np.arange(4))
    assert np.array_equal(result.pixel_array.ravel(), np.arange(256))
    assert result.Rows == 16  # numbers re-encoded too


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"])
def test_undecodable_pixel_data_is_not_acceptable(name: str) -> None:
    with pytest.raises(TranscodeError) as raised:
        to_explicit_vr_little_endian(TEST_FILES / name)
    assert isinstance(raised.value, NotAcceptable)
    assert raised.value.status_code == 406


def test_producible_follows_ps3_18_8_7_3() -> None:
    jpeg = "1.2.840.10008.1.2.4.50"
    assert producible(ELE, None) == ELE
    assert producible(ELE, "*") == ELE
    assert producible(jpeg, "*") == jpeg
    assert producible(jpeg, None) == ELE  # default: decompressed
    assert producible(jpeg, jpeg) == jpeg
    assert producible(ELE, jpeg) is None  # never compressed here
    assert producible(ImplicitVRLittleEndian, "*") == ELE  # never sent as such
    assert producible(ExplicitVRBigEndian, "*") == ELE
    deflated = "1.2.840.10008.1.2.1.99"
    assert producible(deflated, "*") == deflated  # allowed on the web: as stored
    assert producible(deflated, None) == ELE
    assert producible(ELE, ImplicitVRLittleEndian) is None
    assert producible(ExplicitVRBigEndian, ExplicitVRBigEndian) is None
    assert producible("1.2.840.10008.1.2.4.100", None) is None  # MPEG2: no decoder


# -- frames -------------------------------------------------------------------------------


def native_bytes(frame: np.ndarray) -> bytes:
    return np.ascontiguousarray(frame).astype(frame.dtype.newbyteorder("<")).tobytes()


def frames_of(ds: Dataset) -> np.ndarray:
    """pydicom's decoding, one array per frame."""
    arr: np.ndarray = ds.pixel_array
    return arr if int(ds.get("NumberOfFrames") or 1) > 1 else arr[np.newaxis]


@pytest.mark.parametrize(
    "name",
    [
        "rtdose.dcm",
        "rtdose_expb.dcm",
        "CT_small.dcm",
        "SC_rgb_small_odd.dcm",
        "image_dfl.dcm",
        "liver_1frame.dcm",
        "liver_expb_1frame.dcm",
    ],
)
def test_native_frames_are_read_at_their_offsets(name: str) -> None:
    original = dcmread(TEST_FILES / name)
    frames = frames_of(original)
    planar = original.get("SamplesPerPixel", 1) > 1 and original.get("PlanarConfiguration") == 1
    with FrameReader(TEST_FILES / name) as reader:
        assert not reader.encapsulated and reader.media_type == "application/octet-stream"
        assert reader.number_of_frames == len(frames)
        for number, frame in enumerate(frames, 1):
            if original.BitsAllocated == 1:
                expected = pack_bits(frame)
            else:
                expected = native_bytes(np.moveaxis(frame, -1, 0) if planar else frame)
            assert reader.stored_frame(number) == expected
            assert reader.decoded_frame(number) == expected


def test_bit_packed_frames_are_realigned(tmp_path: Path) -> None:
    """1-bit frames of 3x3 pixels do not start on byte boundaries (PS3.5 §8.1.1)."""
    bits = np.random.default_rng(7).integers(0, 2, (5, 3, 3), dtype=np.uint8)
    ds = make_ct(rows=3, columns=3)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.NumberOfFrames = 5
    ds.PixelData = pack_bits(bits)
    path = tmp_path / "bits.dcm"
    path.write_bytes(to_bytes(ds))
    with FrameReader(path) as reader:
        for number in range(1, 6):
            assert reader.stored_frame(number) == pack_bits(bits[number - 1])


@pytest.mark.parametrize(
    "name", ["examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm", "rtdose_rle.dcm"]
)
def test_encapsulated_frames_and_their_decoding(name: str) -> None:
    original = dcmread(TEST_FILES / name)
    count = int(original.get("NumberOfFrames", 1))
    stored = list(generate_frames(original.PixelData, number_of_frames=count))
    pixels = frames_of(original)
    with FrameReader(TEST_FILES / name) as reader:
        assert reader.encapsulated
        assert reader.media_type == transfer_syntax.COMPRESSED_MEDIA_TYPES[reader.stored_syntax]
        assert list(reader.stored_frames()) == stored
        for number in (count, 1):  # out of order on purpose
            assert reader.stored_frame(number) == stored[number - 1]
            assert reader.decoded_frame(number) == native_bytes(pixels[number - 1])


def test_missing_frames_and_no_pixels() -> None:
    with FrameReader(TEST_FILES / "CT_small.dcm") as reader:
        reader.check_frames([1])
        with pytest.raises(NotFound):
            reader.check_frames([1, 2])
    with FrameReader(TEST_FILES / "test-SR.dcm") as reader:
        assert not reader.has_pixels
        with pytest.raises(NotFound):
            reader.check_frames([1])


def test_frame_lists() -> None:
    assert parse_frame_list("1") == [1]
    assert parse_frame_list("3,1, 2") == [3, 1, 2]
    for bad in ("", "0", "-1", "1,", "a", "1.5", "1;2", "9999999999"):
        with pytest.raises(InvalidRequest):
            parse_frame_list(bad)


def test_frame_encoding_negotiation() -> None:
    def choose(name: str, accept: str, single: bool = False) -> tuple[str, str, bool, bool]:
        with FrameReader(TEST_FILES / name) as reader:
            e = choose_frame_encoding(parse_accept(accept), reader, single)
        return e.media_type, e.syntax, e.decode, e.single

    octets = 'multipart/related; type="application/octet-stream"'
    rle = "1.2.840.10008.1.2.5"
    assert choose("CT_small.dcm", "*/*") == ("application/octet-stream", ELE, False, False)
    assert choose("MR_small_RLE.dcm", "") == ("application/octet-stream", ELE, True, False)
    assert choose("MR_small_RLE.dcm", octets + "; transfer-syntax=*")[:3] == (
        "image/dicom-rle",
        rle,
        False,
    )
    rle_type = 'multipart/related; type="image/dicom-rle"'
    assert choose("MR_small_RLE.dcm", rle_type)[:3] == ("image/dicom-rle", rle, False)
    # Equal q: as stored beats decoding; higher q wins over that.
    assert choose("MR_small_RLE.dcm", f"{octets}, {rle_type}")[2] is False
    assert choose("MR_small_RLE.dcm", f"{octets}, {rle_type}; q=0.5")[2] is True
    assert choose("CT_small.dcm", "application/octet-stream", single=True)[3] is True
    with pytest.raises(TranscodeError):
        choose("CT_small.dcm", "application/octet-stream", single=False)
    with pytest.raises(TranscodeError):
        choose("MR_small_RLE.dcm", 'multipart/related; type="image/jpeg"')
    jpeg = 'multipart/related; type="image/jpeg"'
    lossless = "1.2.840.10008.1.2.4.70"
    assert choose("SC_rgb_jpeg_gdcm.dcm", jpeg)[:3] == ("image/jpeg", lossless, False)
    # The default for image/jpeg is 4.70; a lossy original may go as it is (§8.7.3).
    assert choose("JPGExtended.dcm", jpeg)[:3] == ("image/jpeg", "1.2.840.10008.1.2.4.51", False)
    with pytest.raises(TranscodeError):
        choose("JPGExtended.dcm", f"{jpeg}; transfer-syntax={lossless}")
    with pytest.raises(TranscodeError):
        choose("CT_small.dcm", f"{octets}; transfer-syntax=1.2.840.10008.1.2")


# -- bulk data ----------------------------------------------------------------------------


def test_bulk_data_paths() -> None:
    assert parse_tag_path("7fe00010") == ["7FE00010"]
    assert parse_tag_path("54000100/0/54001010") == ["54000100", 0, "54001010"]
    for bad in ("", "7FE0", "54000100/0", "54000100/x/54001010", "../etc/passwd"):
        with pytest.raises(InvalidRequest):
            parse_tag_path(bad)


def test_bulk_data_values_including_nested_and_big_endian(tmp_path: Path) -> None:
    ecg = dcmread(TEST_FILES / "waveform_ecg.dcm")
    value = read_bulkdata(TEST_FILES / "waveform_ecg.dcm", parse_tag_path("54000100/0/54001010"))
    assert value.data == ecg.WaveformSequence[0].WaveformData and value.vr == "OW"
    with pytest.raises(NotFound):
        read_bulkdata(TEST_FILES / "waveform_ecg.dcm", parse_tag_path("54000100/9/54001010"))
    with pytest.raises(NotFound):
        read_bulkdata(TEST_FILES / "waveform_ecg.dcm", parse_tag_path("00100010"))

    ds = make_ct()
    ds.add_new(0x00091010, "LO", "AIFI")
    ds.add_new(0x00091011, "OW", np.arange(600, dtype=">u2").tobytes())
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    path = tmp_path / "be.dcm"
    ds.save_as(path, little_endian=False, implicit_vr=False, enforce_file_format=True)
    swapped = read_bulkdata(path, parse_tag_path("00091011"))
    assert np.array_equal(np.frombuffer(swapped.data, "<u2"), np.arange(600))
