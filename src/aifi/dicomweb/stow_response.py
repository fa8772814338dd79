"""The STOW-RS response (PS3.18 §10.5.3): the Store Instances Response Module (Annex I) in
DICOM JSON or XML (PS3.19), the status code of Table 10.5.3-1, and the ``Warning`` headers
that explain each failure in words.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aifi.dicomweb.dicomxml import json_to_native_xml
from aifi.dicomweb.errors import warning_header
from aifi.dicomweb.instance_checks import PartOutcome
from aifi.dicomweb.media import DICOM_JSON, DICOM_XML, parse_accept
from aifi.errors import NotAcceptable


def response_type(accept: str | None) -> str:
    for media_range in parse_accept(accept):
        if media_range.mime in ("application/json", DICOM_JSON):
            return DICOM_JSON
        if media_range.mime in ("application/xml", DICOM_XML) or (
            media_range.mime == "multipart/related" and media_range.related_type == DICOM_XML
        ):
            return DICOM_XML
        if media_range.matches(DICOM_JSON):
            return DICOM_JSON
    raise NotAcceptable(f"STOW-RS answers in {DICOM_JSON} or {DICOM_XML} only")


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _ur(value: str | None) -> dict[str, Any]:
    return {"vr": "UR", "Value": [value]} if value else {"vr": "UR"}


def _us(value: int) -> dict[str, Any]:
    return {"vr": "US", "Value": [value]}


def response_module(outcomes: Sequence[PartOutcome], service: str) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table I.1-1) as DICOM JSON."""
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    studies: set[str] = set()
    for outcome in outcomes:
        if outcome.stored:
            assert outcome.sop_class_uid and outcome.sop_instance_uid
            study = outcome.study_instance_uid
            studies.add(study or "")
            item = {
                "00081150": _ui(outcome.sop_class_uid),
                "00081155": _ui(outcome.sop_instance_uid),
                "00081190": _ur(
                    f"{service}/studies/{study}/series/{outcome.series_instance_uid}"
                    f"/instances/{outcome.sop_instance_uid}"
                ),
            }
            if outcome.warning is not None:
                item["00081196"] = _us(outcome.warning)
            referenced.append(item)
        elif outcome.failure is not None:
            if outcome.referenceable:
                assert outcome.sop_class_uid and outcome.sop_instance_uid
                failed.append(
                    {
                        "00081150": _ui(outcome.sop_class_uid),
                        "00081155": _ui(outcome.sop_instance_uid),
                        "00081197": _us(outcome.failure),
                    }
                )
            else:
                other.append({"00081197": _us(outcome.failure)})
    study_url = f"{service}/studies/{next(iter(studies))}" if len(studies) == 1 else None
    module: dict[str, Any] = {"00081190": _ur(study_url)}
    if failed:
        module["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        module["00081199"] = {"vr": "SQ", "Value": referenced}
    if other:
        module["0008119A"] = {"vr": "SQ", "Value": other}
    return module


def response_status(outcomes: Sequence[PartOutcome]) -> int:
    """PS3.18 Table 10.5.3-1 for a well-formed request with at least one part."""
    stored = sum(1 for o in outcomes if o.stored)
    if stored == 0:
        return 409
    if stored < len(outcomes) or any(o.warning is not None for o in outcomes):
        return 202
    return 200


def warning_headers(outcomes: Sequence[PartOutcome], service: str, limit: int = 10) -> list[str]:
    problems = [o for o in outcomes if o.failure is not None]
    texts = []
    for outcome in problems[:limit]:
        who = f" ({outcome.sop_instance_uid})" if outcome.sop_instance_uid else ""
        texts.append(f"part {outcome.index}{who}: {outcome.reason} [{outcome.failure:04X}]")
    if len(problems) > limit:
        texts.append(f"{len(problems) - limit} more parts failed")
    return [warning_header(service, text) for text in texts]


def render_module(module: dict[str, Any], media_type: str) -> bytes:
    if media_type == DICOM_XML:
        return json_to_native_xml(module)
    return json.dumps(module, separators=(",", ":")).encode()
