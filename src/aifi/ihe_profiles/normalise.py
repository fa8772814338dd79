"""Normalisation of DICOM header values written by other hospitals, scanners and protocols.

Routing on headers is fragile (studies imported from elsewhere carry Dutch, German or French
descriptions, vendor-specific modality codes and free-text Body Part Examined values such as
``"L HAND"``, ``"HANDL"`` or ``"Thorax/Abdomen"``). The AIW-I Task Manager rules
(:mod:`aifi.ihe_profiles.rules`) therefore never compare raw strings: they go through the
pure functions here, which are tolerant when reading:

- :func:`fold` — upper case, accents removed, punctuation as spaces;
- :func:`normalise_modality` — ``"RG"``/``"DR"``/``"XR"`` → ``"DX"``, ``"MRI"`` → ``"MR"``,
  ``"CTA"`` → ``"CT"`` (PS3.3 C.7.3.1.1.1 defined terms are the canonical names);
- :func:`body_regions` — canonical regions (``HAND``, ``CHEST``, ...) named in a text,
  after PS3.16 Annex L Body Part Examined terms and common English, Dutch, German and
  French words and abbreviations; laterality words are ignored;
- :func:`contrast_in_text` / :func:`contrast_agent_given` — contrast evidence;
- :func:`parse_patient_age`, :func:`parse_da`, :func:`age_in_years` — ages (AS and DA VRs,
  PS3.5 §6.2);
- :class:`StudyFacts` — a study's instances (DICOM JSON, PS3.18 Annex F) read tolerantly
  into what rules look at, per series. Re-exported by :mod:`aifi.ihe_profiles.rules`.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from aifi.dicom_json import DicomJson, items, values

__all__ = [
    "BODY_REGIONS",
    "InstanceRef",
    "SeriesFacts",
    "StudyFacts",
    "age_in_years",
    "body_regions",
    "contrast_agent_given",
    "contrast_in_text",
    "fold",
    "normalise_modality",
    "parse_da",
    "parse_patient_age",
]


def strip_accents(text: str) -> str:
    """``"Hüfte épaule"`` → ``"Hufte epaule"`` (``ß`` → ``ss``)."""
    decomposed = unicodedata.normalize("NFKD", text.replace("ß", "ss").replace("ẞ", "SS"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def fold(text: str) -> str:
    """Upper case, accents removed, every run of non-alphanumerics as one space, trimmed."""
    return " ".join(re.sub(r"[^A-Z0-9]+", " ", strip_accents(text).upper()).split())


# --- Modality (0008,0060) ------------------------------------------------------------------

_MODALITY_SYNONYMS: dict[str, str] = {
    # Projection radiography: RG (PS3.3 defined term, conventional), DR (retired), and
    # non-DICOM codes seen in the wild all mean a digital X-ray here. CR stays CR.
    "RG": "DX",
    "DR": "DX",
    "XR": "DX",
    "RX": "DX",
    "XRAY": "DX",
    "X RAY": "DX",
    "DIGITAL RADIOGRAPHY": "DX",
    "COMPUTED RADIOGRAPHY": "CR",
    "MRI": "MR",
    "MRT": "MR",
    "NMR": "MR",
    "CTA": "CT",
    "CAT": "CT",
    "CTPA": "CT",
    "PET": "PT",
    "MAMMO": "MG",
    "ECHO": "US",
}


def normalise_modality(value: str) -> str:
    """Canonical modality for a Modality value or a synonym; unknown values folded as-is."""
    folded = fold(value)
    return _MODALITY_SYNONYMS.get(folded, folded)


# --- Body regions -----------------------------------------------------------------------------

# Canonical region → words that name it (folded, i.e. upper case, no accents). Words are
# English (incl. PS3.16 Annex L Body Part Examined terms), Dutch, German, French and common
# abbreviations. Compound words ending in a joint/image suffix ("KNIEGEWRICHT",
# "THORAXFOTO") are handled by _SUFFIXES; laterality affixes ("HANDL", "LHAND") by
# _LATERALITY. Ambiguous words (English "long", Dutch "borst", "been") are left out.
# One region per line ("REGION: WORD WORD ..."); indented lines continue the previous one.
_REGION_TABLE = """
HAND: HAND HANDS HANDEN MAIN MAINS MANUS METACARPAL MCP
FINGER: FINGER FINGERS VINGER VINGERS DUIM THUMB DAUMEN DOIGT
WRIST: WRIST WRISTS POLS POLSEN HANDGELENK HANDWORTEL POIGNET CARPUS CARPAL SCAPHOID SCAFOID
    NAVICULARE SCAPHOIDE
