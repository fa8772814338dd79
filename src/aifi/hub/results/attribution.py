"""Which workitem an incoming AI result belongs to (IHE AIW-I/AIR), for the result gate.

A result belongs to a workitem IN PROGRESS for its study whose inputs it is not one of. With
several, the result's algorithm identification (Manufacturer's Model Name of its
Contributing Equipment) picks the product: ``model_name``, else ``name`` or ``code`` of
:class:`~aifi.ihe_profiles.rules.Product`, compared without case or punctuation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom import Dataset

from aifi.dicom_json import DicomJson
from aifi.dicomweb.store import IncomingInstance
from aifi.hub.persistence.tables import Workitem
from aifi.ihe_profiles import air
from aifi.ihe_profiles.rules import Product

SR_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
"""SOP Class UIDs of the Structured Report documents (PS3.4 B.5, "…1.1.88.x")."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A workitem IN PROGRESS a result may belong to: its row, attributes, input SOP
    Instance UIDs and product (None when the rules no longer name it)."""

    row: Workitem
    attributes: DicomJson
    inputs: frozenset[str]
    product: Product | None


def _norm(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (text or "").lower())


def model_name(header: Dataset) -> str:
    """The result's algorithm identification, normalised (empty when it has none)."""
    identity = air.AlgorithmIdentity.from_dataset(header)
    return _norm(identity.model_name if identity else "")


def score(candidate: Candidate, model: str) -> int:
    """How well a result's (normalised) Manufacturer's Model Name names the workitem's
    product: 2 exactly (``model_name``, else ``name`` or ``code``), 1 as a part of it."""
    p = candidate.product
    if p is None or not model:
        return 0
    names = [_norm(p.model_name)] if p.model_name else [_norm(p.name), _norm(p.code)]
    if model in names:
        return 2
    if any(n and min(len(n), len(model)) >= 5 and (n in model or model in n) for n in names):
        return 1
    return 0


def pick(candidates: list[Candidate], header: Dataset) -> Candidate | None:
    """The workitem a result belongs to: the only one, else the one whose product the
    algorithm identification names best; None if that does not tell."""
    if len(candidates) == 1:
        return candidates[0]
    model = model_name(header)
    scores = [score(c, model) for c in candidates]
    best = max(scores)
    winners = [c for c, s in zip(candidates, scores, strict=True) if s == best]
    if best == 0 or len({w.product.code if w.product else "" for w in winners}) > 1:
        return None
    return winners[-1]  # the same product twice (a new input set): the newest workitem


def own_report(instance: IncomingInstance, candidates: dict[str, list[Candidate]]) -> bool:
    """A restricted performer's Structured Report of a class outside IHE AIR's (a Basic
    Text SR, say) into the study of one of its workitems IN PROGRESS, not one of its inputs:
    accepted and stored as an ordinary instance, as it is from anyone else."""
    header = instance.header
    if not str(header.get("SOPClassUID", "")).startswith(SR_DOCUMENT_PREFIX):
        return False
    sop = str(header.SOPInstanceUID)
    own = candidates.get(str(header.get("StudyInstanceUID", "")), [])
    return any(sop not in c.inputs for c in own)
