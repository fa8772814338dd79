"""A result as a page of text: Secondary Capture Image (PS3.3 A.8.1), 8-bit MONOCHROME2,
rendered with Pillow, so a PACS that cannot display SR still shows what the algorithm
found. Outside IHE AIR (which prefers SR), but what many sites ask for. The page is
labelled as derived (Image Type DERIVED\\SECONDARY), Burned In Annotation YES (it is all
text, and may hold patient identification), Conversion Type WSD (workstation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset

from aifi.ihe_profiles.air._common import (
    finish,
    headers,
    require_inputs,
    series_laterality,
)
from aifi.ihe_profiles.air.equipment import AlgorithmIdentity

SC_SERIES_NUMBER = 9104
WIDTH, HEIGHT = 768, 512
MARGIN = 24


def render_page(title: str, lines: Sequence[str], footer: str) -> np.ndarray[Any, Any]:
    """The page as an 8-bit grey image: ``title`` large, then ``lines``, then ``footer``."""
    image = Image.new("L", (WIDTH, HEIGHT), color=0)
    draw = ImageDraw.Draw(image)
    title_font = ImageFont.load_default(size=30)
    body_font = ImageFont.load_default(size=20)
    small_font = ImageFont.load_default(size=14)
    y = MARGIN
    draw.text((MARGIN, y), title, fill=255, font=title_font)
    y += 50
    for line in lines:
        if y > HEIGHT - 3 * MARGIN:
            draw.text((MARGIN, y), "...", fill=255, font=body_font)
            break
        draw.text((MARGIN, y), line, fill=230, font=body_font)
        y += 28
    draw.text((MARGIN, HEIGHT - MARGIN - 14), footer, fill=160, font=small_font)
    return np.asarray(image, dtype=np.uint8)


def summary_page(
    inputs: Sequence[Dataset],
    algorithm: AlgorithmIdentity,
    lines: Sequence[str],
    *,
    title: str,
    series_number: int = SC_SERIES_NUMBER,
    series_description: str = "AI result summary",
) -> Dataset:
    """A Secondary Capture page with ``title`` and ``lines`` in the inputs' study."""
    require_inputs(inputs)
    footer = (
        f"{algorithm.manufacturer} - {algorithm.model_name} {algorithm.software_version}"
        " - unverified AI result"
    )
    pixels = render_page(title, lines, footer)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=headers(inputs)[0],
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.MONOCHROME2,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        # highdicom insists on an orientation for PATIENT; replaced by empty below.
        patient_orientation=("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    # A text page has no patient orientation: Type 2 (General Image C.7.6.1), empty.
    sc.PatientOrientation = []
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "YES"
    series_laterality(sc, inputs[0])
    return finish(sc, inputs, algorithm, series_description)
