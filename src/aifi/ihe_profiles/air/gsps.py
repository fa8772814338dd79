"""Overlay of a result on its source images as a Grayscale Softcopy Presentation State
(PS3.3 A.33.1; Graphic Annotation C.10.5, Graphic Layer C.10.7). AIR leaves GSPS out, but
it is what most PACS viewers show: the regions of a finding drawn on the images with
their labels. Graphics are in PIXEL units (column, row) on the referenced image.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset

from aifi.ihe_profiles.air._common import (
    Region,
    finish,
    headers,
    require_inputs,
    series_laterality,
)
from aifi.ihe_profiles.air.equipment import AlgorithmIdentity

GSPS_SERIES_NUMBER = 9103
LAYER = "AI_RESULT"


def overlay_presentation(
    inputs: Sequence[Dataset],
    algorithm: AlgorithmIdentity,
    regions: Sequence[Region],
    labels: Sequence[str],
    *,
    series_number: int = GSPS_SERIES_NUMBER,
    series_description: str = "AI result overlay",
    content_label: str = LAYER,
) -> Dataset:
    """A GSPS presenting ``inputs`` with ``regions[i]`` drawn and labelled ``labels[i]``."""
    require_inputs(inputs)
    if len(regions) != len(labels):
        raise ValueError(f"{len(regions)} regions but {len(labels)} labels")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in headers(inputs)}
    layer = hd.pr.GraphicLayer(layer_name=LAYER, order=1, description=algorithm.model_name)
    per_image: dict[str, tuple[list[hd.pr.GraphicObject], list[hd.pr.TextObject]]] = {}
    for region, label in zip(regions, labels, strict=True):
        uid = str(region.source.SOPInstanceUID)
        if uid not in by_uid:
            raise ValueError("a region's source image must be one of the inputs")
        graphics, texts = per_image.setdefault(uid, ([], []))
        graphics.append(
            hd.pr.GraphicObject(
                graphic_type=region.graphic_type,
                graphic_data=np.array(region.points, dtype=float),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
            )
        )
        if label:
            texts.append(
                hd.pr.TextObject(
                    text_value=label[:1024],
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                    anchor_point=(float(region.points[0][0]), float(region.points[0][1])),
                )
            )
    annotations = [
        hd.pr.GraphicAnnotation(
            referenced_images=[by_uid[uid]],
            graphic_layer=layer,
            graphic_objects=graphics or None,
            text_objects=texts or None,
        )
        for uid, (graphics, texts) in per_image.items()
    ]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(by_uid.values()),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.model_name,
        software_versions=algorithm.software_version,
        # A software device has no serial number; its Device UID identifies it.
        device_serial_number=algorithm.device_uid,
        content_label=content_label,
        content_description=series_description[:64],
        graphic_annotations=annotations or None,
        graphic_layers=[layer],
    )
    series_laterality(gsps, inputs[0])
    return finish(gsps, inputs, algorithm, series_description)