FOREARM: FOREARM ONDERARM UNTERARM ANTEBRACHIUM RADIUS ULNA
ELBOW: ELBOW ELLEBOOG ELLENBOGEN ELLBOGEN COUDE OLECRANON
HUMERUS: HUMERUS BOVENARM OBERARM ARM
SHOULDER: SHOULDER SCHOUDER SCHULTER EPAULE SHLD SHLDR
CLAVICLE: CLAVICLE CLAVICULA SLEUTELBEEN SCHLUSSELBEIN CLAVICULE
SCAPULA: SCAPULA SCHOUDERBLAD SCHULTERBLATT OMOPLATE
CHEST: CHEST THORAX THX THOR BORSTKAS LUNG LUNGS LONGEN LUNGE LUNGEN POUMON POUMONS POITRINE
    LONGEMBOLIE LUNGENEMBOLIE CTPA STERNUM
RIBS: RIBS RIB RIBBEN RIPPEN RIPPE COTES COTE COSTAE
ABDOMEN: ABDOMEN ABD BUIK BAUCH
PELVIS: PELVIS PELVIC BEKKEN BECKEN BASSIN PELV SACRUM
HIP: HIP HIPS HEUP HEUPEN HUFTE HUEFTE HANCHE COXA
FEMUR: FEMUR THIGH BOVENBEEN DIJBEEN OBERSCHENKEL CUISSE
KNEE: KNEE KNEES KNIE KNIEEN GENOU PATELLA KNIESCHIJF
TIBIA_FIBULA: TIBIA FIBULA ONDERBEEN UNTERSCHENKEL JAMBE CRURIS CRUS LEG TIBFIB
ANKLE: ANKLE ANKLES ENKEL ENKELS SPRUNGGELENK OSG CHEVILLE
FOOT: FOOT FEET VOET VOETEN FUSS PIED CALCANEUS HIEL TARSUS
TOE: TOE TOES TEEN TENEN ZEH ZEHE ORTEIL HALLUX
EXTREMITY: EXTREMITY EXTREMITEIT EXTREMITAT
SKULL: SKULL SCHEDEL SCHADEL SCHAEDEL CRANE CRANIUM CRANIAL
HEAD: HEAD HOOFD KOPF BRAIN HERSENEN CEREBRUM CEREBRAL
NECK: NECK HALS COU CERVICAL
SPINE: SPINE WERVELKOLOM WIRBELSAULE RACHIS CSPINE TSPINE LSPINE SSPINE WHOLESPINE CWK TWK LWK
    HWS BWS LWS VERTEBRA
