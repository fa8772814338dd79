"""The image statistics behind the reference products — DEMONSTRATORS, not clinical
algorithms.

Pure functions from pixels to numbers (numpy only, no I/O, deterministic). They are written
for the phantoms of :mod:`aifi.conformance.pilot_studies` and say nothing true about real
radiographs or CTs; their purpose is a known answer that has to be computed from the image
(never from a header), so the AI result workflow (IHE AIR) can be tested end to end:

* :func:`bone_age_years` — bone brightness relative to soft tissue, calibrated to years;
* :func:`find_fracture` — a short transverse break in a long bone;
* :func:`find_filling_defects` — dark voxels enclosed by contrast-filled vessel on CT.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset

__all__ = [
    "BoneAge",
    "FillingDefect",
    "Fracture",
    "bone_age_years",
    "find_filling_defects",
    "find_fracture",
    "hounsfield",
]

Array = np.ndarray[Any, np.dtype[np.float64]]

# Calibration of the skeletal-age statistic (matches the phantom's mineralisation model).
CONTRAST_AT_BIRTH = 0.10
CONTRAST_PER_YEAR = 0.10
MAX_AGE_YEARS = 19.0
BONE_THRESHOLD = 1.05
"""A pixel is bone when it is at least 5 % brighter than the soft-tissue level."""

# Fracture: a run of non-bone rows this long, with this much bone above and below it ...
GAP_ROWS = (2, 8)
BONE_EITHER_SIDE = 20
MIN_BONE_ROWS = 60
"""... in a column of a bone at least this tall ..."""
MIN_BROKEN_FRACTION = 0.6
"""... across this fraction of the bone's columns."""

# Filling defect (CT): contrast-filled vessel range and clot range, in HU.
VESSEL_HU = (200.0, 500.0)
DEFECT_HU = (-50.0, 150.0)
MIN_DEFECT_PIXELS = 12
MIN_DEFECT_SLICES = 2


def pixels(ds: Dataset) -> Array:
    """The stored pixel values as float (one frame)."""
    return np.asarray(ds.pixel_array, dtype=np.float64)


