"""The store as a restricted principal sees it: an AI product's Task Performer (issue 6).

A performer (:attr:`aifi.principal.Principal.restricted`) may see of its hospital's images
only what its work needs (IHE AIW-I): the instances the Input Information Sequence
(0040,4021) of one of its products' workitems references, in any state, and the result
instances its products stored. Everything else answers exactly as if it did not exist —
WADO-RS 404, QIDO-RS no match — and it may store nothing but AI results of its products'
workitems IN PROGRESS (refused otherwise with Failure Reason 0124, PS3.4 Annex C).

:class:`RestrictedStore` is that view of a :class:`~aifi.dicomweb.store.DicomStore`; what
is visible comes from a :class:`VisibilityProvider` the application puts on ``app.state``
(the hub's is :class:`aifi.hub.worklist.visibility.HubVisibility`, which knows the workitems and
results). Retrievals and study-scoped searches ask only about the one study in the path;
QIDO-RS narrows the query itself with a UID list (PS3.18 §8.3.4.1, C.2.2.2.2), so paging,
counts of "additional results" and limits stay right.

Known limits: study- and series-level QIDO-RS results carry the counts computed over the
whole study or series (Number of Study Related Instances, Modalities in Study, ...). The
inputs of a workitem from another study than its own (a comparison product's priors) are
visible through that study's path when the hub registered it as the workitem's prior.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from aifi.dicom_json import DicomJson, text
from aifi.dicomweb.matching import Matcher, MatchKind
from aifi.dicomweb.qido_query import QidoQuery, QueryResult
from aifi.dicomweb.query_attributes import (
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    AttributePath,
    QueryLevel,
)
from aifi.dicomweb.store import (
    DicomStore,
    IncomingInstance,
    StoredInstance,
    StoreInFront,
    StoreOutcome,
)


@dataclass(frozen=True, slots=True)
class Visible:
    """What a restricted principal may see (of the studies asked about): the studies,
    series and SOP Instances it may see instances of."""

    studies: frozenset[str] = frozenset()
    series: frozenset[str] = frozenset()
    instances: frozenset[str] = frozenset()

    def uids(self, level: QueryLevel) -> tuple[str, frozenset[str]]:
        """The key (tag) and the UIDs a query at ``level`` is narrowed to."""
        if level is QueryLevel.STUDY:
            return STUDY_INSTANCE_UID, self.studies
        if level is QueryLevel.SERIES:
            return SERIES_INSTANCE_UID, self.series
        return SOP_INSTANCE_UID, self.instances


class VisibilityProvider(Protocol):
    """Decides what a restricted principal sees and may store (implemented by the hub on
    its workitems and results: :class:`aifi.hub.worklist.visibility.HubVisibility`)."""

    def visible(
        self, tenant: str, products: frozenset[str], studies: Collection[str] | None
    ) -> Visible:
        """The inputs and results of ``products``' workitems, of the given studies (all
        studies when None)."""
        ...

    def visible_studies(self, tenant: str, products: frozenset[str]) -> frozenset[str]:
        """The studies of ``products``' workitems (a study-level search of all studies)."""
        ...

    def put(
        self, tenant: str, products: frozenset[str], instances: Sequence[IncomingInstance]
    ) -> list[StoreOutcome]:
        """Store as a restricted principal: AI results of ``products``' workitems IN
        PROGRESS only; every other instance refused (Failure Reason 0124)."""
        ...


def _studies_asked(query: QidoQuery) -> list[str] | None:
    """The studies a query is about: the one in its path, else the values of a
    StudyInstanceUID match key (single value or UID list); None: all studies."""
    if query.study_instance_uid is not None:
        return [query.study_instance_uid]
    for m in query.matchers:
        if m.path.tags == (STUDY_INSTANCE_UID,) and m.kind in (MatchKind.SINGLE, MatchKind.LIST):
            return list(m.values) or [m.value]
    return None


class RestrictedStore(StoreInFront):
    """A :class:`~aifi.dicomweb.store.DicomStore` showing only what ``products`` may see
    (see the module docstring). One is made per request (:func:`aifi.dicomweb.deps.get_store`)."""

    def __init__(
        self, inner: DicomStore, provider: VisibilityProvider, products: frozenset[str]
    ) -> None:
        super().__init__(inner)
        self.provider = provider
        self.products = products

    def put(self, tenant: str, instances: Sequence[IncomingInstance]) -> list[StoreOutcome]:
        return self.provider.put(tenant, self.products, instances)

    def _visible(self, tenant: str, study: str) -> Visible:
        return self.provider.visible(tenant, self.products, [study])

    def find_instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        visible = self._visible(tenant, study_instance_uid)
        if not visible.instances or (
            sop_instance_uid is not None and sop_instance_uid not in visible.instances
        ):
            return []  # nothing to see: the store is not even asked
        found = self.inner.find_instances(
            tenant, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        return [i for i in found if i.sop_instance_uid in visible.instances]

    def instance_metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[DicomJson]:
        visible = self._visible(tenant, study_instance_uid)
        if not visible.instances or (
            sop_instance_uid is not None and sop_instance_uid not in visible.instances
        ):
            return []
        found = self.inner.instance_metadata(
            tenant, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        return [m for m in found if text(m, SOP_INSTANCE_UID) in visible.instances]

    def query(self, tenant: str, query: QidoQuery) -> QueryResult:
        """The query narrowed to the visible UIDs of its level (one more match key, a UID
        list, PS3.18 §8.3.4.1); no match at all when nothing is visible."""
        studies = _studies_asked(query)
        if query.level is QueryLevel.STUDY and studies is None:
            tag, allowed = STUDY_INSTANCE_UID, self.provider.visible_studies(tenant, self.products)
        else:
            tag, allowed = self.provider.visible(tenant, self.products, studies).uids(query.level)
        if not allowed:
            return QueryResult()
        members = tuple(sorted(allowed))
        narrowing = Matcher(AttributePath((tag,)), MatchKind.LIST, "\\".join(members), members)
        return self.inner.query(
            tenant, dataclasses.replace(query, matchers=(*query.matchers, narrowing))
        )