"""
_REGION_WORDS: dict[str, tuple[str, ...]] = {
    region.strip(): tuple(words.split())
    for region, words in re.findall(r"^(\w+):((?:.*\n?(?: +.*\n?)*))", _REGION_TABLE, re.M)
}

# Multi-word names, matched before single words (and removed, so "avant bras" is not "bras").
_REGION_PHRASES: dict[str, str] = {
    "AVANT BRAS": "FOREARM",
    "FORE ARM": "FOREARM",
    "LOWER ARM": "FOREARM",
    "ONDER ARM": "FOREARM",
    "UPPER ARM": "HUMERUS",
    "BOVEN ARM": "HUMERUS",
    "UPPER LEG": "FEMUR",
    "BOVEN BEEN": "FEMUR",
    "LOWER LEG": "TIBIA_FIBULA",
    "ONDER BEEN": "TIBIA_FIBULA",
    "TIB FIB": "TIBIA_FIBULA",
    "PULMONARY EMBOLISM": "CHEST",
    "PULMONARY EMBOLUS": "CHEST",
    "EMBOLIE PULMONAIRE": "CHEST",
    "LONG EMBOLIE": "CHEST",
    "CT PA": "CHEST",
    "C SPINE": "SPINE",
    "L SPINE": "SPINE",
    "T SPINE": "SPINE",
    # PS3.16 Annex L combined terms
    "CHESTABDOMEN": "CHEST ABDOMEN",
    "CHESTABDPELVIS": "CHEST ABDOMEN PELVIS",
    "ABDOMENPELVIS": "ABDOMEN PELVIS",
    "ABDPELVIS": "ABDOMEN PELVIS",
    "HEADNECK": "HEAD NECK",
}

BODY_REGIONS: frozenset[str] = frozenset(_REGION_WORDS)
"""The canonical region names rules may use."""

_WORD_TO_REGION: dict[str, str] = {
    word: region for region, words in _REGION_WORDS.items() for word in words
}

# Laterality words and affixes ("L HAND", "HANDL", "LT-WRIST", "Hand re."), ignored.
_LATERALITY = ("LINKS", "RECHTS", "LEFT", "RIGHT", "LT", "RT", "LI", "RE", "L", "R", "B")
# Compound suffixes: "KNIEGEWRICHT", "THORAXFOTO", "HANDOPNAME", "THORAXAUFNAHME".
_SUFFIXES = ("GEWRICHT", "GELENK", "FOTO", "OPNAME", "OPNAMEN", "AUFNAHME", "ROENTGEN")


def _word_region(word: str) -> str | None:
    """The region one folded word names, trying laterality affixes and compound suffixes."""
    if word in _WORD_TO_REGION:
        return _WORD_TO_REGION[word]
    candidates: list[str] = []
    for affix in _LATERALITY:
        if word.startswith(affix):
            candidates.append(word[len(affix) :])
        if word.endswith(affix):
            candidates.append(word[: -len(affix)])
    candidates += [word[: -len(s)] for s in _SUFFIXES if word.endswith(s)]
    candidates += [word[len(p) :] for p in ("X", "RX", "CT", "MR", "MRI") if word.startswith(p)]
    for candidate in candidates:
        if len(candidate) >= 3 and candidate in _WORD_TO_REGION:
            return _WORD_TO_REGION[candidate]
    return None


def body_regions(text: str) -> frozenset[str]:
    """The canonical regions a free text names: ``"X-Handwortel li."`` → ``{WRIST}``.

    Case, accent and punctuation insensitive; laterality words are ignored; words that
    name no region are skipped, so a description naming none gives an empty set.
    """
    folded = f" {fold(text)} "
    regions: set[str] = set()
    for phrase, names in _REGION_PHRASES.items():
        if f" {phrase} " in folded:
            folded = folded.replace(f" {phrase} ", " ")
            regions.update(names.split())
    for word in folded.split():
        region = _word_region(word)
        if region is not None:
            regions.add(region)
    return frozenset(regions)


# --- Contrast -----------------------------------------------------------------------------

# Matched on upper-case, accent-free text with punctuation kept ("C+", "C-", "W/O").
_NO_CONTRAST = re.compile(
    r"ZONDER\s+(?:IV\s+)?(?:CONTRAST|KM)|NON[\s-]?CONTRAST|NO\s+(?:IV\s+)?CONTRAST"
    r"|WITHOUT\s+(?:IV\s+)?CONTRAST|W/?O\s+(?:IV\s+)?CONTRAST|\bBLANCO\b|\bBLANK\b"
    r"|\bNATIVE?\b|OHNE\s+(?:KM|KONTRAST)|SANS\s+(?:INJECTION|CONTRASTE)|\bC-(?!\w)"
    r"|\bNECT\b|\bNCCT\b|GEEN\s+(?:IV\s+)?(?:CONTRAST|KM)|KEINE?\s+(?:KM|KONTRAST)"
    r"|PRE[\s-]?CONTRAST|VOOR\s+CONTRAST|\bUN[\s-]?ENHANCED|NON[\s-]?ENHANCED"
)
_BOTH = re.compile(
    r"MET\s+EN\s+ZONDER|ZONDER\s+EN\s+MET|WITH\s+AND\s+WITHOUT|WITHOUT\s+AND\s+WITH|W\s*/\s*WO\b"
    r"|MIT\s+UND\s+OHNE|OHNE\s+UND\s+MIT|AVEC\s+ET\s+SANS|SANS\s+ET\s+AVEC|\+/-"
)
_CONTRAST = re.compile(
    r"CONTRAST|\bC\+|\bCE\b|\bCECT\b|ANGIO|\bCTA\b|\bCTPA\b|\bKM\b|KONTRAST"
    r"|\bARTERI|\bPORTAL|\bVENEU|\bVENOUS|\bVENOS|\bLONGEMBOLIE|\bLUNGENEMBOLIE|\bINJECT"
)


def contrast_in_text(text: str) -> bool | None:
    """Whether a description says contrast was given: True, False, or None (says neither).

    Negative phrases ("zonder contrast", "non-contrast", "blanco", "nativ", "C-") are found
    first and removed, so "CT thorax zonder contrast" is False, not True for "contrast".
    A text saying both ("blanco + CE", "met en zonder contrast") says neither.
    """
    upper = strip_accents(text).upper()
    if _BOTH.search(upper):
        return None
    negative = _NO_CONTRAST.search(upper) is not None
    positive = _CONTRAST.search(_NO_CONTRAST.sub(" ", upper)) is not None
    if negative == positive:
        return None
    return positive


_NO_AGENT = frozenset({"", "NONE", "NO", "N", "NEE", "GEEN", "NEIN", "KEIN", "0", "NA", "N A"})


def contrast_agent_given(value: str) -> bool | None:
    """Contrast/Bolus Agent (0018,0010) or Route (0018,1040): True for a named agent or
    route, False for an explicit "none", None for an empty value."""
    if not value.strip():
        return None
    return fold(value) not in _NO_AGENT


# --- Ages and dates -----------------------------------------------------------------------

_AS = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AS_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


def parse_patient_age(value: str) -> float | None:
    """Patient's Age (AS, ``"012Y"``, ``"006M"``, ``"010W"``, ``"020D"``) in years.

    Tolerant: ``"12Y"`` and ``"12"`` (years) are accepted; anything else gives None.
    """
    found = _AS.match(value)
    if found is None:
        return None
    return int(found.group(1)) * _AS_YEARS[found.group(2).upper()]


def parse_da(value: str) -> date | None:
    """A DA value (``YYYYMMDD``; ACR-NEMA ``YYYY.MM.DD`` tolerated), None if not a date."""
    digits = value.strip().replace(".", "").replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def age_in_years(birth: date, at: date) -> float:
    """Age on ``at`` in years: completed years plus the elapsed fraction of the current one,
    so ``int()`` of it is the age as people state it (a day before the 20th birthday: 19)."""

    def birthday(year: int) -> date:
        if birth.month == 2 and birth.day == 29 and not calendar.isleap(year):
            return date(year, 3, 1)
        return birth.replace(year=year)

    years = at.year - birth.year
    if at < birthday(at.year):
        years -= 1
    last, following = birthday(birth.year + years), birthday(birth.year + years + 1)
    return years + (at - last).days / (following - last).days


# --- Facts: what rules look at ------------------------------------------------------------

TextField = Literal[
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription",
    "PerformedProcedureStepDescription",
    "BodyPartExamined",
]
_TEXT_TAGS: dict[str, str] = {
    "StudyDescription": "00081030",
    "SeriesDescription": "0008103E",
    "ProtocolName": "00181030",
    "RequestedProcedureDescription": "00321060",
    "ScheduledProcedureStepDescription": "00400007",
    "PerformedProcedureStepDescription": "00400254",
    "BodyPartExamined": "00180015",
}
_REQUEST_ATTRIBUTES = "00400275"  # Request Attributes Sequence: the order's descriptions
DESCRIPTION_FIELDS: tuple[TextField, ...] = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription",
    "PerformedProcedureStepDescription",
)
BODY_PART_FIELDS: tuple[TextField, ...] = ("BodyPartExamined", *DESCRIPTION_FIELDS)


def _strings(ds: DicomJson, tag: str) -> list[str]:
    return [str(v).strip() for v in values(ds, tag) if isinstance(v, str | int | float)]


def _first(ds: DicomJson, tag: str) -> str:
    return next((v for v in _strings(ds, tag) if v), "")


@dataclass(frozen=True)
class InstanceRef:
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class SeriesFacts:
    """One series as rules see it; text values are distinct, non-empty, in order seen."""

    series_instance_uid: str
    series_number: int | None
    modality: str
    """Normalised (:func:`~aifi.ihe_profiles.normalise.normalise_modality`)."""
    raw_modality: str
    texts: tuple[tuple[str, str], ...]
    """(keyword, value) pairs of the :data:`TextField` attributes, study-level ones included."""
    slice_thicknesses: tuple[float, ...]
    """Slice Thickness (0018,0050) in mm of the non-localizer images."""
    contrast_agents: tuple[str, ...]
    """Contrast/Bolus Agent, Route and Agent Sequence code meanings, as written."""
    instances: tuple[InstanceRef, ...]

    def text(self, keyword: str) -> tuple[str, ...]:
        return tuple(value for key, value in self.texts if key == keyword)

    @property
    def label(self) -> str:
        """``#3 'Thorax 1.0 B31f'`` (or the UID's tail), for explanations."""
        number = f"#{self.series_number}" if self.series_number is not None else ""
        description = self.text("SeriesDescription")
        name = f"'{description[0]}'" if description else f"…{self.series_instance_uid[-8:]}"
        return f"series {number} {name}".replace("  ", " ")


