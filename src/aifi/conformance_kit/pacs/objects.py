"""What the PACS kit sends: a generated study (invented patient, drawn pixels, fresh UIDs
each run; :func:`aifi.conformance.synthetic.radiograph_study`) and one result of each kind
an AI product returns, built on it by the project's IHE AIR builders
(:mod:`aifi.ihe_profiles.air`) as the reference products build theirs:

========  ================================================  ==============================
kind      object                                            standard
========  ================================================  ==============================
``sr``    Comprehensive 3D SR, TID 1500 Measurement Report  PS3.3 A.35.13, PS3.16 TID 1500
``seg``   Segmentation (binary, AUTOMATIC)                  PS3.3 A.51
``gsps``  Grayscale Softcopy Presentation State (overlay)   PS3.3 A.33.1
``sc``    Secondary Capture summary page                    PS3.3 A.8.1
``ko``    Key Object Selection Document                     PS3.3 A.35.4, PS3.16 TID 2010
========  ================================================  ==============================

Every object is kept as the Part 10 bytes sent (:attr:`SentObject.data`), the data set read
back from them and an :class:`~aifi.hub.delivery.dicomweb_client.OutgoingInstance` in a
folder, the form the hub's delivery clients send.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread

import aifi
from aifi.conformance.synthetic import Patient, radiograph_study
from aifi.hub.delivery.dicomweb_client import OutgoingInstance
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import codes

RESULT_KINDS: dict[str, str] = {
    "sr": "SR TID 1500 Measurement Report",
    "seg": "Segmentation",
    "gsps": "Grayscale Softcopy Presentation State",
    "sc": "Secondary Capture summary page",
    "ko": "Key Object Selection",
}
"""The result kinds, in the order they are stored, with what a person calls them."""

RESULT_CITES: dict[str, str] = {
    "sr": "DICOM PS3.16 TID 1500",
    "seg": "DICOM PS3.3 A.51",
    "gsps": "DICOM PS3.3 A.33.1",
    "sc": "DICOM PS3.3 A.8.1",
    "ko": "DICOM PS3.3 A.35.4",
}

KIT_ALGORITHM = air.AlgorithmIdentity(
    manufacturer="aifi-hub conformance kit",
    model_name="pacs-conformance",
    software_version=aifi.__version__,
    device_uid="2.25.93849872612144455736709159742420523795",
)
"""The "algorithm" the kit's results name (IHE AIR algorithm identification)."""

IMAGE_SIZE = 64
MORPHOLOGICALLY_ALTERED = codes.CodeTriple("49755003", "SCT", "Morphologically Altered Structure")
NOT_CLINICAL = "(conformance test, not clinical)"


@dataclass(frozen=True)
class SentObject:
    """One instance the kit sends: its kind (``image`` or a result kind), the Part 10
    bytes, the data set read back from them, and the file the delivery client sends."""

    kind: str
    data: bytes
    dataset: Dataset
    outgoing: OutgoingInstance

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def sop_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def transfer_syntax_uid(self) -> str:
        return str(self.dataset.file_meta.TransferSyntaxUID)


@dataclass(frozen=True)
class KitStudy:
    """The generated study (its images) and the five results on it, by kind."""

    run_id: str
    images: list[SentObject]
    results: dict[str, SentObject]

    @property
    def study_uid(self) -> str:
        return self.images[0].study_uid

    @property
    def patient_id(self) -> str:
        return str(self.images[0].dataset.PatientID)

    def everything(self) -> list[SentObject]:
        return [*self.images, *self.results.values()]


def _sent(kind: str, ds: Dataset, folder: Path) -> SentObject:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return _from_bytes(kind, buffer.getvalue(), folder)


def _from_bytes(kind: str, data: bytes, folder: Path) -> SentObject:
    dataset = dcmread(io.BytesIO(data))
    path = folder / f"{kind}-{dataset.SOPInstanceUID}.dcm"
    path.write_bytes(data)
    outgoing = OutgoingInstance(
        sop_class_uid=str(dataset.SOPClassUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
        path=path,
    )
    return SentObject(kind=kind, data=data, dataset=dataset, outgoing=outgoing)


def _results(inputs: Sequence[Dataset], run_id: str) -> dict[str, Dataset]:
    """One result of each kind on ``inputs`` (two radiographs)."""
    first, second = inputs[0], inputs[1]
    centre = IMAGE_SIZE / 2
    circle = air.Region(first, "CIRCLE", [(centre, centre), (centre + 8, centre)])
    finding = air.QualitativeFinding(
        finding=air.FRACTURE,
        present=True,
        tracking_id=f"kit finding {run_id}",
        finding_site=codes.HAND,
        regions=[circle],
    )
    mask = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), bool)
    mask[0, 24:40, 24:40] = True
    described = f"AIFI kit {{}} {NOT_CLINICAL}"
    return {
        "sr": air.measurement_report(
            inputs, KIT_ALGORITHM, findings=[finding], series_description=described.format("SR")
        ),
        "seg": air.segmentation(
            [first],
            KIT_ALGORITHM,
            mask,
            segment_label="kit region",
            category=MORPHOLOGICALLY_ALTERED,
            property_type=air.FRACTURE,
            series_description=described.format("SEG"),
        ),
        "gsps": air.overlay_presentation(
            inputs,
            KIT_ALGORITHM,
            [circle],
            ["Kit finding (test)"],
            series_description=described.format("GSPS"),
        ),
        "sc": air.summary_page(
            inputs,
            KIT_ALGORITHM,
            ["aifi-hub PACS conformance kit", f"Run {run_id}", "Not a clinical result"],
            title="Conformance test",
            series_description=described.format("SC"),
        ),
        "ko": air.key_objects(
            inputs,
            KIT_ALGORITHM,
            [second],
            description="kit key image",
            series_description=described.format("KO"),
        ),
    }


def generate(folder: Path, run_id: str | None = None) -> KitStudy:
    """A new study of two small radiographs of an invented patient, and its five results,
    written into ``folder`` (which must exist)."""
    run_id = run_id or uuid.uuid4().hex[:8].upper()
    patient = Patient(
        name="AIFI^Conformance Test", patient_id=f"AIFI-KIT-{run_id}", birth_date="19700101"
    )
    images = [
        _from_bytes("image", data, folder)
        for data in radiograph_study(
            2,
            description=f"AIFI kit test study {NOT_CLINICAL}",
            patient=patient,
            accession=f"KIT{run_id}",
            size=IMAGE_SIZE,
        )
    ]
    built = _results([image.dataset for image in images], run_id)
    results = {kind: _sent(kind, built[kind], folder) for kind in RESULT_KINDS}
    return KitStudy(run_id=run_id, images=images, results=results)
