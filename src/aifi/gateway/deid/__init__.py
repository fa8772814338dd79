"""Pseudonymisation and re-identification of DICOM instances at the hospital gateway.

PS3.15 Annex E: the Basic Application Level Confidentiality Profile with the options of a
:class:`Profile`, applied from Table E.1-1 kept as data (``table_e1_1.tsv``), with keyed-HMAC
pseudonyms (:func:`load_or_create_key`) so the same original always gets the same pseudonym;
and re-identification of AI results (E.1.2) through a :class:`PseudonymLookup`. Pure code:
the only I/O is the key file. See docs/pseudonymisation.md.

May import: pydicom, :mod:`aifi.errors` and the pure Part 10 framing
(:mod:`aifi.gateway.ingest.part10`); no database, no network, no other gateway package (the
pseudonym map's SQL is :mod:`aifi.gateway.forward.pseudonym_map`).
"""

from aifi.gateway.deid.keyed import load_or_create_key
from aifi.gateway.deid.profile import AIFI_DEFAULT_OPTIONS, Profile, SafePrivate
from aifi.gateway.deid.pseudonymise import Pseudonymiser
from aifi.gateway.deid.reidentify import Reidentifier
from aifi.gateway.deid.table import TABLE_EDITION
from aifi.gateway.deid.types import (
    NotReidentifiable,
    Option,
    PatientIdentity,
    Pseudonymised,
    PseudonymLookup,
    Quarantine,
    StudyIdentity,
)

__all__ = [
    "AIFI_DEFAULT_OPTIONS",
    "TABLE_EDITION",
    "NotReidentifiable",
    "Option",
    "PatientIdentity",
    "Profile",
    "PseudonymLookup",
    "Pseudonymised",
    "Pseudonymiser",
    "Quarantine",
    "Reidentifier",
    "SafePrivate",
    "StudyIdentity",
    "load_or_create_key",
]
