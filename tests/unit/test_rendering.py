"""Rendering (aifi.dicomweb.rendering): the grayscale pipeline of PS3.4 N.2, colour,
the §8.3.5 query parameters, viewport geometry and encoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data.data_manager import DATA_ROOT

from aifi.dicomweb import rendering
from aifi.dicomweb.rendering import (
    RenderParams,
    Viewport,
    Window,
    apply_viewport,
    apply_window,
    encode,
    parse_quality,
    parse_viewport,
    parse_window,
    render,
    to_display,
)
from aifi.errors import InvalidRequest

TEST_FILES = Path(DATA_ROOT) / "test_files"


def gray(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 12
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def test_query_parameters() -> None:
    assert parse_window("40,400") == Window(40, 400, "LINEAR")
    assert parse_window("-600, 1500, sigmoid") == Window(-600, 1500, "SIGMOID")
    assert parse_window("0,1,LINEAR-EXACT").function == "LINEAR_EXACT"
    for bad in ("40", "a,400", "40,0", "40,400,cubic", "40,nan", "1,2,3,4", "40,0.5,linear"):
        with pytest.raises(InvalidRequest):
            parse_window(bad)
    assert parse_viewport("512,256") == Viewport(512, 256)
    assert parse_viewport(",256") == Viewport(None, 256)
    assert parse_viewport("64,64,10,20,-30,40") == Viewport(64, 64, 10, 20, -30, 40)
    for bad in ("0,10", "10", ",", "10,10,1,2,3", "10,10,-1,0,5,5", "10,10,0,0,0,5", "a,b"):
        with pytest.raises(InvalidRequest):
            parse_viewport(bad)
    assert parse_quality("75") == 75
    for bad in ("0", "101", "high", "7.5"):
        with pytest.raises(InvalidRequest):
            parse_quality(bad)


def test_window_functions_follow_ps3_3_c_11_2() -> None:
    values = np.array([-1000.0, 39.5, 40.0, 239.0, 240.0, 1000.0])
    linear = apply_window(values, Window(40, 401))
    assert linear[0] == 0 and linear[-1] == 255
    assert linear[2] == pytest.approx(127.5, abs=0.7)
    exact = apply_window(np.array([-160.0, 40.0, 240.0]), Window(40, 400, "LINEAR_EXACT"))
    assert list(exact) == [0.0, 127.5, 255.0]
    sigmoid = apply_window(np.array([40.0, -1e6, 1e6]), Window(40, 400, "SIGMOID"))
    assert sigmoid[0] == pytest.approx(127.5) and sigmoid[1] < 1 and sigmoid[2] > 254
    threshold = apply_window(np.array([0.0, 1.0]), Window(1, 1))
    assert list(threshold) == [0.0, 255.0]


def test_modality_lut_then_window_then_monochrome1() -> None:
    stored = np.array([[0, 1024], [1064, 4095]], dtype=np.uint16)
    ds = gray(RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=80)
    out = to_display(stored, ds)
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[1, 1] == 255  # -1024 HU and 3071 HU
    assert 120 <= out[1, 0] <= 135  # 40 HU, the window centre
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(to_display(stored, ds), 255 - out)
    # The window query parameter replaces the data set's window.
    wide = to_display(stored, ds, window=Window(1000, 4000))
    assert not np.array_equal(wide, 255 - out)


def test_without_a_window_the_frame_range_is_used() -> None:
    stored = np.array([[100, 200], [300, 400]], dtype=np.int16)
    assert to_display(stored, gray()).tolist() == [[0, 85], [170, 255]]
    flat = np.full((2, 2), 7, dtype=np.uint8)
    assert to_display(flat, gray()).tolist() == [[0, 0], [0, 0]]


def test_per_frame_functional_groups_win() -> None:
    """Enhanced multi-frame: Pixel Value Transformation and Frame VOI LUT per frame."""

    def group(**attrs: object) -> Dataset:
        item = Dataset()
        for keyword, value in attrs.items():
            setattr(item, keyword, value)
        return item

    ds = gray(WindowCenter=0, WindowWidth=10)
    shared = Dataset()
    shared.PixelValueTransformationSequence = [group(RescaleSlope=2, RescaleIntercept=0)]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for center in (100, 300):
        item = Dataset()
        item.FrameVOILUTSequence = [group(WindowCenter=center, WindowWidth=2)]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    stored = np.array([[50, 150]], dtype=np.uint16)  # 100 and 300 after the rescale
    assert to_display(stored, ds, index=0).tolist() == [[255, 255]]
    assert to_display(stored, ds, index=1).tolist() == [[0, 255]]


def test_colour_and_palette() -> None:
    rgb16 = np.full((2, 2, 3), 0xFF00, dtype=np.uint16)
    ds = Dataset()
    ds.PhotometricInterpretation = "RGB"
    ds.BitsStored = 16
    assert to_display(rgb16, ds).tolist() == np.full((2, 2, 3), 0xFF).tolist()
    palette = dcmread(TEST_FILES / "examples_palette.dcm")
    out = to_display(palette.pixel_array, palette)
    assert out.shape == (*palette.pixel_array.shape, 3) and out.dtype == np.uint8
    ybr = dcmread(TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm")  # decoded to RGB by pydicom
    red = to_display(ybr.pixel_array, ybr)[5, 50]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_viewport_crops_flips_and_fits() -> None:
    pixels = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    assert apply_viewport(pixels, Viewport(10, 10)).size == (10, 6)  # aspect kept
    assert apply_viewport(pixels, Viewport(None, 24)).size == (40, 24)
    crop = apply_viewport(pixels, Viewport(5, 3, 0, 0, 5, 3))
    assert np.array_equal(np.asarray(crop), pixels[:3, :5])
    flipped = apply_viewport(pixels, Viewport(5, 3, 5, 0, -5, 3))
    assert np.array_equal(np.asarray(flipped), pixels[:3, :5][:, ::-1])
    with pytest.raises(InvalidRequest):
        apply_viewport(pixels, Viewport(5, 5, 18, 0, 5, 5))
    thumb = apply_viewport(np.zeros((600, 300), np.uint8), None, bound=rendering.THUMBNAIL_SIZE)
    assert thumb.size == (64, 128)
    small = apply_viewport(np.zeros((30, 40), np.uint8), None, bound=rendering.THUMBNAIL_SIZE)
    assert small.size == (40, 30)  # never enlarged


def test_encoding_carries_no_metadata() -> None:
    image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    jpeg = Image.open(io.BytesIO(encode(image, "image/jpeg", 80)))
    assert jpeg.format == "JPEG" and "exif" not in jpeg.info and "comment" not in jpeg.info
    assert "progressive" not in jpeg.info  # baseline (PS3.18 §8.7.4)
    png = Image.open(io.BytesIO(encode(image, "image/png")))
    assert png.format == "PNG" and not png.info
    with pytest.raises(ValueError, match="cannot encode"):
        encode(image, "image/gif")


def test_render_a_bundled_ct() -> None:
    ct = dcmread(TEST_FILES / "CT_small.dcm")
    low = render(ct.pixel_array, ct, 0, RenderParams("image/png", window=Window(-1000, 100)))
    high = render(ct.pixel_array, ct, 0, RenderParams("image/png", window=Window(1000, 100)))
    assert np.asarray(Image.open(io.BytesIO(low))).mean() > 200  # everything above air
    assert np.asarray(Image.open(io.BytesIO(high))).mean() < 50  # nothing this dense
    jpeg = render(ct.pixel_array, ct, 0, RenderParams(viewport=Viewport(64, 64)))
    assert Image.open(io.BytesIO(jpeg)).size == (64, 64)
