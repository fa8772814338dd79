"""The reference AI products — DEMONSTRATORS computing simple, deterministic image
statistics on the generated pilot studies (:mod:`aifi.conformance.pilot_studies`); not
clinical algorithms, never for clinical use.

=====================  ==============  =========================================================
name                   product code    results (IHE AIR)
=====================  ==============  =========================================================
``skeletal-age``       AIFI-BONEAGE    TID 1500 SR, one bone-age measurement (UCUM ``a``)
                                       + Secondary Capture summary page
``fracture-detection`` AIFI-FRACTURE   TID 1500 SR, fracture present/absent with site,
                                       laterality and regions + GSPS overlay when present
``incidental-pe``      AIFI-IPE        TID 1500 SR, pulmonary embolism present/absent
``bone-age-follow-up`` AIFI-BONEAGE-FU TID 1500 SR, bone age now, at the prior study, the
                                       change and the interval (needs ``priors``, issue 17)
                                       + Secondary Capture summary page
=====================  ==============  =========================================================

:data:`PRODUCTS` maps each name to its :class:`ReferenceProduct` (code, default AE title,
analyzer factory); ``aifi vendors run <name>`` runs one against a hub.
:mod:`aifi.vendors.products.measure` holds the image statistics (pure numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aifi.ihe_profiles.air import AlgorithmIdentity
from aifi.vendors.performer import Analyzer
from aifi.vendors.products import bone_age_followup, fracture, incidental_pe, skeletal_age

__all__ = ["PRODUCTS", "ReferenceProduct", "reference_product"]


@dataclass(frozen=True, slots=True)
class ReferenceProduct:
    """A reference product as the worklist knows it."""

    name: str
    code: str
    """Scheduled Workitem Code value (99AIFI) it performs."""
    ae_title: str
    """Default AE title of its performer."""
    title: str
    algorithm: AlgorithmIdentity
    factory: Callable[[], Analyzer]


PRODUCTS: dict[str, ReferenceProduct] = {
    p.name: p
    for p in (
        ReferenceProduct(
            "skeletal-age",
            "AIFI-BONEAGE",
            "AIFI-BONEAGE",
            "Skeletal age (bone age) from a hand radiograph",
            skeletal_age.ALGORITHM,
            skeletal_age.SkeletalAge,
        ),
        ReferenceProduct(
            "fracture-detection",
            "AIFI-FRACTURE",
            "AIFI-FRACTURE",
            "Fracture detection on radiographs",
            fracture.ALGORITHM,
            fracture.FractureDetection,
        ),
        ReferenceProduct(
            "incidental-pe",
            "AIFI-IPE",
            "AIFI-IPE",
            "Incidental pulmonary embolism on contrast chest CT",
            incidental_pe.ALGORITHM,
            incidental_pe.IncidentalPE,
        ),
        ReferenceProduct(
            "bone-age-follow-up",
            "AIFI-BONEAGE-FU",
            "AIFI-BONEAGE-FU",
            "Bone age change since the prior hand radiograph",
            bone_age_followup.ALGORITHM,
            bone_age_followup.BoneAgeFollowUp,
        ),
    )
}


def reference_product(name: str) -> ReferenceProduct:
    """The product called ``name``; :class:`KeyError` naming the known ones otherwise."""
    try:
        return PRODUCTS[name]
    except KeyError:
        raise KeyError(f"No reference product {name!r}; known: {', '.join(PRODUCTS)}") from None
