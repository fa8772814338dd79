"""Key images of a result: Key Object Selection Document (PS3.3 A.35.4; PS3.16 TID 2010),
an IHE AIR result object that flags the input images the algorithm found relevant.
Document title from CID 7010 (default (113000, DCM, "Of Interest")); the algorithm is the
device observer; evidence = the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from highdicom.sr import DeviceObserverIdentifyingAttributes, ObserverContext
from pydicom import Dataset
from pydicom.sr.codedict import codes

from aifi.ihe_profiles.air._common import finish, headers, require_inputs
from aifi.ihe_profiles.air.codes import OF_INTEREST, Code, coded
from aifi.ihe_profiles.air.equipment import AlgorithmIdentity

KO_SERIES_NUMBER = 9105


def key_objects(
    inputs: Sequence[Dataset],
    algorithm: AlgorithmIdentity,
    selected: Sequence[Dataset],
    *,
    title: Code = OF_INTEREST,
    description: str | None = None,
    series_number: int = KO_SERIES_NUMBER,
    series_description: str = "AI key images",
) -> Dataset:
    """A KOS selecting ``selected`` (each one of ``inputs``)."""
    require_inputs(inputs)
    if not selected:
        raise ValueError("a key object selection needs at least one selected instance")
    input_uids = {str(ds.SOPInstanceUID) for ds in inputs}
    if any(str(ds.SOPInstanceUID) not in input_uids for ds in selected):
        raise ValueError("selected instances must be among the inputs")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in headers(inputs)}
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid,
            name=algorithm.model_name,
            manufacturer_name=algorithm.manufacturer,
            model_name=algorithm.model_name,
        ),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=coded(title),
        referenced_objects=[by_uid[str(ds.SOPInstanceUID)] for ds in selected],
        observer_device_context=observer,
        description=description,
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=list(by_uid.values()),
        content=content,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
    )
    return finish(kos, inputs, algorithm, series_description)
