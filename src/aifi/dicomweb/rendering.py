"""Rendering DICOM frames into consumer images (PS3.18 §8.3.5, §8.7.4). Pure code.

The grayscale pipeline follows PS3.4 N.2 ("Pixel Transformation Sequence"): Modality LUT
(Rescale Slope/Intercept or Modality LUT Sequence, per frame where the functional groups
say so), then VOI (the ``window`` query parameter, else the data set's first Window
Center/Width with its VOI LUT Function, else a VOI LUT Sequence, else the frame's range),
then the presentation (MONOCHROME1 or Presentation LUT Shape INVERSE inverted), to 8 bits
(PS3.18 §8.7.4: rendered images have no more than 8 bits per channel). Colour frames
arrive as RGB (YBR already converted by the decoder); PALETTE COLOR goes through its
palette. Then the source region and viewport (§8.3.5.1.3) are applied, and the image is
encoded as JPEG (baseline, the default, §8.7.4) or PNG with Pillow.

Nothing is drawn on the images: no annotations (``annotation`` is not supported and
ignored, §8.3.5.1.1), no overlays, and encoded files carry no metadata (EXIF, text
chunks), so thumbnails cannot reveal who the patient is.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

from aifi.errors import InvalidRequest

RENDERED_MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
"""Rendered media types this module encodes (PS3.18 Table 8.7.4-1), default first."""

DEFAULT_QUALITY = 90
THUMBNAIL_SIZE = 128
"""Default bounding box (pixels) of a thumbnail when no viewport is given (Supplement 203
leaves the size to the origin server)."""
MAX_VIEWPORT = 8192

WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
"""``window`` query parameter function → VOI LUT Function (PS3.18 §8.3.5.1.4,
PS3.3 C.11.2.1.3)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window in Modality LUT output units (PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if self.function not in WINDOW_FUNCTIONS.values():
            raise InvalidRequest(f"Unknown VOI LUT function {self.function!r}")
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise InvalidRequest("Window center and width must be finite numbers")
        minimum = 1.0 if self.function == "LINEAR" else 0.0
        if self.width < minimum or (self.function != "LINEAR" and self.width <= 0):
            raise InvalidRequest(
                f"Window width must be {'at least 1' if minimum else 'above 0'} for {self.function}"
            )


@dataclass(frozen=True, slots=True)
class Viewport:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 §8.3.5.1.3): the output size and an
    optional source region (``sw``/``sh`` negative flip the image)."""

    width: int | None
    height: int | None
    sx: int = 0
    sy: int = 0
    sw: int | None = None
    sh: int | None = None


@dataclass(frozen=True, slots=True)
class RenderParams:
    media_type: str = "image/jpeg"
    quality: int = DEFAULT_QUALITY
    window: Window | None = None
    viewport: Viewport | None = None


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not a number: {text!r}") from exc
    if not math.isfinite(value):
        raise InvalidRequest(f"{what} is not a finite number: {text!r}")
    return value


def _integer(text: str, what: str) -> int:
    text = text.strip()
    if not text.lstrip("-").isdigit() or len(text) > 9:
        raise InvalidRequest(f"{what} is not an integer: {text!r}")
    return int(text)


def parse_window(text: str) -> Window:
    """``center,width[,function]`` with function ``linear`` (default), ``linear-exact``
    or ``sigmoid`` (PS3.18 §8.3.5.1.4); :class:`InvalidRequest` when malformed."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise InvalidRequest(f"window must be center,width[,function], not {text!r}")
    function = WINDOW_FUNCTIONS.get(parts[2].lower()) if len(parts) == 3 else "LINEAR"
    if function is None:
        raise InvalidRequest(
            f"Unknown window function {parts[2]!r}; use one of {', '.join(WINDOW_FUNCTIONS)}"
        )
    return Window(_number(parts[0], "window center"), _number(parts[1], "window width"), function)


