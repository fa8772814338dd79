"""The small pieces every mapped resource shares: FHIR ``dateTime`` values, the product as a
CodeableConcept and a Device reference, ImagingStudy references, codings (pure code).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aifi.fhir.codes import PRODUCT_SYSTEM
from aifi.fhir.views import ProductView

NO_RESULT = ("failed", "cancelled")
"""Outcomes without a report: the workitem produced nothing to report."""


def fhir_datetime(value: datetime) -> str:
    """A FHIR ``dateTime``/``instant`` (datatypes.html: a time needs a zone): naive values are
    UTC; UTC is written ``Z``. The form is the one the R4B models write back (seconds, or 6
    fraction digits), so a round trip leaves the resource unchanged."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def product_concept(product: ProductView) -> dict[str, Any]:
    """The AI product as a CodeableConcept (its code in the product code system)."""
    return {
        "coding": [{"system": PRODUCT_SYSTEM, "code": product.code, "display": product.name}],
        "text": product.name,
    }


def device_reference(product: ProductView) -> dict[str, Any]:
    """A reference to the product's Device."""
    return {"reference": f"Device/{product.code}"}


def study_reference(uid: str) -> dict[str, Any]:
    """A reference to the ImagingStudy of a Study Instance UID."""
    return {"reference": f"ImagingStudy/{uid}"}


def codeable(system: str, code: str, display: str) -> dict[str, Any]:
    """A CodeableConcept of one Coding."""
    return {"coding": [{"system": system, "code": code, "display": display}]}