@dataclass(frozen=True)
class StudyFacts:
    study_instance_uid: str
    series: tuple[SeriesFacts, ...]
    patient_age_years: float | None
    age_source: str
    """Where the age came from, for explanations: ``"PatientAge '012Y'"``."""

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(s.modality for s in self.series if s.modality)

    @classmethod
    def from_metadata(cls, instances: Iterable[DicomJson]) -> StudyFacts:
        """Summarise one study's instances (DICOM JSON), grouped by Series Instance UID.

        Raises ValueError for no instances, several studies, or an instance without its UIDs.
        """
        grouped: dict[str, list[DicomJson]] = {}
        study_uids: set[str] = set()
        for ds in instances:
            uids = [_first(ds, tag) for tag in ("0020000D", "0020000E", "00080018")]
            if not all(uids):
                raise ValueError(
                    "an instance lacks StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID"
                )
            study_uids.add(uids[0])
            grouped.setdefault(uids[1], []).append(ds)
        if len(study_uids) != 1:
            raise ValueError(f"expected the instances of one study, got {len(study_uids)}")
        everything = [ds for group in grouped.values() for ds in group]
        age, source = _patient_age(everything)
        series = tuple(_series_facts(uid, group) for uid, group in grouped.items())
        return cls(study_uids.pop(), series, age, source)


