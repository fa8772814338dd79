"""What the reference products share: their identity (IHE AIR algorithm identification),
input checks, and codes read from the source images' headers (structure, never the answer).

Each product is a DEMONSTRATOR: a :class:`~aifi.vendors.performer.Analyzer` computing a
simple, deterministic image statistic (:mod:`aifi.vendors.products.measure`) and returning
IHE AIR result objects built by :mod:`aifi.ihe_profiles.air`. Not for clinical use.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom import Dataset

from aifi.ihe_profiles.air import AlgorithmIdentity
from aifi.ihe_profiles.air.codes import LEFT, RIGHT, CodeTriple
from aifi.vendors.performer import AnalysisFailed

__all__ = [
    "MANUFACTURER",
    "NOT_CLINICAL",
    "VERSION",
    "finding_site",
    "identity",
    "image_laterality",
    "one_study",
    "with_pixels",
]

MANUFACTURER = "aifi-hub reference products"
VERSION = "1.0"
NOT_CLINICAL = "DEMO - not for clinical use"
"""Said on every page and in every Series Description the products write."""


def identity(model_name: str, device_uid: str) -> AlgorithmIdentity:
    """A reference product's algorithm identity (IHE RAD TF AIR: Contributing Equipment
    with Manufacturer, Manufacturer's Model Name, Software Versions and Device UID)."""
    return AlgorithmIdentity(
        manufacturer=MANUFACTURER,
        model_name=model_name,
        software_version=VERSION,
        device_uid=device_uid,
    )


def one_study(inputs: Sequence[Dataset]) -> None:
    """A result belongs to one study (IHE AIW-I); refuse inputs from several."""
    studies = {str(ds.StudyInstanceUID) for ds in inputs}
    if len(studies) != 1:
        raise AnalysisFailed(f"Inputs must come from one study, not {len(studies)}")


def with_pixels(inputs: Sequence[Dataset], modalities: Sequence[str]) -> list[Dataset]:
    """The single-frame grayscale images among ``inputs`` of the given modalities, in
    input order; :class:`AnalysisFailed` when there is none."""
    images = [
        ds
        for ds in inputs
        if str(ds.get("Modality", "")) in modalities
        and "PixelData" in ds
        and int(ds.get("SamplesPerPixel", 1)) == 1
        and int(ds.get("NumberOfFrames", 1) or 1) == 1
    ]
    if not images:
        raise AnalysisFailed(
            f"No single-frame grayscale {'/'.join(modalities)} image among the "
            f"{len(inputs)} input instance(s)"
        )
    return images


def finding_site(ds: Dataset) -> CodeTriple | None:
    """The imaged region from the Anatomic Region Sequence (0008,2218), as a code."""
    regions = ds.get("AnatomicRegionSequence") or []
    if not regions:
        return None
    item = regions[0]
    value, scheme = item.get("CodeValue"), item.get("CodingSchemeDesignator")
    if not value or not scheme:
        return None
    return CodeTriple(str(value), str(scheme), str(item.get("CodeMeaning", value)))


def image_laterality(ds: Dataset) -> CodeTriple | None:
    """Image Laterality (0020,0062), else Laterality (0020,0060), as a SNOMED code."""
    value = str(ds.get("ImageLaterality") or ds.get("Laterality") or "")
    return {"L": LEFT, "R": RIGHT}.get(value)
