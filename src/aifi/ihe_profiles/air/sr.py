"""TID 1500 Measurement Report as a Comprehensive 3D SR — the IHE AIR result for
measurements and qualitative findings (PS3.3 A.35.13; PS3.16 TID 1500).

Content tree (built with highdicom's TID 1500 classes)::

    CONTAINER (126000, DCM, "Imaging Measurement Report")           TID 1500 row 1
      Language of Content Item and Descendants                      TID 1204
      Observation Context: device observer = the algorithm          TID 1001/1004
      Procedure reported (121058)                                   TID 1500 row 4
      Image Library: every input image                              TID 1600
      CONTAINER (126010, DCM, "Imaging Measurements")               TID 1500 row 6
        Measurement Group per finding / measurement:
          TID 1410 (with a SCOORD region on a source image) or TID 1501 (without)
          Tracking Identifier (112039) + Tracking Unique Identifier (112040)
          Finding (121071), Finding Site (363698007) with Laterality (272741003)
          Algorithm Identification (TID 4019): name = model name, version = software version
          Measurement (TID 300, UCUM units) or qualitative evaluation
            (finding code = Present | Absent)

A finding on several regions becomes one TID 1410 group per region, all sharing the
finding's Tracking Identifier and Tracking UID (one finding, tracked across its regions).
VerificationFlag UNVERIFIED (an algorithm does not verify: PS3.3 C.17.2), CompletionFlag
COMPLETE, evidence = the inputs (Current Requested Procedure Evidence Sequence).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    ImageContentItem,
    ImageLibraryEntryDescriptors,
    ImageRegion,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForRegion,
    TrackingIdentifier,
)
from highdicom.sr import Measurement as HdMeasurement
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from aifi.ihe_profiles.air._common import Region, finish, headers, require_inputs
from aifi.ihe_profiles.air.codes import (
    ABSENT,
    IMAGING_MEASUREMENT_REPORT,
    IMAGING_MEASUREMENTS,
    IMAGING_PROCEDURE,
    PRESENT,
    PROCEDURE_REPORTED,
    Code,
    coded,
)
from aifi.ihe_profiles.air.equipment import AlgorithmIdentity

SR_SERIES_NUMBER = 9101


@dataclass(frozen=True)
class Measurement:
    """A numeric result (TID 300 in a TID 1501/1410 group), e.g. bone age in years."""

    name: Code
    value: float
    unit: Code
    tracking_id: str
    finding_site: Code | None = None
    laterality: Code | None = None
    region: Region | None = None

    def __post_init__(self) -> None:
        if coded(self.unit).scheme_designator != "UCUM":
            raise ValueError(f"measurement units must be UCUM (TID 300): {self.unit!r}")
        _check_site(self.finding_site, self.laterality)
        _check_tracking(self.tracking_id)


@dataclass(frozen=True)
class QualitativeFinding:
    """A finding that is present or absent, optionally on regions of source images."""

    finding: Code
    present: bool
    tracking_id: str
    finding_site: Code | None = None
    laterality: Code | None = None
    regions: Sequence[Region] = ()

    def __post_init__(self) -> None:
        _check_site(self.finding_site, self.laterality)
        _check_tracking(self.tracking_id)


def _check_site(site: Code | None, laterality: Code | None) -> None:
    if laterality is not None and site is None:
        raise ValueError("laterality qualifies a finding site (TID 1501): give finding_site")


def _check_tracking(tracking_id: str) -> None:
    if not tracking_id or len(tracking_id) > 64:
        raise ValueError(f"tracking_id must be 1-64 characters: {tracking_id!r}")


def _finding_sites(site: Code | None, laterality: Code | None) -> list[FindingSite] | None:
    if site is None:
        return None
    return [
        FindingSite(
            anatomic_location=coded(site),
            laterality=coded(laterality) if laterality is not None else None,
        )
    ]


def _image_region(region: Region, inputs: Sequence[Dataset]) -> ImageRegion:
    uids = {str(ds.SOPInstanceUID) for ds in inputs}
    if str(region.source.SOPInstanceUID) not in uids:
        raise ValueError("a region's source image must be one of the inputs")
    return ImageRegion(
        graphic_type=region.graphic_type,
        graphic_data=np.array(region.points, dtype=float),
        source_image=SourceImageForRegion(
            referenced_sop_class_uid=str(region.source.SOPClassUID),
            referenced_sop_instance_uid=str(region.source.SOPInstanceUID),
        ),
    )


def _groups(
    inputs: Sequence[Dataset],
    algorithm: AlgorithmIdentity,
    measurements: Sequence[Measurement],
    findings: Sequence[QualitativeFinding],
) -> list[MeasurementsAndQualitativeEvaluations | PlanarROIMeasurementsAndQualitativeEvaluations]:
    groups: list[
        MeasurementsAndQualitativeEvaluations | PlanarROIMeasurementsAndQualitativeEvaluations
    ] = []

    def algorithm_id() -> AlgorithmIdentification:
        return AlgorithmIdentification(
            name=algorithm.model_name, version=algorithm.software_version
        )

    for m in measurements:
        tracking = TrackingIdentifier(uid=generate_uid(), identifier=m.tracking_id)
        hd_measurement = HdMeasurement(name=coded(m.name), value=float(m.value), unit=coded(m.unit))
        common: dict[str, Any] = dict(
            tracking_identifier=tracking,
            algorithm_id=algorithm_id(),
            finding_sites=_finding_sites(m.finding_site, m.laterality),
            measurements=[hd_measurement],
        )
        if m.region is None:
            groups.append(MeasurementsAndQualitativeEvaluations(**common))
        else:
            groups.append(
                PlanarROIMeasurementsAndQualitativeEvaluations(
                    referenced_region=_image_region(m.region, inputs),
                    **common,
                )
            )
    for f in findings:
        uid = generate_uid()
        evaluation = QualitativeEvaluation(
            name=coded(f.finding), value=coded(PRESENT if f.present else ABSENT)
        )
        regions: list[Region | None] = list(f.regions) or [None]
        for region in regions:
            common = dict(
                tracking_identifier=TrackingIdentifier(uid=uid, identifier=f.tracking_id),
                finding_type=coded(f.finding),
                algorithm_id=algorithm_id(),
                finding_sites=_finding_sites(f.finding_site, f.laterality),
                qualitative_evaluations=[evaluation],
            )
            if region is None:
                groups.append(MeasurementsAndQualitativeEvaluations(**common))
            else:
                groups.append(
                    PlanarROIMeasurementsAndQualitativeEvaluations(
                        referenced_region=_image_region(region, inputs),
                        **common,
                    )
                )
    return groups


def _placeholder_group() -> MeasurementsAndQualitativeEvaluations:
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier="none")
    )


def _empty_imaging_measurements(report: MeasurementReport) -> None:
    """A report with no findings: Imaging Measurements (126010) stays, with no groups."""
    for item in report[0].ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS.value:
            del item.ContentSequence


def _image_library(inputs: Sequence[Dataset]) -> ContainerContentItem:
    """TID 1600 Image Library: one group (TID 1601) with an IMAGE entry per image given
    (:func:`library_images`).

    highdicom's ``ImageLibrary`` needs the modality-specific descriptors (TID 1603/1604:
    Patient Orientation, Imager Pixel Spacing, Image Position ...) on every input; an input
    without them still belongs in the library, so descriptors are added where highdicom
    can derive them and left out (they are optional rows) where it cannot.
    """
    group = ContainerContentItem(
        name=codes.DCM.ImageLibraryGroup, relationship_type=RelationshipTypeValues.CONTAINS
    )
    group.ContentSequence = ContentSequence()
    for ds in inputs:
        entry = ImageContentItem(
            name=codes.SCT.Source,
            referenced_sop_class_uid=str(ds.SOPClassUID),
            referenced_sop_instance_uid=str(ds.SOPInstanceUID),
            relationship_type=RelationshipTypeValues.CONTAINS,
        )
        # Descriptors are optional rows (TID 1602): without them the entry still stands.
        with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError, ValueError):
            entry.ContentSequence = ImageLibraryEntryDescriptors(ds)
        group.ContentSequence.append(entry)
    library = ContainerContentItem(
        name=codes.DCM.ImageLibrary, relationship_type=RelationshipTypeValues.CONTAINS
    )
    library.ContentSequence = ContentSequence([group])
    return library


LIBRARY_ALL_INPUTS = 16
"""Up to this many inputs (radiographs, a few slices) all go in the Image Library."""


def library_images(
    inputs: Sequence[Dataset],
    measurements: Sequence[Measurement],
    findings: Sequence[QualitativeFinding],
) -> list[Dataset]:
    """The images of the TID 1600 Image Library: every input when there are at most
    :data:`LIBRARY_ALL_INPUTS`; else (a CT or MR series of hundreds of slices) the images the
    regions are drawn on, or the first input when there are none. Every input stays in the
    evidence (Current Requested Procedure Evidence Sequence, PS3.3 C.17.2); an entry per
    slice with its descriptors would make the report grow with the series (a 300-slice CT:
    thousands of content items to write, store, validate and deliver)."""
    if len(inputs) <= LIBRARY_ALL_INPUTS:
        return list(inputs)
    drawn = {
        str(region.source.SOPInstanceUID)
        for region in [m.region for m in measurements if m.region is not None]
        + [r for f in findings for r in f.regions]
    }
    chosen = [ds for ds in inputs if str(ds.SOPInstanceUID) in drawn]
    return chosen or [inputs[0]]


def _insert_image_library(report: MeasurementReport, inputs: Sequence[Dataset]) -> None:
    """Put the Image Library after the Procedure reported items (TID 1500 order)."""
    root = report[0]
    items = list(root.ContentSequence)
    position = max(
        (
            i + 1
            for i, item in enumerate(items)
            if item.ConceptNameCodeSequence[0].CodeValue == PROCEDURE_REPORTED.value
        ),
        default=len(items),
    )
    root.ContentSequence.insert(position, _image_library(inputs))


def measurement_report(
    inputs: Sequence[Dataset],
    algorithm: AlgorithmIdentity,
    *,
    measurements: Sequence[Measurement] = (),
    findings: Sequence[QualitativeFinding] = (),
    series_number: int = SR_SERIES_NUMBER,
    series_description: str = "AI result (TID 1500)",
    procedure_reported: Code = IMAGING_PROCEDURE,
) -> Dataset:
    """A TID 1500 Comprehensive 3D SR in the inputs' study with ``measurements`` and
    ``findings`` computed by ``algorithm`` from ``inputs`` (see the module docstring).

    No findings at all, or only absent ones, is a valid negative report.
    """
    require_inputs(inputs)
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid,
            name=algorithm.model_name,
            manufacturer_name=algorithm.manufacturer,
            model_name=algorithm.model_name,
        ),
    )
    groups = _groups(inputs, algorithm, measurements, findings)
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=coded(procedure_reported),
        # highdicom wants at least one group; a report without any is built with a
        # placeholder and its Imaging Measurements container emptied below.
        imaging_measurements=groups or [_placeholder_group()],
        title=coded(IMAGING_MEASUREMENT_REPORT),
    )
    if not groups:
        _empty_imaging_measurements(report)
    _insert_image_library(report, library_images(inputs, measurements, findings))
    sr = Comprehensive3DSR(
        evidence=headers(inputs),
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        is_complete=True,
        is_final=True,
        is_verified=False,
    )
    return finish(sr, inputs, algorithm, series_description)