def _series_facts(uid: str, instances: list[DicomJson]) -> SeriesFacts:
    texts: dict[tuple[str, str], None] = {}
    thicknesses: dict[float, None] = {}
    agents: dict[str, None] = {}
    for ds in instances:
        sources = [ds, *items(ds, _REQUEST_ATTRIBUTES)]
        for keyword, tag in _TEXT_TAGS.items():
            for source in sources:
                texts.update(((keyword, v), None) for v in _strings(source, tag) if v)
        if "LOCALIZER" not in {v.upper() for v in _strings(ds, "00080008")}:
            for value in _strings(ds, "00180050"):
                try:
                    thicknesses[float(value)] = None
                except ValueError:
                    continue
        agents.update((v, None) for tag in ("00180010", "00181040") for v in _strings(ds, tag))
        for item in items(ds, "00180012"):  # Contrast/Bolus Agent Sequence
            agents.update((v, None) for v in _strings(item, "00080104"))
    raw_modality = next((m for ds in instances if (m := _first(ds, "00080060"))), "")
    number = next((n for ds in instances if (n := _first(ds, "00200011"))), "")
    refs = (InstanceRef(_first(ds, "00080018"), _first(ds, "00080016")) for ds in instances)
    return SeriesFacts(
        series_instance_uid=uid,
        series_number=int(float(number)) if re.fullmatch(r"[+-]?\d+(\.0*)?", number) else None,
        modality=normalise_modality(raw_modality),
        raw_modality=raw_modality,
        texts=tuple(key for key in texts if key[1]),
        slice_thicknesses=tuple(thicknesses),
        contrast_agents=tuple(a for a in agents if a),
        instances=tuple(dict.fromkeys(refs)),
    )


def _patient_age(instances: list[DicomJson]) -> tuple[float | None, str]:
    """Patient's Age (0010,1010), else Patient's Birth Date against the Study Date."""
    for ds in instances:
        raw = _first(ds, "00101010")
        if raw and (years := parse_patient_age(raw)) is not None:
            return years, f"PatientAge '{raw}' -> {years:.1f} years"
    for ds in instances:
        birth = parse_da(_first(ds, "00100030"))
        for keyword, tag in (("StudyDate", "00080020"), ("SeriesDate", "00080021")):
            at = parse_da(_first(ds, tag))
            if birth is not None and at is not None and at >= birth:
                years = age_in_years(birth, at)
                return years, (
                    f"PatientBirthDate {birth:%Y%m%d} at {keyword} {at:%Y%m%d} -> {years:.1f} years"
                )
    return None, "age unknown: no valid PatientAge, nor PatientBirthDate and StudyDate"
