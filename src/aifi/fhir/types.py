"""The shapes the FHIR layer works with, shared by the REST router (``aifi.fhir.api``), the
search parser (``aifi.fhir.search``), subscriptions (``aifi.fhir.subscriptions``) and the
hub's storage behind them (``aifi.hub.fhir.store``, ``aifi.hub.fhir.backend``).

``aifi.fhir`` never imports ``aifi.hub``: the hub implements :class:`FhirBackend` and the
router receives it as a FastAPI dependency (ARCHITECTURE.md, "Dependencies point one way").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Resource = dict[str, Any]
"""A FHIR resource as JSON (``resourceType``, ``id``, ``meta`` ...)."""

ParamKind = Literal["token", "reference", "date", "string", "uri"]


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One resource as stored: ``content`` carries ``meta.versionId`` and
    ``meta.lastUpdated`` equal to ``version_id`` and ``last_updated``."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    content: Resource

    @property
    def etag(self) -> str:
        """The weak ETag FHIR uses for the version (FHIR R4 http.html#versioning)."""
        return f'W/"{self.version_id}"'


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter of a query, already parsed (FHIR R4 search.html).

    ``values`` are ORed (comma-separated in the URL); several criteria are ANDed.
    - token: each value is ``(system, code)``; ``system`` None = any system, "" = no system.
    - reference: each value is ``("", "Type/id")`` (a bare id is completed with the
      parameter's target type); with ``modifier`` "identifier" ``(system, value)``.
    - date: each value is ``(prefix, iso)`` with prefix eq|ne|gt|lt|ge|le|sa|eb|ap and
      ``iso`` the lower bound as UTC ``YYYY-MM-DDTHH:MM:SS`` plus ``upper`` in ``bounds``.
    - string: each value is ``("", text)`` (starts-with, case-insensitive; ``:exact``).
    """

    param: str
    kind: ParamKind
    values: tuple[tuple[str | None, str], ...]
    modifier: str | None = None
    bounds: tuple[tuple[str, str], ...] = ()
    """For dates: (lower, upper) UTC bounds of each value's precision, in ``values`` order."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search (FHIR R4 search.html): criteria ANDed, paging, includes."""

    resource_type: str
    criteria: tuple[Criterion, ...] = ()
    count: int = 50
    offset: int = 0
    summary_count: bool = False
    """``_summary=count``: the total only, no entries."""
    include: tuple[str, ...] = ()
    """``_include`` values as given, e.g. ``DiagnosticReport:result``."""
    sort: tuple[str, ...] = ()
    """``_sort`` parameters, ``-`` prefix for descending; supported: ``_lastUpdated``,
    ``date``. Default order: oldest stored first (stable across pages)."""
    ignored: tuple[str, ...] = ()
    """Parameters skipped under ``Prefer: handling=lenient`` (reported back to the client)."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    total: int
    matches: Sequence[StoredResource] = ()
    included: Sequence[StoredResource] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: StoredResource
    created: bool
    """False when an update changed an existing resource, or a conditional create found
    the resource already there (``If-None-Exist``)."""
    messages: tuple[str, ...] = field(default=())
    """Information for the client (an OperationOutcome with severity information)."""


class FhirBackend(Protocol):
    """What the REST router needs; the hub implements it (``aifi.hub.fhir.backend``).

    Errors are raised as :mod:`aifi.errors` exceptions: ``NotFound`` (404),
    ``InvalidRequest`` (400), ``Unprocessable`` (422: a rule is broken, e.g. a reference
    to something that does not exist or an unknown product), ``Conflict`` (409),
    ``PreconditionFailed`` (412: ``If-Match`` does not match the current version).
    """

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        """The current version, or ``NotFound`` (also for another tenant's resource)."""
        ...

    def search(self, tenant: str, query: SearchQuery) -> SearchResult: ...

    def create(
        self, tenant: str, resource: Resource, *, if_none_exist: SearchQuery | None = None
    ) -> WriteResult:
        """A client creates a resource (the server assigns the id). With ``if_none_exist``
        and exactly one match, that match is returned (``created`` False); more than one
        match is ``PreconditionFailed``."""
        ...

    def update(
        self, tenant: str, resource: Resource, *, if_match: int | None = None
    ) -> WriteResult:
        """A client replaces ``resource`` (``resourceType``/``id`` given)."""
        ...

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None: ...