def parse_viewport(text: str) -> Viewport:
    """``vw,vh`` or ``vw,vh,sx,sy,sw,sh`` (PS3.18 §8.3.5.1.3). One of ``vw``/``vh`` may be
    empty (the other then sets the scale)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise InvalidRequest(f"viewport must be vw,vh[,sx,sy,sw,sh], not {text!r}")
    size: list[int | None] = []
    for part, name in zip(parts[:2], ("vw", "vh"), strict=True):
        if not part:
            size.append(None)
            continue
        value = _integer(part, f"viewport {name}")
        if not 0 < value <= MAX_VIEWPORT:
            raise InvalidRequest(f"viewport {name} must be between 1 and {MAX_VIEWPORT}")
        size.append(value)
    if size == [None, None]:
        raise InvalidRequest("viewport needs vw or vh")
    if len(parts) == 2:
        return Viewport(size[0], size[1])
    sx, sy = (_integer(p, "viewport source offset") for p in parts[2:4])
    sw, sh = (_integer(p, "viewport source size") if p else None for p in parts[4:6])
    if sx < 0 or sy < 0:
        raise InvalidRequest("viewport sx and sy must not be negative")
    if sw == 0 or sh == 0:
        raise InvalidRequest("viewport sw and sh must not be 0")
    return Viewport(size[0], size[1], sx, sy, sw, sh)


def parse_quality(text: str) -> int:
    """``quality`` 1-100 (PS3.18 §8.3.5.1.2)."""
    value = _integer(text, "quality")
    if not 1 <= value <= 100:
        raise InvalidRequest("quality must be between 1 and 100")
    return value


# -- pixel pipeline -----------------------------------------------------------------------


def _functional(ds: Dataset, index: int, group: str, keyword: str) -> Any:
    """An attribute of frame ``index``: per-frame functional group, then shared, then the
    top level (PS3.3 C.7.6.16)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    containers = []
    if index < len(per_frame):
        containers.append(per_frame[index])
    if shared:
        containers.append(shared[0])
    for container in containers:
        sequence = container.get(group)
        if sequence:
            value = sequence[0].get(keyword)
            if value is not None and value != "":
                return value
    return ds.get(keyword)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _modality(arr: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    if ds.get("ModalityLUTSequence"):
        result: np.ndarray = apply_modality_lut(arr, ds)
        return result
    group = "PixelValueTransformationSequence"
    slope = _first(_functional(ds, index, group, "RescaleSlope"))
    intercept = _first(_functional(ds, index, group, "RescaleIntercept"))
    if slope is None and intercept is None:
        return arr
    return arr.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Window ``values`` to 0-255 floats with the VOI LUT Function (PS3.3 C.11.2.1.2.1
    LINEAR, C.11.2.1.3.2 LINEAR_EXACT, C.11.2.1.3.1 SIGMOID)."""
    x = values.astype(np.float64)
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        exponent = np.clip(-4.0 * (x - c) / w, -700.0, 700.0)  # exp() stays finite
        return 255.0 / (1.0 + np.exp(exponent))
    if window.function == "LINEAR_EXACT":
        return np.clip(((x - c) / w + 0.5) * 255.0, 0.0, 255.0)
    if w <= 1:
        return np.where(x <= c - 0.5, 0.0, 255.0)
    return np.clip(((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0.0, 255.0)


def _dataset_window(ds: Dataset, index: int) -> Window | None:
    group = "FrameVOILUTSequence"
    center = _first(_functional(ds, index, group, "WindowCenter"))
    width = _first(_functional(ds, index, group, "WindowWidth"))
    if center is None or width is None:
        return None
    function = str(_functional(ds, index, group, "VOILUTFunction") or "LINEAR").upper()
    if function not in WINDOW_FUNCTIONS.values():
        function = "LINEAR"
    try:
        return Window(center, width, function)
    except InvalidRequest:
        return None  # an unusable stored window: fall back to the next VOI source


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grayscale(arr: np.ndarray, ds: Dataset, index: int, window: Window | None) -> np.ndarray:
    values = _modality(arr, ds, index)
    voi = window or _dataset_window(ds, index)
    if voi is not None:
        out = np.rint(apply_window(values, voi)).astype(np.uint8)
    elif ds.get("VOILUTSequence") and np.issubdtype(values.dtype, np.integer):
        lut = apply_voi(values, ds)
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = _to_uint8(lut, 0, 2**depth - 1)
    else:
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
        out = _to_uint8(np.nan_to_num(values), low, high)
    inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" or inverse:
        out = np.subtract(np.uint8(255), out, dtype=np.uint8)
    result: np.ndarray = out
    return result


def _colour(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR" and arr.ndim == 2:
        arr = apply_color_lut(arr, ds)[..., :3]
        bits = 16 if arr.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    if arr.dtype == np.uint8 and bits <= 8:
        same: np.ndarray = np.ascontiguousarray(arr[..., :3])
        return same
    shift = np.uint64(max(bits - 8, 0))
    scaled: np.ndarray = np.clip(arr[..., :3].astype(np.uint64) >> shift, 0, 255)
    return scaled.astype(np.uint8)


def to_display(
    arr: np.ndarray, ds: Dataset, index: int = 0, window: Window | None = None
) -> np.ndarray:
    """One decoded frame (``rows × columns`` or ``rows × columns × 3`` RGB) to 8-bit
    display values: ``uint8`` grayscale or RGB."""
    is_colour = arr.ndim == 3 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    if is_colour:
        return _colour(arr, ds)
    return _grayscale(arr, ds, index, window)


# -- geometry and encoding ----------------------------------------------------------------


def apply_viewport(
    pixels: np.ndarray, viewport: Viewport | None, bound: int | None = None
) -> Image.Image:
    """Crop/flip to the source region, then scale to fit the viewport keeping the aspect
    ratio (PS3.18 §8.3.5.1.3). Without a viewport, ``bound`` (thumbnails) shrinks the
    image to fit a ``bound × bound`` box."""
    image = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    if viewport is None:
        if bound is not None and max(image.size) > bound:
            image.thumbnail((bound, bound), Image.Resampling.LANCZOS)
        return image
    width, height = image.size
    sw = viewport.sw if viewport.sw is not None else width - viewport.sx
    sh = viewport.sh if viewport.sh is not None else height - viewport.sy
    left, right = sorted((viewport.sx, viewport.sx + sw))
    top, bottom = sorted((viewport.sy, viewport.sy + sh))
    if left < 0 or top < 0 or right > width or bottom > height or left == right or top == bottom:
        raise InvalidRequest(f"viewport source region lies outside the {width}x{height} image")
    if (left, top, right, bottom) != (0, 0, width, height):
        image = image.crop((left, top, right, bottom))
    if sw < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    region_w, region_h = image.size
    scales = [
        target / source
        for target, source in ((viewport.width, region_w), (viewport.height, region_h))
        if target is not None
    ]
    scale = min(scales)
    size = (max(1, round(region_w * scale)), max(1, round(region_h * scale)))
    if size != image.size:
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
        image = image.resize(size, resample)
    return image


def encode(image: Image.Image, media_type: str, quality: int = DEFAULT_QUALITY) -> bytes:
    """JPEG (baseline, 8-bit, as PS3.18 §8.7.4 requires) or PNG bytes, without metadata."""
    buffer = io.BytesIO()
    if media_type == "image/jpeg":
        image.save(buffer, "JPEG", quality=quality, progressive=False, optimize=False)
    elif media_type == "image/png":
        image.save(buffer, "PNG", compress_level=3)
    else:
        raise ValueError(f"cannot encode {media_type}")
    return buffer.getvalue()


def render(
    arr: np.ndarray,
    ds: Dataset,
    index: int,
    params: RenderParams,
    bound: int | None = None,
) -> bytes:
    """A decoded frame rendered and encoded as ``params`` ask."""
    pixels = to_display(arr, ds, index, params.window)
    image = apply_viewport(pixels, params.viewport, bound)
    return encode(image, params.media_type, params.quality)
