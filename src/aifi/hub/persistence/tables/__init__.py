"""Database tables (SQLModel). Alembic migrations in ``migrations/`` create them.

Rows are never returned to clients as they are: the routers build DICOM JSON from the
stored metadata. Every table carries ``tenant``; every unique key starts with it.
The columns indexed here are the QIDO-RS required matching keys (PS3.18 §10.6.1.3).
"""

from aifi.hub.persistence.tables.audit import AuditCursor, AuditRecord
from aifi.hub.persistence.tables.auth import OAuthClient, OAuthJti, OAuthRevoked, SigningKey
from aifi.hub.persistence.tables.conformance import ConformanceReport
from aifi.hub.persistence.tables.delivery import Delivery
from aifi.hub.persistence.tables.dicom import Instance, Series, Study, Tenant
from aifi.hub.persistence.tables.fhir import (
    AiRequest,
    FhirOutbox,
    FhirPending,
    FhirResource,
    FhirSearchToken,
    FhirSubscriptionState,
)
from aifi.hub.persistence.tables.orchestration import HubLease, StudyRouting
from aifi.hub.persistence.tables.priors import PriorRequest, PriorStudy
from aifi.hub.persistence.tables.results import (
    AiResult,
    Notification,
    ResultInstance,
    ResultProblem,
)
from aifi.hub.persistence.tables.worklist import UpsEvent, UpsSubscription, Workitem

__all__ = [
    "AiRequest",
    "AiResult",
    "AuditCursor",
    "AuditRecord",
    "ConformanceReport",
    "Delivery",
    "FhirOutbox",
    "FhirPending",
    "FhirResource",
    "FhirSearchToken",
    "FhirSubscriptionState",
    "HubLease",
    "Instance",
    "Notification",
    "OAuthClient",
    "OAuthJti",
    "OAuthRevoked",
    "PriorRequest",
    "PriorStudy",
    "ResultInstance",
    "ResultProblem",
    "Series",
    "SigningKey",
    "Study",
    "StudyRouting",
    "Tenant",
    "UpsEvent",
    "UpsSubscription",
    "Workitem",
]
