"""FHIR R4 resources and searches between the hospital's identities and the hub's
pseudonyms (PS3.15 Annex E applied to FHIR; re-identification as in E.1.2).

The hub holds only pseudonyms (ARCHITECTURE.md): a Patient's identifier is the patient
pseudonym, ImagingStudy ids and identifiers are pseudonymous Study Instance UIDs, accession
numbers are keyed HMACs, ``ImagingStudy.started`` is shifted by the patient's date offset.
:class:`FhirTranslator` turns

* every answer of the hub into the hospital's identities (:meth:`FhirTranslator.reidentify`):
  Patient id/identifier, ``Patient/<id>`` references and their ``identifier``, accession
  numbers, study/series/instance UIDs (through the pseudonym map; UIDs the AI created are
  not in it and stay), ``ImagingStudy.started`` shifted back, its Endpoint pointing at the
  gateway's own DICOMweb, its description restored;
* every query and body of the EPD into pseudonyms (:meth:`FhirTranslator.pseudonymise_query`,
  :meth:`FhirTranslator.pseudonymise_resource`). Pseudonyms are deterministic keyed HMACs
  (:class:`~aifi.gateway.deid.keyed.Keyed`), so a study UID or accession number the gateway
  has never seen still gets its pseudonym (the hub then finds nothing, or waits for the
  study). A Patient ID without a system is looked up in the map (unknown: nothing to find,
  the hub is not asked).

Ids at the gateway: ImagingStudy id = the original Study Instance UID; Patient id =
:func:`aifi.fhir.mapping.imaging.patient_id` of the original Patient ID and issuer.

Dates: ``ImagingStudy.started`` is the only shifted date the hub serves (Task, report and
observation times are real hub times and pass as they are). A ``started`` criterion with a
patient criterion is shifted by that patient's offset; without one the hub is asked for the
range widened by the profile's offset range (or without the criterion, when it has several
values or ``ne``) and the re-identified studies are filtered by the original criterion
(:attr:`HubSearch.post_filter`; the backend then pages itself).

Unknown search parameters are never sent to the hub (their value may be an original
identifier): the gateway parses a search with the hub's own parser
(:func:`aifi.fhir.search.parse_search`) and reports skipped parameters itself, as the hub
would.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from aifi.errors import Unidentifiable, Unprocessable
from aifi.fhir.codes import DICOM_UID_SYSTEM, PATIENT_ID_SYSTEM, patient_id_system
from aifi.fhir.mapping.imaging import WADO_ENDPOINT_ID, patient_id
from aifi.fhir.search import parse_search, reference_key
from aifi.fhir.types import SearchQuery
from aifi.fhir.views import PatientView
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.deid.profile import Profile
from aifi.gateway.deid.types import PatientIdentity, StudyIdentity
from aifi.gateway.fhir.query import (
    HubSearch,
    SearchPseudonymiser,
    hub_patient_id,
    shift_fhir_datetime,
)

Resource = dict[str, Any]

_UID_RE = re.compile(r"(?<![\d.])2\.25\.[1-9]\d{0,38}(?![\d])")
_HUB_PATIENT_RE = re.compile(r"(?<![\w-])pat-[0-9a-f]{24}(?![\w-])")
_ACSN = "ACSN"
_STUDY_DESCRIPTION = "00081030"


class FhirIdentities(Protocol):
    """What the translator needs of the gateway's pseudonym map (``gw_uid_map``,
    ``gw_patient``, ``gw_study_map``)."""

    def original_uid(self, pseudo: str) -> str | None: ...

    def patient(self, pseudo_id: str) -> PatientIdentity | None: ...

    def patients_by_original(self, original_id: str) -> list[PatientIdentity]:
        """Every patient whose original Patient ID is ``original_id`` (any issuer)."""
        ...

    def patient_by_fhir_id(self, fhir_id: str, *, at_hub: bool) -> PatientIdentity | None:
        """The patient whose Patient resource id is ``fhir_id``: the hub's (computed from the
        pseudonym) when ``at_hub``, else the gateway's (computed from the original)."""
        ...

    def study(self, pseudo_study_uid: str) -> StudyIdentity | None: ...

    def original_accession(self, accession_pseudo: str) -> str | None:
        """The original Accession Number of a pseudonym: from the study map, or as
        remembered when an EPD named it (:meth:`remember_accession`)."""
        ...

    def remember_uid(self, pseudo: str, original: str) -> None:
        """Record a study UID an EPD request names before the study has arrived (the fact
        is deterministic; insert-if-absent)."""
        ...

    def remember_accession(self, pseudo: str, original: str) -> None:
        """Record an accession number an EPD request names (as :meth:`remember_uid`)."""
        ...

    def remember_patient(self, pseudo_id: str, original_id: str, issuer: str) -> None:
        """Record a Patient ID an EPD request names (as :meth:`remember_uid`); never
        changes a patient the pseudonymiser recorded."""
        ...


