"""Segmentation result (PS3.3 A.51 Segmentation IOD; IHE AIR segmentation result).

One binary segment over the inputs: ``mask`` has one frame per input image, in input
order. Segment Algorithm Type is AUTOMATIC and the Segment Algorithm Identification
(PS3.3 C.8.20.2: Segment Algorithm Name, Algorithm Family (123110, DCM, "Artificial
Intelligence"), Algorithm Version) is the algorithm's model name and software version.
Built with highdicom; empty frames are kept so frame *i* is input *i*. Several inputs
need a Frame of Reference (CT/MR slices); a projection radiograph (DX/CR, no Frame of
Reference) is segmented one image per SEG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset

from aifi.ihe_profiles.air._common import finish, headers, require_inputs
from aifi.ihe_profiles.air.codes import ARTIFICIAL_INTELLIGENCE, Code, coded
from aifi.ihe_profiles.air.equipment import AlgorithmIdentity

SEG_SERIES_NUMBER = 9102


def segmentation(
    inputs: Sequence[Dataset],
    algorithm: AlgorithmIdentity,
    mask: np.ndarray[Any, Any],
    *,
    segment_label: str,
    category: Code,
    property_type: Code,
    series_number: int = SEG_SERIES_NUMBER,
    series_description: str = "AI segmentation",
) -> Dataset:
    """A binary SEG of ``mask`` (bool, frames × rows × columns) on ``inputs``."""
    require_inputs(inputs)
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[np.newaxis]
    if mask.ndim != 3 or mask.shape[0] != len(inputs):
        raise ValueError(
            f"mask must be (frames, rows, columns) with one frame per input; "
            f"got {mask.shape} for {len(inputs)} inputs"
        )
    if len(inputs) > 1 and any("FrameOfReferenceUID" not in ds for ds in inputs):
        raise ValueError(
            "inputs without a Frame of Reference (e.g. DX) get one SEG per image: "
            "highdicom places frames of several images only by patient coordinates"
        )
    for ds, frame in zip(inputs, mask, strict=True):
        if frame.shape != (int(ds.Rows), int(ds.Columns)):
            raise ValueError(f"mask frame {frame.shape} does not match its image")
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label[:64],
        segmented_property_category=coded(category),
        segmented_property_type=coded(property_type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.model_name,
            family=coded(ARTIFICIAL_INTELLIGENCE),
            version=algorithm.software_version,
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=headers(inputs),
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.model_name,
        software_versions=algorithm.software_version,
        # A software device has no serial number; its Device UID identifies it.
        device_serial_number=algorithm.device_uid,
        omit_empty_frames=False,
    )
    if "FrameOfReferenceUID" not in seg:
        # General Image (PS3.3 C.7.6.1): Patient Orientation is Type 2C without a plane
        # orientation; the source image's, or empty.
        seg.PatientOrientation = inputs[0].get("PatientOrientation", "") or ""
    return finish(seg, inputs, algorithm, series_description)
