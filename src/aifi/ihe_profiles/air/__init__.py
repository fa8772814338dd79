"""IHE AI Results (AIR): build and check the DICOM objects an AI product returns.

Builders (each a complete Part 10 dataset in the inputs' study, a new series, the
algorithm identified as IHE RAD TF AIR asks — Contributing Equipment Sequence item with
Purpose of Reference (109102, DCM, "Processing Equipment"), Manufacturer, Manufacturer's
Model Name, Software Versions and Device UID):

- :func:`measurement_report` — Comprehensive 3D SR, PS3.16 TID 1500 Measurement Report
  (TID 1501/1410 groups, TID 1600 Image Library, TID 4019 Algorithm Identification).
- :func:`segmentation` — Segmentation (PS3.3 A.51), Segment Algorithm Type AUTOMATIC.
- :func:`overlay_presentation` — Grayscale Softcopy Presentation State (PS3.3 A.33.1).
- :func:`summary_page` — Secondary Capture Image (PS3.3 A.8.1) with the result as text.
- :func:`key_objects` — Key Object Selection Document (PS3.3 A.35.4).

:func:`validate` checks a (header-only) result against these rules and, given an
:class:`InputContext`, against the inputs (IHE AIW-I: results in the inputs' study);
:func:`summarise` reads a result back into a :class:`ResultSummary`.

What it may import: pydicom, highdicom and numpy, and nothing of :mod:`aifi` outside this
package (its modules import only each other), so that AI products can build results with it
alone.
"""

from aifi.ihe_profiles.air._common import Region
from aifi.ihe_profiles.air.codes import (
    ABSENT,
    BONE_AGE,
    FRACTURE,
    MONTHS,
    PRESENT,
    PULMONARY_EMBOLISM,
    YEARS,
    Code,
    CodeTriple,
)
from aifi.ihe_profiles.air.equipment import AlgorithmIdentity
from aifi.ihe_profiles.air.gsps import overlay_presentation
from aifi.ihe_profiles.air.ko import key_objects
from aifi.ihe_profiles.air.not_performed import not_performed_report as not_performed_report
from aifi.ihe_profiles.air.sc import summary_page
from aifi.ihe_profiles.air.seg import segmentation
from aifi.ihe_profiles.air.sr import Measurement, QualitativeFinding, measurement_report
from aifi.ihe_profiles.air.summary import (
    FindingSummary,
    MeasurementSummary,
    ResultSummary,
    summarise,
)
from aifi.ihe_profiles.air.validation import (
    RESULT_SOP_CLASSES,
    InputContext,
    Violation,
    is_ai_result,
    validate,
)

__all__ = [
    "ABSENT",
    "BONE_AGE",
    "FRACTURE",
    "MONTHS",
    "PRESENT",
    "PULMONARY_EMBOLISM",
    "RESULT_SOP_CLASSES",
    "YEARS",
    "AlgorithmIdentity",
    "Code",
    "CodeTriple",
    "FindingSummary",
    "InputContext",
    "Measurement",
    "MeasurementSummary",
    "QualitativeFinding",
    "Region",
    "ResultSummary",
    "Violation",
    "is_ai_result",
    "key_objects",
    "measurement_report",
    "overlay_presentation",
    "segmentation",
    "summarise",
    "summary_page",
    "validate",
]