def gateway_patient_id(patient: PatientIdentity) -> str:
    """The gateway's Patient resource id: :func:`patient_id` of the original identity."""
    return patient_id(PatientView(patient_id=patient.original_id, issuer=patient.issuer or None))


class FhirTranslator:
    """Pseudonymise FHIR on the way in, re-identify it on the way out (see the module
    docstring). Built once by the gateway's composition root
    (:func:`aifi.gateway.fhir.facade.build_facade`) and shared."""

    def __init__(
        self,
        identities: FhirIdentities,
        key: bytes,
        profile: Profile,
        dicomweb_base: str,
        hub_base: str | None = None,
    ) -> None:
        self.identities = identities
        self.profile = profile
        self.keyed = Keyed(key)
        self.dicomweb_base = dicomweb_base.rstrip("/")
        self.gateway_base = self.dicomweb_base.removesuffix("/dicomweb")
        self.hub_base = hub_base.rstrip("/") + "/" if hub_base else None
        """Links into the hub inside a resource (a report's rendered summary page) are
        re-based onto the gateway: the EPD never follows a link to the hub with an original
        identifier in it."""
        offsets = (profile.date_offset_min_days, profile.date_offset_max_days)
        self._search = SearchPseudonymiser(identities, self, offsets)
        self._patient_re = re.compile(
            r"(?<![\w-])" + re.escape(profile.pseudonym_prefix) + r"[A-Z2-7]{16}(?![\w-])"
        )

    # -- pseudonyms of originals ---------------------------------------------------------

    def pseudo_uid(self, original: str) -> str:
        return self.keyed.uid(original)

    def pseudo_accession(self, original: str) -> str:
        return self.keyed.accession(original)

    def pseudo_patient(self, original_id: str, issuer: str) -> str:
        """The patient pseudonym of a Patient ID and issuer (as
        :meth:`aifi.gateway.deid.pseudonymise.Pseudonymiser._patient` computes it)."""
        basis = "\x00".join(("id", original_id, issuer))
        return self.keyed.patient(self.profile.pseudonym_prefix, basis)

    # -- re-identification ---------------------------------------------------------------

    def reidentify(self, resource: Resource) -> Resource:
        """A hub resource (or Bundle: every entry.resource) with the hospital's
        identities: patient identifiers/references, Patient id, accession numbers, study/
        series/instance UIDs, ImagingStudy id/identifiers/started and its Endpoint (the
        gateway's own DICOMweb), references to ImagingStudy/<uid> and Patient/<id>.

        Raises :class:`Unidentifiable` (a :class:`~aifi.errors.NotFound`) for a single
        resource that names a pseudonym the map cannot re-identify (it is never passed on
        with a pseudonym); in a Bundle such entries are dropped (and ``total`` lowered by
        as many)."""
        if resource.get("resourceType") != "Bundle":
            return self._resource(resource)
        bundle = dict(resource)
        entries = []
        dropped = 0
        for entry in resource.get("entry") or []:
            inner = entry.get("resource")
            if not isinstance(inner, dict):
                continue
            try:
                entries.append({**entry, "resource": self._resource(inner)})
            except Unidentifiable:
                if (entry.get("search") or {}).get("mode", "match") == "match":
                    dropped += 1
        if entries:
            bundle["entry"] = entries
        else:
            bundle.pop("entry", None)
        if isinstance(bundle.get("total"), int):
            bundle["total"] = max(bundle["total"] - dropped, 0)
        return bundle

    def _resource(self, resource: Resource) -> Resource:
        result = copy.deepcopy(resource)
        kind = result.get("resourceType")
        patient: PatientIdentity | None = None
        if kind == "ImagingStudy":
            patient = self._study_patient(result)
        self._walk(result)
        if kind == "ImagingStudy":
            self._imaging_study(result, resource, patient)
        return result

    def _walk(self, node: Any) -> Any:
        """Re-identify ``node`` in place (dicts and lists); return the new value of a
        string."""
        if isinstance(node, dict):
            if _is_patient_identifier(node):
                self._patient_identifier(node)
            elif _is_accession(node):
                node["value"] = self._original_accession(str(node.get("value") or ""))
            for key, value in list(node.items()):
                if isinstance(value, dict | list):
                    self._walk(value)
                elif isinstance(value, str):
                    node[key] = self._string(value)
            return node
        if isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, dict | list):
                    self._walk(value)
                elif isinstance(value, str):
                    node[index] = self._string(value)
            return node
        return node

    def _string(self, text: str) -> str:
        """Every pseudonymous UID, hub Patient id and patient pseudonym in ``text``
        replaced by its original; a link into the hub re-based onto the gateway."""
        if self.hub_base is not None and text.startswith(self.hub_base):
            text = self.gateway_base + "/" + text[len(self.hub_base) :]
        if "2.25." in text:
            text = _UID_RE.sub(lambda m: self._original_uid(m.group(0)), text)
        if "pat-" in text:
            text = _HUB_PATIENT_RE.sub(lambda m: self._gateway_patient_id(m.group(0)), text)
        if self._patient_re.search(text):
            text = self._patient_re.sub(lambda m: self._original_patient(m[0]).original_id, text)
        return text

    def _original_uid(self, uid: str) -> str:
        if not self.keyed.is_pseudonym_uid(uid):
            return uid  # created by the AI (or by the hub): not a pseudonym, stays
        original = self.identities.original_uid(uid)
        if original is None:
            study = self.identities.study(uid)
            original = study.original_study_uid if study else None
        if original is None:
            raise Unidentifiable(f"UID {uid} is not in this gateway's pseudonym map")
        return original

    def _original_patient(self, pseudo_id: str) -> PatientIdentity:
        patient = self.identities.patient(pseudo_id)
        if patient is None:
            raise Unidentifiable("a patient pseudonym is not in this gateway's map")
        return patient

    def _gateway_patient_id(self, hub_id: str) -> str:
        patient = self.identities.patient_by_fhir_id(hub_id, at_hub=True)
        if patient is None:
            raise Unidentifiable(f"Patient/{hub_id} is not in this gateway's map")
        return gateway_patient_id(patient)

    def _original_accession(self, pseudo: str) -> str:
        original = self.identities.original_accession(pseudo) if pseudo else None
        if not original:
            raise Unidentifiable("an accession number is not in this gateway's map")
        return original

    def _patient_identifier(self, identifier: Resource) -> None:
        patient = self._original_patient(str(identifier.get("value") or ""))
        identifier["system"] = patient_id_system(patient.issuer or None)
        identifier["value"] = patient.original_id

    def _study_patient(self, study: Resource) -> PatientIdentity | None:
        """The patient of a hub ImagingStudy (its date offset shifts ``started`` back)."""
        known = self.identities.study(str(study.get("id") or ""))
        if known is not None and known.patient_pseudo_id:
            return self.identities.patient(known.patient_pseudo_id)
        subject = study.get("subject") or {}
        identifier = subject.get("identifier") or {}
        if identifier.get("value"):
            return self.identities.patient(str(identifier["value"]))
        key = reference_key(str(subject.get("reference") or ""))
        if key and key.startswith("Patient/"):
            return self.identities.patient_by_fhir_id(key.split("/", 1)[1], at_hub=True)
        return None

    def _imaging_study(
        self, result: Resource, hub: Resource, patient: PatientIdentity | None
    ) -> None:
        """``started`` shifted back, the Endpoint at the gateway's DICOMweb (A2's WADO-RS of
        the re-identified results), the description the hub has cleaned restored."""
        started = result.get("started")
        if isinstance(started, str) and patient is not None and patient.date_offset_days:
            result["started"] = shift_fhir_datetime(started, -patient.date_offset_days)
        for contained in result.get("contained") or []:
            if contained.get("resourceType") == "Endpoint" and contained.get("id") == (
                WADO_ENDPOINT_ID
            ):
                contained["address"] = self.dicomweb_base
        study = self.identities.study(str(hub.get("id") or ""))
        if study is not None:
            description = identity_text(study.identity, _STUDY_DESCRIPTION)
            if description:
                result["description"] = description

    # -- pseudonymisation: searches --------------------------------------------------------

    def pseudonymise_query(
        self, resource_type: str, params: list[tuple[str, str]]
    ) -> list[tuple[str, str]] | None:
        """A search's parameters as the hub must see them; None when an identifier names
        nothing this gateway knows (the answer is then an empty searchset). Parameters
        the hub's parser would skip are left out (never sent with their value); a
        ``started`` range without a patient is widened (see :meth:`pseudonymise_search`)."""
        query = parse_search(resource_type, params, strict=False)
        search = self.pseudonymise_search(query)
        return None if search is None else search.params

    def pseudonymise_search(self, query: SearchQuery) -> HubSearch | None:
        """:meth:`pseudonymise_query` of a parsed search (see
        :class:`~aifi.gateway.fhir.query.SearchPseudonymiser`); None when a criterion can
        match nothing."""
        return self._search.pseudonymise(query)

    # -- pseudonymisation: bodies -------------------------------------------------------

    def pseudonymise_resource(self, resource: Resource) -> Resource:
        """A body from the EPD (Task, ServiceRequest, Subscription criteria) as the hub
        must see it: references to ``ImagingStudy/<original UID>`` and the gateway's
        ``Patient/<id>``, patient identifiers (system ``urn:aifi:patient-id[:issuer]``),
        Study UID identifiers (``urn:dicom:uid``/``urn:oid:``) and accession numbers (type
        ACSN) become pseudonyms; a Subscription's ``criteria`` is pseudonymised as a search.
        A reference to a Patient the gateway does not know is dropped when the reference
        also names the patient by identifier (pseudonymised), else refused (422).

        Free text does not leave the hospital (it may name the patient, PS3.15 E.3.5's
        reasoning for descriptors): the narrative, notes, descriptions, comments, patient
        instructions, ``CodeableConcept.text`` and the ``display`` of references are left
        out; codes and their displays (terminology) stay."""
        result = copy.deepcopy(resource)
        result.pop("contained", None)  # a contained Patient would carry the demographics
        self._pseudonymise_node(result)
        if result.get("resourceType") == "Subscription" and isinstance(result.get("criteria"), str):
            result["criteria"] = self.pseudonymise_criteria(result["criteria"])
        return result

    def pseudonymise_criteria(self, criteria: str) -> str:
        """A Subscription criteria ``Type?query`` with the query pseudonymised (a query
        naming nothing known keeps a parameter that matches nothing:
        ``_id=unknown-to-this-gateway``)."""
        kind, _, query = criteria.partition("?")
        params = parse_qsl(query, keep_blank_values=True)
        hub = self.pseudonymise_query(kind, params)
        if hub is None:
            hub = [("_id", "unknown-to-this-gateway")]
        hub = [(name, value) for name, value in hub if name not in {"_count", "_offset"}]
        return f"{kind}?{urlencode(hub)}" if hub else kind

    def _pseudonymise_node(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self._pseudonymise_node(item)
            return
        if not isinstance(node, dict):
            return
        for free_text in _FREE_TEXT:
            node.pop(free_text, None)
        if "reference" in node or "identifier" in node:
            node.pop("display", None)  # a Reference's display names its target in words
        if _is_patient_identifier(node) and node.get("value"):
            issuer = str(node.get("system") or "")[len(PATIENT_ID_SYSTEM) + 1 :]
            node["system"] = PATIENT_ID_SYSTEM
            node["value"] = self.pseudo_patient(str(node["value"]), issuer)
        elif _is_accession(node) and node.get("value"):
            node["value"] = self.pseudo_accession(str(node["value"]))
        elif node.get("system") == DICOM_UID_SYSTEM and isinstance(node.get("value"), str):
            node["value"] = "urn:oid:" + self.pseudo_uid(node["value"].removeprefix("urn:oid:"))
        reference = node.get("reference")
        if isinstance(reference, str):
            key = reference_key(reference)
            if key and key.startswith("ImagingStudy/"):
                node["reference"] = "ImagingStudy/" + self.pseudo_uid(key.split("/", 1)[1])
            elif key and key.startswith("Patient/"):
                patient = self.identities.patient_by_fhir_id(key.split("/", 1)[1], at_hub=False)
                if patient is None and not node.get("identifier"):
                    raise Unprocessable(
                        f"{key} is not known at this gateway: name the patient by its "
                        "identifier (system urn:aifi:patient-id[:<issuer>])"
                    )
                if patient is None:
                    del node["reference"]
                else:
                    node["reference"] = "Patient/" + hub_patient_id(patient.pseudo_id)
        for value in node.values():
            if isinstance(value, dict | list):
                self._pseudonymise_node(value)

    def remember(self, resource: Resource) -> None:
        """Record the pseudonym of every Study Instance UID and accession number an EPD
        body names, before it is sent: a Task or ServiceRequest for a study not yet
        received can then be re-identified when it is read back."""
        for original in _study_uids(resource):
            self.identities.remember_uid(self.pseudo_uid(original), original)
        for original in _accessions(resource):
            self.identities.remember_accession(self.pseudo_accession(original), original)
        for original_id, issuer in _patient_ids(resource):
            pseudo = self.pseudo_patient(original_id, issuer)
            self.identities.remember_patient(pseudo, original_id, issuer)


# -- helpers ------------------------------------------------------------------------------


_FREE_TEXT = ("text", "note", "description", "comment", "patientInstruction")
"""Free-text elements of an EPD's body that are not sent to the hub (FHIR R4 Narrative
``text``, Annotation ``note``, ``CodeableConcept.text``, Task/ServiceRequest descriptions)."""


def _is_patient_identifier(node: Resource) -> bool:
    system = node.get("system")
    return isinstance(system, str) and (
        system == PATIENT_ID_SYSTEM or system.startswith(PATIENT_ID_SYSTEM + ":")
    )


def _is_accession(node: Resource) -> bool:
    codings = (node.get("type") or {}).get("coding") if isinstance(node.get("type"), dict) else None
    return "value" in node and any(
        isinstance(c, dict) and c.get("code") == _ACSN for c in codings or ()
    )


def _study_uids(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _study_uids(item)
    elif isinstance(node, dict):
        reference = node.get("reference")
        key = reference_key(reference) if isinstance(reference, str) else None
        if key and key.startswith("ImagingStudy/"):
            yield key.split("/", 1)[1]
        if node.get("system") == DICOM_UID_SYSTEM and isinstance(node.get("value"), str):
            yield node["value"].removeprefix("urn:oid:")
        for value in node.values():
            if isinstance(value, dict | list):
                yield from _study_uids(value)


def _patient_ids(node: Any) -> Iterator[tuple[str, str]]:
    """(Patient ID, issuer) of every patient identifier in an EPD body."""
    if isinstance(node, list):
        for item in node:
            yield from _patient_ids(item)
    elif isinstance(node, dict):
        if _is_patient_identifier(node) and isinstance(node.get("value"), str) and node["value"]:
            yield node["value"], str(node["system"])[len(PATIENT_ID_SYSTEM) + 1 :]
        for value in node.values():
            if isinstance(value, dict | list):
                yield from _patient_ids(value)


def _accessions(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _accessions(item)
    elif isinstance(node, dict):
        if _is_accession(node) and isinstance(node.get("value"), str) and node["value"]:
            yield node["value"]
        for value in node.values():
            if isinstance(value, dict | list):
                yield from _accessions(value)


def identity_text(identity: dict[str, Any], tag: str) -> str | None:
    """The first value of a string attribute of an identity kept as DICOM JSON."""
    element = identity.get(tag) or {}
    values = element.get("Value") or []
    return str(values[0]) if values and values[0] not in (None, "") else None


__all__ = [
    "FhirIdentities",
    "FhirTranslator",
    "Unidentifiable",
    "gateway_patient_id",
    "hub_patient_id",
    "identity_text",
]
