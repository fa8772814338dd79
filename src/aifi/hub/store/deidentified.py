"""The hub's de-identification guard (issue 15): a tenant may accept only instances that
say they are de-identified.

The central hub must never hold a patient's identity: each hospital's gateway
pseudonymises what it forwards (DICOM PS3.15 Annex E) and marks it Patient Identity
Removed (0012,0062) = YES (PS3.3 C.7.1.1, PS3.15 E.1). With ``require_deidentified`` on for
a tenant, STOW-RS refuses each instance of that tenant's hospital, administrator or
development callers whose Patient Identity Removed is not "YES" — absent, empty or "NO":
a Failed SOP Sequence item with Failure Reason **C411** (implementation-specific, in the
Cxxx "cannot understand" range next to the hub's other specific codes, PS3.18 I.2.2) and
a ``Warning: 299`` header saying why (PS3.18 §10.5.3, §8.7.3). The other instances of the
request are stored as usual (202 when some were refused); nothing already stored is
touched.

The check is about data coming *from a hospital*. An AI product's Task Performer (a
restricted principal) is not checked: it may store only AI results of its own workitems
into the (pseudonymised) inputs' study (:class:`aifi.hub.results.gate.ResultGate`), whose patient
the hub accepted; and a result object need not repeat (0012,0062) (highdicom's SR copies
the inputs' whole Patient module, the hub's GSPS/KOS/SC builders selected attributes).

The setting (:class:`TenantPolicy`): the tenant's own ``tenant.require_deidentified``
(``aifi tenants set``), else the hub's default, ``Settings.deidentified_by_default`` (on
outside development mode). It is read once per stored batch (a primary-key lookup), so a
change made by the CLI while the hub runs applies to the next request.
"""

from __future__ import annotations

from pydicom import Dataset

from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import Tenant

PATIENT_IDENTITY_NOT_REMOVED = 0xC411
"""Failure Reason (implementation-specific): the instance is not marked de-identified."""
PATIENT_IDENTITY_NOT_REMOVED_REASON = (
    "Patient Identity Removed (0012,0062) is not YES: this hospital's tenant accepts only "
    "de-identified instances (PS3.15 Annex E)"
)


def is_deidentified(header: Dataset) -> bool:
    """Patient Identity Removed (0012,0062) is "YES" (a CS value; surrounding spaces and
    letter case are forgiven, as a tolerant reader)."""
    value = header.get("PatientIdentityRemoved")
    return isinstance(value, str) and value.strip().upper() == "YES"


class TenantPolicy:
    """Whether a tenant accepts only de-identified instances: its own setting, else
    ``default``."""

    def __init__(self, db: Database, *, default: bool) -> None:
        self.db = db
        self.default = default

    def require_deidentified(self, tenant: str) -> bool:
        with self.db.read() as session:
            row = session.get(Tenant, tenant)
        if row is None or row.require_deidentified is None:
            return self.default
        return row.require_deidentified
