"""Prior studies for comparison products at the hub (issue 17).

- :mod:`~aifi.hub.priors.service` — :class:`PriorRequests`: a comparison product's
  workitem waits (Input Readiness State INCOMPLETE) for the patient's earlier studies,
  which the hospital's gateway finds in its PACS, registers and sends; their instances go
  into the Input Information Sequence marked as priors, or the workitem runs without them;
- :mod:`~aifi.hub.priors.api` — the ``/api/v1/prior-requests`` router the gateway polls.

May import: :mod:`aifi.hub.persistence`, :mod:`aifi.hub.worklist`, :mod:`aifi.ihe_profiles`,
:mod:`aifi.dicomweb` (the store protocol), :mod:`aifi.dicom_json`, :mod:`aifi.clock`,
:mod:`aifi.errors`, :mod:`aifi.principal`.
"""

from aifi.hub.priors.service import PriorOutcome, PriorRequests, PriorRequestState

__all__ = ["PriorOutcome", "PriorRequestState", "PriorRequests"]