def hounsfield(ds: Dataset) -> Array:
    """A CT slice in Hounsfield units via Rescale Slope/Intercept (PS3.3 C.11.1.1.2)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels(ds) * slope + intercept


def _soft_tissue_level(image: Array) -> tuple[float, float] | None:
    """(background threshold, soft-tissue level): the foreground is what is brighter than
    15 % of the way from the darkest to the brightest pixels; soft tissue, covering more of
    it than bone, is near its 25th percentile, and its level is the median of the
    foreground pixels up to 5 % above that."""
    low = float(np.percentile(image, 1))
    threshold = low + (float(np.percentile(image, 99)) - low) * 0.15
    foreground = image[image > threshold]
    if foreground.size < 100:
        return None
    rough = float(np.percentile(foreground, 25))
    return threshold, float(np.median(foreground[foreground <= rough * BONE_THRESHOLD]))


@dataclass(frozen=True, slots=True)
class BoneAge:
    years: float
    contrast: float
    """Median bone brightness / soft-tissue level."""
    bone_pixels: int


def bone_age_years(ds: Dataset) -> BoneAge | None:
    """Skeletal age from bone mineralisation contrast: (median bone / soft tissue − 1 −
    0.10) / 0.10 years, clipped to 0-19 and rounded to 0.1 year; None when no bone is found.
    Reads only the pixels."""
    image = pixels(ds)
    levels = _soft_tissue_level(image)
    if levels is None:
        return None
    _background, soft = levels
    bone = image[image > soft * BONE_THRESHOLD]
    if bone.size < 50:
        return None
    contrast = float(np.median(bone)) / soft
    years = (contrast - 1 - CONTRAST_AT_BIRTH) / CONTRAST_PER_YEAR
    years = round(min(max(years, 0.0), MAX_AGE_YEARS), 1)
    return BoneAge(years=years, contrast=round(contrast, 4), bone_pixels=int(bone.size))


@dataclass(frozen=True, slots=True)
class Fracture:
    """A transverse break: the bone's columns [first, last] and the break's centre row at
    each end, and its centre (column, row) in pixel coordinates."""

    first_column: int
    last_column: int
    first_row: float
    last_row: float
    centre: tuple[float, float]
    half_width: float


def _runs(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _gap_centre(column: np.ndarray[Any, np.dtype[np.bool_]]) -> float | None:
    """The centre row of the first short non-bone run with enough bone on both sides."""
    runs = _runs(column)
    for (a, b), (c, d) in itertools.pairwise(runs):
        long_enough = b - a >= BONE_EITHER_SIDE and d - c >= BONE_EITHER_SIDE
        if GAP_ROWS[0] <= c - b <= GAP_ROWS[1] and long_enough:
            return (b + c - 1) / 2
    return None


def find_fracture(ds: Dataset) -> Fracture | None:
    """The first long bone (a run of columns with at least :data:`MIN_BONE_ROWS` bone
    pixels) broken across at least 60 % of its columns by a 2-8 row gap; None if none."""
    image = pixels(ds)
    levels = _soft_tissue_level(image)
    if levels is None:
        return None
    bone = image > levels[1] * BONE_THRESHOLD
    tall = bone.sum(axis=0) >= MIN_BONE_ROWS
    for start, stop in _runs(tall):
        if stop - start < 4:
            continue
        centres = {c: _gap_centre(bone[:, c]) for c in range(start, stop)}
        broken = {c: r for c, r in centres.items() if r is not None}
        if len(broken) < MIN_BROKEN_FRACTION * (stop - start):
            continue
        first, last = min(broken), max(broken)
        rows = list(broken.values())
        return Fracture(
            first_column=first,
            last_column=last,
            first_row=broken[first],
            last_row=broken[last],
            centre=((first + last) / 2, float(np.mean(rows))),
            half_width=(last - first) / 2,
        )
    return None


@dataclass(frozen=True, slots=True)
class FillingDefect:
    """Where a filling defect shows: the slice's index in the input order, its pixel
    count and centre (column, row) and radius."""

    index: int
    pixels: int
    centre: tuple[float, float]
    radius: float


def _enclosed(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Pixels with ``mask`` somewhere left and right in their row and above and below in
    their column (a cheap "inside the vessel" test)."""

    def both_sides(m: np.ndarray[Any, np.dtype[np.bool_]], axis: int) -> Any:
        before = np.maximum.accumulate(m, axis=axis)
        after = np.flip(np.maximum.accumulate(np.flip(m, axis=axis), axis=axis), axis=axis)
        return before & after

    return both_sides(mask, 0) & both_sides(mask, 1) & ~mask  # type: ignore[no-any-return]


def find_filling_defects(slices: Sequence[Dataset]) -> list[FillingDefect]:
    """Per slice, the soft-tissue-dense pixels (−50..150 HU) enclosed by contrast-filled
    vessel (200..500 HU); slices with at least 12 such pixels. Embolism is called when
    :data:`MIN_DEFECT_SLICES` or more slices show one (see :func:`embolism_present`)."""
    found = []
    for index, ds in enumerate(slices):
        hu = hounsfield(ds)
        vessel = (hu >= VESSEL_HU[0]) & (hu <= VESSEL_HU[1])
        defect = _enclosed(vessel) & (hu >= DEFECT_HU[0]) & (hu <= DEFECT_HU[1])
        count = int(defect.sum())
        if count >= MIN_DEFECT_PIXELS:
            rows, columns = np.nonzero(defect)
            centre = (float(columns.mean()), float(rows.mean()))
            radius = float(np.sqrt(count / np.pi)) + 2.0
            found.append(FillingDefect(index, count, centre, radius))
    return found


def embolism_present(defects: Sequence[FillingDefect]) -> bool:
    return len(defects) >= MIN_DEFECT_SLICES
